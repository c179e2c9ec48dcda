"""Keeping credentials out of logs, reports and messages."""

from __future__ import annotations

from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

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


def secrets_of(url: str) -> list[str]:
    """The secret parts of `url` (password, a lone user part, secret query values), as written and decoded."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return [url] if url else []  # unparsable: all of it may be secret
    userinfo, at, _ = parts.netloc.rpartition("@")
    found = [userinfo.partition(":")[2] if ":" in userinfo else userinfo] if at else []
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    found += [v for k, v in pairs if any(s in k.lower() for s in SECRET_OPTIONS)]
    found += [unquote(secret) for secret in found]
    return sorted({secret for secret in found if secret}, key=len, reverse=True)


def scrub(text: str, url: str) -> str:
    """`text` (a library's error message, say) with `url` masked and each of its secrets replaced by `***`."""
    text = text.replace(url, mask_url(url)) if url else text
    for secret in secrets_of(url):
        text = text.replace(secret, "***")
    return text
