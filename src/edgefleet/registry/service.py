"""Registry operations: register, look up, compare and promote model versions.

The service owns the I/O order that keeps the registry consistent: a bundle is read and
checked completely, the model is run on its golden samples, blobs are written to the
artifact store, and only then is the version inserted in one transaction. If anything
fails, blobs this registration created are removed again, so a failed registration
leaves neither a half-registered version nor orphan blobs.
"""

from __future__ import annotations

import getpass
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from edgefleet.progress import NO_PROGRESS, Progress
from edgefleet.registry.artifacts import ArtifactStore
from edgefleet.registry.bundle import Bundle, BundleFile, load_bundle
from edgefleet.registry.compare import Comparison, compare_versions
from edgefleet.registry.domain import GoldenSet, ModelVersion, Stage, StageChange, Variant
from edgefleet.registry.errors import (
    ModelNotFoundError,
    ReferenceProfileError,
    RegistryError,
    VersionExistsError,
    VersionNotFoundError,
)
from edgefleet.registry.manifest import metric_values
from edgefleet.registry.ports import RegistryUnitOfWork
from edgefleet.registry.profile import ReferenceProfile, compute_profile
from edgefleet.registry.semver import parse_version, version_key
from edgefleet.registry.stages import check_transition, parse_stage
from edgefleet.registry.verify import ONNX_RUNTIME, run_onnx, verify_onnx


