"""``edgefleet drift ...``: are a model's inputs and outputs on the fleet still what it was
built for?

Monitors (YAML, docs/drift.md) say what to watch; the server scores each monitor's
tumbling windows and opens alarms; these commands show the latest looks, compute a
report for any window (as a table, JSON or a self-contained HTML page), and acknowledge
or resolve alarms::

    edgefleet drift monitor apply digits-monitor.yaml
    edgefleet drift report digits --last 1d --segment-by site --html drift.html
    edgefleet drift alarms --state open
    edgefleet drift ack da-3f2c9e1a7b04

Works on the local store or, with ``--server``, through a server's API, like
``edgefleet rollout``. Every command takes ``--json``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer
import yaml
from pydantic_core import to_jsonable_python
from rich.console import Console

from edgefleet.cli.devices import LocalFleet, local_or_remote
from edgefleet.cli.output import CliTable, console, err_console, json_option, print_json
from edgefleet.cli.remote import RemoteRegistry
from edgefleet.drift.errors import MonitorError
from edgefleet.drift.html import alarm_statistics, render_html
from edgefleet.errors import ConfigError
from edgefleet.fsutil import write_atomic

app = typer.Typer(
    help="Drift of models' inputs and outputs on the fleet: monitors, reports, alarms.",
    no_args_is_help=True,
)
monitor_app = typer.Typer(help="Drift monitors: what to watch, per model.", no_args_is_help=True)
app.add_typer(monitor_app, name="monitor")

#: Alarm states, in lifecycle order (``--state`` takes one).
ALARM_STATES = ("open", "acknowledged", "resolved")
_DASH = "—"


class LocalDrift(LocalFleet):
    """Drift operations on the local store, as the local operator."""

    def call(self, action: str, **kwargs: Any) -> Any:
        service = self.ctx.drift
        if action == "apply_monitor":
            return service.apply_monitor(kwargs["spec"], self.operator)
        if action == "monitors":
            return service.monitors()
        if action == "monitor":
            return service.monitor(kwargs["model"])
        if action == "status":
            return service.status(kwargs.get("model"))
        if action == "report":
            query = dict(kwargs)
            return service.report(query.pop("model"), query.pop("version"), **query)
        if action == "alarms":
            from edgefleet.drift.alarms import AlarmState

            state = kwargs.get("state")
            return service.alarms(
                state=AlarmState(state) if state else None, model=kwargs.get("model")
            )
        if action == "ack":
            return service.acknowledge(kwargs["alarm_id"], self.operator)
        if action == "resolve":
            return service.resolve(kwargs["alarm_id"], self.operator)
        raise ValueError(f"unknown drift action {action!r}")


class RemoteDrift:
    """The same operations through a server's API (docs/api.md, "Drift")."""

    def __init__(self, server: str, token: str | None) -> None:
        self.remote = RemoteRegistry(server, token)

    def close(self) -> None:
        self.remote.close()

    def call(self, action: str, **kwargs: Any) -> Any:
        base = "/api/v1/drift"
        if action == "apply_monitor":
            spec = kwargs["spec"]
            return self.remote.call("PUT", f"{base}/monitors/{_part(spec['model'])}", json=spec)
        if action == "monitors":
            return self.remote.call("GET", f"{base}/monitors")
        if action == "monitor":
            return self.remote.call("GET", f"{base}/monitors/{_part(kwargs['model'])}")
        if action == "status":
            params = {"model": kwargs["model"]} if kwargs.get("model") else {}
            return self.remote.call("GET", f"{base}/status", params=params)
        if action == "report":
            return self.remote.call("GET", f"{base}/report", params=_report_params(kwargs))
        if action == "alarms":
            params = {k: kwargs[k] for k in ("state", "model") if kwargs.get(k)}
            return self.remote.call("GET", f"{base}/alarms", params=params)
        if action in ("ack", "resolve"):
            alarm = _part(kwargs["alarm_id"])
            return self.remote.call("POST", f"{base}/alarms/{alarm}/{action}")
        raise ValueError(f"unknown drift action {action!r}")


