"""Shared CLI plumbing: consoles, JSON output, tables, progress bars, error reporting."""

from __future__ import annotations

import json
import os
import sys
import textwrap
import traceback
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NoReturn

import typer
from pydantic import BaseModel
from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.measure import Measurement
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    ProgressColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as RichProgressBar
from rich.style import StyleType
from rich.table import Column, Table
from rich.text import Text
from typer.core import TyperGroup

from edgefleet.errors import EdgefleetError
from edgefleet.progress import Advance

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

#: Exit code for an unexpected internal error (sysexits EX_SOFTWARE).
EXIT_INTERNAL = 70


@dataclass
class RemoteTarget:
    """Set by the root ``--server``/``--token`` options; ``None`` falls back to settings."""

    server: str | None = None
    token: str | None = None


REMOTE = RemoteTarget()


def print_json(value: Any) -> None:
    """Print ``value`` as indented JSON on stdout (pydantic models in their JSON form)."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=False, default=str) + "\n")
    sys.stdout.flush()


class CliTable(Table):
    """A table that never cuts a value: the CLI's only kind of table.

    No column is narrower than its longest word, so a value wraps at its spaces but never
    loses its end to "…"; the ``ids`` columns, what a user copies into another command
    (rollout and device ids, versions, digests), do not even wrap, and are shown as they
    are, never read as rich markup. A terminal narrower than that gets a table wider than
    itself, whose lines it wraps::

        table = CliTable("id", "name", "state", ids={"id"})
        table.add_row("ro-c3845c217c4f", "digits 1.1.0", "running")
        console.print(table)
    """

    def __init__(self, *headers: str, ids: Collection[str] = (), **options: Any) -> None:
        unknown = set(ids) - set(headers)
        if unknown:
            raise ValueError(f"id columns {sorted(unknown)} are not among {headers}")
        columns = (
            Column(header, no_wrap=header in ids, overflow="fold", min_width=len(header))
            for header in headers
        )
        super().__init__(*columns, **options)

    def add_row(
        self,
        *renderables: RenderableType | None,
        style: StyleType | None = None,
        end_section: bool = False,
    ) -> None:
        cells: list[RenderableType | None] = []
        for column, cell in zip(self.columns, renderables, strict=False):
            if isinstance(cell, str):
                # An id is data, shown as it is; other cells may carry rich markup.
                text = Text(cell) if column.no_wrap else Text.from_markup(cell)
                parts = [text.plain] if column.no_wrap else text.plain.split()
                widest = max((cell_len(part) for part in parts), default=0)
                column.min_width = max(column.min_width or 0, widest)
                if column.no_wrap:
                    cell = text
            cells.append(cell)
        super().add_row(*cells, style=style, end_section=end_section)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        # Given less than the columns' minimum widths, rich squeezes every column alike,
        # down to "ro-c3…" or to nothing: lay the table out at its minimum instead.
        unbounded = options.update_width(max(options.max_width, 1 << 16))
        needed = Measurement.get(console, unbounded, self).minimum
        yield from super().__rich_console__(
            console, options.update_width(max(options.max_width, needed))
        )


def fail(message: str, code: int = 1) -> NoReturn:
    """Print an error message to stderr and exit with ``code``."""
    first, *rest = message.splitlines() or [""]
    err_console.print(Text.assemble(("error: ", "bold red"), first), soft_wrap=True)
    # Dedented as one block, not line by line: a caret line keeps its place under the
    # query line above it.
    for line in textwrap.dedent("\n".join(rest)).splitlines():
        err_console.print(f"  {line.rstrip()}", highlight=False, markup=False, soft_wrap=True)
    raise typer.Exit(code)


class EdgefleetGroup(TyperGroup):
    """The root command group: turns edgefleet errors into messages and exit codes."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except EdgefleetError as exc:
            fail(exc.message)
        except KeyboardInterrupt:
            fail("interrupted", code=130)
        except Exception as exc:
            if _is_cli_control(exc):
                raise
            if os.environ.get("EDGEFLEET_DEBUG"):
                traceback.print_exc()
            fail(
                f"internal error: {type(exc).__name__}: {exc} "
                "(this is a bug; set EDGEFLEET_DEBUG=1 to see the traceback)",
                code=EXIT_INTERNAL,
            )


def _is_cli_control(exc: Exception) -> bool:
    # Exit, Abort and usage errors belong to the command-line framework (typer, or the
    # click it is built on) and carry their own exit codes and messages.
    return type(exc).__module__.split(".")[0] in {"typer", "click"}


class _AmountColumn(ProgressColumn):
    """Bytes as sizes (1.2/40.0 MB), steps as counts (3/5)."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes = DownloadColumn()
        self.steps = MofNCompleteColumn()

    def render(self, task: Task) -> RenderableType:
        column = self.bytes if task.fields.get("unit") == "bytes" else self.steps
        return column.render(task)


class RichProgress:
    """``edgefleet.progress.Progress`` drawn as rich progress bars on stderr."""

    def __init__(self, bar: RichProgressBar) -> None:
        self.bar = bar

    def task(self, description: str, total: int | None = None, unit: str = "steps") -> Advance:
        task_id = self.bar.add_task(description, total=total, unit=unit)

        def advance(amount: int) -> None:
            self.bar.advance(task_id, amount)

        return advance


@contextmanager
def progress_bars() -> Iterator[RichProgress]:
    """Progress bars for the duration of the block (hidden when stderr is not a terminal)."""
    bar = RichProgressBar(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        _AmountColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
        disable=not err_console.is_terminal,
    )
    with bar:
        yield RichProgress(bar)


def json_option() -> Any:
    return typer.Option("--json", help="Print machine-readable JSON (see docs/cli.md).")
