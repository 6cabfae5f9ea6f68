"""``edgefleet repo ...``: the signed TUF repository of model targets."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer

from edgefleet.cli.model import registry
from edgefleet.cli.output import CliTable, console, json_option, print_json
from edgefleet.config import load_settings

if TYPE_CHECKING:
    from edgefleet.registry.service import RegistryService
    from edgefleet.signing.publish import Publisher

app = typer.Typer(help="Publish, revoke and refresh signed model targets.", no_args_is_help=True)


@contextmanager
def publisher() -> Iterator[tuple[RegistryService, Publisher]]:
    """The local registry and a publisher into the local TUF repository."""
    from edgefleet.signing.publish import Publisher, open_repository

    repository = open_repository(load_settings())
    with registry() as service:
        yield service, Publisher(repository, service.artifacts)


@app.command()
def publish(
    name: Annotated[str | None, typer.Argument(help="Only this model.")] = None,
    version: Annotated[str | None, typer.Argument(help="Only this version.")] = None,
    as_json: Annotated[bool, json_option()] = False,
) -> None:
    """Sign every registered version that is not yet published (needs the targets key)."""
    with publisher() as (service, signer):
        if name and version:
            versions = [service.get(name, version)]
        else:
            versions = service.list_versions(model=name)
        publications = [signer.publish(v) for v in versions]
    if as_json:
        print_json(
            {
                "published": [
                    {
                        "model": p.model,
                        "version": p.version,
                        "release": p.release,
                        "new": p.newly_published,
                        "targets": list(p.targets),
                    }
                    for p in publications
                ]
            }
        )
        return
    for p in publications:
        state = "signed" if p.newly_published else "already signed"
        console.print(f"{p.model} {p.version}: {state}, release {p.release}", highlight=False)
    if not publications:
        console.print("nothing registered to publish")


@app.command()
def revoke(
    name: Annotated[str, typer.Argument(help="Model name.")],
    version: Annotated[str, typer.Argument(help="Version to revoke.")],
) -> None:
    """Sign a policy that makes every device refuse this version (needs the targets key)."""
    from edgefleet.registry.semver import parse_version

    canonical = str(parse_version(version))
    with publisher() as (_, signer):
        policy = signer.revoke(name, canonical)
    console.print(f"{name}: revoked versions now {', '.join(policy.revoked)}", highlight=False)


@app.command()
def floor(
    name: Annotated[str, typer.Argument(help="Model name.")],
    release: Annotated[int, typer.Argument(help="Lowest release devices may install.")],
) -> None:
    """Sign a release floor: devices refuse releases below it (needs the targets key)."""
    with publisher() as (_, signer):
        policy = signer.set_floor(name, release)
    console.print(f"{name}: release floor now {policy.min_release}", highlight=False)


@app.command()
def refresh(
    force: Annotated[bool, typer.Option(help="Re-sign even if not close to expiry.")] = False,
) -> None:
    """Re-sign snapshot and timestamp with the online keys before they expire."""
    from edgefleet.signing.publish import open_repository

    roles = open_repository(load_settings()).refresh(force=force)
    console.print(f"re-signed: {', '.join(roles)}" if roles else "nothing close to expiry")


@app.command()
def status(as_json: Annotated[bool, json_option()] = False) -> None:
    """Metadata versions and expiry dates, and how targets are laid out."""
    from edgefleet.signing.publish import open_repository

    repository = open_repository(load_settings())
    expiries = repository.expiries()
    bins = repository.bins()
    targets = repository.all_targets()
    now = datetime.now(UTC)
    summary = {
        "root_version": repository.root().signed.version,
        "targets": len(targets),
        "hashed_bins": bins.number_of_bins if bins else 0,
        "expires": {role: when.isoformat() for role, when in expiries.items()},
    }
    if as_json:
        print_json(summary)
        return
    table = CliTable("role", "expires", "in", ids={"role"})
    for role, when in expiries.items():
        left = when - now
        table.add_row(role, when.isoformat(), f"{left.days} d {left.seconds // 3600} h")
    console.print(table)
    layout = f"{bins.number_of_bins} hashed bins" if bins else "targets.json"
    console.print(f"root v{summary['root_version']}, {len(targets)} targets in {layout}")
