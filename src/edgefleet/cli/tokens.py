"""``edgefleet tokens ...``: operator API keys and enrollment tokens (local mode)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer

from edgefleet.cli.output import console, json_option, print_json
from edgefleet.config import load_settings
from edgefleet.errors import ConfigError

app = typer.Typer(
    help="Create operator API keys and device enrollment tokens.", no_args_is_help=True
)

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    """``90s``, ``30m``, ``12h``, ``7d`` as a duration.

    Raises:
        ConfigError: not a number followed by s, m, h or d.
    """
    value, unit = text[:-1], text[-1:].lower()
    if unit not in _UNITS or not value.isdigit() or int(value) <= 0:
        raise ConfigError(f"--expires {text!r} is not a duration like 30m, 12h or 7d")
    return timedelta(seconds=int(value) * _UNITS[unit])


@app.command()
def create(
    kind: Annotated[str, typer.Option(help="api-key or enrollment.")] = "api-key",
    role: Annotated[str, typer.Option(help="viewer, operator or admin (api-key).")] = "viewer",
    name: Annotated[str, typer.Option(help="Who or what the key is for (api-key).")] = "",
    uses: Annotated[
        int | None, typer.Option(min=1, help="How many enrollments (enrollment).")
    ] = None,
    expires: Annotated[
        str | None, typer.Option(help="Lifetime, e.g. 12h or 7d (enrollment).")
    ] = None,
    group: Annotated[str | None, typer.Option(help="Device group of enrolled devices.")] = None,
    as_json: Annotated[bool, json_option()] = False,
) -> None:
    """Create a key or token in the local database; the secret is shown only now."""
    from edgefleet.access.service import AccessService
    from edgefleet.access.tokens import Role
    from edgefleet.store.bootstrap import open_store

    normalized = kind.replace("_", "-").lower()
    if normalized not in ("api-key", "enrollment"):
        raise ConfigError(f"--kind must be api-key or enrollment, not {kind!r}")
    with open_store(load_settings()) as uow_factory:
        access = AccessService(uow_factory)
        if normalized == "api-key":
            try:
                chosen = Role(role.lower())
            except ValueError as exc:
                raise ConfigError(
                    f"--role must be viewer, operator or admin, not {role!r}"
                ) from exc
            secret = access.create_api_key(chosen, name or f"{chosen.value} key", actor=None)
        else:
            expires_at = datetime.now(UTC) + parse_duration(expires) if expires else None
            secret = access.create_enrollment_token(
                uses=uses, expires_at=expires_at, group=group, actor=None
            )
    if as_json:
        print_json({"token": secret.token, "id": secret.token_id, **secret.description})
        return
    console.print(secret.token, highlight=False, soft_wrap=True)
    console.print(f"({normalized} {secret.token_id}; this secret is not shown again)", style="dim")
