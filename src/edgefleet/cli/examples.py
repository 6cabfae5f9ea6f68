"""``edgefleet examples build``: train the example models and write their bundles."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgefleet.cli.output import console, fail, json_option, print_json, progress_bars

app = typer.Typer(
    help="Example models trained here from scikit-learn's bundled data.", no_args_is_help=True
)


@app.command()
def build(
    out: Annotated[Path, typer.Option("--out", help="Directory to write the bundles into.")],
    seed: Annotated[int, typer.Option(help="Seed for the data split and training.")] = 0,
    versions: Annotated[
        list[str] | None,
        typer.Option(
            "--version",
            "-v",
            help="A version to build (repeatable): 1.0.0, 1.1.0, 1.1.1 (a retrain of 1.1.0), "
            "1.2.0 (heavy), 1.3.0 (missing class), 1.4.0 (large). Default: 1.0.0 and 1.1.0.",
        ),
    ] = None,
    build_all: Annotated[bool, typer.Option("--all", help="Build all six versions.")] = False,
    as_json: Annotated[bool, json_option()] = False,
) -> None:
    """Train digits versions (default 1.0.0 and 1.1.0), export fp32 and int8 ONNX
    variants, write bundles."""
    from edgefleet.examples.digits import RECIPES, build_examples

    if build_all and versions:
        fail("--all builds every version: give it or --version, not both")
    if build_all:
        versions = [recipe.version for recipe in RECIPES]
    with progress_bars() as progress:
        bundles = build_examples(out, seed=seed, progress=progress, versions=versions)
    if as_json:
        print_json({"bundles": [str(b) for b in bundles]})
        return
    for bundle in bundles:
        console.print(f"wrote {bundle}")
