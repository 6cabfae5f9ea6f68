"""What the registry service needs from storage, as interfaces.

``edgefleet.store`` implements them with SQLAlchemy; tests may implement them in
memory. The service opens a unit of work per operation and commits explicitly::

    with uow_factory() as uow:
        uow.versions.add(version)
        uow.commit()
"""

from __future__ import annotations

from types import TracebackType
from typing import Protocol, Self

from edgefleet.registry.domain import ModelVersion, Stage, StageChange


class VersionRepository(Protocol):
    """Registered model versions."""

    def add(self, version: ModelVersion) -> None:
        """Add a new version (and its model, if new). Raises VersionExistsError."""
        ...

    def get(self, model: str, version: str, *, for_update: bool = False) -> ModelVersion | None:
        """One version, or ``None``; ``for_update`` locks it until the unit of work ends."""
        ...

    def find(
        self, *, model: str | None = None, stage: Stage | None = None, tag: str | None = None
    ) -> list[ModelVersion]:
        """Versions matching every filter given, in no particular order."""
        ...

    def model_exists(self, model: str) -> bool:
        """Whether any version of ``model`` is registered."""
        ...

    def set_stage(self, model: str, version: str, stage: Stage) -> None:
        """Move a version to ``stage`` (the caller checks the lifecycle)."""
        ...

    def add_stage_change(self, change: StageChange) -> None:
        """Append to the stage history."""
        ...

    def stage_history(self, model: str, version: str | None = None) -> list[StageChange]:
        """Stage changes of a model (or one version), oldest first."""
        ...

    def references_blob(self, sha256: str) -> bool:
        """Whether any registered version uses the blob (artifact or golden samples)."""
        ...


class RegistryUnitOfWork(Protocol):
    """One transaction over the registry tables."""

    @property
    def versions(self) -> VersionRepository:
        """The versions seen through this unit's transaction."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def commit(self) -> None:
        """Make the unit's changes permanent."""
        ...

    def rollback(self) -> None:
        """Discard the unit's changes."""
        ...
