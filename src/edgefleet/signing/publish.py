"""Publishing registered model versions as signed TUF targets.

Each variant of a version becomes a target at
``models/<name>/<version>/<variant>/<file>`` whose signed custom fields carry the model,
version, variant, runtime, hardware, firmware range, golden samples and the model's
next ``release`` number; the golden samples and the reference profile are published
beside it. ``revoke`` and ``set_floor`` rewrite the model's signed policy target.

Publishing needs the targets key. In the embedded default it is a local file, and
``edgefleet model register`` publishes right after registering; where the targets key
is kept offline, registration leaves the version unpublished and ``edgefleet repo
publish`` (run where the key is) signs every unpublished version.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from datetime import timedelta

from edgefleet.config import Settings
from edgefleet.registry.artifacts import ArtifactStore
from edgefleet.registry.domain import ModelVersion
from edgefleet.signing.errors import KeysMissingError, RepositoryStateError, SignerUnavailableError
from edgefleet.signing.keys import Keyring
from edgefleet.signing.layout import (
    ArtifactInfo,
    ModelPolicy,
    SupportingInfo,
    artifact_path,
    custom_fields,
    golden_path,
    parse_custom,
    policy_path,
    profile_path,
)
from edgefleet.signing.repository import NewTarget, RepositoryConfig, TufRepository


@dataclass(frozen=True)
class Publication:
    """A version as published: its release number and target paths."""

    model: str
    version: str
    release: int
    targets: tuple[str, ...]
    newly_published: bool


def open_repository(settings: Settings) -> TufRepository:
    """The TUF repository of ``settings`` (keys in ``home/keys``, files in ``home/tuf``).

    Raises:
        KeysMissingError: `edgefleet keys init` has not been run.
    """
    return TufRepository(
        settings.home / "tuf",
        Keyring.load(settings.home / "keys"),
        RepositoryConfig(
            timestamp_expiry=timedelta(seconds=settings.tuf_timestamp_expiry_s),
            bins_threshold=settings.tuf_bins_threshold,
        ),
    )


def _canonical_json(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


class Publisher:
    """Turns registry versions into signed targets in a repository."""

    def __init__(self, repository: TufRepository, artifacts: ArtifactStore) -> None:
        self.repository = repository
        self.artifacts = artifacts

    def _artifacts_by_model(self, model: str) -> dict[str, ArtifactInfo]:
        found = {}
        prefix = f"models/{model}/"
        for path, info in self.repository.all_targets().items():
            if path.startswith(prefix):
                custom = parse_custom(path, info.custom)
                if isinstance(custom, ArtifactInfo):
                    found[path] = custom
        return found

    def releases(self, model: str) -> dict[str, int]:
        """Published versions of ``model`` and their release numbers."""
        return {info.version: info.release for info in self._artifacts_by_model(model).values()}

    def publish(self, version: ModelVersion) -> Publication:
        """Sign every variant of ``version`` (idempotent: a published version is left as is).

        Raises:
            SignerUnavailableError: the targets or online keys cannot be loaded.
        """
        published = self._artifacts_by_model(version.model)
        paths = [
            artifact_path(version.model, version.version, v.name, v.filename)
            for v in version.variants
        ]
        if all(p in published for p in paths):
            release = published[paths[0]].release
            return Publication(version.model, version.version, release, tuple(paths), False)
        release = max((info.release for info in published.values()), default=0) + 1
        new = self._targets(version, release)
        self.repository.add_targets(new)
        return Publication(
            version.model, version.version, release, tuple(t.path for t in new), True
        )

    def _targets(self, version: ModelVersion, release: int) -> list[NewTarget]:
        targets: list[NewTarget] = []
        profile = None
        if version.reference_profile is not None:
            # Devices count into the bins; the reference's quantile summaries are for the
            # server's scoring only (36x the bytes for the digits example), so they stay
            # out of the signed file, which also keeps it readable by older agents.
            device_profile = version.reference_profile.model_dump(mode="json", exclude={"sketches"})
            blob = self.artifacts.put(io.BytesIO(_canonical_json(device_profile)))
            profile = profile_path(version.model, version.version)
            profile_info = SupportingInfo(
                kind="profile", model=version.model, version=version.version
            )
            targets.append(
                self._target(profile, blob.sha256, blob.size, custom_fields(profile_info))
            )
        hardware_default = version.compatibility.hardware or ("any",)
        for variant in version.variants:
            golden_sha = variant.golden_sha256 or version.golden.sha256
            golden = golden_path(version.model, version.version, variant.name)
            golden_info = SupportingInfo(
                kind="golden", model=version.model, version=version.version, variant=variant.name
            )
            targets.append(
                self._target(
                    golden, golden_sha, self.artifacts.size(golden_sha), custom_fields(golden_info)
                )
            )
            artifact = ArtifactInfo(
                model=version.model,
                version=version.version,
                variant=variant.name,
                runtime=variant.runtime,
                precision=variant.precision,
                hardware=hardware_default if variant.hardware == ("any",) else variant.hardware,
                firmware=version.compatibility.firmware,
                release=release,
                golden=golden,
                atol=version.golden.tolerance.atol,
                rtol=version.golden.tolerance.rtol,
                profile=profile,
            )
            path = artifact_path(version.model, version.version, variant.name, variant.filename)
            targets.append(
                self._target(path, variant.sha256, variant.size, custom_fields(artifact))
            )
        return targets

    def _target(self, path: str, sha256: str, size: int, custom: dict[str, object]) -> NewTarget:
        return NewTarget(
            path=path,
            length=size,
            sha256=sha256,
            custom=custom,
            source=self.artifacts.local_path(sha256),
            reader=lambda: self.artifacts.open(sha256),
        )

    # -- policy -------------------------------------------------------------------

    def policy(self, model: str) -> ModelPolicy:
        """The model's current signed policy (empty if none was published)."""
        info = self.repository.all_targets().get(policy_path(model))
        if info is None:
            return ModelPolicy(model=model)
        parsed = parse_custom(info.path, info.custom)
        if not isinstance(parsed, ModelPolicy):
            raise RepositoryStateError(f"{info.path} is not a policy target")
        return parsed

    def _write_policy(self, policy: ModelPolicy) -> ModelPolicy:
        blob = self.artifacts.put(io.BytesIO(_canonical_json(policy.model_dump(mode="json"))))
        self.repository.add_targets(
            [self._target(policy_path(policy.model), blob.sha256, blob.size, custom_fields(policy))]
        )
        return policy

    def revoke(self, model: str, version: str) -> ModelPolicy:
        """Sign a policy that revokes ``version`` of ``model``.

        Raises:
            RepositoryStateError: that version was never published.
        """
        if version not in self.releases(model):
            raise RepositoryStateError(
                f"{model} {version} is not published, so it cannot be revoked"
            )
        current = self.policy(model)
        revoked = tuple(sorted({*current.revoked, version}))
        return self._write_policy(current.model_copy(update={"revoked": revoked}))

    def set_floor(self, model: str, min_release: int) -> ModelPolicy:
        """Sign a policy whose release floor is ``min_release``.

        Raises:
            RepositoryStateError: negative floor, or a model with no published release.
        """
        releases = self.releases(model)
        if not releases:
            raise RepositoryStateError(f"{model} has no published release")
        if min_release < 0:
            raise RepositoryStateError("the release floor cannot be negative")
        return self._write_policy(
            self.policy(model).model_copy(update={"min_release": min_release})
        )


@dataclass(frozen=True)
class PublishOutcome:
    """What happened when a new version was offered for signing."""

    publication: Publication | None
    note: str


def publish_if_possible(
    settings: Settings, artifacts: ArtifactStore, version: ModelVersion
) -> PublishOutcome:
    """Publish ``version`` when the repository exists and its targets key is at hand.

    Registration calls this: with the embedded (local file) targets key it signs at
    once; with the targets key offline it says what to run instead of failing.
    """
    try:
        repository = open_repository(settings)
        if not repository.initialised:
            raise KeysMissingError("no TUF repository")
        publication = Publisher(repository, artifacts).publish(version)
    except KeysMissingError:
        return PublishOutcome(
            None, "not signed yet: run `edgefleet keys init`, then `edgefleet repo publish`"
        )
    except SignerUnavailableError as exc:
        return PublishOutcome(
            None,
            f"not signed yet ({exc.message}); "
            "run `edgefleet repo publish` where the targets key is",
        )
    return PublishOutcome(publication, f"signed as release {publication.release}")