class RegistryService:
    """The model registry over a unit of work and an artifact store."""

    def __init__(
        self, uow_factory: Callable[[], RegistryUnitOfWork], artifacts: ArtifactStore
    ) -> None:
        self.uow_factory = uow_factory
        self.artifacts = artifacts

    # -- registration -------------------------------------------------------------

    def register(
        self, path: Path, *, author: str | None = None, progress: Progress = NO_PROGRESS
    ) -> ModelVersion:
        """Register the bundle at ``path`` as a new, immutable candidate version.

        Raises:
            BundleError, ManifestError, ArtifactHashMismatchError, GoldenSampleError,
            ReferenceProfileError: the bundle is unusable (see ``load_bundle``).
            VersionExistsError: that version of the model is already registered.
            VersionNotFoundError: the manifest's ``parent`` is not registered.
            ModelVerificationError: an artifact does not load or does not reproduce
                its golden outputs.
            StoreUnavailableError: the database is locked or unreachable.
        """
        bundle = load_bundle(path, progress)
        manifest = bundle.manifest
        with self.uow_factory() as uow:
            if uow.versions.get(manifest.name, manifest.version) is not None:
                raise _exists(manifest.name, manifest.version)
            if manifest.parent and uow.versions.get(manifest.name, manifest.parent) is None:
                raise VersionNotFoundError(
                    f"parent version {manifest.parent} of {manifest.name} is not registered "
                    "(register it first, or drop 'parent' from the manifest)",
                    details={"model": manifest.name, "version": manifest.parent},
                )
        self._verify(bundle, progress)
        profile = self._reference_profile(bundle)

        created: list[str] = []
        try:
            stored = {
                name: self._store(file, created, progress)
                for name, file in bundle.artifacts.items()
            }
            golden_sha = self._store(bundle.golden_file, created, progress)
            variant_golden_sha = {
                name: self._store(file, created, progress)
                for name, (_, file) in bundle.variant_golden.items()
            }
            version = _build_version(
                bundle, stored, golden_sha, variant_golden_sha, profile, author
            )
            with self.uow_factory() as uow:
                uow.versions.add(version)
                uow.versions.add_stage_change(
                    StageChange(
                        model=version.model,
                        version=version.version,
                        from_stage=None,
                        to_stage=Stage.CANDIDATE,
                        actor=version.author,
                        at=version.created_at,
                        reason="registered",
                    )
                )
                uow.commit()
        except BaseException:
            self._remove_unreferenced(created)
            raise
        return version

    def _verify(self, bundle: Bundle, progress: Progress) -> None:
        manifest = bundle.manifest
        onnx_variants = [v for v in manifest.variants if v.runtime == ONNX_RUNTIME]
        advance = progress.task("checking golden samples", total=len(onnx_variants))
        for entry in onnx_variants:
            verify_onnx(
                bundle.artifacts[entry.name].path,
                inputs=manifest.inputs,
                outputs=manifest.outputs,
                golden=bundle.golden_for(entry.name),
                tolerance=manifest.golden.tolerance,
                what=f"variant {entry.name!r}",
            )
            advance(1)

    def _reference_profile(self, bundle: Bundle) -> ReferenceProfile | None:
        manifest = bundle.manifest
        if bundle.reference is None or manifest.reference is None:
            return None
        reference_variant = next((v for v in manifest.variants if v.runtime == ONNX_RUNTIME), None)
        probabilities = labels = None
        if reference_variant is not None:
            outputs = run_onnx(
                bundle.artifacts[reference_variant.name].path,
                bundle.reference,
                what=f"variant {reference_variant.name!r} on the reference sample",
            )
            prob_spec = manifest.output_with_role("probabilities")
            label_spec = manifest.output_with_role("label")
            if prob_spec is not None:
                probabilities = outputs[prob_spec.name]
            elif label_spec is not None:
                labels = outputs[label_spec.name]
        try:
            return compute_profile(
                bundle.reference,
                probabilities=probabilities,
                labels=labels,
                class_count=len(manifest.classes) or None,
                bins=manifest.reference.bins,
            )
        except ValueError as exc:
            raise ReferenceProfileError(f"cannot profile the reference sample: {exc}") from exc

    def _store(self, file: BundleFile, created: list[str], progress: Progress) -> str:
        advance = progress.task(f"storing {file.path.name}", total=file.size, unit="bytes")
        with file.path.open("rb") as source:
            blob = self.artifacts.put(source, expected_sha256=file.sha256, progress=advance)
        if blob.created:
            created.append(blob.sha256)
        return blob.sha256

    def _remove_unreferenced(self, digests: list[str]) -> None:
        if not digests:
            return
        try:
            with self.uow_factory() as uow:
                keep = {d for d in digests if uow.versions.references_blob(d)}
        except Exception:
            # The database is gone (that may be why we are cleaning up); the blobs were
            # created by this registration, which did not commit, so nothing uses them.
            keep = set()
        for digest in digests:
            if digest not in keep:
                self.artifacts.delete(digest)

    # -- queries ------------------------------------------------------------------

    def get(self, model: str, version: str) -> ModelVersion:
        """One registered version.

        Raises:
            InvalidVersionError, ModelNotFoundError, VersionNotFoundError.
        """
        canonical = str(parse_version(version))
        with self.uow_factory() as uow:
            found = uow.versions.get(model, canonical)
            if found is None:
                raise self._not_found(uow, model, canonical)
            return found

    def list_versions(
        self, *, model: str | None = None, stage: str | None = None, tag: str | None = None
    ) -> list[ModelVersion]:
        """Registered versions, by model name and then semantic-version precedence.

        Raises:
            InvalidStageError: ``stage`` is not a known stage.
        """
        stage_filter = parse_stage(stage) if stage else None
        with self.uow_factory() as uow:
            versions = uow.versions.find(model=model, stage=stage_filter, tag=tag)
        return sorted(versions, key=lambda v: (v.model, version_key(v.version)))

    def latest(self, model: str, stage: str | None = None) -> ModelVersion:
        """The highest version of ``model`` (in ``stage``, if given) by semver precedence.

        Raises:
            ModelNotFoundError: the model is unknown.
            VersionNotFoundError: it has no version in that stage.
        """
        versions = self.list_versions(model=model, stage=stage)
        if not versions:
            with self.uow_factory() as uow:
                if not uow.versions.model_exists(model):
                    raise ModelNotFoundError(f"no model named {model!r} is registered")
            raise VersionNotFoundError(
                f"{model} has no version in stage {stage}", details={"model": model, "stage": stage}
            )
        return versions[-1]

    def compare(self, model: str, a: str, b: str) -> Comparison:
        """Compare version ``b`` of ``model`` with version ``a``."""
        return compare_versions(self.get(model, a), self.get(model, b))

    def history(self, model: str, version: str | None = None) -> list[StageChange]:
        """Stage history of a model or one of its versions, oldest first."""
        if version is not None:
            self.get(model, version)
            version = str(parse_version(version))
        with self.uow_factory() as uow:
            if not uow.versions.model_exists(model):
                raise ModelNotFoundError(f"no model named {model!r} is registered")
            return uow.versions.stage_history(model, version)

    # -- lifecycle ----------------------------------------------------------------

    def promote(
        self,
        model: str,
        version: str,
        stage: str,
        *,
        actor: str,
        reason: str = "",
        archive_previous: bool = True,
    ) -> list[StageChange]:
        """Move a version to ``stage`` and record who did it.

        Promoting to production archives the version that was in production before
        (unless ``archive_previous`` is false), so "production" names one version.

        Returns:
            The stage changes made, the requested one first.

        Raises:
            InvalidStageError: unknown stage, or a move the lifecycle does not allow.
            InvalidVersionError, ModelNotFoundError, VersionNotFoundError.
        """
        target = parse_stage(stage)
        canonical = str(parse_version(version))
        now = datetime.now(UTC)
        with self.uow_factory() as uow:
            current = uow.versions.get(model, canonical, for_update=True)
            if current is None:
                raise self._not_found(uow, model, canonical)
            check_transition(current.stage, target)
            changes = [
                StageChange(
                    model=model,
                    version=canonical,
                    from_stage=current.stage,
                    to_stage=target,
                    actor=actor,
                    at=now,
                    reason=reason,
                )
            ]
            if target is Stage.PRODUCTION and archive_previous:
                for previous in uow.versions.find(model=model, stage=Stage.PRODUCTION):
                    changes.append(
                        StageChange(
                            model=model,
                            version=previous.version,
                            from_stage=Stage.PRODUCTION,
                            to_stage=Stage.ARCHIVED,
                            actor=actor,
                            at=now,
                            reason=f"replaced in production by {canonical}",
                        )
                    )
            for change in changes:
                uow.versions.set_stage(change.model, change.version, change.to_stage)
                uow.versions.add_stage_change(change)
            uow.commit()
        return changes

    @staticmethod
    def _not_found(uow: RegistryUnitOfWork, model: str, version: str) -> RegistryError:
        if not uow.versions.model_exists(model):
            return ModelNotFoundError(
                f"no model named {model!r} is registered", details={"model": model}
            )
        return VersionNotFoundError(
            f"{model} has no version {version}", details={"model": model, "version": version}
        )


