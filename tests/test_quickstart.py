"""docs/quickstart.md, run as written: every ```bash block of the page, in order, against
a real ``edgefleet server`` and two real ``edgefleet agent run`` processes, so that the
guide cannot rot.

How the page is read:

- A block's first line names its terminal: ``# terminal N``. The one block without it is
  the install; it is not run (this test runs in the project's virtualenv, whose ``bin``
  comes first on ``PATH``, in a fresh folder, where that block leaves the reader).
- ``(leave it running)`` on that line: the block is started as its own process group
  and, at the end, stopped with SIGINT as Ctrl-C does. It must still be running then.
- Every other terminal is one ``bash`` (``set -eo pipefail``) kept from block to block,
  so exports and variables carry over as in a real terminal; a failing command fails
  the test.
- ``# look for: TEXT`` after commands: their output must have TEXT on one line (table
  borders, progress bars and repeated spaces aside). In a block left running, the test
  waits for TEXT before it goes on.
- ``# wait for: TEXT``: the commands are run again, once a second, until their output
  has TEXT (what the reader does by hand), within ``WAIT_S``.

The only substitution: the port 8080 becomes a free port. Tables are drawn 120 columns
wide (``COLUMNS``), as the page advises.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pytest

PAGE = Path(__file__).parents[1] / "docs" / "quickstart.md"
FENCE = re.compile(r"^```bash\n(.*?)^```", re.S | re.M)
TERMINAL = re.compile(r"^# terminal (\d+)(.*)$")
CHECK = re.compile(r"^# (look|wait) for: (.+)$")
DRAWING = re.compile(r"[\u2500-\u259f]|\x1b\[[0-9;]*m")
DONE = "<<quickstart step done>>"
PORT = "8080"
STEP_S = 240.0  # the longest step is a watched rollout of two waves (about a minute)
WAIT_S = 120.0

# What the page must keep checking: a rollout that succeeds with both devices committed,
# a bad release stopped by its gate and aborted, the devices back on 1.1.0, the log.
REQUIRED = (
    "edgefleet server on http://",
    "2 of 2 devices",
    "signed as release 3",
    "wave 1 (100.0%) committed 2",
    "succeeded",
    "wave 2 (100.0%) committed 1",
    "gate_failed:rollbacks",
    "aborted; 1 device(s) sent back",
    "reverted 1",
    "digits 1.1.0 2",
    "refused: digits@1.2.0",
    "succeed all_waves_passed",
    "abort operator",
)


@dataclass
class Step:
    """Commands and what their output must show."""

    commands: str
    look_for: list[str] = field(default_factory=list)
    again_until_seen: bool = False


@dataclass
class Block:
    terminal: int
    left_running: bool
    steps: list[Step]


def parse(page: str) -> tuple[list[Block], list[str]]:
    """The page's terminal blocks in order, and the text of the blocks without one."""
    blocks: list[Block] = []
    other: list[str] = []
    for match in FENCE.finditer(page):
        first, *lines = match.group(1).splitlines()
        head = TERMINAL.match(first)
        if head is None:
            other.append(match.group(1))
            continue
        steps: list[Step] = []
        step = Step("")
        for line in lines:
            check = CHECK.match(line)
            if check is None and step.look_for:
                steps.append(step)
                step = Step("")
            if check is None:
                step.commands += line + "\n"
            else:
                step.look_for.append(check.group(2).strip())
                step.again_until_seen |= check.group(1) == "wait"
        if step.commands.strip() or step.look_for:
            steps.append(step)
        blocks.append(Block(int(head.group(1)), "leave it running" in head.group(2), steps))
    return blocks, other


def normal(text: str) -> str:
    return " ".join(DRAWING.sub(" ", text).split())


def missing(output: str, wanted: list[str]) -> list[str]:
    """The texts of ``wanted`` that no line of ``output`` contains."""
    lines = [normal(line) for line in output.splitlines()]
    return [text for text in wanted if not any(normal(text) in line for line in lines)]


