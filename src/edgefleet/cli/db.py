"""``edgefleet db ...``: the database schema."""

from __future__ import annotations

import typer

from edgefleet.cli.output import console
from edgefleet.config import load_settings

app = typer.Typer(help="Database schema migrations.", no_args_is_help=True)


@app.command()
def upgrade() -> None:
    """Apply every pending migration."""
    from edgefleet.store.database import describe_url, make_engine
    from edgefleet.store.migrate import current_revision, head_revision
    from edgefleet.store.migrate import upgrade as run_upgrade

    engine = make_engine(load_settings())
    try:
        before = current_revision(engine)
        run_upgrade(engine)
        console.print(
            f"{describe_url(engine)}: schema {before or 'empty'} -> {head_revision()}",
            highlight=False,
        )
    finally:
        engine.dispose()


@app.command()
def current() -> None:
    """Show the schema revision of the database and the one this edgefleet needs."""
    from edgefleet.store.database import describe_url, make_engine
    from edgefleet.store.migrate import current_revision, head_revision

    engine = make_engine(load_settings())
    try:
        console.print(
            f"{describe_url(engine)}: at {current_revision(engine) or 'empty'}, "
            f"needs {head_revision()}",
            highlight=False,
        )
    finally:
        engine.dispose()
