"""The agent over a faulty network: a TCP proxy between the agent and the real server
cuts downloads short, answers with nothing, or is down for a while."""

import contextlib
import socket
import threading

import httpx
import pytest

from edgefleet.agent.link import ServerError
from edgefleet.agent.statemachine import State
from tests.agent.test_agent_e2e import desired, make_agent
from tests.server.conftest import LiveServer


class FlakyProxy:
    """Forwards TCP to the server; can refuse connections or cut a response after N bytes."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.down = False
        self.answer_503 = False
        self.delay_s = 0.0
        self.cut_targets_after: int | None = None  # bytes of a /tuf/targets/ response
        self.cuts = 0
        self.target_bytes = 0
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.down:
                client.close()  # connection reset: the server is "unreachable"
                continue
            if self.answer_503:
                threading.Thread(target=self._unavailable, args=(client,), daemon=True).start()
                continue
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    @staticmethod
    def _unavailable(client: socket.socket) -> None:
        with contextlib.suppress(OSError):
            client.recv(65536)
            body = b'{"error": {"code": "unavailable", "message": "maintenance", "details": {}}}'
            client.sendall(
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                b"Connection: close\r\nContent-Length: "
                + str(len(body)).encode()
                + b"\r\n\r\n"
                + body
            )
        client.close()

    def _serve(self, client: socket.socket) -> None:
        if self.delay_s:
            threading.Event().wait(self.delay_s)  # a slow network path
        try:
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        except OSError:  # the server is gone (the test has ended)
            client.close()
            return
        is_target = threading.Event()

        def pump(src: socket.socket, dst: socket.socket, response: bool) -> None:
            sent = 0
            try:
                while data := src.recv(65536):
                    if not response and b"GET /tuf/targets/" in data:
                        is_target.set()
                    if not response and data.startswith(b"GET "):
                        head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
                        ranges = [
                            h.split(":", 1)[1].strip()
                            for h in head[1:]
                            if h.lower().startswith("range:")
                        ]
                        self.requests.append((head[0].split(" ")[1], ranges[0] if ranges else None))
                    if response and is_target.is_set():
                        if (
                            self.cut_targets_after is not None
                            and sent + len(data) > self.cut_targets_after
                        ):
                            dst.sendall(data[: max(0, self.cut_targets_after - sent)])
                            self.cuts += 1
                            self.cut_targets_after = None  # cut once, then behave
                            raise ConnectionResetError
                        sent += len(data)
                        self.target_bytes += len(data)
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                for end in (src, dst):
                    with contextlib.suppress(OSError):
                        end.shutdown(socket.SHUT_RDWR)

        threading.Thread(target=pump, args=(client, upstream, False), daemon=True).start()
        pump(upstream, client, True)

    def close(self) -> None:
        self._stop = True
        self.listener.close()


@pytest.fixture
def proxy(live: LiveServer):
    port = int(live.url.rsplit(":", 1)[1])
    flaky = FlakyProxy(port)
    yield flaky
    flaky.close()


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_download_cut_mid_way_resumes_without_fetching_twice(live: LiveServer, proxy, tmp_path):
    agent = make_agent(live, tmp_path, name="net-1")
    # The agent talks to the server through the proxy from now on (TUF URLs too).
    agent.link.base = proxy.url
    agent._delivery.metadata_url = proxy.url + "/tuf/metadata/"
    agent._delivery.targets_url = proxy.url + "/tuf/targets/"
    proxy.cut_targets_after = 5000
    desired(live, "net-1", "1.1.0")
    agent.check_in_once()
    assert proxy.cuts == 1
    assert agent.state.state is State.COMMITTED and agent.runtime.active.version == "1.1.0"
    size = (
        agent.state.active_content
        and live.admin("GET", "/api/v1/models/digits/versions/1.1.0").json()["variants"][0]["size"]
    )
    # Bytes of the model that crossed the wire: no more than one model (plus headers and
    # the golden file) despite the cut.
    assert agent.bytes_downloaded <= size


@pytest.mark.parametrize("backend", ["sqlite"])
def test_the_agent_rides_out_an_unreachable_server(live: LiveServer, proxy, tmp_path):
    agent = make_agent(live, tmp_path, name="net-2")
    agent.link.base = proxy.url
    proxy.down = True
    for _ in range(3):
        with pytest.raises(ServerError) as info:
            agent.check_in_once()
        assert info.value.retryable
    # While down, transitions queue on disk; nothing is lost.
    assert agent.state.state is State.IDLE
    proxy.down = False
    desired(live, "net-2", "1.0.0")
    agent.check_in_once()
    assert agent.state.state is State.COMMITTED
    view = live.admin("GET", "/api/v1/devices/net-2").json()
    assert [e["seq"] for e in view["events"]] == list(range(1, 8))


@pytest.mark.parametrize("backend", ["sqlite"])
def test_backoff_grows_while_the_server_is_down_and_resets_after(live: LiveServer, proxy, tmp_path):
    agent = make_agent(live, tmp_path, name="net-3")
    agent.link.base = proxy.url
    proxy.down = True
    delays: list[float] = []

    class StopLoopError(Exception):
        pass

    def record(seconds: float) -> None:
        delays.append(seconds)
        if len(delays) == 5:
            proxy.down = False
        if len(delays) == 7:
            raise StopLoopError

    agent.sleep = record
    agent.config = agent.config.model_copy(update={"jitter": 0.0, "checkin_interval_s": 1.0})
    with pytest.raises(StopLoopError):
        agent.run_forever()
    assert delays[:4] == [2.0, 4.0, 8.0, 16.0]  # exponential while unreachable
    assert delays[-1] == 1.0  # back to the check-in interval once it answers


@pytest.mark.parametrize("backend", ["sqlite"])
def test_server_errors_and_slow_answers_are_retried_later(live: LiveServer, proxy, tmp_path):
    agent = make_agent(live, tmp_path, name="net-4")
    agent.link.base = proxy.url
    agent.link.http.timeout = httpx.Timeout(0.5)
    proxy.answer_503 = True
    with pytest.raises(ServerError) as info:
        agent.check_in_once()
    assert info.value.retryable and info.value.status == 503 and "maintenance" in info.value.message
    proxy.answer_503 = False
    proxy.delay_s = 2.0  # longer than the agent's 0.5 s timeout
    with pytest.raises(ServerError) as info:
        agent.check_in_once()
    assert info.value.retryable and info.value.status == 0
    proxy.delay_s = 0.0
    desired(live, "net-4", "1.0.0")
    agent.check_in_once()
    assert agent.state.state is State.COMMITTED and agent.runtime.active.version == "1.0.0"