class Shell:
    """A terminal for commands: one bash, fed one step at a time."""

    def __init__(self, name: str, cwd: Path, scripts: Path, env: dict[str, str]) -> None:
        self.name = name
        self.scripts = scripts
        self.count = 0
        self.process = subprocess.Popen(
            ["bash", "--noprofile", "--norc"],
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self._send("set -eo pipefail\n")

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def _send(self, text: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(text)
        self.process.stdin.flush()

    def run(self, commands: str) -> str:
        """The output of ``commands``; fails the test if one of them fails."""
        self.count += 1
        script = self.scripts / f"{self.name}-{self.count}.sh"
        script.write_text(commands)
        # stdin from /dev/null: a command must not read the next step as its input.
        self._send(f"source {script} </dev/null\nprintf '\\n{DONE}\\n'\n")
        output: list[str] = []
        deadline = time.monotonic() + STEP_S
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(
                    f"{self.name}: still running after {STEP_S:.0f} s:\n{commands}\n"
                    f"output so far:\n{''.join(output)}"
                ) from None
            if line is None:
                code = self.process.wait()
                raise AssertionError(
                    f"{self.name}: a command failed (exit {code}):\n{commands}\n"
                    f"output:\n{''.join(output)}"
                )
            if line.strip() == DONE:
                return "".join(output)
            output.append(line)

    def close(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


class LeftRunning:
    """A terminal whose block keeps running (the server, an agent)."""

    def __init__(self, name: str, commands: str, cwd: Path, log: Path, env: dict[str, str]):
        self.name = name
        self.log = log
        self.out: IO[str] = log.open("w")
        self.process = subprocess.Popen(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", commands],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self.out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, wanted: list[str]) -> None:
        deadline = time.monotonic() + WAIT_S
        while missing(self.output(), wanted):
            if self.process.poll() is not None:
                raise AssertionError(
                    f"{self.name} exited ({self.process.returncode}):\n{self.output()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.name} never printed {missing(self.output(), wanted)}:\n{self.output()}"
                )
            time.sleep(0.1)

    def stop(self) -> None:
        """Ctrl-C: SIGINT to the terminal's process group."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.out.close()


def free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEFLEET_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["COLUMNS"] = "120"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def test_the_page_is_read_as_this_test_expects():
    blocks, other = parse(PAGE.read_text())
    assert len(other) == 1 and "pip install" in other[0], "only the install block is not run"
    running = [b for b in blocks if b.left_running]
    assert [b.terminal for b in running] == [1, 3, 4]
    checks = [text for b in blocks for step in b.steps for text in step.look_for]
    assert not [text for text in REQUIRED if not any(text in c for c in checks)]


def _logs(running: dict[int, LeftRunning]) -> str:
    return "\n".join(f"--- {t.name} ---\n{t.output()[-3000:]}" for t in running.values())


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_every_command_of_the_quickstart(tmp_path):
    port = free_port()
    blocks, _ = parse(PAGE.read_text().replace(PORT, port))
    folder = tmp_path / "edgefleet-quickstart"
    scripts = tmp_path / "steps"
    folder.mkdir()
    scripts.mkdir()
    env = environment()
    shells: dict[int, Shell] = {}
    running: dict[int, LeftRunning] = {}
    with ExitStack() as stack:
        for block in blocks:
            name = f"terminal {block.terminal}"
            if block.left_running:
                assert block.terminal not in running and block.terminal not in shells
                commands = "".join(step.commands for step in block.steps)
                log = tmp_path / f"terminal-{block.terminal}.log"
                terminal = LeftRunning(name, commands, folder, log, env)
                stack.callback(terminal.stop)
                running[block.terminal] = terminal
                terminal.wait_for([text for step in block.steps for text in step.look_for])
                continue
            assert block.terminal not in running, f"{name} is busy with a running block"
            if block.terminal not in shells:
                shells[block.terminal] = Shell(name.replace(" ", "-"), folder, scripts, env)
                stack.callback(shells[block.terminal].close)
            shell = shells[block.terminal]
            for step in block.steps:
                deadline = time.monotonic() + WAIT_S
                while True:
                    output = shell.run(step.commands)
                    absent = missing(output, step.look_for)
                    if not absent or not step.again_until_seen or time.monotonic() > deadline:
                        break
                    time.sleep(1.0)
                assert not absent, (
                    f"{name}: the output of\n{step.commands}lacks {absent}:\n{output}\n"
                    f"{_logs(running)}"
                )
        for terminal in running.values():
            assert terminal.process.poll() is None, f"{terminal.name} died:\n{terminal.output()}"
