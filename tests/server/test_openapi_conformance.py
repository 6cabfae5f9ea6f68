"""The OpenAPI document is true: schemathesis, with all its checks, against a live server.

Two runs of the schemathesis CLI (its phases: examples, coverage, fuzzing, stateful),
a fixed seed and a bounded number of examples per operation: the device routes with a
device credential and that device's id, every other route with the admin key. Any
failure of any check fails the test, listed as operation, check and the server's answer.
The checks left out, and why, are in docs/api.md ("OpenAPI conformance").
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.server.conftest import LiveServer

ROOT = Path(__file__).parents[2]
SEED = 20240624
MAX_EXAMPLES = 12

#: The routes a device calls with its own credential. ``.../desired`` is also in the
#: operator's run (``PUT`` is the operator's; ``GET`` answers an operator 401).
DEVICE_ROUTES = r"^/api/v1/devices/\{device_id\}/(reported|events|telemetry|desired)$"
DEVICE_ONLY = r"^/api/v1/devices/\{device_id\}/(reported|events|telemetry)$"

#: Rules a schema cannot state, so a request the schema allows may be refused: the
#: operations, the statuses their refusal has, and why (docs/api.md, "OpenAPI
#: conformance"). Only ``positive_data_acceptance`` is told; every other check stands.
ACCEPTED_REFUSALS = (
    # A targeting query is a grammar (AND, OR, NOT, parentheses, field:value).
    ("GET", "/api/v1/devices", 400),
    # A targeting query; and a trial's max_seconds not below its min_seconds.
    ("POST", "/api/v1/fleet/desired", 400, 422),
    # A trial's max_seconds not below its min_seconds.
    ("PUT", "/api/v1/devices/{device_id}/desired", 422),
    # The target query; waves all percentages or all cohorts, growing; each gate one limit
    # that applies to its metric; unique gate names.
    ("POST", "/api/v1/rollouts", 400, 422),
    # The body must be a .tar.gz of a bundle that passes its checks.
    ("POST", "/api/v1/models", 422),
    # A monitor's window a multiple of 5 minutes up to 31 days; a false-alarm rate its
    # looks can spend; at least one statistic; names listed once.
    ("PUT", "/api/v1/drift/monitors/{model}", 422),
    # A report's window ends after it starts and spans at most 31 days; start or last,
    # not both; reference=window with both bounds.
    ("GET", "/api/v1/drift/report", 422),
)
EXPECTED = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"]


def _accepted_refusals() -> str:
    sections = []
    for method, path, *statuses in ACCEPTED_REFUSALS:
        expected = ", ".join(f'"{status}"' for status in [*EXPECTED, *map(str, statuses)])
        sections.append(
            f'[[operations]]\ninclude-method = "{method}"\ninclude-path = "{path}"\n'
            f"checks.positive_data_acceptance.expected-statuses = [{expected}]\n"
        )
    return "\n".join(sections)


#: Failing lines of the CLI's report: an operation's heading, then its failed checks.
_HEADING = re.compile(r"^_{3,} (.+?) _{3,}$")
_FAILED = re.compile(r"^- (ST\d+ .+)$")
_ANSWER = re.compile(r"^\[(\d{3})\] ")


def run_schemathesis(
    live: LiveServer, tmp: Path, name: str, token: str, *filters: str, config: str = ""
) -> list[str]:
    """Run the schemathesis CLI once; the failures as ``operation: check -> status``."""
    config_file = tmp / f"{name}.toml"
    config_file.write_text(
        f'hooks = "tests.server.schemathesis_hooks"\n{config}\n{_accepted_refusals()}'
    )
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(config_file),
        "run",
        f"{live.url}/openapi.json",
        "--checks",
        "all",
        "--seed",
        str(SEED),
        "--max-examples",
        str(MAX_EXAMPLES),
        "--generation-database",
        "none",
        "--workers",
        "1",
        "--no-color",
        "--output-truncate",
        "true",
        "--header",
        f"Authorization: Bearer {token}",
        *filters,
    ]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=tmp,  # its cache (.schemathesis/) goes there
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    report = tmp / f"{name}.txt"
    report.write_text(done.stdout + done.stderr)
    if done.returncode == 0:
        return []
    found = _failures(done.stdout) or [f"exit {done.returncode}: {done.stderr[-2000:]}"]
    return [f"{name} run ({report}): {failure}" for failure in found]


def _failures(report: str) -> list[str]:
    failures: list[str] = []
    operation = ""
    checks: list[str] = []
    for line in report.splitlines():
        if heading := _HEADING.match(line):
            operation = heading.group(1)
        elif failed := _FAILED.match(line):
            checks.append(failed.group(1))
        elif (answer := _ANSWER.match(line)) and checks:
            failures.extend(f"{operation}: {check} -> {answer.group(1)}" for check in checks)
            checks = []
        elif line.startswith(("Errors:", "=")) and "ERRORS" not in line and checks:
            failures.extend(f"{operation}: {check}" for check in checks)
            checks = []
    return failures


@pytest.mark.timeout(300)
@pytest.mark.parametrize("backend", ["sqlite"])
def test_the_openapi_document_describes_the_server(live: LiveServer, tmp_path: Path):
    device_id, credential, _ = live.enroll("conformance-device")
    failures = run_schemathesis(
        live,
        tmp_path,
        "operator",
        live.admin_token,
        "--exclude-path-regex",
        DEVICE_ONLY,
    )
    failures += run_schemathesis(
        live,
        tmp_path,
        "device",
        credential,
        "--include-path-regex",
        DEVICE_ROUTES,
        config=f'[parameters]\n"path.device_id" = "{device_id}"\n',
    )
    assert failures == [], "\n".join(failures)
