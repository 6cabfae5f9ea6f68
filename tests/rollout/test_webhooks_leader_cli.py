"""Webhook deliveries (signed, retried with backoff), controller leadership, and the
`edgefleet rollout` commands."""

import json
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from sqlalchemy import create_engine
from typer.testing import CliRunner

from edgefleet.access.service import Operator
from edgefleet.access.tokens import Role
from edgefleet.cli.main import app
from edgefleet.rollout.webhooks import MAX_ATTEMPTS, backoff, deliver_due, verify
from edgefleet.store.bootstrap import open_store
from edgefleet.store.leader import Leadership
from tests.rollout.test_rollout_api import FAST_WAVES, Fleet, run_until
from tests.server.conftest import LiveServer

ADMIN = Operator(key_id="local", name="test", role=Role.ADMIN)


class Receiver:
    """A real HTTP endpoint that fails the first ``failures`` requests."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.received: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append((dict(self.headers), body))
                status = 500 if len(receiver.received) <= receiver.failures else 204
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


@pytest.mark.parametrize("backend", ["sqlite"])
def test_webhooks_are_signed_and_retried_with_backoff(settings):
    from edgefleet.rollout.service import RolloutService

    receiver = Receiver(failures=2)
    clock = [datetime(2026, 11, 22, 12, 0, tzinfo=UTC)]
    try:
        with open_store(settings) as uow, httpx.Client(timeout=5) as client:
            service = RolloutService(uow, lambda *a: None)  # type: ignore[arg-type,return-value]
            hook = service.add_webhook(ADMIN, receiver.url)
            with pytest.raises(Exception, match="http:// or https://"):
                service.add_webhook(ADMIN, "ftp://example.com")
            with uow() as work:
                assert work.rollouts.enqueue("rollout.aborted", {"rollout": "ro-1"}, clock[0]) == 1
                work.commit()

            def now():
                return clock[0]

            assert deliver_due(uow, client, now) == 0  # HTTP 500: retried later
            assert deliver_due(uow, client, now) == 0  # not due yet: nothing sent
            assert len(receiver.received) == 1
            for attempt in (1, 2):
                clock[0] += backoff(attempt) + timedelta(seconds=1)
                delivered = deliver_due(uow, client, now)
            assert delivered == 1 and len(receiver.received) == 3
            headers, body = receiver.received[-1]
            timestamp = int(headers["X-Edgefleet-Timestamp"])
            assert verify(hook["secret"], timestamp, body, headers["X-Edgefleet-Signature"])
            assert not verify("wrong", timestamp, body, headers["X-Edgefleet-Signature"])
            assert json.loads(body)["event"] == "rollout.aborted"
            assert json.loads(body)["data"] == {"rollout": "ro-1"}
            listed = service.webhooks(ADMIN)[0]["deliveries"][0]
            assert listed["attempts"] == 3 and listed["delivered_at"] is not None
    finally:
        receiver.close()
    assert backoff(1) == timedelta(seconds=10) and backoff(20) == timedelta(hours=1)
    assert MAX_ATTEMPTS == 10


@pytest.mark.parametrize("backend", ["postgresql"])
def test_one_controller_leads_on_postgresql(settings):
    url = settings.database_url
    first, second = create_engine(url), create_engine(url)
    try:
        a, b = Leadership(first), Leadership(second)
        assert a.acquire() and a.held
        assert not b.acquire() and not b.held
        assert a.acquire()  # still the leader
        a.release()
        assert b.acquire()
        b.release()
    finally:
        first.dispose()
        second.dispose()


def test_sqlite_is_always_its_own_leader(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    assert Leadership(engine).acquire() and Leadership(engine).held


@pytest.mark.parametrize("backend", ["sqlite"])
def test_rollout_commands_through_the_api(live: LiveServer, tmp_path):
    runner = CliRunner()

    def cli(*args):
        return runner.invoke(
            app, ["--server", live.url, "--token", live.admin_token, "rollout", *args]
        )

    fleet = Fleet(live, 4, lambda device, version: "commit")
    spec = tmp_path / "rollout.yaml"
    spec.write_text(
        json.dumps(
            {
                "model": "digits",
                "version": "1.1.0",
                "target": "region:eu-west",
                "waves": FAST_WAVES,
                "gates": [{"metric": "rollbacks", "max_count": 0, "min_samples": 1}],
            }
        )
    )
    created = cli("create", str(spec), "--json")
    assert created.exit_code == 0, created.output
    rid = json.loads(created.stdout)["id"]
    run_until(live, fleet, rid, lambda v: v["state"] == "succeeded")
    status = cli("status", rid)
    assert status.exit_code == 0 and "succeeded" in status.stdout and "committed 1" in status.stdout
    listed = cli("list", "--json")
    assert [r["id"] for r in json.loads(listed.stdout)] == [rid]
    assert cli("log", rid).exit_code == 0  # the table
    entries = json.loads(cli("log", rid, "--json").stdout)
    assert entries[-1]["kind"] == "succeed"
    assert entries[-1]["details"]["gates"][0]["verdict"] == "pass"
    again = cli("pause", rid)
    assert again.exit_code == 1 and "cannot pause" in again.stderr

    bad = tmp_path / "bad.yaml"
    bad.write_text("model: digits\nversion: 1.1.0\ntarget: '*'\nwaves: [{percent: 0}]\n")
    refused = cli("create", str(bad))
    assert refused.exit_code == 1 and "waves.0.percent" in refused.stderr
    missing = cli("create", str(tmp_path / "nope.yaml"))
    assert missing.exit_code == 1 and "cannot read rollout definition" in missing.stderr
