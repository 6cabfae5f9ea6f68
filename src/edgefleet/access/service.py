"""Issuing and checking operator keys, enrollment tokens and device credentials;
recording operator writes in the audit log."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self

from edgefleet.access import tokens
from edgefleet.access.errors import ForbiddenError, TokenNotFoundError, UnauthenticatedError
from edgefleet.access.tokens import Role


class ApiKeyRecord(Protocol):
    key_id: str
    key_hash: str
    role: str
    name: str
    created_at: datetime
    created_by: str
    revoked_at: datetime | None


class EnrollmentRecord(Protocol):
    token_id: str
    token_hash: str
    uses_remaining: int | None
    expires_at: datetime | None
    group_name: str | None
    created_at: datetime
    created_by: str
    revoked_at: datetime | None


class AccessRepository(Protocol):
    def api_key(self, key_id: str) -> Any: ...
    def api_keys(self) -> list[Any]: ...
    def count_api_keys(self) -> int: ...
    def add_api_key(self, **fields: Any) -> Any: ...
    def enrollment_token(self, token_id: str, *, for_update: bool = False) -> Any: ...
    def enrollment_tokens(self) -> list[Any]: ...
    def add_enrollment_token(self, **fields: Any) -> Any: ...
    def audit(
        self,
        *,
        at: datetime,
        actor: str,
        action: str,
        target: str,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
    ) -> None: ...
    def audit_log(self, limit: int, offset: int) -> list[Any]: ...


class AccessUnitOfWork(Protocol):
    @property
    def access(self) -> AccessRepository: ...
    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
    def commit(self) -> None: ...


@dataclass(frozen=True)
class Operator:
    """An authenticated operator (API key holder)."""

    key_id: str
    name: str
    role: Role

    @property
    def actor(self) -> str:
        return f"{self.name} ({self.key_id})"

    def require(self, role: Role) -> None:
        """Raises ForbiddenError unless this operator has at least ``role``."""
        if not self.role.allows(role):
            raise ForbiddenError(
                f"this needs the {role.value} role; key {self.key_id} is {self.role.value}",
                details={"needed": role.value, "role": self.role.value},
            )


@dataclass(frozen=True)
class NewSecret:
    """A just-issued secret (shown once) and its public description."""

    token: str
    token_id: str
    description: dict[str, Any]


def _now() -> datetime:
    return datetime.now(UTC)


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def describe_key(row: ApiKeyRecord) -> dict[str, Any]:
    return {
        "id": row.key_id,
        "kind": "api_key",
        "role": row.role,
        "name": row.name,
        "created_at": _utc(row.created_at),
        "created_by": row.created_by,
        "revoked": row.revoked_at is not None,
    }


def describe_enrollment(row: EnrollmentRecord) -> dict[str, Any]:
    return {
        "id": row.token_id,
        "kind": "enrollment",
        "uses_remaining": row.uses_remaining,
        "expires_at": _utc(row.expires_at),
        "group": row.group_name,
        "created_at": _utc(row.created_at),
        "created_by": row.created_by,
        "revoked": row.revoked_at is not None,
    }


class AccessService:
    """Keys, tokens and the audit log over a unit of work."""

    def __init__(
        self,
        uow_factory: Callable[[], AccessUnitOfWork],
        read_uow_factory: Callable[[], AccessUnitOfWork] | None = None,
    ) -> None:
        self.uow_factory = uow_factory
        #: For reads that need no write lock (authentication): the server's lock-free
        #: reader, so an operator's request never queues behind the process's writers.
        self.read_uow_factory = read_uow_factory or uow_factory

    def create_api_key(self, role: Role, name: str, *, actor: Operator | None) -> NewSecret:
        """Issue an operator key. Only an admin may create admin keys.

        Raises:
            ForbiddenError: ``actor`` may not create a key of that role.
        """
        if actor is not None:
            actor.require(Role.ADMIN if role is Role.ADMIN else Role.OPERATOR)
        issued = tokens.issue(tokens.API_KEY)
        now = _now()
        created_by = actor.actor if actor else "local"
        with self.uow_factory() as uow:
            row = uow.access.add_api_key(
                key_id=issued.token_id,
                key_hash=issued.digest,
                role=role.value,
                name=name,
                created_at=now,
                created_by=created_by,
            )
            description = describe_key(row)
            uow.access.audit(
                at=now,
                actor=created_by,
                action="api_key.create",
                target=issued.token_id,
                before=None,
                after=jsonable(description),
            )
            uow.commit()
        return NewSecret(issued.token, issued.token_id, description)

    def create_enrollment_token(
        self,
        *,
        uses: int | None,
        expires_at: datetime | None,
        group: str | None,
        actor: Operator | None,
    ) -> NewSecret:
        """Issue an enrollment token (``uses=None``: unlimited until expiry or revocation)."""
        if actor is not None:
            actor.require(Role.OPERATOR)
        issued = tokens.issue(tokens.ENROLLMENT)
        now = _now()
        created_by = actor.actor if actor else "local"
        with self.uow_factory() as uow:
            row = uow.access.add_enrollment_token(
                token_id=issued.token_id,
                token_hash=issued.digest,
                uses_remaining=uses,
                expires_at=expires_at,
                group_name=group,
                created_at=now,
                created_by=created_by,
            )
            description = describe_enrollment(row)
            uow.access.audit(
                at=now,
                actor=created_by,
                action="enrollment_token.create",
                target=issued.token_id,
                before=None,
                after=jsonable(description),
            )
            uow.commit()
        return NewSecret(issued.token, issued.token_id, description)

    def list_tokens(self, actor: Operator) -> list[dict[str, Any]]:
        actor.require(Role.VIEWER)
        with self.uow_factory() as uow:
            keys = [describe_key(r) for r in uow.access.api_keys()]
            enrollment = [describe_enrollment(r) for r in uow.access.enrollment_tokens()]
        return keys + enrollment

    def revoke(self, token_id: str, *, actor: Operator) -> dict[str, Any]:
        """Revoke an API key (admin) or an enrollment token (operator).

        Raises:
            TokenNotFoundError, ForbiddenError.
        """
        now = _now()
        with self.uow_factory() as uow:
            key = uow.access.api_key(token_id)
            if key is not None:
                actor.require(Role.ADMIN)
                before = describe_key(key)
                key.revoked_at = key.revoked_at or now
                after = describe_key(key)
            else:
                token = uow.access.enrollment_token(token_id, for_update=True)
                if token is None:
                    raise TokenNotFoundError(f"no key or token {token_id!r}")
                actor.require(Role.OPERATOR)
                before = describe_enrollment(token)
                token.revoked_at = token.revoked_at or now
                after = describe_enrollment(token)
            uow.access.audit(
                at=now,
                actor=actor.actor,
                action="token.revoke",
                target=token_id,
                before=jsonable(before),
                after=jsonable(after),
            )
            uow.commit()
        return after

    def authenticate_operator(self, token: str | None) -> Operator:
        """The operator a bearer token belongs to.

        Raises:
            UnauthenticatedError: missing, malformed, unknown or revoked.
        """
        parsed = tokens.parse(token or "")
        if parsed is None or parsed.kind != tokens.API_KEY:
            raise UnauthenticatedError(
                "an operator API key is required (Authorization: Bearer efk_...)"
            )
        with self.read_uow_factory() as uow:
            row = uow.access.api_key(parsed.token_id)
            if (
                row is None
                or row.revoked_at is not None
                or not tokens.matches(parsed.secret, row.key_hash)
            ):
                raise UnauthenticatedError("unknown or revoked API key")
            return Operator(key_id=row.key_id, name=row.name, role=Role(row.role))

    def use_enrollment_token(self, uow: AccessUnitOfWork, token: str) -> str | None:
        """Check and consume one use of an enrollment token inside the caller's unit of
        work; returns the token's device group.

        Raises:
            UnauthenticatedError: unknown, revoked, expired or used up.
        """
        parsed = tokens.parse(token)
        if parsed is None or parsed.kind != tokens.ENROLLMENT:
            raise UnauthenticatedError("enrollment_token is not an enrollment token (efe_...)")
        row = uow.access.enrollment_token(parsed.token_id, for_update=True)
        if row is None or not tokens.matches(parsed.secret, row.token_hash):
            raise UnauthenticatedError("unknown enrollment token")
        if row.revoked_at is not None:
            raise UnauthenticatedError("the enrollment token was revoked")
        expires = _utc(row.expires_at)
        if expires is not None and expires <= _now():
            raise UnauthenticatedError("the enrollment token has expired")
        if row.uses_remaining is not None:
            if row.uses_remaining <= 0:
                raise UnauthenticatedError("the enrollment token is used up")
            row.uses_remaining -= 1
        group: str | None = row.group_name
        return group

    def audit(self, actor: Operator, action: str, target: str, before: Any, after: Any) -> None:
        with self.uow_factory() as uow:
            uow.access.audit(
                at=_now(),
                actor=actor.actor,
                action=action,
                target=target,
                before=jsonable(before),
                after=jsonable(after),
            )
            uow.commit()

    def audit_log(self, actor: Operator, limit: int, offset: int) -> list[dict[str, Any]]:
        actor.require(Role.ADMIN)
        with self.uow_factory() as uow:
            return [
                {
                    "id": r.id,
                    "at": _utc(r.at),
                    "actor": r.actor,
                    "action": r.action,
                    "target": r.target,
                    "before": r.before,
                    "after": r.after,
                }
                for r in uow.access.audit_log(limit, offset)
            ]

    def bootstrap_admin(self, home: Path) -> Path | None:
        """On an empty database, create an admin key and write it to ``home/admin.token``
        (mode 0600) so a first run needs no manual step; otherwise do nothing."""
        with self.uow_factory() as uow:
            if uow.access.count_api_keys():
                return None
        secret = self.create_api_key(Role.ADMIN, "bootstrap admin", actor=None)
        home.mkdir(parents=True, exist_ok=True)
        path = home / "admin.token"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secret.token + "\n")
        path.chmod(0o600)
        return path


def jsonable(value: Any) -> Any:
    """``value`` with datetimes as ISO strings and tuples as lists, for JSON columns
    (the audit log, the rollout decision log)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value
