"""``edgefleet devices ...``: the fleet, filtered by targeting queries.

Works on the local store or, with ``--server``, through a server's operator API.
"""

from __future__ import annotations

import getpass
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, TypeVar

import typer
from pydantic_core import to_jsonable_python

from edgefleet.cli.output import REMOTE, CliTable, console, json_option, print_json
from edgefleet.cli.remote import RemoteRegistry
from edgefleet.config import load_settings

app = typer.Typer(help="List, inspect and target devices.", no_args_is_help=True)
L = TypeVar("L")
R = TypeVar("R")

QUERY_HELP = "Targeting query, e.g. 'region:eu-west AND hw:rev2' or 'firmware>=1.8.0'."


class LocalFleet:
    """Fleet operations on the local store, as the local operator."""

    def __init__(self) -> None:
        from edgefleet.access.service import Operator
        from edgefleet.access.tokens import Role
        from edgefleet.server.context import ServerContext

        self.ctx = ServerContext.open(load_settings())
        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = "unknown"
        self.operator = Operator(key_id="local", name=user, role=Role.ADMIN)

    def close(self) -> None:
        self.ctx.close()

    def list(self, query: str | None, limit: int, offset: int) -> dict[str, Any]:
        total, views = self.ctx.fleet.list_devices(query, limit=limit, offset=offset)
        return {"total": total, "devices": [v.model_dump(mode="json") for v in views]}

    def show(self, device_id: str) -> dict[str, Any]:
        result: dict[str, Any] = to_jsonable_python(self.ctx.fleet.show_device(device_id))
        return result

    def set_desired(
        self, device_id: str | None, query: str | None, model: str | None, version: str | None
    ) -> int:
        return self.ctx.fleet.set_desired(
            self.operator, model=model, version=version, device_id=device_id, query=query
        )

    def set_attributes(self, device_id: str, changes: dict[str, str | None]) -> dict[str, Any]:
        after = self.ctx.fleet.set_attributes(device_id, self.operator, changes)
        group = after.pop("group")
        return {"device_id": device_id, "group": group, "attributes": after}

    def summary(self) -> dict[str, Any]:
        return self.ctx.fleet.summary()


