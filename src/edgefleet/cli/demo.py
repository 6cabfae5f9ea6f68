"""``edgefleet demo``: the release story on this machine, no other service needed.

For now: create the fleet's signing keys, build the example models, register and sign
both versions in a fresh embedded home, put 1.0.0 in production and show how 1.1.0
compares.
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
    from edgefleet.signing.keys import Keyring
    from edgefleet.signing.publish import Publisher, open_repository
    from edgefleet.store.bootstrap import open_registry

    workdir = home or Path(tempfile.mkdtemp(prefix="edgefleet-demo-"))
    settings = load_settings(home=workdir, database_url_override=None)
    console.rule("edgefleet demo")
    console.print(f"home: {settings.home} (SQLite + local artifact store)", highlight=False)
    try:
        with progress_bars() as progress:
            bundles = build_examples(workdir / "bundles", progress=progress)
        console.print(f"1. trained and exported {len(bundles)} example versions of 'digits'")
        Keyring.generate(settings.home / "keys", {})
        repository = open_repository(settings)
        repository.initialise({})
        console.print(f"2. created TUF keys and root metadata in {repository.metadata_dir}")
        with open_registry(settings) as registry:
            publisher = Publisher(repository, registry.artifacts)
            for bundle in bundles:
                with progress_bars() as progress:
                    version = registry.register(bundle, author="demo", progress=progress)
                publication = publisher.publish(version)
                console.print(
                    f"3. registered digits {version.version} (golden samples reproduced by every "
                    f"variant) and signed it as release {publication.release}"
                )
                render_variants(version)
            registry.promote("digits", "1.0.0", "production", actor="demo", reason="first release")
            console.print("4. promoted digits 1.0.0 to production")
            render_comparison(registry.compare("digits", "1.0.0", "1.1.0"))
    finally:
        if home is None:
            shutil.rmtree(workdir, ignore_errors=True)
    console.print(
        "next: `edgefleet model list`, `edgefleet model show digits 1.1.0` in your own home"
    )