def _part(text: str) -> str:
    """``text`` as one path segment: a name typed on the command line cannot reach
    another route (``../``, ``?``)."""
    return quote(str(text), safe="")


def _report_params(query: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The report's query string: moments in ISO 8601, ``segment_by`` repeated."""
    params: list[tuple[str, str]] = []
    for key, value in query.items():
        if value is None:
            continue
        items = value if isinstance(value, list | tuple) else [value]
        params += [
            (key, item.isoformat() if isinstance(item, datetime) else str(item)) for item in items
        ]
    return params


@contextmanager
def drift_client() -> Iterator[LocalDrift | RemoteDrift]:
    with local_or_remote(LocalDrift, RemoteDrift) as client:
        yield client


def _jsonable(value: Any) -> Any:
    return to_jsonable_python(value)


@contextmanager
def _working(what: str) -> Iterator[None]:
    """A spinner with ``what`` on stderr while a long call runs (a terminal only)."""
    status = err_console.status(what) if err_console.is_terminal else nullcontext()
    with status:
        yield


def _when(value: Any) -> str:
    return str(value)[:19].replace("T", " ") if value else _DASH


def _number(value: Any) -> str:
    return (
        f"{value:.3g}" if isinstance(value, int | float) and not isinstance(value, bool) else _DASH
    )


def _pvalue(value: Any) -> str:
    return (
        f"{value:.2g}" if isinstance(value, int | float) and not isinstance(value, bool) else _DASH
    )


# --- monitors --------------------------------------------------------------------------


def _read_monitor(file: Path) -> dict[str, Any]:
    """The monitor file, parsed and checked here, before anything is sent or stored.

    Raises:
        ConfigError: the file cannot be read or is not a YAML mapping.
        MonitorError: a field is invalid; the message names each one.
    """
    from edgefleet.drift.monitor import load_monitor

    try:
        spec = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read drift monitor {file}: {exc}") from exc
    if not isinstance(spec, dict):
        raise ConfigError(f"drift monitor {file} must be a mapping of settings (docs/drift.md)")
    try:
        load_monitor(spec)
    except MonitorError as exc:
        problems = exc.details.get("problems") or []
        lines = [
            f"{p['field']}: {p['message']}" if p.get("field") else str(p.get("message"))
            for p in problems
        ] or [exc.message]
        raise MonitorError(
            f"drift monitor {file} is invalid; nothing was applied\n" + "\n".join(lines),
            details=exc.details,
        ) from exc
    # As JSON, for the API and the store alike: YAML reads 2026-11-01T00:00:00Z as a
    # datetime, which a JSON body cannot carry.
    jsonable: dict[str, Any] = to_jsonable_python(spec)
    return jsonable


@monitor_app.command("apply")
def monitor_apply(
    file: Annotated[Path, typer.Argument(help="Monitor definition (YAML, docs/drift.md).")],
    as_json: Annotated[bool, json_option()] = False,
) -> None:
    """Check a monitor file and put it in force for its model.

    It becomes the model's next monitor version; applying the monitor in force again
    changes nothing. An invalid file is refused with every problem named by its field,
    and nothing is applied.
    """
    spec = _read_monitor(file)
    with drift_client() as client:
        result = _jsonable(client.call("apply_monitor", spec=spec))
    if as_json:
        print_json(result)
        return
    verb = "applied" if result.get("changed", True) else "unchanged, already in force"
    console.print(f"{_monitor_line(result)}: {verb}", highlight=False, markup=False)


def _monitor_line(view: Mapping[str, Any]) -> str:
    monitor = view.get("monitor") or {}
    version = monitor.get("version") or "the version in production"
    return (
        f"drift monitor {view.get('number', _DASH)} of {view.get('model')} ({version}, "
        f"digest {str(view.get('digest', ''))[:12]}) by {view.get('created_by', _DASH)} "
        f"at {_when(view.get('created_at'))}"
    )


@monitor_app.command("show")
def monitor_show(
    model: Annotated[str, typer.Argument(help="Model name.")],
    as_json: Annotated[bool, json_option()] = False,
) -> None:
    """The monitor in force for a model as YAML (defaults filled in), and its history."""
    with drift_client() as client:
        result = _jsonable(client.call("monitor", model=model))
    if as_json:
        print_json(result)
        return
    console.print(_monitor_line(result), highlight=False, markup=False)
    console.print(
        yaml.safe_dump(result.get("monitor") or {}, sort_keys=False).rstrip(),
        highlight=False,
        markup=False,
    )
    earlier = (result.get("versions") or [])[1:]
    if earlier:
        table = CliTable("monitor", "digest", "applied", "by", ids={"digest"})
        for v in earlier:
            table.add_row(
                str(v.get("number")),
                str(v.get("digest", ""))[:12],
                _when(v.get("created_at")),
                str(v.get("created_by")),
            )
        console.print("earlier versions:")
        console.print(table)


@monitor_app.command("list")
def monitor_list(as_json: Annotated[bool, json_option()] = False) -> None:
    """The monitors in force, one per model."""
    with drift_client() as client:
        result = _jsonable(client.call("monitors"))
    if as_json:
        print_json(result)
        return
    if not result:
        console.print("no drift monitor in force: `edgefleet drift monitor apply FILE`")
        return
    table = CliTable("model", "version", "monitor", "window", "statistics", "segments", "applied")
    for view in result:
        monitor = view.get("monitor") or {}
        table.add_row(
            str(view.get("model")),
            str(monitor.get("version") or "production"),
            str(view.get("number", _DASH)),
            str(monitor.get("window", _DASH)),
            ", ".join(monitor.get("statistics") or {}),
            ", ".join(["all", *(_segment_name(s) for s in monitor.get("segments") or [])]),
            _when(view.get("created_at")),
        )
    console.print(table)


def _segment_name(segment: Any) -> str:
    if isinstance(segment, Mapping):
        return str(segment.get("name") or segment.get("query") or segment.get("attribute"))
    return str(segment)


# --- looks and reports -----------------------------------------------------------------


@app.command()
def status(
    model: Annotated[str | None, typer.Option(help="Only this model's monitor.")] = None,
    as_json: Annotated[bool, json_option()] = False,
) -> None:
    """Each monitor's latest looks: drifted features, thin segments, active alarms.

    One row per model version looked at: its latest window, the features that drifted,
    the segments with insufficient data, and the model's open and acknowledged alarms.
    """
    with drift_client() as client:
        result = _jsonable(client.call("status", model=model))
    if as_json:
        print_json(result)
        return
    if not result:
        console.print("no drift monitor in force: `edgefleet drift monitor apply FILE`")
        return
    table = CliTable(
        "model",
        "version",
        "last look",
        "drifted features",
        "insufficient data",
        "open alarms",
        "acknowledged",
        ids={"version"},
    )
    for entry in result:
        looks = entry.get("looks") or [{}]
        for look in looks:
            drifted = look.get("drifted_features") or []
            thin = [
                name
                for name, state in (look.get("segments") or {}).items()
                if state == "insufficient_data"
            ]
            window = look.get("window") or {}
            table.add_row(
                str(entry.get("model")),
                str(look.get("version") or _DASH),
                f"{_when(window.get('start'))} to {_when(window.get('end'))}"
                if window
                else "no look yet",
                ", ".join(drifted) or (look.get("reason") or "none" if look else _DASH),
                ", ".join(thin) or _DASH,
                str(entry.get("open_alarms", 0)),
                str(entry.get("acknowledged_alarms", 0)),
            )
    console.print(table)


def _moment(option: str, text: str | None) -> datetime | None:
    """An ISO 8601 option as an aware moment (no time zone: UTC).

    Raises:
        ConfigError: not ISO 8601.
    """
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(
            f"{option} {text!r} is not an ISO 8601 time such as 2026-03-04T12:00:00Z"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@app.command()
def report(
    model: Annotated[str, typer.Argument(help="Model name.")],
    version: Annotated[
        str | None,
        typer.Option(help="Model version (default: the monitor's, else the one in production)."),
    ] = None,
    last: Annotated[
        str | None,
        typer.Option(help="The window: the last 30m, 1h, 1d, ... before --end (default: now)."),
    ] = None,
    start: Annotated[str | None, typer.Option(help="Window start, ISO 8601.")] = None,
    end: Annotated[str | None, typer.Option(help="Window end, ISO 8601 (default: now).")] = None,
    segment_by: Annotated[
        list[str] | None,
        typer.Option(
            "--segment-by",
            help="A device attribute to segment by, repeatable: hw, firmware, group, site... "
            "(default: the monitor's segments).",
        ),
    ] = None,
    reference: Annotated[
        str | None,
        typer.Option(
            help="Compare with the version's reference 'profile' or a 'window' "
            "(default: the monitor's reference, else the profile)."
        ),
    ] = None,
    reference_start: Annotated[
        str | None, typer.Option(help="Reference window start, ISO 8601 (--reference window).")
    ] = None,
    reference_end: Annotated[
        str | None, typer.Option(help="Reference window end, ISO 8601 (--reference window).")
    ] = None,
    html: Annotated[
        Path | None, typer.Option("--html", help="Also write the report as one HTML page here.")
    ] = None,
    as_json: Annotated[bool, json_option()] = False,
) -> None:
    """Score a window now, from the fleet's merged summaries, fleet-wide and per segment.

    Every input feature, the confidence and the class mix are scored. The window is
    --start to --end, or the --last duration before --end, or without either the
    monitor's window ending now.
    """
    if last is not None and start is not None:
        raise ConfigError("give the window as --start or as --last, not both")
    if reference is not None and reference not in ("profile", "window"):
        raise ConfigError(f"--reference must be 'profile' or 'window', not {reference!r}")
    query: dict[str, Any] = {
        "model": model,
        "version": version,
        "start": _moment("--start", start),
        "end": _moment("--end", end),
        "last": last,
        "segment_by": segment_by or None,
        "reference": reference,
        "reference_start": _moment("--reference-start", reference_start),
        "reference_end": _moment("--reference-end", reference_end),
    }
    window = (
        f"the last {last}" if last else (f"{start} to {end or 'now'}" if start else "its window")
    )
    with drift_client() as client, _working(f"scoring {model} over {window}..."):
        result = _jsonable(client.call("report", **query))
    if html is not None:
        written = _write_page(result, html)
        where = err_console if as_json else console
        where.print(f"HTML report: {written}", highlight=False, markup=False)
    if as_json:
        print_json(result)
        return
    render_report(result, console)


def _write_page(result: Mapping[str, Any], path: Path) -> Path:
    """The page written atomically (its folder made); raises ConfigError when it cannot."""
    target = path.expanduser().resolve()
    page = render_html(result)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(target, page.encode("utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot write the HTML report to {target}: {exc}") from exc
    return target


def render_report(result: Mapping[str, Any], out: Console) -> None:
    """A report on the terminal: what was compared, the segments, the drifted scores."""
    window = result.get("window") or {}
    ref = result.get("reference") or {}
    against = (
        f"the window {_when(ref.get('start'))} to {_when(ref.get('end'))}"
        if ref.get("kind") == "window"
        else "the reference profile"
    )
    out.print(
        f"{result.get('model')} {result.get('version')}: {_when(window.get('start'))} to "
        f"{_when(window.get('end'))} UTC against {against}",
        highlight=False,
        markup=False,
    )
    segments = CliTable("segment", "devices", "rows", "phi", "status", ids={"segment"})
    for s in result.get("segments") or []:
        state = "insufficient data" if s.get("status") == "insufficient_data" else str(s["status"])
        if s.get("reason"):
            state += f": {s['reason']}"
        segments.add_row(
            str(s["segment"]),
            _count(s.get("devices")),
            _count(s.get("rows")),
            _number(s.get("phi")),
            state,
        )
    out.print(segments)
    drifted = [s for s in result.get("scores") or [] if s.get("drifted")]
    if drifted:
        table = CliTable(
            "segment",
            "feature",
            "statistic",
            "value",
            "threshold",
            "p-value",
            "BH cut",
            ids={"segment", "feature"},
        )
        for s in drifted:
            table.add_row(
                str(s["segment"]),
                str(s["feature"]),
                str(s["statistic"]),
                ("≈" if s.get("approximate") else "") + _number(s.get("value")),
                _number(s.get("threshold")),
                _pvalue(s.get("p_value")),
                _pvalue(s.get("bh_cut")),
            )
        out.print(table)
    features = result.get("drifted_features") or []
    scored = len({s["feature"] for s in result.get("scores") or []})
    thin = sum(1 for s in result.get("segments") or [] if s.get("status") == "insufficient_data")
    if features:
        verdict = f"drifted: {', '.join(features)} ({len(features)} of {scored} features)"
    elif scored:
        verdict = f"no drift: none of {scored} features drifted in a segment with enough data"
    else:
        verdict = "nothing scored: no segment has enough data"
    if thin:
        verdict += f"; {thin} segment(s) with insufficient data were not scored"
    out.print(verdict, highlight=False, markup=False)
    skipped = {k: v for k, v in (result.get("skipped") or {}).items() if v}
    if skipped:
        out.print(
            "skipped, never scored: " + ", ".join(f"{k} {v}" for k, v in skipped.items()),
            highlight=False,
            markup=False,
        )


def _count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else _DASH


# --- alarms ----------------------------------------------------------------------------


@app.command()
def alarms(
    state: Annotated[
        str | None, typer.Option(help="open, acknowledged or resolved (default: all).")
    ] = None,
    model: Annotated[str | None, typer.Option(help="Only this model's alarms.")] = None,
    as_json: Annotated[bool, json_option()] = False,
) -> None:
    """Alarms, one per model version, segment and feature, with the numbers they fired on."""
    if state is not None and state not in ALARM_STATES:
        raise ConfigError(f"--state must be one of {', '.join(ALARM_STATES)}, not {state!r}")
    with drift_client() as client:
        result = _jsonable(client.call("alarms", state=state, model=model))
    if as_json:
        print_json(result)
        return
    entries: Sequence[Mapping[str, Any]] = result
    if not entries:
        console.print(f"no {state + ' ' if state else ''}drift alarm", highlight=False)
        return
    table = CliTable(
        "id",
        "state",
        "model",
        "segment",
        "feature",
        "opened",
        "last seen",
        "fired on",
        ids={"id", "model", "segment", "feature"},
    )
    for a in entries:
        fired = "; ".join(
            f"{s.get('statistic')} {_number(s.get('value'))} "
            f"(threshold {_number(s.get('threshold'))}, p {_pvalue(s.get('p_value'))})"
            for s in alarm_statistics(a)
        )
        table.add_row(
            str(a.get("id")),
            str(a.get("state")),
            f"{a.get('model')} {a.get('version')}",
            str(a.get("segment")),
            str(a.get("feature")),
            _when(a.get("opened_at")),
            _when(a.get("last_seen_at")),
            fired or _DASH,
        )
    console.print(table)


def _alarm_action(action: str, help_text: str) -> None:
    def command(
        alarm_id: Annotated[str, typer.Argument(help="Alarm id (edgefleet drift alarms).")],
        as_json: Annotated[bool, json_option()] = False,
    ) -> None:
        with drift_client() as client:
            result = _jsonable(client.call(action, alarm_id=alarm_id))
        if as_json:
            print_json(result)
            return
        console.print(
            f"alarm {result.get('id')}: {result.get('state')} ({result.get('model')} "
            f"{result.get('version')}, {result.get('segment')}, {result.get('feature')})",
            highlight=False,
            markup=False,
        )

    command.__doc__ = help_text
    app.command(action)(command)


_alarm_action(
    "ack",
    "Acknowledge an open alarm: someone is on it (it stays until resolved).",
)
_alarm_action(
    "resolve",
    "Resolve an alarm by hand; if the drift is still there, the next look opens a new one.",
)
