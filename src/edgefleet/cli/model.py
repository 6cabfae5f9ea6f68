"""``edgefleet model ...``: register, list, show, compare, promote model versions."""

from __future__ import annotations

import getpass
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from edgefleet.cli.output import REMOTE, CliTable, console, json_option, print_json, progress_bars
from edgefleet.cli.remote import RemoteRegistry
from edgefleet.config import load_settings
from edgefleet.progress import Progress
from edgefleet.registry.compare import Comparison, Row
from edgefleet.registry.domain import ModelVersion, StageChange
from edgefleet.registry.service import RegistryService

app = typer.Typer(help="Register, inspect and promote model versions.", no_args_is_help=True)


@contextmanager
def registry() -> Iterator[RegistryService]:
    """The registry of the local store (``EDGEFLEET_HOME`` / ``EDGEFLEET_DATABASE_URL``)."""
    from edgefleet.errors import MissingDependencyError

    try:
        from edgefleet.store.bootstrap import open_registry
    except ImportError as exc:
        raise MissingDependencyError.for_extra("server", exc.name or "sqlalchemy") from exc
    with open_registry(load_settings()) as service:
        yield service


class LocalRegistry:
    """The local store with the same operations as ``RemoteRegistry``."""

    def __init__(self, service: RegistryService) -> None:
        self.service = service

    def register(
        self, path: Path, *, author: str | None, progress: Progress
    ) -> tuple[ModelVersion, str, dict[str, Any] | None]:
        from edgefleet.signing.publish import publish_if_possible

        version = self.service.register(path, author=author, progress=progress)
        outcome = publish_if_possible(load_settings(), self.service.artifacts, version)
        published = outcome.publication
        signed = (
            {"release": published.release, "targets": list(published.targets)}
            if published
            else None
        )
        return version, outcome.note, signed

    def list_versions(
        self, *, model: str | None = None, stage: str | None = None, tag: str | None = None
    ) -> list[dict[str, Any]]:
        return [v.summary() for v in self.service.list_versions(model=model, stage=stage, tag=tag)]

    def get(self, model: str, version: str) -> ModelVersion:
        return self.service.get(model, version)

    def latest(self, model: str, stage: str | None = None) -> dict[str, Any]:
        return self.service.latest(model, stage).summary()

    def compare(self, model: str, a: str, b: str) -> Comparison:
        return self.service.compare(model, a, b)

    def promote(
        self,
        model: str,
        version: str,
        stage: str,
        *,
        reason: str,
        archive_previous: bool,
        actor: str | None = None,
    ) -> list[StageChange]:
        return self.service.promote(
            model,
            version,
            stage,
            actor=actor or _user(),
            reason=reason,
            archive_previous=archive_previous,
        )

    def history(self, model: str, version: str | None = None) -> list[StageChange]:
        return self.service.history(model, version)


@contextmanager
def registry_client() -> Iterator[LocalRegistry | RemoteRegistry]:
    """The server's registry in remote mode (``--server`` / ``EDGEFLEET_SERVER``), else
    the local store's."""
    settings = load_settings()
    server = REMOTE.server or settings.server
    if server:
        remote = RemoteRegistry(server, REMOTE.token or settings.token)
        try:
            yield remote
        finally:
            remote.close()
        return
    with registry() as service:
        yield LocalRegistry(service)


def summary(version: ModelVersion) -> dict[str, Any]:
    """The ``model list --json`` form of a version (documented in docs/cli.md)."""
    return version.summary()


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


@app.command()
def register(
    path: Annotated[Path, typer.Argument(help="Bundle directory holding edgefleet.yaml.")],
    author: Annotated[
        str | None, typer.Option(help="Who registers it (default: manifest author, then $USER).")
    ] = None,
    as_json: Annotated[bool, json_option()] = False,
) -> None:
    """Register a bundle as a new, immutable candidate version (and sign it if the
    targets key is at hand)."""
    with registry_client() as client, progress_bars() as progress:
        version, note, published = client.register(path, author=author, progress=progress)
    if as_json:
        print_json({**version.model_dump(mode="json"), "published": published, "note": note})
        return
    console.print(
        f"registered [bold]{version.model} {version.version}[/] as {version.stage.value} "
        f"({len(version.variants)} variants, {version.golden.count} golden samples); {note}"
    )
    render_variants(version)


