"""The simulator's virtual device runs the agent, not a copy of it: the same scripted
check-ins through the real ``Agent`` and through a ``VirtualDevice``, each with fake
I/O, make the same requests, carry out the same commands and wait the same times; and
both loops take their check-in policy from ``agent.checkin``."""

from __future__ import annotations

import ast
import asyncio
import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from edgefleet.agent import shell
from edgefleet.agent.config import AgentConfig
from edgefleet.agent.link import ServerError
from edgefleet.agent.statemachine import (
    Activate,
    Activated,
    Command,
    Download,
    DownloadDeferred,
    Downloaded,
    DownloadFailed,
    Event,
    RetryLater,
    RunTrial,
    SmokePassed,
    SmokeTest,
    TrialFailed,
    TrialPassed,
    Verified,
    Verify,
)
from edgefleet.sim import device
from edgefleet.sim.delivery import SharedDelivery
from edgefleet.sim.device import Connections, DeviceSpec, Unreachable, VirtualDevice, World
from edgefleet.sim.httpclient import Answer
from edgefleet.sim.network import PROFILES
from edgefleet.sim.scenario import DeviceKind

INTERVAL_S = 10.0
MAX_BACKOFF_S = 300.0


def desired(version: str | None, **more: Any) -> dict[str, Any]:
    """A desired state as the device API sends it."""
    model = version and {
        "name": "digits",
        "version": version,
        "variant": "onnx-fp32",
        "target_path": f"models/digits/{version}/onnx-fp32/m.onnx",
        "sha256": version.replace(".", "")[0] * 64,
        "size": 1000,
        "release": int(version.split(".")[1]) + 1,
    }
    return {"model": model, "trial": {}, "preconditions": {}, "config": {}, **more}


UNCHANGED = "304"
SERVER_ERROR = "503"

#: What the server answers, check-in by check-in: a new desired state (its ETag and
#: document), nothing changed, or a server error.
CHECK_INS: list[Any] = [
    ('"e1"', desired(None)),
    UNCHANGED,
    ('"e2"', desired("1.0.0")),  # installed
    SERVER_ERROR,  # backs off
    SERVER_ERROR,
    UNCHANGED,  # back to the interval
    ('"e3"', desired("1.1.0", preconditions={"window_utc": ["01:00", "02:00"]})),  # put off
    UNCHANGED,  # tried again: cut twice, retried after a wait, then its trial fails
    UNCHANGED,  # refused: never retried
    ('"e4"', desired("1.1.0", config={"clear_refused": ["digits@1.1.0"]})),  # cleared: again
    ('"e5"', desired("1.1.0", trial={"min_inferences": 10})),  # new policy only
    SERVER_ERROR,
]


class ScriptDone(Exception):  # noqa: N818 - ends a loop, not an error
    pass


@dataclass
class Script:
    """The server's answers and the outcome of each command, the same for both; and
    what the device did, in order."""

    check_ins: list[Any] = field(default_factory=lambda: list(CHECK_INS))
    downloads: list[Event] = field(
        default_factory=lambda: [
            Downloaded(),  # 1.0.0
            DownloadDeferred("precondition:time_window"),  # 1.1.0, at e3
            DownloadFailed("network", True, {"message": "cut"}),
            DownloadFailed("network", True, {"message": "cut"}),
            Downloaded(),
            Downloaded(),  # 1.1.0 again, once cleared
        ]
    )
    trials: list[Event] = field(
        default_factory=lambda: [TrialPassed(), TrialFailed("latency"), TrialPassed()]
    )
    did: list[tuple[Any, ...]] = field(default_factory=list)

    def answer(self, etag: str | None) -> Any:
        """The next answer to a check-in that sent ``etag``."""
        self.did.append(("check-in", etag))
        if not self.check_ins:
            raise ScriptDone
        return self.check_ins.pop(0)

    def outcome(self, command: Command) -> Event | None:
        self.did.append(("command", command))
        if isinstance(command, Download):
            return self.downloads.pop(0)
        if isinstance(command, RunTrial):
            return self.trials.pop(0)
        outcomes: dict[type, Callable[[], Event]] = {
            Verify: Verified,
            SmokeTest: SmokePassed,
            Activate: Activated,
        }
        made = outcomes.get(type(command))
        return made() if made is not None else None  # SwitchBack, Discard: nothing to say

    def sent(self, route: str, body: Any) -> None:
        if route == "events":
            body = [(e["seq"], e["to_state"], e["reason"], e["version"]) for e in body["events"]]
        self.did.append((route, body))

    def slept(self, seconds: float) -> None:
        self.did.append(("sleep", seconds))


