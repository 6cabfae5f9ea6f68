"""Reading a bundle directory: manifest, artifacts, golden samples, reference sample.

``load_bundle`` checks everything that can be checked without running the model: the
manifest is valid, every file it names exists inside the bundle, every artifact hashes
to the SHA-256 the manifest gives, and the golden samples and reference sample fit the
input/output schema. It reads large files in chunks and keeps only hashes of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgefleet.progress import NO_PROGRESS, Progress
from edgefleet.registry.artifacts import sha256_file
from edgefleet.registry.errors import (
    ArtifactHashMismatchError,
    BundleError,
    GoldenSampleError,
    ManifestError,
    ReferenceProfileError,
)
from edgefleet.registry.golden import (
    INPUT_PREFIX,
    Array,
    GoldenSamples,
    read_golden,
    schema_problems,
    tensor_problems,
)
from edgefleet.registry.manifest import (
    MANIFEST_FILENAME,
    MAX_MANIFEST_BYTES,
    Manifest,
    parse_manifest,
)

MAX_MODEL_CARD_BYTES = 256 * 1024


@dataclass(frozen=True)
class BundleFile:
    """A file of the bundle with its measured hash and size."""

    path: Path
    sha256: str
    size: int


@dataclass(frozen=True)
class Bundle:
    """A checked bundle, ready to register."""

    root: Path
    manifest: Manifest
    artifacts: dict[str, BundleFile]  # variant name → artifact file
    golden: GoldenSamples
    golden_file: BundleFile
    variant_golden: dict[str, tuple[GoldenSamples, BundleFile]]
    model_card: str
    reference: dict[str, Array] | None

    def golden_for(self, variant: str) -> GoldenSamples:
        """The golden samples a variant is checked against."""
        own = self.variant_golden.get(variant)
        return own[0] if own else self.golden


def load_bundle(path: Path, progress: Progress = NO_PROGRESS) -> Bundle:
    """Read and check the bundle at ``path``.

    Raises:
        BundleError: not a directory, or a named file is missing or outside the bundle.
        ManifestError: ``edgefleet.yaml`` is missing, unreadable or invalid.
        ArtifactHashMismatchError: an artifact does not match its manifest SHA-256/size.
        GoldenSampleError: golden samples are unreadable or do not fit the schema.
        ReferenceProfileError: the reference sample does not fit the input schema.
    """
    root = path.expanduser().absolute()
    if not root.is_dir():
        raise BundleError(
            f"{path} is not a bundle directory (expected a folder with {MANIFEST_FILENAME})"
        )
    manifest = _read_manifest(root)

    artifacts: dict[str, BundleFile] = {}
    for entry in manifest.variants:
        file = _hash(root, entry.file, f"variant {entry.name!r}", progress)
        if file.sha256 != entry.sha256:
            raise ArtifactHashMismatchError(
                f"variant {entry.name!r}: {entry.file} has SHA-256 {file.sha256} but the "
                f"manifest says {entry.sha256} (the file changed, or the manifest is stale)",
                details={"variant": entry.name, "expected": entry.sha256, "actual": file.sha256},
            )
        if entry.size is not None and entry.size != file.size:
            raise ArtifactHashMismatchError(
                f"variant {entry.name!r}: {entry.file} is {file.size} bytes but the manifest "
                f"says {entry.size}",
                details={"variant": entry.name, "expected": entry.size, "actual": file.size},
            )
        artifacts[entry.name] = file

    golden, golden_file = _golden(root, manifest, manifest.golden.file, "golden samples", progress)
    variant_golden = {
        entry.name: _golden(
            root, manifest, entry.golden, f"golden samples of {entry.name!r}", progress
        )
        for entry in manifest.variants
        if entry.golden is not None
    }
    reference = _reference(root, manifest) if manifest.reference else None
    return Bundle(
        root=root,
        manifest=manifest,
        artifacts=artifacts,
        golden=golden,
        golden_file=golden_file,
        variant_golden=variant_golden,
        model_card=_model_card(root, manifest),
        reference=reference,
    )


def _read_manifest(root: Path) -> Manifest:
    manifest_path = root / MANIFEST_FILENAME
    if not manifest_path.is_file():
        raise ManifestError(f"{root} has no {MANIFEST_FILENAME} (see docs/bundle-format.md)")
    if manifest_path.stat().st_size > MAX_MANIFEST_BYTES:
        raise ManifestError(f"{manifest_path} is larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        text = manifest_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"cannot read {manifest_path}: {exc}") from exc
    return parse_manifest(text, source=str(manifest_path))


def _resolve(root: Path, relative: str, what: str) -> Path:
    path = (root / relative).resolve()
    if not path.is_relative_to(root.resolve()):
        raise BundleError(f"{what}: {relative} points outside the bundle")
    if not path.exists():
        raise BundleError(f"{what}: {relative} does not exist in {root}")
    if not path.is_file():
        raise BundleError(f"{what}: {relative} is not a regular file")
    return path


def _hash(root: Path, relative: str, what: str, progress: Progress) -> BundleFile:
    path = _resolve(root, relative, what)
    advance = progress.task(f"hashing {relative}", total=path.stat().st_size, unit="bytes")
    try:
        sha256, size = sha256_file(path, advance)
    except OSError as exc:
        raise BundleError(f"{what}: cannot read {relative}: {exc}") from exc
    return BundleFile(path=path, sha256=sha256, size=size)


def _golden(
    root: Path, manifest: Manifest, relative: str, what: str, progress: Progress
) -> tuple[GoldenSamples, BundleFile]:
    file = _hash(root, relative, what, progress)
    golden = read_golden(file.path, label=f"{what} ({relative})")
    problems = schema_problems(golden, inputs=manifest.inputs, outputs=manifest.outputs)
    if problems:
        raise GoldenSampleError(
            f"{what} ({relative}) do not fit the model's schema:\n  " + "\n  ".join(problems),
            details={"problems": problems},
        )
    return golden, file


def _model_card(root: Path, manifest: Manifest) -> str:
    if manifest.model_card is None:
        return ""
    path = _resolve(root, manifest.model_card, "model card")
    if path.stat().st_size > MAX_MODEL_CARD_BYTES:
        raise BundleError(f"model card {manifest.model_card} is larger than 256 KiB")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise BundleError(f"model card {manifest.model_card} is not UTF-8 text") from exc


def _reference(root: Path, manifest: Manifest) -> dict[str, Array]:
    assert manifest.reference is not None
    relative = manifest.reference.file
    path = _resolve(root, relative, "reference sample")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, EOFError) as exc:
        raise ReferenceProfileError(
            f"reference sample {relative}: cannot read as an .npz archive of arrays: {exc}"
        ) from exc
    inputs = {
        k.removeprefix(INPUT_PREFIX): v for k, v in arrays.items() if k.startswith(INPUT_PREFIX)
    }
    problems = [
        f"input {s.name!r} has no array 'input.{s.name}'"
        for s in manifest.inputs
        if s.name not in inputs
    ]
    for spec in manifest.inputs:
        if spec.name in inputs:
            problems += tensor_problems(f"input {spec.name!r}", inputs[spec.name], spec)
    if problems:
        raise ReferenceProfileError(
            f"reference sample {relative} does not fit the input schema:\n  "
            + "\n  ".join(problems),
            details={"problems": problems},
        )
    return {spec.name: inputs[spec.name] for spec in manifest.inputs}