@app.command("list")
def list_versions(
    name: Annotated[str | None, typer.Option("--name", help="Only this model.")] = None,
    stage: Annotated[str | None, typer.Option(help="Only versions in this stage.")] = None,
    tag: Annotated[str | None, typer.Option(help="Only versions with this tag.")] = None,
    as_json: Annotated[bool, json_option()] = False,
) -> None:
    """List registered versions (newest last within each model)."""
    with registry_client() as client:
        versions = client.list_versions(model=name, stage=stage, tag=tag)
    if as_json:
        print_json({"versions": versions})
        return
    if not versions:
        console.print("no versions registered" + (" match" if name or stage or tag else ""))
        return
    table = CliTable(
        "model",
        "version",
        "stage",
        "variants",
        "accuracy",
        "tags",
        "created",
        "author",
        ids={"model", "version"},
    )
    for v in versions:
        accuracy = v["metrics"].get("accuracy")
        table.add_row(
            v["model"],
            v["version"],
            v["stage"],
            ", ".join(x["name"] for x in v["variants"]),
            "" if accuracy is None else f"{accuracy:.4f}",
            ", ".join(v["tags"]),
            v["created_at"][:16].replace("T", " "),
            v["author"],
        )
    console.print(table)


@app.command()
def show(
    name: Annotated[str, typer.Argument(help="Model name.")],
    version: Annotated[str, typer.Argument(help="Semantic version, e.g. 1.1.0.")],
    as_json: Annotated[bool, json_option()] = False,
) -> None:
    """Show everything registered about one version."""
    with registry_client() as client:
        found = client.get(name, version)
    if as_json:
        print_json(found)
        return
    render_version(found)


@app.command()
def latest(
    name: Annotated[str, typer.Argument(help="Model name.")],
    stage: Annotated[str | None, typer.Option(help="Only versions in this stage.")] = None,
    as_json: Annotated[bool, json_option()] = False,
) -> None:
    """The highest version of a model by semantic-version precedence."""
    with registry_client() as client:
        found = client.latest(name, stage)
    if as_json:
        print_json(found)
        return
    console.print(f"{found['model']} {found['version']} ({found['stage']})", highlight=False)


@app.command()
def compare(
    name: Annotated[str, typer.Argument(help="Model name.")],
    a: Annotated[str, typer.Argument(help="Baseline version.")],
    b: Annotated[str, typer.Argument(help="Version compared with the baseline.")],
    as_json: Annotated[bool, json_option()] = False,
) -> None:
    """Compare two versions: metrics, latency and sizes (B relative to A)."""
    with registry_client() as client:
        comparison = client.compare(name, a, b)
    if as_json:
        print_json(comparison)
        return
    render_comparison(comparison)


@app.command()
def promote(
    name: Annotated[str, typer.Argument(help="Model name.")],
    version: Annotated[str, typer.Argument(help="Version to move.")],
    stage: Annotated[str, typer.Option(help="Target stage: candidate, production or archived.")],
    reason: Annotated[str, typer.Option(help="Why (kept in the stage history).")] = "",
    actor: Annotated[
        str | None,
        typer.Option(help="Who, in local mode (default: $USER; remotely: the API key's name)."),
    ] = None,
    keep_production: Annotated[
        bool,
        typer.Option(
            "--keep-production", help="Do not archive the version currently in production."
        ),
    ] = False,
    as_json: Annotated[bool, json_option()] = False,
) -> None:
    """Move a version to another stage; promoting to production archives the previous one."""
    with registry_client() as client:
        changes = client.promote(
            name, version, stage, reason=reason, archive_previous=not keep_production, actor=actor
        )
    if as_json:
        print_json({"changes": [c.model_dump(mode="json") for c in changes]})
        return
    for change in changes:
        console.print(_change_text(change))


