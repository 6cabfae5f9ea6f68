"""The FastAPI application and its lifecycle.

Start-up opens the database (migrating it when allowed), creates the TUF keys and root
on first run (embedded mode; see docs/security.md for keeping root and targets offline),
writes a first admin key to ``EDGEFLEET_HOME/admin.token`` on an empty database, and
starts background loops: writing batched check-ins and telemetry every second, re-signing
snapshot/timestamp before they expire, deleting telemetry past its retention, and, on
the leader, the rollout controller's ticks and the drift monitors' looks.
Shutdown stops the loops and writes the last check-ins and telemetry.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from fastapi import FastAPI

from edgefleet import __version__, gcpause
from edgefleet.config import Settings
from edgefleet.looplag import watch_loop_lag
from edgefleet.rollout.webhooks import deliver_due
from edgefleet.server import errors
from edgefleet.server.context import ServerContext
from edgefleet.server.gzipbody import RequestDecompression
from edgefleet.server.hotpath import DeviceFastPath, Serving
from edgefleet.server.metrics import BodyLimitMiddleware, MetricsMiddleware, ServerMetrics
from edgefleet.server.routes import device, drift, health, operator, registry, rollouts, tuf

log = logging.getLogger("edgefleet.server")

UPLOAD_PATH = "/api/v1/models"

#: The interpreter's thread switch interval while the server runs (the default is 5 ms).
#: Every database read of a check-in releases the GIL, and while a background thread
#: (the rollout controller, the batched writes) computes, the event loop then waits up
#: to a whole interval to take it back: at a thousand check-ins a second that wait,
#: not the work, fills the loop. The same holds the other way for a write thread waiting
#: for the loop while it holds SQLite's write lock. A short interval bounds both: at
#: 2,000 devices a reported-state write took p50 65 ms at 0.1 ms against 141 ms at
#: 0.5 ms, waiting for the lock and the interpreter (benchmarks/fleet.py).
SWITCH_INTERVAL_S = 0.0001


def ensure_signing(ctx: ServerContext) -> None:
    """Create TUF keys and root metadata if this home has none (embedded default)."""
    from edgefleet.signing.keys import Keyring

    keys_dir = ctx.settings.home / "keys"
    if (keys_dir / "signers.json").exists():
        return
    Keyring.generate(keys_dir, {})
    ctx.repository().initialise({})
    log.warning(
        "created TUF keys in %s; move the root and targets keys offline for production "
        "(docs/security.md)",
        keys_dir,
    )


async def _every(
    seconds: float, action: Callable[[], Any], name: str, metrics: ServerMetrics
) -> None:
    took = metrics.background.labels(name)
    while True:
        await asyncio.sleep(seconds)
        started = time.perf_counter()
        try:
            await asyncio.to_thread(action)
        except Exception:
            log.exception("background task %s failed; retrying in %.0f s", name, seconds)
        finally:
            took.observe(time.perf_counter() - started)


def _expire_telemetry(ctx: ServerContext) -> None:
    cutoff = datetime.now(UTC) - timedelta(hours=ctx.settings.telemetry_retention_hours)
    with ctx.uow() as uow:
        removed = uow.devices.delete_telemetry_before(cutoff)
        uow.commit()
    if removed:
        log.info(
            "removed %d telemetry buckets and drift summaries older than %s",
            removed,
            cutoff.isoformat(),
        )


def _controller_step(ctx: ServerContext) -> None:
    if ctx.leadership.acquire():
        ctx.telemetry.flush()  # the gates read this process's telemetry up to now
        ctx.rollouts.tick_all()


def _drift_looks(ctx: ServerContext) -> None:
    # The rollout controller's loop takes and checks the lock; the looks follow it.
    if ctx.leadership.held:
        ctx.telemetry.flush()  # the looks read this process's telemetry up to now
        ctx.drift.run_due_looks()


def _deliver_webhooks(ctx: ServerContext, client: httpx.Client) -> None:
    if ctx.leadership.held:  # the controller's loop takes and checks the lock
        deliver_due(ctx.uow, client, lambda: datetime.now(UTC))


def _native_telemetry() -> dict[str, Any]:
    """FastAPI's own OpenTelemetry spans, metrics and logs stay on when a global
    OpenTelemetry provider is set as the server starts (``opentelemetry-instrument``,
    ``OTEL_PYTHON_TRACER_PROVIDER``, ...), and are switched off otherwise: FastAPI
    looks for a provider on every request, which cost 4% of the server's time at
    10,000 devices."""
    if "telemetry" not in inspect.signature(FastAPI).parameters:
        return {}  # a FastAPI without native telemetry
    try:
        from opentelemetry import metrics, trace
        from opentelemetry._logs import get_logger_provider
    except ImportError:
        return {}
    providers = (trace.get_tracer_provider(), metrics.get_meter_provider(), get_logger_provider())
    if any(not _placeholder(type(p).__name__) for p in providers):
        return {}
    return {"telemetry": {"tracing": False, "metrics": False, "logs": False}}


def _placeholder(name: str) -> bool:
    """A provider class OpenTelemetry uses until one is set (a proxy or a no-op)."""
    return "Proxy" in name or name.startswith("NoOp")


def create_app(settings: Settings) -> RequestDecompression:
    """The edgefleet server as an ASGI application: the API (``create_api``) behind the
    device fast path (server/hotpath.py), behind the inflation of gzip-compressed JSON
    bodies (server/gzipbody.py)."""
    api = create_api(settings)
    fast_path = DeviceFastPath(api, lambda: api.state.serving, max_body=settings.max_json_bytes)
    return RequestDecompression(fast_path, max_body=settings.max_json_bytes)


def create_api(settings: Settings) -> FastAPI:
    """The FastAPI application: every route, its lifecycle and its middleware."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        ctx = ServerContext.open(settings)
        ensure_signing(ctx)
        token_file = ctx.access.bootstrap_admin(settings.home)
        if token_file is not None:
            log.warning("created the first admin API key in %s", token_file)
        app.state.ctx = ctx
        # Made here, on the loop's thread, before a request or a scrape could race to it.
        checkin_cache = ctx.checkin_cache
        app.state.metrics = ServerMetrics(
            ctx.fleet.summary, lambda: checkin_cache, drift=ctx.drift.gauges
        )
        ctx.drift.on_look = app.state.metrics.drift_look_done
        app.state.serving = Serving(ctx.checkins, app.state.metrics, settings.home / "tuf")
        webhook_client = httpx.Client(timeout=settings.webhook_timeout_s)
        metrics = app.state.metrics
        tasks = [
            asyncio.create_task(_every(1.0, ctx.recorder.flush, "check-in flush", metrics)),
            asyncio.create_task(_every(1.0, ctx.telemetry.flush, "telemetry flush", metrics)),
            asyncio.create_task(
                _every(
                    settings.tuf_refresh_interval_s,
                    lambda: ctx.repository().refresh(),
                    "TUF refresh",
                    metrics,
                )
            ),
            asyncio.create_task(
                _every(3600, lambda: _expire_telemetry(ctx), "telemetry retention", metrics)
            ),
            asyncio.create_task(
                _every(60, ctx.prune_checkin_changes, "check-in change log pruning", metrics)
            ),
            asyncio.create_task(
                _every(
                    settings.rollout_tick_s,
                    lambda: _controller_step(ctx),
                    "rollout controller",
                    metrics,
                )
            ),
            asyncio.create_task(
                _every(2.0, lambda: _deliver_webhooks(ctx, webhook_client), "webhooks", metrics)
            ),
            asyncio.create_task(
                # Windows are due a grace after they end (drift_look_grace_s); the
                # leader looks for due ones every drift_looks_interval_s.
                _every(
                    ctx.settings.drift_looks_interval_s,
                    lambda: _drift_looks(ctx),
                    "drift looks",
                    metrics,
                )
            ),
            asyncio.create_task(watch_loop_lag(app.state.metrics.loop_lag.observe)),
        ]
        gc_pauses = metrics.gc_pause
        collection = gcpause.server_collection(
            lambda generation, seconds: gc_pauses.labels(str(generation)).observe(seconds)
        )
        try:
            await asyncio.to_thread(ctx.repository().refresh)
            with collection as frozen:
                log.info("%d objects made at start-up kept out of garbage collection", frozen)
                yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with suppress(asyncio.CancelledError):
                    await task
            with suppress(Exception):
                ctx.recorder.flush()
            with suppress(Exception):
                ctx.telemetry.flush()
            webhook_client.close()
            ctx.leadership.release()
            ctx.close()
            sys.setswitchinterval(switch_interval)

    app = FastAPI(
        title="edgefleet",
        version=__version__,
        description="Control plane: model registry, signed delivery, device fleet.",
        lifespan=lifespan,
        **_native_telemetry(),
    )
    app.state.metrics = None
    app.state.serving = None
    errors.install(app)
    drift.install_errors(app)
    for module in (health, device, operator, registry, tuf, rollouts, drift):
        app.include_router(module.router)

    def limit_for(scope: dict[str, Any]) -> int:
        if scope.get("method") == "POST" and scope.get("path") == UPLOAD_PATH:
            return settings.max_upload_bytes
        return settings.max_json_bytes

    app.add_middleware(BodyLimitMiddleware, limit_for=limit_for)
    app.add_middleware(MetricsMiddleware, metrics=lambda: app.state.metrics)
    return app
