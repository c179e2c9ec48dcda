"""NATS operator mode without the nsc tool: the keys, JWTs and .creds file a test's nats-server trusts.

An operator (self-signed) signs two accounts, the system account (which
JetStream needs in operator mode: nats-server 2.9 stops with "system
account not setup" without it) and one account with JetStream enabled
(its limits under nats.limits); the account signs one user. The server
takes them through `operator`, `system_account`, `resolver: MEMORY` and
`resolver_preload`. The JWTs are NATS JWT v2, as nsc writes them: the
header {"typ":"JWT","alg":"ed25519-nkey"}, the claims, and the issuer's
ed25519 signature of `header.claims`, each base64url without padding.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import nkeys

_UNLIMITED = {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1, "wildcards": True,
              "conn": -1, "leaf": -1}
_JETSTREAM = {"mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def keypair(prefix: int) -> tuple[Any, str]:
    """A new nkey of a kind (nkeys.PREFIX_BYTE_*): the key pair and its seed (S...)."""
    seed = nkeys.encode_seed(os.urandom(32), prefix)
    return nkeys.from_seed(bytearray(seed)), seed.decode()


def public(key: Any) -> str:
    return str(key.public_key.decode())


def encode_jwt(issuer: Any, subject: str, name: str, nats: dict[str, Any]) -> str:
    """A JWT v2 of `subject` signed by `issuer`'s nkey.

    The jti is what the Go implementation computes (base32 of the SHA-512/256
    of the claims without it); nats-server 2.9 does not check it.
    """
    claims: dict[str, Any] = {"jti": "", "iat": int(time.time()), "iss": public(issuer), "name": name,
                              "sub": subject, "nats": {**nats, "version": 2}}
    digest = hashlib.new("sha512_256", json.dumps(claims, separators=(",", ":")).encode()).digest()
    claims["jti"] = base64.b32encode(digest).decode().rstrip("=")
    signed = f"{_b64(json.dumps({'typ': 'JWT', 'alg': 'ed25519-nkey'}).encode())}.{_b64(json.dumps(claims).encode())}"
    return f"{signed}.{_b64(bytes(issuer.sign(signed.encode())))}"


def creds_text(user_jwt: str, user_seed: str) -> str:
    """A .creds file as `nsc generate creds` writes it."""
    return (
        f"-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n"
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\n"
        "NKEYs are sensitive and should be treated as secrets.\n\n"
        f"-----BEGIN USER NKEY SEED-----\n{user_seed}\n------END USER NKEY SEED------\n\n"
        "*************************************************************\n"
    )


class Operator:
    """An operator, its system account and one JetStream account, for one nats-server."""

    def __init__(self) -> None:
        self.operator, _ = keypair(nkeys.PREFIX_BYTE_OPERATOR)
        self.system, _ = keypair(nkeys.PREFIX_BYTE_ACCOUNT)
        self.account, _ = keypair(nkeys.PREFIX_BYTE_ACCOUNT)
        self.accounts = {
            public(self.system): encode_jwt(self.operator, public(self.system), "SYS",
                                            {"type": "account", "limits": _UNLIMITED}),
            public(self.account): encode_jwt(self.operator, public(self.account), "minionize",
                                             {"type": "account", "limits": {**_UNLIMITED, **_JETSTREAM}}),
        }

    def server_config(self) -> str:
        """The lines of nats-server's configuration that make it trust this operator."""
        preload = "\n".join(f"  {key}: {jwt}" for key, jwt in self.accounts.items())
        operator_jwt = encode_jwt(self.operator, public(self.operator), "minionize-test", {"type": "operator"})
        return (f"operator: {operator_jwt}\nsystem_account: {public(self.system)}\n"
                f"resolver: MEMORY\nresolver_preload: {{\n{preload}\n}}\n")

    def user_creds(self, path: Path, signer: Any = None) -> str:
        """Write a new user's .creds file (signed by this JetStream account, or `signer`); its seed."""
        user, seed = keypair(nkeys.PREFIX_BYTE_USER)
        signer = self.account if signer is None else signer
        user_jwt = encode_jwt(signer, public(user), "minion",
                              {"type": "user", "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1})
        path.write_text(creds_text(user_jwt, seed))
        path.chmod(0o600)
        return seed
