"""SQLAlchemy implementation of the registry's ``VersionRepository``."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import exists, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from edgefleet.registry.domain import ModelVersion, Stage, StageChange
from edgefleet.registry.errors import VersionExistsError, VersionNotFoundError
from edgefleet.registry.semver import parse_version
from edgefleet.store.errors import StoreConflictError
from edgefleet.store.tables import ModelRow, StageChangeRow, TagRow, VariantRow, VersionRow


def _utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; everything edgefleet stores is UTC.
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _to_domain(row: VersionRow) -> ModelVersion:
    return ModelVersion.model_validate({**row.document, "stage": row.stage})


class SqlVersionRepository:
    """Model versions in the ``models``/``model_versions`` tables."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def _row(self, model: str, version: str, *, for_update: bool = False) -> VersionRow | None:
        query = (
            select(VersionRow)
            .join(ModelRow, VersionRow.model_id == ModelRow.id)
            .where(ModelRow.name == model, VersionRow.version == version)
        )
        if for_update:
            query = query.with_for_update(of=VersionRow)
        return self.session.scalars(query).one_or_none()

    def add(self, version: ModelVersion) -> None:
        model = self.session.scalars(
            select(ModelRow).where(ModelRow.name == version.model)
        ).one_or_none()
        if model is None:
            model = ModelRow(name=version.model, created_at=version.created_at)
            self.session.add(model)
            try:
                self.session.flush()
            except IntegrityError as exc:
                raise StoreConflictError(
                    f"model {version.model!r} was created by another registration at the "
                    "same moment; nothing was changed, try again"
                ) from exc
        parsed = parse_version(version.version)
        row = VersionRow(
            model_id=model.id,
            version=version.version,
            major=parsed.major,
            minor=parsed.minor,
            patch=parsed.patch,
            prerelease=parsed.prerelease,
            stage=version.stage.value,
            author=version.author,
            created_at=version.created_at,
            parent=version.parent,
            golden_sha256=version.golden.sha256,
            document=version.model_dump(mode="json", exclude={"stage"}),
        )
        self.session.add(row)
        try:
            self.session.flush()
        except IntegrityError as exc:
            raise VersionExistsError(
                f"{version.model} {version.version} is already registered; versions are "
                "immutable, so bump the version to register a change",
                details={"model": version.model, "version": version.version},
            ) from exc
        for variant in version.variants:
            self.session.add(
                VariantRow(
                    version_id=row.id,
                    name=variant.name,
                    runtime=variant.runtime,
                    precision=variant.precision,
                    sha256=variant.sha256,
                    size=variant.size,
                    golden_sha256=variant.golden_sha256,
                )
            )
        for tag in version.tags:
            self.session.add(TagRow(version_id=row.id, tag=tag))
        self.session.flush()

    def get(self, model: str, version: str, *, for_update: bool = False) -> ModelVersion | None:
        row = self._row(model, version, for_update=for_update)
        return _to_domain(row) if row else None

    def find(
        self, *, model: str | None = None, stage: Stage | None = None, tag: str | None = None
    ) -> list[ModelVersion]:
        query = select(VersionRow).join(ModelRow, VersionRow.model_id == ModelRow.id)
        if model is not None:
            query = query.where(ModelRow.name == model)
        if stage is not None:
            query = query.where(VersionRow.stage == stage.value)
        if tag is not None:
            query = query.where(
                exists().where(TagRow.version_id == VersionRow.id, TagRow.tag == tag)
            )
        return [_to_domain(row) for row in self.session.scalars(query)]

    def model_exists(self, model: str) -> bool:
        return self.session.scalar(select(exists().where(ModelRow.name == model))) or False

    def set_stage(self, model: str, version: str, stage: Stage) -> None:
        row = self._row(model, version)
        if row is None:
            raise VersionNotFoundError(f"{model} has no version {version}")
        row.stage = stage.value
        self.session.flush()

    def add_stage_change(self, change: StageChange) -> None:
        row = self._row(change.model, change.version)
        if row is None:
            raise VersionNotFoundError(f"{change.model} has no version {change.version}")
        self.session.add(
            StageChangeRow(
                version_id=row.id,
                from_stage=change.from_stage.value if change.from_stage else None,
                to_stage=change.to_stage.value,
                actor=change.actor,
                at=change.at,
                reason=change.reason,
            )
        )
        self.session.flush()

    def stage_history(self, model: str, version: str | None = None) -> list[StageChange]:
        query = (
            select(StageChangeRow, VersionRow.version)
            .join(VersionRow, StageChangeRow.version_id == VersionRow.id)
            .join(ModelRow, VersionRow.model_id == ModelRow.id)
            .where(ModelRow.name == model)
            .order_by(StageChangeRow.at, StageChangeRow.id)
        )
        if version is not None:
            query = query.where(VersionRow.version == version)
        return [
            StageChange(
                model=model,
                version=number,
                from_stage=Stage(row.from_stage) if row.from_stage else None,
                to_stage=Stage(row.to_stage),
                actor=row.actor,
                at=_utc(row.at),
                reason=row.reason,
            )
            for row, number in self.session.execute(query)
        ]

    def references_blob(self, sha256: str) -> bool:
        in_versions = exists().where(VersionRow.golden_sha256 == sha256)
        in_variants = exists().where(
            or_(VariantRow.sha256 == sha256, VariantRow.golden_sha256 == sha256)
        )
        return bool(self.session.scalar(select(or_(in_versions, in_variants))))