def _exists(model: str, version: str) -> VersionExistsError:
    return VersionExistsError(
        f"{model} {version} is already registered; versions are immutable, so bump the "
        "version to register a change",
        details={"model": model, "version": version},
    )


def _build_version(
    bundle: Bundle,
    stored: dict[str, str],
    golden_sha: str,
    variant_golden_sha: dict[str, str],
    profile: ReferenceProfile | None,
    author: str | None,
) -> ModelVersion:
    manifest = bundle.manifest
    variants = tuple(
        Variant(
            name=entry.name,
            runtime=entry.runtime,
            precision=entry.precision,
            hardware=entry.hardware,
            filename=Path(entry.file).name,
            sha256=stored[entry.name],
            size=bundle.artifacts[entry.name].size,
            metrics=metric_values(entry.metrics),
            golden_sha256=variant_golden_sha.get(entry.name),
        )
        for entry in manifest.variants
    )
    return ModelVersion(
        model=manifest.name,
        version=manifest.version,
        stage=Stage.CANDIDATE,
        framework=manifest.framework,
        description=manifest.description,
        model_card=bundle.model_card,
        author=author or manifest.author or _os_user(),
        created_at=datetime.now(UTC),
        data_version=manifest.data_version,
        code_version=manifest.code_version,
        parent=manifest.parent,
        tags=manifest.tags,
        inputs=manifest.inputs,
        outputs=manifest.outputs,
        classes=manifest.classes,
        compatibility=manifest.compatibility,
        resources=manifest.resources,
        metrics=metric_values(manifest.metrics),
        higher_is_better=manifest.metric_directions(),
        variants=variants,
        golden=GoldenSet(
            sha256=golden_sha,
            size=bundle.golden_file.size,
            count=bundle.golden.count,
            tolerance=manifest.golden.tolerance,
        ),
        reference_profile=profile,
    )


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


__all__ = ["RegistryService"]
