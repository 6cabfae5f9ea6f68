"""``edgefleet demo``: the release story on this machine, no other service needed.

For now: build the example models, register both versions in a fresh embedded home,
put 1.0.0 in production and show how 1.1.0 compares.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from edgefleet.cli.model import render_comparison, render_variants
from edgefleet.cli.output import console, progress_bars
from edgefleet.config import load_settings


def demo(
    home: Annotated[
        Path | None,
        typer.Option(help="Keep the demo's state here (default: a temporary directory, removed)."),
    ] = None,
) -> None:
    """Build example models, register them, promote one and compare the two."""
    from edgefleet.examples.digits import build_examples
    from edgefleet.store.bootstrap import open_registry

    workdir = home or Path(tempfile.mkdtemp(prefix="edgefleet-demo-"))
    settings = load_settings(home=workdir, database_url_override=None)
    console.rule("edgefleet demo")
    console.print(f"home: {settings.home} (SQLite + local artifact store)", highlight=False)
    try:
        with progress_bars() as progress:
            bundles = build_examples(workdir / "bundles", progress=progress)
        console.print(f"1. trained and exported {len(bundles)} example versions of 'digits'")
        with open_registry(settings) as registry:
            for bundle in bundles:
                with progress_bars() as progress:
                    version = registry.register(bundle, author="demo", progress=progress)
                console.print(
                    f"2. registered digits {version.version}: golden samples reproduced by "
                    f"every variant"
                )
                render_variants(version)
            registry.promote("digits", "1.0.0", "production", actor="demo", reason="first release")
            console.print("3. promoted digits 1.0.0 to production")
            render_comparison(registry.compare("digits", "1.0.0", "1.1.0"))
    finally:
        if home is None:
            shutil.rmtree(workdir, ignore_errors=True)
    console.print(
        "next: `edgefleet model list`, `edgefleet model show digits 1.1.0` in your own home"
    )