# -- the real agent, its network and commands faked -----------------------------------


class FakeLink:
    def __init__(self, script: Script) -> None:
        self.script = script

    def desired(self, etag: str | None) -> tuple[str | None, dict[str, Any] | None, bool]:
        answer = self.script.answer(etag)
        if answer == SERVER_ERROR:
            raise ServerError("GET desired answered 503", retryable=True, status=503)
        if answer == UNCHANGED:
            return etag, None, False
        return answer[0], answer[1], True

    def events(self, events: list[dict[str, Any]]) -> int:
        self.script.sent("events", {"events": events})
        return int(events[-1]["seq"])

    def report(self, reported: dict[str, Any]) -> None:
        self.script.sent("reported", reported)

    def telemetry(self, samples: list[dict[str, Any]]) -> None:
        self.script.sent("telemetry", {"samples": samples})


class ScriptedAgent(shell.Agent):
    def __init__(self, script: Script, root: Path) -> None:
        config = AgentConfig(
            server="http://fleet.invalid",
            device_id="scripted",
            state_dir=root,
            checkin_interval_s=INTERVAL_S,
            max_backoff_s=MAX_BACKOFF_S,
            telemetry_interval_s=1e9,
            jitter=0.0,
            serve_port=None,
        )
        super().__init__(config, sleep=script.slept)
        self.script = script
        self.link = FakeLink(script)

    def _run(self, command: Command) -> Event | None:
        if isinstance(command, RetryLater):
            self.script.did.append(("command", command))
            return super()._run(command)  # the agent's own wait
        return self.script.outcome(command)


def run_agent(script: Script, root: Path) -> None:
    agent = ScriptedAgent(script, root)
    with pytest.raises(ScriptDone):
        agent.run_forever()


# -- the simulator's device, its network and commands faked ---------------------------


class ScriptedDevice(VirtualDevice):
    def __init__(self, script: Script, root: Path) -> None:
        world = World(
            base_url="http://fleet.invalid",
            connections=Connections("http://fleet.invalid"),
            delivery=SharedDelivery(root, "credential"),
            enrollment_token="token",
            models={},
            behaviours={},
            telemetry_interval_s=1e9,
            requests_per_s=0.0,
            max_backoff_s=MAX_BACKOFF_S,
        )
        spec = DeviceSpec(
            device_id="scripted",
            kind=DeviceKind(name="cam", hardware="x86_64", revision="r1"),
            region="eu",
            site="eu-1",
            network=PROFILES["ethernet"],
            checkin_interval_s=INTERVAL_S,
            seed=1,
            run="test",
            jitter=0.0,
        )
        super().__init__(spec, world)
        self.script = script
        self.enrolled = True
        self.booted = False

    async def _request(self, method: str, route: str, **options: Any) -> Answer:
        if route != "desired":
            self.script.sent(route, options["json_body"])
            return Answer(200, {}, b"{}")
        answer = self.script.answer(options["headers"].get("If-None-Match"))
        if answer == SERVER_ERROR:
            raise Unreachable("GET desired: 503")
        if answer == UNCHANGED:
            return Answer(304, {}, b"")
        return Answer(200, {"etag": answer[0]}, json.dumps({"desired": answer[1]}).encode())

    async def _run(self, command: Command) -> Event | None:
        if isinstance(command, RetryLater):
            self.script.did.append(("command", command))
            return await super()._run(command)  # the device's own wait
        return self.script.outcome(command)

    async def _sleep(self, seconds: float) -> None:
        if not self.booted:  # the simulator's own: devices boot at random moments
            self.booted = True
            return
        self.script.slept(seconds)


