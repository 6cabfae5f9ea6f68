"""Secrets for operators, enrolling devices and enrolled devices (pure).

A secret reads ``ef<kind>_<id>_<secret>``: ``efk`` operator API key, ``efe`` enrollment
token, ``efd`` device credential. The ``id`` part is stored in clear and indexed, the
``secret`` part only as its SHA-256: the secrets are 256 random bits, so a fast hash is
as good as a slow one and keeps the check-in path cheap::

    issued = issue("efk")
    issued.token            # shown once to the user
    issued.token_id, issued.digest   # stored
    parsed = parse(issued.token)
    assert matches(parsed.secret, issued.digest)
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from enum import StrEnum

API_KEY = "efk"
ENROLLMENT = "efe"
DEVICE = "efd"
KINDS = (API_KEY, ENROLLMENT, DEVICE)


class Role(StrEnum):
    """Operator roles; each can do everything the ones before it can."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return list(Role).index(self)

    def allows(self, needed: Role) -> bool:
        """Whether this role may do what ``needed`` may."""
        return self.rank >= needed.rank


@dataclass(frozen=True)
class Issued:
    """A new secret: the token to hand out once, and what to store."""

    token: str
    token_id: str
    digest: str


@dataclass(frozen=True)
class Parsed:
    kind: str
    token_id: str
    secret: str


def digest(secret: str) -> str:
    """The stored form of a secret."""
    return hashlib.sha256(secret.encode()).hexdigest()


def issue(kind: str) -> Issued:
    """A fresh random secret of ``kind``."""
    if kind not in KINDS:
        raise ValueError(f"unknown token kind {kind!r}")
    token_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    return Issued(token=f"{kind}_{token_id}_{secret}", token_id=token_id, digest=digest(secret))


def parse(token: str) -> Parsed | None:
    """Split a token into kind, id and secret; ``None`` if it is not one of ours."""
    parts = token.strip().split("_", 2)
    if len(parts) != 3:
        return None
    kind, token_id, secret = parts
    if kind not in KINDS or len(token_id) != 16 or not secret or len(secret) > 128:
        return None
    try:
        int(token_id, 16)
    except ValueError:
        return None
    return Parsed(kind, token_id, secret)


def matches(secret: str, stored_digest: str) -> bool:
    """Constant-time check of a presented secret against its stored digest."""
    return hmac.compare_digest(digest(secret), stored_digest)
