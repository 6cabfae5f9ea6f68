"""``edgefleet server``: the control plane on uvicorn."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from edgefleet.cli.output import console
from edgefleet.config import load_settings


def server(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="TCP port (0: any free port).")
    ] = 8080,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
    access_log: Annotated[bool, typer.Option(help="Log every request.")] = False,
) -> None:
    """Run the control plane (REST API, TUF files, metrics) until interrupted."""
    try:
        from edgefleet.server.app import create_app
        from edgefleet.server.serve import bind, serve, url_of
    except ImportError as exc:
        from edgefleet.errors import MissingDependencyError

        raise MissingDependencyError.for_extra("server", exc.name or "fastapi") from exc
    settings = load_settings()
    # A port in use is an error (exit 1) before the app is built or anything is printed.
    listeners = bind(host, port)
    url = url_of(host, listeners)
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    def say_started() -> None:
        console.print(
            f"edgefleet server on {url} (home {settings.home}); the first admin key, if one "
            f"was created, is in {settings.home / 'admin.token'}",
            highlight=False,
        )

    serve(
        create_app(settings),
        listeners,
        on_started=say_started,
        log_level=log_level,
        access_log=access_log,
        timeout_graceful_shutdown=10,
        timeout_keep_alive=settings.http_keep_alive_s,
        loop="auto",
        http="auto",
    )