def run_device(script: Script, root: Path) -> None:
    virtual = ScriptedDevice(script, root)
    with pytest.raises(ScriptDone):
        asyncio.run(virtual._loop())


# -- the same ---------------------------------------------------------------------------


def test_the_agent_and_the_virtual_device_do_the_same_for_the_same_check_ins(tmp_path):
    by_agent, by_device = Script(), Script()
    run_agent(by_agent, tmp_path / "agent")
    run_device(by_device, tmp_path / "device")
    assert by_agent.did == by_device.did
    # ... and what they did is what the script asks for.
    did = by_agent.did
    assert [step[1] for step in did if step[0] == "check-in"] == [
        None,
        '"e1"',
        '"e1"',
        '"e2"',
        '"e2"',
        '"e2"',
        '"e2"',
        '"e3"',
        '"e3"',
        '"e3"',
        '"e4"',
        '"e5"',
        '"e5"',
    ]
    sleeps = [step[1] for step in did if step[0] == "sleep"]
    assert sleeps == [10.0, 10.0, 10.0, 20.0, 40.0, 10.0, 10.0, 2.0, 4.0, *[10.0] * 4, 20.0]
    waits = [step[1] for step in did if step[0] == "command" and isinstance(step[1], RetryLater)]
    assert waits == [RetryLater(1), RetryLater(2)]
    reasons = [event[2] for step in did if step[0] == "events" for event in step[1]]
    assert reasons == [
        *["new_desired", "downloaded", "verified", "smoke_test_started"],
        *["smoke_test_passed", "activated", "trial_passed"],
        "new_desired",  # 1.1.0, put off by its window
        *["downloaded", "verified", "smoke_test_started", "smoke_test_passed", "activated"],
        "trial_failed:latency",
        *["new_desired", "downloaded", "verified", "smoke_test_started"],
        *["smoke_test_passed", "activated", "trial_passed"],
    ]
    reports = [step[1]["agent_state"] for step in did if step[0] == "reported"]
    assert reports == ["IDLE", "COMMITTED", "DOWNLOADING", "ROLLED_BACK", "COMMITTED"]


# -- one policy, in one place -----------------------------------------------------------


def _tree(module: Any) -> ast.Module:
    return ast.parse(inspect.getsource(module))


def _imported_from_checkin(tree: ast.Module) -> set[str]:
    return {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "edgefleet.agent.checkin"
        for alias in node.names
    }


def _function(tree: ast.Module, name: str) -> ast.AsyncFunctionDef | ast.FunctionDef:
    return next(
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == name
    )


@pytest.mark.parametrize("module", [shell, device], ids=["agent", "simulator"])
def test_both_shells_take_the_check_in_policy_from_agent_checkin(module):
    tree = _tree(module)
    assert {"CheckinPolicy", "LastAnswer", "plan_flush"} <= _imported_from_checkin(tree)
    # No backoff of their own: no power with a computed exponent (2 ** failures).
    powers = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.BinOp)
        and isinstance(node.op, ast.Pow)
        and not isinstance(node.right, ast.Constant)
    ]
    assert powers == []
    # No batching of their own: the flush sends what the plan says, no sizes in it.
    flush = _function(tree, "flush")
    assert any(isinstance(n, ast.Name) and n.id == "plan_flush" for n in ast.walk(flush))
    sizes = [
        n.value
        for n in ast.walk(flush)
        if isinstance(n, ast.Constant) and type(n.value) is int and n.value not in (0, 1)
    ]
    assert sizes == []
    # The loop's waits come from the policy.
    loop = _function(tree, "run_forever" if module is shell else "_loop")
    called = {
        n.func.attr
        for n in ast.walk(loop)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
    }
    assert {"delay_s", "telemetry_due"} <= called
