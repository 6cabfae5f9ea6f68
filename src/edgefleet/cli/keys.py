"""``edgefleet keys ...``: TUF role keys and the repository's root of trust."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from edgefleet.cli.output import CliTable, console, json_option, print_json
from edgefleet.config import load_settings

app = typer.Typer(help="TUF role keys: create, rotate, inspect.", no_args_is_help=True)


@app.command()
def init(
    root_keys: Annotated[int, typer.Option(min=1, help="Number of root keys.")] = 1,
    root_threshold: Annotated[int, typer.Option(min=1, help="Root signatures required.")] = 1,
    targets_keys: Annotated[int, typer.Option(min=1, help="Number of targets keys.")] = 1,
    targets_threshold: Annotated[int, typer.Option(min=1, help="Targets signatures required.")] = 1,
    as_json: Annotated[bool, json_option()] = False,
) -> None:
    """Create ed25519 keys for every role and version 1 of the repository's metadata."""
    from edgefleet.signing.keys import OFFLINE_ROLES, Keyring
    from edgefleet.signing.publish import open_repository

    settings = load_settings()
    if root_threshold > root_keys or targets_threshold > targets_keys:
        from edgefleet.errors import ConfigError

        raise ConfigError("a threshold cannot exceed the number of keys of its role")
    keyring = Keyring.generate(settings.home / "keys", {"root": root_keys, "targets": targets_keys})
    repository = open_repository(settings)
    root = repository.initialise({"root": root_threshold, "targets": targets_threshold})
    roles: dict[str, dict[str, Any]] = {
        role: {
            "threshold": root.signed.roles[role].threshold,
            "offline": role in OFFLINE_ROLES,
            "keys": [
                {"keyid": r.keyid, "uri": r.uri, "file": str(keyring.file_of(r))} for r in records
            ],
        }
        for role, records in keyring.records.items()
    }
    if as_json:
        print_json(
            {
                "keys_dir": str(keyring.keys_dir),
                "metadata_dir": str(repository.metadata_dir),
                "root_version": root.signed.version,
                "roles": roles,
            }
        )
        return
    table = CliTable("role", "threshold", "key id", "private key", "keep", ids={"key id"})
    for role, info in roles.items():
        for key in info["keys"]:
            table.add_row(
                role,
                str(info["threshold"]),
                key["keyid"],
                key["file"],
                "[bold yellow]OFFLINE[/]" if info["offline"] else "online (server)",
            )
    console.print(table)
    console.print(
        f"root metadata v1 written to {repository.metadata_dir}; devices pin it at enrollment.\n"
        "Move the root and targets private keys to offline storage (an encrypted USB drive, "
        "an HSM) and point their URIs in signers.json there; while the targets key stays on "
        "this machine, registering a model signs it at once. See docs/security.md.",
        highlight=False,
    )


@app.command()
def rotate(
    role: Annotated[str, typer.Argument(help="root, targets, snapshot or timestamp.")],
    keys: Annotated[int, typer.Option(min=1, help="Number of new keys.")] = 1,
    threshold: Annotated[int, typer.Option(min=1, help="Signatures required.")] = 1,
) -> None:
    """Replace a role's keys: writes root N+1 signed by the old root keys (and the new
    ones, for a root rotation), re-signs what the role signs, retires the old keys."""
    from edgefleet.errors import ConfigError
    from edgefleet.signing.keys import ROLES
    from edgefleet.signing.publish import open_repository

    if role not in ROLES:
        raise ConfigError(f"unknown role {role!r} (roles: {', '.join(ROLES)})")
    repository = open_repository(load_settings())
    new_records = repository.keyring.new_keys(role, keys)
    version = repository.rotate(role, new_records, threshold)
    console.print(
        f"rotated {role}: {keys} new key(s), threshold {threshold}; root is now version "
        f"{version}. Old private keys moved to {repository.keyring.keys_dir / 'retired'}.",
        highlight=False,
    )
