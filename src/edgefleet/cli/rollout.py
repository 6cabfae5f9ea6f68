"""``edgefleet rollout ...``: release a version wave by wave, watch it, steer it.

Works on the local store or, with ``--server``, through a server's API. The controller
that moves rollouts on runs inside ``edgefleet server``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from pydantic_core import to_jsonable_python
from rich.console import Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TextColumn
from rich.text import Text

from edgefleet.cli.devices import LocalFleet, local_or_remote
from edgefleet.cli.output import CliTable, console, json_option, print_json
from edgefleet.cli.remote import RemoteRegistry
from edgefleet.errors import ConfigError
from edgefleet.rollout.lifecycle import TERMINAL_STATES, RolloutState
from edgefleet.rollout.status import FINAL_STATUSES, DeviceStatus

app = typer.Typer(help="Roll a model version out in gated waves.", no_args_is_help=True)

#: Where a watch stops: a terminal state, or paused (only an operator moves it on).
WATCH_ENDS = TERMINAL_STATES | {RolloutState.PAUSED}


class LocalRollouts(LocalFleet):
    """Rollout operations on the local store, as the local operator."""

    def call(self, action: str, rollout_id: str | None = None, **kwargs: Any) -> Any:
        service = self.ctx.rollouts
        if action == "create":
            return service.create(self.operator, kwargs["spec"], start=kwargs["start"])
        if action == "list":
            return service.list_rollouts(kwargs.get("limit", 100))
        if action == "show":
            return service.show(rollout_id or "")
        if action == "log":
            return service.log(rollout_id or "", kwargs.get("after", 0))
        if action == "abort":
            return service.abort(self.operator, rollout_id or "", revert=kwargs["revert"])
        if action == "pause":
            return service.pause(self.operator, rollout_id or "", kwargs.get("reason", ""))
        return getattr(service, action)(self.operator, rollout_id)


class RemoteRollouts:
    def __init__(self, server: str, token: str | None) -> None:
        self.remote = RemoteRegistry(server, token)

    def close(self) -> None:
        self.remote.close()

    def call(self, action: str, rollout_id: str | None = None, **kwargs: Any) -> Any:
        base = "/api/v1/rollouts"
        if action == "create":
            params = {"start": str(kwargs["start"]).lower()}
            return self.remote.call("POST", base, json=kwargs["spec"], params=params)
        if action == "list":
            return self.remote.call("GET", base, params={"limit": kwargs.get("limit", 100)})
        if action == "show":
            return self.remote.call("GET", f"{base}/{rollout_id}")
        if action == "log":
            params = {"after": kwargs.get("after", 0)}
            return self.remote.call("GET", f"{base}/{rollout_id}/log", params=params)
        if action == "abort":
            body = {"revert": kwargs["revert"]}
            return self.remote.call("POST", f"{base}/{rollout_id}/abort", json=body)
        if action == "pause":
            body = {"reason": kwargs.get("reason", "")}
            return self.remote.call("POST", f"{base}/{rollout_id}/pause", json=body)
        return self.remote.call("POST", f"{base}/{rollout_id}/{action}")


@contextmanager
def rollouts() -> Iterator[LocalRollouts | RemoteRollouts]:
    with local_or_remote(LocalRollouts, RemoteRollouts) as client:
        yield client


def _jsonable(value: Any) -> Any:
    return to_jsonable_python(value)


@app.command()
def create(
    file: Annotated[Path, typer.Argument(help="Rollout definition (YAML or JSON).")],
    draft: Annotated[bool, typer.Option("--draft", help="Create without starting.")] = False,
    as_json: Annotated[bool, json_option()] = False,
) -> None:
    """Create a rollout from a definition file (docs/rollouts.md) and start it."""
    try:
        spec = yaml.safe_load(file.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read rollout definition {file}: {exc}") from exc
    if not isinstance(spec, dict):
        raise ConfigError(f"rollout definition {file} must be a mapping of settings")
    with rollouts() as client:
        result = _jsonable(client.call("create", spec=spec, start=not draft))
    if as_json:
        print_json(result)
        return
    console.print(
        f"rollout {result['id']}: {result['model']} {result['version']} to "
        f"'{result['target']}', {result['state']}",
        highlight=False,
        markup=False,
    )
    # The canary ``detect`` asked for, as estimated from the baseline's spread.
    for sizing in result.get("detect") or []:
        needed = sizing["devices"]
        spread = sizing["spread"]
        console.print(
            f"  detect {sizing['metric']} x{sizing['ratio']:g} (gate max_ratio "
            f"{sizing['limit']:g}): "
            + (f"{needed} candidate devices" if needed is not None else "no estimate")
            + f" (baseline: {sizing['baseline_devices']} devices"
            + (f", spread {spread:.1%})" if spread is not None else ")")
            + (f"; {sizing['note']}" if sizing["note"] else ""),
            highlight=False,
            markup=False,
        )
    if result.get("first_wave"):
        console.print(f"  wave 1: {result['first_wave']}", highlight=False, markup=False)


@app.command("list")
def list_rollouts(
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
    as_json: Annotated[bool, json_option()] = False,
) -> None:
    """Rollouts, newest first."""
    with rollouts() as client:
        result = _jsonable(client.call("list", limit=limit))
    if as_json:
        print_json(result)
        return
    table = CliTable(
        "id",
        "name",
        "version",
        "state",
        "wave",
        "phase",
        "devices",
        "created",
        ids={"id", "version"},
    )
    for r in result:
        table.add_row(
            r["id"],
            r["name"],
            r["version"],
            r["state"],
            f"{r['wave'] + 1}/{len(r['waves'])}",
            r["phase"],
            str(sum(r["devices"].values())),
            str(r["created_at"])[:19].replace("T", " "),
        )
    console.print(table)


def _render(r: dict[str, Any]) -> Group:
    head = Text.assemble(
        (r["id"], "bold"),
        f" {r['model']} {r['version']} → '{r['target']}': ",
        (r["state"], "bold"),
        f" (wave {r['wave'] + 1}/{len(r['waves'])}, {r['phase']})",
        f" — {r['reason']}" if r.get("reason") else "",
        # Wrapped, never cut: a live display crops the lines a soft-wrapping console
        # would leave to the terminal.
        no_wrap=False,
        overflow="fold",
    )
    bars = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[detail]}"),
        expand=False,
    )
    for wave in r["waves"]:
        devices = wave["devices"]
        total = sum(devices.values())
        done = sum(devices.get(s, 0) for s in FINAL_STATUSES)
        label = f"{wave['percent']}%" if wave.get("percent") is not None else wave.get("cohort")
        if wave.get("percent_now") not in (None, wave.get("percent")):
            label += f", extended to {wave['percent_now']:g}%"
        detail = "  ".join(f"{s} {devices[s]}" for s in DeviceStatus if devices.get(s))
        bars.add_task(
            f"wave {wave['index'] + 1} ({label})",
            total=max(total, 1),
            completed=done,
            detail=detail,
        )
    gates = CliTable(
        "gate",
        "verdict",
        "estimate",
        "interval",
        "limit",
        "detectable",
        "n",
        ids={"gate"},
        box=None,
    )
    for g in r.get("gates") or []:
        n = g["numbers"]
        low, high = n.get("low"), n.get("high")
        interval = f"[{low:.4g}, {high:.4g}]" if low is not None and high is not None else ""
        # (inference_cpu: the median device's median pair ratio, shown as a ratio)
        estimate = n.get("estimate", n.get("max_change"))
        if estimate is None and isinstance(n.get("ratio"), int | float):
            estimate = f"x{n['ratio']:.3g}"
        size = n.get("finished", n.get("trials", n.get("devices", n.get("predictions", ""))))
        # The smallest effect this look could have caught (a ratio for ratio limits).
        mde = n.get("mde_ratio", n.get("mde"))
        verdict = g["verdict"] + (f" ({n['segment']})" if n.get("segment") else "")
        gates.add_row(
            g["gate"] + (" (dry run)" if g["dry_run"] else ""),
            verdict,
            f"{estimate:.4g}" if isinstance(estimate, int | float) else (estimate or ""),
            interval,
            ", ".join(f"{k} {v}" for k, v in n.get("limit", {}).items()),
            (f"x{mde:.3g}" if "mde_ratio" in n else f"{mde:.4g}")
            if isinstance(mde, int | float)
            else "",
            str(size),
        )
    parts: list[Any] = [head, bars]
    if r.get("gates"):
        parts.append(gates)
    # What an inconclusive gate waits for, where the gate says (a segment beyond its
    # limit, not yet significant).
    waiting = [
        f"waiting for {g['gate']}: {g['numbers']['waiting_for']}"
        for g in r.get("gates") or []
        if g["verdict"] == "inconclusive" and g["numbers"].get("waiting_for")
    ]
    if waiting:
        parts.append(Text("\n".join(waiting)))
    return Group(*parts)


def _progress_line(r: dict[str, Any]) -> str:
    """One line of a watched rollout: state, wave, phase and its devices per status."""
    devices = r.get("devices") or {}
    counts = ", ".join(f"{s} {devices[s]}" for s in DeviceStatus if devices.get(s))
    return (
        f"{r['state']} (wave {r['wave'] + 1}/{len(r['waves'])}, {r['phase']})"
        + (f" — {r['reason']}" if r.get("reason") else "")
        + (f": {counts}" if counts else "")
    )


@app.command()
def status(
    rollout_id: Annotated[str, typer.Argument(help="Rollout id.")],
    watch: Annotated[
        bool, typer.Option("--watch", "-w", help="Refresh until the rollout ends.")
    ] = False,
    interval: Annotated[float, typer.Option(min=0.2, help="Refresh period, seconds.")] = 2.0,
    as_json: Annotated[bool, json_option()] = False,
) -> None:
    """A rollout's waves (devices per status), gate verdicts with their numbers.

    With ``--watch`` on a terminal the view is redrawn until the rollout is succeeded,
    aborted, failed or paused (then it says how to go on); elsewhere (a pipe, a log
    file) one line is printed whenever the state, wave, phase or device counts change,
    then the final view.
    """
    with rollouts() as client:
        result = _jsonable(client.call("show", rollout_id))
        if as_json:
            print_json(result)
            return
        if not watch:
            console.print(_render(result))
            return

        def refreshed() -> dict[str, Any]:
            time.sleep(interval)
            view: dict[str, Any] = _jsonable(client.call("show", rollout_id))
            return view

        if console.is_terminal:
            with Live(_render(result), console=console, refresh_per_second=4) as live:
                while result["state"] not in WATCH_ENDS:
                    result = refreshed()
                    live.update(_render(result))
        else:
            # Not a terminal: rich's Live would print only its last frame, without a
            # newline.
            printed = ""
            while True:
                line = _progress_line(result)
                if line != printed:
                    stamp = time.strftime("%H:%M:%S")
                    console.print(f"{stamp} {line}", highlight=False, markup=False)
                    printed = line
                if result["state"] in WATCH_ENDS:
                    break
                result = refreshed()
            console.print(_render(result))
        if result["state"] == "paused":
            console.print(
                f"paused: go on with `edgefleet rollout resume {rollout_id}` (or `approve`), "
                f"or `edgefleet rollout abort {rollout_id}` to send its devices back",
                highlight=False,
                markup=False,
            )


def _simple(action: str, help_text: str) -> None:
    def command(
        rollout_id: Annotated[str, typer.Argument(help="Rollout id.")],
        as_json: Annotated[bool, json_option()] = False,
    ) -> None:
        with rollouts() as client:
            result = _jsonable(client.call(action, rollout_id))
        if as_json:
            print_json(result)
            return
        console.print(
            f"rollout {result['id']}: {result['state']} (wave {result['wave'] + 1}, "
            f"{result['phase']})",
            highlight=False,
        )

    command.__doc__ = help_text
    app.command(action)(command)


_simple("start", "Start a draft rollout.")
_simple("resume", "Resume a paused rollout (the current wave bakes and is analysed afresh).")
_simple("approve", "Approve a manual wave, or go on past a wave paused as inconclusive.")


@app.command()
def pause(
    rollout_id: Annotated[str, typer.Argument(help="Rollout id.")],
    reason: Annotated[str, typer.Option(help="Why (kept in the decision log).")] = "",
) -> None:
    """Pause a rollout: no more devices are assigned until it is resumed."""
    with rollouts() as client:
        result = _jsonable(client.call("pause", rollout_id, reason=reason))
    console.print(f"rollout {result['id']}: {result['state']}", highlight=False)


@app.command()
def abort(
    rollout_id: Annotated[str, typer.Argument(help="Rollout id.")],
    keep: Annotated[
        bool, typer.Option("--keep/--revert", help="Leave devices as they are, or revert them.")
    ] = False,
) -> None:
    """Abort a rollout; by default every device it touched goes back to its previous
    version (switching slots locally; offline devices on their next check-in)."""
    with rollouts() as client:
        result = _jsonable(client.call("abort", rollout_id, revert=not keep))
    reverted = result["devices"].get("reverted", 0)
    console.print(
        f"rollout {result['id']}: aborted; {reverted} device(s) sent back", highlight=False
    )


@app.command()
def log(
    rollout_id: Annotated[str, typer.Argument(help="Rollout id.")],
    as_json: Annotated[bool, json_option()] = False,
) -> None:
    """The decision log: every controller decision with the numbers it used."""
    with rollouts() as client:
        entries = _jsonable(client.call("log", rollout_id))
    if as_json:
        print_json(entries)
        return
    table = CliTable("at", "actor", "wave", "decision", "reason", "inputs")
    for e in entries:
        details = e["details"]
        summary = ""
        if "gates" in details:
            summary = ", ".join(f"{g['gate']} {g['verdict']}" for g in details["gates"])
        elif "assigned" in details:
            summary = f"{details['assigned']} device(s)"
        table.add_row(
            str(e["at"])[:19].replace("T", " "),
            e["actor"],
            str(e["wave"] + 1),
            e["kind"],
            e["reason"],
            summary,
        )
    console.print(table)
