"""``edgefleet examples build``: train the example models and write their bundles."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgefleet.cli.output import console, json_option, print_json, progress_bars

app = typer.Typer(
    help="Example models trained here from scikit-learn's bundled data.", no_args_is_help=True
)


@app.command()
def build(
    out: Annotated[Path, typer.Option("--out", help="Directory to write the bundles into.")],
    seed: Annotated[int, typer.Option(help="Seed for the data split and training.")] = 0,
    as_json: Annotated[bool, json_option()] = False,
) -> None:
    """Train digits 1.0.0 and 1.1.0, export fp32 and int8 ONNX variants, write bundles."""
    from edgefleet.examples.digits import build_examples

    with progress_bars() as progress:
        bundles = build_examples(out, seed=seed, progress=progress)
    if as_json:
        print_json({"bundles": [str(b) for b in bundles]})
        return
    for bundle in bundles:
        console.print(f"wrote {bundle}")