@app.command()
def history(
    name: Annotated[str, typer.Argument(help="Model name.")],
    version: Annotated[str | None, typer.Argument(help="Only this version.")] = None,
    as_json: Annotated[bool, json_option()] = False,
) -> None:
    """Who moved which version to which stage, and when."""
    with registry_client() as client:
        changes = client.history(name, version)
    if as_json:
        print_json({"changes": [c.model_dump(mode="json") for c in changes]})
        return
    table = CliTable("when", "version", "from", "to", "who", "reason", ids={"version"})
    for c in changes:
        table.add_row(
            c.at.strftime("%Y-%m-%d %H:%M:%S"),
            c.version,
            c.from_stage.value if c.from_stage else "",
            c.to_stage.value,
            c.actor,
            c.reason,
        )
    console.print(table)


def _change_text(change: StageChange) -> str:
    source = change.from_stage.value if change.from_stage else "new"
    return f"{change.model} {change.version}: {source} -> {change.to_stage.value}"


def render_variants(version: ModelVersion) -> None:
    table = CliTable(
        "variant", "runtime", "precision", "hardware", "size", "sha256", ids={"variant", "sha256"}
    )
    for v in version.variants:
        table.add_row(
            v.name, v.runtime, v.precision, ", ".join(v.hardware), f"{v.size:,} B", v.sha256
        )
    console.print(table)


def render_version(version: ModelVersion) -> None:
    console.print(f"[bold]{version.model} {version.version}[/]  stage: {version.stage.value}")
    fields = {
        "description": version.description,
        "framework": version.framework,
        "author": version.author,
        "created": version.created_at.isoformat(),
        "parent": version.parent or "",
        "data version": version.data_version,
        "code version": version.code_version,
        "tags": ", ".join(version.tags),
        "hardware": ", ".join(version.compatibility.hardware) or "any",
        "firmware": version.compatibility.firmware or "any",
        "groups": ", ".join(version.compatibility.groups) or "any",
        "inputs": "; ".join(f"{t.name} {t.dtype}{list(t.shape)}" for t in version.inputs),
        "outputs": "; ".join(f"{t.name} {t.dtype}{list(t.shape)}" for t in version.outputs),
        "golden samples": f"{version.golden.count} (atol {version.golden.tolerance.atol}, "
        f"rtol {version.golden.tolerance.rtol})",
        "reference profile": (
            f"{version.reference_profile.sample_count} samples"
            if version.reference_profile
            else "none"
        ),
    }
    for key, value in fields.items():
        console.print(f"  {key + ':':<20}{value}", highlight=False, markup=False)
    if version.metrics:
        console.print("  metrics:")
        for key, number in sorted(version.metrics.items()):
            console.print(f"    {key:<18}{number:g}", highlight=False)
    render_variants(version)


def _number(value: float | None, name: str) -> str:
    if value is None:
        return "-"
    if "size" in name:
        return f"{value:,.0f}"
    return f"{value:.4g}"


def _verdict(row: Row, comparison: Comparison) -> str:
    """The "better" cell: the better version, "same", or why there is no verdict."""
    if row.better is not None:
        return {"a": comparison.a, "b": comparison.b}.get(row.better, row.better)
    if row.a is None or row.b is None:
        return ""
    return "no direction declared"


def render_comparison(comparison: Comparison) -> None:
    table = CliTable(
        "kind",
        "quantity",
        comparison.a,
        comparison.b,
        "delta",
        "change",
        "better",
        title=f"{comparison.model}: {comparison.b} vs {comparison.a}",
    )
    for row in comparison.rows:
        change = "" if row.relative is None else f"{row.relative:+.1%}"
        delta = "" if row.delta is None else f"{row.delta:+.4g}"
        better = _verdict(row, comparison)
        table.add_row(
            row.kind,
            row.name,
            _number(row.a, row.name),
            _number(row.b, row.name),
            delta,
            change,
            better,
        )
    console.print(table)
