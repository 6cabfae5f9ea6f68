"""SQL repository of API keys, enrollment tokens and the audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from edgefleet.store.tables import ApiKeyRow, AuditRow, EnrollmentTokenRow


class SqlAccessRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def api_key(self, key_id: str) -> ApiKeyRow | None:
        return self.session.scalars(
            select(ApiKeyRow).where(ApiKeyRow.key_id == key_id)
        ).one_or_none()

    def api_keys(self) -> list[ApiKeyRow]:
        return list(self.session.scalars(select(ApiKeyRow).order_by(ApiKeyRow.id)))

    def count_api_keys(self) -> int:
        return int(self.session.scalar(select(func.count()).select_from(ApiKeyRow)) or 0)

    def add_api_key(self, **fields: Any) -> ApiKeyRow:
        row = ApiKeyRow(**fields)
        self.session.add(row)
        self.session.flush()
        return row

    def enrollment_token(
        self, token_id: str, *, for_update: bool = False
    ) -> EnrollmentTokenRow | None:
        query = select(EnrollmentTokenRow).where(EnrollmentTokenRow.token_id == token_id)
        if for_update:
            query = query.with_for_update()
        return self.session.scalars(query).one_or_none()

    def enrollment_tokens(self) -> list[EnrollmentTokenRow]:
        return list(
            self.session.scalars(select(EnrollmentTokenRow).order_by(EnrollmentTokenRow.id))
        )

    def add_enrollment_token(self, **fields: Any) -> EnrollmentTokenRow:
        row = EnrollmentTokenRow(**fields)
        self.session.add(row)
        self.session.flush()
        return row

    def audit(
        self,
        *,
        at: datetime,
        actor: str,
        action: str,
        target: str,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
    ) -> None:
        self.session.add(
            AuditRow(at=at, actor=actor, action=action, target=target, before=before, after=after)
        )
        self.session.flush()

    def audit_log(self, limit: int, offset: int) -> list[AuditRow]:
        query = select(AuditRow).order_by(AuditRow.id.desc()).limit(limit).offset(offset)
        return list(self.session.scalars(query))
