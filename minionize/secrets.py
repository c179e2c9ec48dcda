"""Keeping credentials out of logs, reports and messages."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

#: Query options whose value is a secret (redis-py's password, pika's ssl_options...).
SECRET_OPTIONS = ("password", "passwd", "pass", "token", "secret", "key", "ssl_options")


def mask_url(url: str) -> str:
    """The URL to show: the password in its authority and every secret query option replaced by `***`."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "***"  # unparsable: show nothing of it rather than a secret
    masked = parts._replace(fragment="")
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if at and ":" in userinfo:
        masked = masked._replace(netloc=f"{userinfo.partition(':')[0]}:***@{hostport}")
    elif at:
        masked = masked._replace(netloc=f"***@{hostport}")  # a lone user part may be a token
    if parts.query:
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        shown = [(k, "***" if any(s in k.lower() for s in SECRET_OPTIONS) else v) for k, v in pairs]
        masked = masked._replace(query=urlencode(shown, safe="*"))
    if masked == parts:
        return url
    if "://" in url:  # urlunsplit would turn unix:///path into unix:/path
        query = f"?{masked.query}" if masked.query else ""
        return f"{masked.scheme}://{masked.netloc}{masked.path}{query}"
    return urlunsplit(masked)