class RemoteFleet:
    """The same operations through a server's operator API."""

    def __init__(self, server: str, token: str | None) -> None:
        self.remote = RemoteRegistry(server, token)

    def close(self) -> None:
        self.remote.close()

    def list(self, query: str | None, limit: int, offset: int) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if query:
            params["query"] = query
        result: dict[str, Any] = self.remote.call("GET", "/api/v1/devices", params=params)
        return result

    def show(self, device_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.remote.call("GET", f"/api/v1/devices/{device_id}")
        return result

    def set_desired(
        self, device_id: str | None, query: str | None, model: str | None, version: str | None
    ) -> int:
        body = {"model": model, "version": version}
        if device_id is not None:
            data = self.remote.call("PUT", f"/api/v1/devices/{device_id}/desired", json=body)
        else:
            data = self.remote.call("POST", "/api/v1/fleet/desired", json={**body, "query": query})
        return int(data["devices"])

    def set_attributes(self, device_id: str, changes: dict[str, str | None]) -> dict[str, Any]:
        result: dict[str, Any] = self.remote.call(
            "PATCH", f"/api/v1/devices/{device_id}/attributes", json={"attributes": changes}
        )
        return result

    def summary(self) -> dict[str, Any]:
        result: dict[str, Any] = self.remote.call("GET", "/api/v1/fleet/summary")
        return result


@contextmanager
def fleet() -> Iterator[LocalFleet | RemoteFleet]:
    with local_or_remote(LocalFleet, RemoteFleet) as client:
        yield client


@contextmanager
def local_or_remote(
    local: Callable[[], L], remote: Callable[[str, str | None], R]
) -> Iterator[L | R]:
    """The server's API when ``--server`` (or the ``server`` setting) names one, else the
    local store; closed on the way out."""
    settings = load_settings()
    server = REMOTE.server or settings.server
    client: L | R = remote(server, REMOTE.token or settings.token) if server else local()
    try:
        yield client
    finally:
        client.close()  # type: ignore[union-attr]


@app.command("list")
def list_devices(
    query: Annotated[str | None, typer.Option("--query", "-q", help=QUERY_HELP)] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
    offset: Annotated[int, typer.Option(min=0)] = 0,
    as_json: Annotated[bool, json_option()] = False,
) -> None:
    """Devices matching a targeting query (all devices without one)."""
    with fleet() as client:
        result = client.list(query, limit, offset)
    if as_json:
        print_json(result)
        return
    table = CliTable(
        "device", "group", "hw", "firmware", "model", "state", "online", "last seen", ids={"device"}
    )
    for d in result["devices"]:
        model = f"{d['model']}@{d['version']}" if d.get("model") else ""
        table.add_row(
            d["device_id"],
            d.get("group") or "",
            d.get("hardware") or "",
            d.get("firmware") or "",
            model,
            d.get("agent_state") or "",
            "yes" if d["online"] else "no",
            (d.get("last_seen_at") or "")[:19].replace("T", " "),
        )
    console.print(table)
    console.print(f"{len(result['devices'])} of {result['total']} devices", highlight=False)


@app.command()
def show(
    device_id: Annotated[str, typer.Argument(help="Device id.")],
    as_json: Annotated[bool, json_option()] = False,
) -> None:
    """One device: twin, recent events, recent telemetry."""
    with fleet() as client:
        result = client.show(device_id)
    if as_json:
        print_json(result)
        return
    device = result["device"]
    for key in (
        "device_id",
        "group",
        "hardware",
        "firmware",
        "agent_state",
        "model",
        "version",
        "online",
        "last_seen_at",
        "desired_etag",
    ):
        console.print(f"  {key + ':':<15}{device.get(key)}", highlight=False, markup=False)
    trial_restarts = (device.get("reported") or {}).get("trial_restarts")
    if trial_restarts is not None:
        # Only while a trial runs: unclean restarts it counted against its limit.
        console.print(f"  trial_restarts: {trial_restarts}", highlight=False, markup=False)
    if result["events"]:
        table = CliTable("seq", "at", "from", "to", "reason")
        for e in result["events"]:
            table.add_row(
                str(e["seq"]),
                str(e["at"])[:19],
                e["from_state"] or "",
                e["to_state"] or "",
                e["reason"],
            )
        console.print(table)


@app.command("set-desired")
def set_desired(
    model: Annotated[str, typer.Argument(help="Model name.")],
    version: Annotated[str, typer.Argument(help="Version (must be signed).")],
    device: Annotated[str | None, typer.Option("--device", help="One device.")] = None,
    query: Annotated[str | None, typer.Option("--query", "-q", help=QUERY_HELP)] = None,
) -> None:
    """Set the desired model of one device or of every device a query selects."""
    from edgefleet.errors import ConfigError

    if (device is None) == (query is None):
        raise ConfigError("give exactly one of --device or --query")
    with fleet() as client:
        changed = client.set_desired(device, query, model, version)
    console.print(f"desired model of {changed} device(s) set to {model} {version}", highlight=False)


@app.command("set-attributes")
def set_attributes(
    device: Annotated[str, typer.Argument(help="Device id.")],
    assignments: Annotated[
        list[str] | None,
        typer.Argument(help="KEY=VALUE to set (values are text), e.g. group=lab cohort=early."),
    ] = None,
    unset: Annotated[
        list[str] | None, typer.Option("--unset", help="An attribute to remove (repeatable).")
    ] = None,
    as_json: Annotated[bool, json_option()] = False,
) -> None:
    """Set or remove a device's attributes as an operator: its group, cohort labels, or a
    corrected hw (a device may not set these itself; see docs/security.md)."""
    changes = attribute_changes(assignments or [], unset or [])
    with fleet() as client:
        result = client.set_attributes(device, changes)
    if as_json:
        print_json(result)
        return
    shown = ", ".join(f"{k}={v}" for k, v in sorted(result["attributes"].items()))
    console.print(
        f"{result['device_id']}: group {result['group'] or '-'}; {shown or 'no attributes'}",
        highlight=False,
    )


def attribute_changes(assignments: list[str], unset: list[str]) -> dict[str, str | None]:
    """``KEY=VALUE`` and ``--unset KEY`` as the API's changes, checked as the API does.

    Raises:
        ConfigError: nothing to change, an assignment without ``=``, a bad key or value.
    """
    from pydantic import TypeAdapter, ValidationError

    from edgefleet.errors import ConfigError
    from edgefleet.fleet.domain import AttributeKey, AttributeValue

    changes: dict[str, str | None] = {}
    for assignment in assignments:
        key, sep, value = assignment.partition("=")
        if not sep:
            raise ConfigError(f"{assignment!r} is not KEY=VALUE (remove with --unset KEY)")
        changes[key] = value
    for key in unset:
        if key in changes:
            raise ConfigError(f"{key!r} is both set and unset")
        changes[key] = None
    if not changes:
        raise ConfigError("nothing to change: give KEY=VALUE or --unset KEY")
    try:
        TypeAdapter(dict[AttributeKey, AttributeValue | None]).validate_python(changes)
    except ValidationError as exc:
        problem = exc.errors()[0]
        where = ".".join(str(p) for p in problem["loc"])
        raise ConfigError(f"attribute {where}: {problem['msg']}") from exc
    return changes


@app.command()
def summary(as_json: Annotated[bool, json_option()] = False) -> None:
    """Device counts by model version and state, online and offline."""
    with fleet() as client:
        result = client.summary()
    if as_json:
        print_json(result)
        return
    console.print(
        f"{result['devices']} devices: {result['online']} online, {result['offline']} offline"
    )
    table = CliTable("model", "version", "devices", ids={"model", "version"})
    for entry in result["by_version"]:
        table.add_row(entry["model"] or "-", entry["version"] or "-", str(entry["devices"]))
    console.print(table)
