"""``edgefleet agent ...``: the device side. ``serve`` runs the inference runtime on a
loopback HTTP port."""

from __future__ import annotations

import contextlib
import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from edgefleet.cli.output import console

if TYPE_CHECKING:
    from rich.progress import TaskID

    from edgefleet.agent.shell import Agent

app = typer.Typer(help="The device agent and its inference runtime.", no_args_is_help=True)


@app.command()
def serve(
    model: Annotated[Path, typer.Option("--model", help="ONNX model file to serve.")],
    name: Annotated[str, typer.Option(help="Model name (for metrics).")] = "model",
    version: Annotated[str, typer.Option(help="Model version (for metrics).")] = "0.0.0",
    variant: Annotated[str, typer.Option(help="Variant name (for metrics).")] = "",
    profile: Annotated[
        Path | None, typer.Option(help="Reference profile JSON (input bins for drift metrics).")
    ] = None,
    shadow: Annotated[Path | None, typer.Option(help="Candidate model to run in shadow.")] = None,
    shadow_version: Annotated[
        str, typer.Option(help="Candidate version (for metrics).")
    ] = "candidate",
    shadow_fraction: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of requests shadowed.")
    ] = 0.1,
    providers: Annotated[
        str, typer.Option(help="ONNX Runtime execution providers, in preference order.")
    ] = "CPUExecutionProvider",
    host: Annotated[str, typer.Option(help="Interface (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535)] = 8765,
) -> None:
    """Serve a model to local applications over HTTP until interrupted."""
    from edgefleet.errors import ConfigError
    from edgefleet.registry.profile import ReferenceProfile
    from edgefleet.runtime.backend import OnnxBackend
    from edgefleet.runtime.metrics import ModelIdentity
    from edgefleet.runtime.runtime import ModelRuntime
    from edgefleet.runtime.serve import make_server

    reference = None
    if profile is not None:
        try:
            reference = ReferenceProfile.model_validate(json.loads(profile.read_text()))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"--profile {profile}: not a reference profile: {exc}") from exc
    runtime = ModelRuntime(
        backend=OnnxBackend(providers=[p.strip() for p in providers.split(",") if p.strip()])
    )
    runtime.load(model, ModelIdentity(name, version, variant), profile=reference)
    if shadow is not None:
        runtime.set_shadow(
            shadow,
            ModelIdentity(name, shadow_version, variant),
            fraction=shadow_fraction,
            profile=reference,
        )
    server = make_server(runtime, host, port)
    bound = server.server_address[1]
    console.print(
        f"serving {name} {version} on http://{host}:{bound} (POST /v1/predict)", highlight=False
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        runtime.clear_shadow()


@app.command()
def run(
    config: Annotated[Path, typer.Option("--config", help="Agent config file (docs/agent.md).")],
    once: Annotated[
        bool, typer.Option("--once", help="Apply the desired state, then exit (no serving).")
    ] = False,
) -> None:
    """Run the device agent until interrupted: follow the desired state, serve the model."""
    import logging

    from edgefleet.agent.config import load_config
    from edgefleet.agent.shell import Agent
    from edgefleet.runtime.serve import make_server, serve_in_thread

    settings = load_config(config)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    agent = Agent(settings)
    # A service stop (SIGTERM, as systemd sends) ends the agent like Ctrl-C: cleanly,
    # so that the next start resumes a trial without counting a restart against it.
    signal.signal(signal.SIGTERM, _interrupt)
    if once:
        with _trial_progress(agent):
            try:
                agent.start()
                final = agent.converge()
            finally:
                agent.stop()
        console.print(f"downloaded {agent.bytes_downloaded} bytes", highlight=False)
        console.print(f"{final.state.value}; active slot {final.active or 'none'}", highlight=False)
        return
    try:
        with contextlib.suppress(KeyboardInterrupt):
            # A trial a restart interrupted resumes here, before the check-in loop.
            agent.start()
            if settings.serve_port is not None:
                from edgefleet.agent.metrics import AgentCollector
                from edgefleet.runtime.prometheus import registry_for

                registry = registry_for(agent.runtime)
                registry.register(AgentCollector(agent))
                server = make_server(
                    agent.runtime, settings.serve_host, settings.serve_port, registry=registry
                )
                serve_in_thread(server)
                console.print(
                    f"serving on http://{settings.serve_host}:{server.server_address[1]}",
                    highlight=False,
                )
            agent.run_forever()
    finally:
        agent.stop()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def _trial_progress(agent: Agent) -> Iterator[None]:
    """A progress bar for each trial while ``agent run --once`` waits for it: the
    seconds it has run of its minimum, its inferences and the latency evidence."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from edgefleet.agent.trial import Verdict
    from edgefleet.fleet.domain import TrialPolicy

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[detail]}"),
        console=console,
        transient=False,
    ) as bar:
        task: list[TaskID] = []

        def show(policy: TrialPolicy, verdict: Verdict) -> None:
            numbers = verdict.numbers
            elapsed = float(numbers.get("elapsed_s", 0.0))
            detail = f"{numbers.get('inferences', 0)}/{policy.min_inferences} inferences"
            if "probe_pairs" in numbers:
                detail += (
                    f", latency x{numbers.get('latency_ratio_median', '?')} of the previous "
                    f"model over {numbers['probe_pairs']} probes"
                )
            if numbers.get("extended_for"):
                detail += f" (extended for {numbers['extended_for']})"
            if not task:
                task.append(bar.add_task("trial", total=policy.min_seconds or 1.0, detail=""))
            done = verdict.passed is not None
            bar.update(
                task[0],
                completed=policy.min_seconds if done else min(elapsed, policy.min_seconds),
                detail=detail
                if not done
                else f"{detail}: {'passed' if verdict.passed else 'failed'}",
            )
            if done:
                task.clear()

        agent.on_trial = show
        yield


@app.command()
def status(
    config: Annotated[Path, typer.Option("--config", help="Agent config file.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Slots, versions, state and last error, from the agent's state directory."""
    from edgefleet.agent.config import load_config
    from edgefleet.agent.slots import SlotStore
    from edgefleet.agent.statemachine import to_json
    from edgefleet.cli.output import print_json

    settings = load_config(config)
    state = SlotStore(settings.state_dir).load()
    data = to_json(state)
    if as_json:
        print_json(data)
        return
    console.print(
        f"state: {state.state.value}   active slot: {state.active or 'none'}", highlight=False
    )
    for name, content in state.slots.items():
        marker = "*" if name == state.active else " "
        text = f"{content.model} {content.version} ({content.variant})" if content else "empty"
        console.print(f" {marker} slot {name}: {text}", highlight=False)
    if state.target:
        console.print(f"updating to: {state.target.model} {state.target.version}", highlight=False)
    if state.refused:
        console.print(f"refused: {', '.join(sorted(state.refused))}", highlight=False)
    if state.last_error:
        console.print(f"last error: {state.last_error}", highlight=False, markup=False)
