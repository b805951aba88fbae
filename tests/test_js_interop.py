"""The official JavaScript client, ``@onehop/leap-edge-js`` 1.0.11, against
``leap-sync serve``: it reaches ``connected``, subscribes, and receives a message
published through the HTTP control endpoint; and against an embedded server whose
acks are paused for one beat, it survives on its optimistic extra beat.

The client lives in ``tests/js`` (``package.json`` pins it, ``interop.cjs`` drives it
and reports what it sees as JSON lines). It is installed with npm into a temporary
directory once per session; the tests are skipped when ``node``/``npm`` are missing or
the install fails.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _leap_raw import PROJECT, TOKEN, _no_server_errors, serve_process

from leap_sync.protocol.models import ClientHeartbeat
from leap_sync.testing import LeapEdgeServer

__all__ = ["_no_server_errors"]

JS_DIR = Path(__file__).parent / "js"
INSTALL_TIMEOUT = 300


@pytest.fixture(scope="session")
def leap_edge_js(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding ``interop.cjs`` and an installed ``node_modules``."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are needed for the JavaScript interop test")
    workdir = tmp_path_factory.mktemp("leap-edge-js")
    for name in ("package.json", "interop.cjs"):
        shutil.copy2(JS_DIR / name, workdir / name)
    try:
        result = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund"],
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"npm install of @onehop/leap-edge-js failed: {exc}")
    if result.returncode != 0:
        pytest.skip(f"npm install of @onehop/leap-edge-js failed ({result.returncode}): {result.stderr[-500:]}")
    installed = workdir / "node_modules" / "@onehop" / "leap-edge-js" / "package.json"
    if not installed.exists():
        pytest.skip("npm install did not produce @onehop/leap-edge-js")
    version = json.loads(installed.read_text())["version"]
    assert version == "1.0.11", f"npm installed @onehop/leap-edge-js {version}, not the pinned 1.0.11"
    return workdir


class NodeClient:
    """``node interop.cjs ...`` with its JSON-line reports in a queue."""

    def __init__(
        self, workdir: Path, socket_url: str, token: str | None, channel: str, timeout_ms: int = 20000
    ) -> None:
        node = shutil.which("node")
        assert node is not None
        self.proc = subprocess.Popen(
            [node, "interop.cjs", socket_url, PROJECT, token or "", channel, str(timeout_ms)],
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "NODE_NO_WARNINGS": "1"},
        )
        self.reports: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._pump, name="test-node-stdout", daemon=True)
        self._reader.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                self.reports.put(json.loads(line))
            else:  # the client's own console.log chatter
                self.reports.put({"type": "log", "line": line.rstrip()})
        self.reports.put(None)

    def next(self, timeout: float = 20.0) -> dict[str, Any]:
        try:
            report = self.reports.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no report from node within {timeout} s; seen {self.seen}") from None
        if report is None:
            raise AssertionError(f"node exited ({self.proc.poll()}) after {self.seen}: {self._stderr()}")
        self.seen.append(report)
        return report

    def until(self, predicate: Any, timeout: float = 20.0) -> dict[str, Any]:
        while True:
            report = self.next(timeout)
            if predicate(report):
                return report

    def _stderr(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return "(running)"
        return self.proc.stderr.read()[-2000:]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self._reader.join(10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def node_client(leap_edge_js: Path) -> Iterator[Any]:
    started: list[NodeClient] = []

    def start(socket_url: str, token: str | None, channel: str, timeout_ms: int = 20000) -> NodeClient:
        client = NodeClient(leap_edge_js, socket_url, token, channel, timeout_ms)
        started.append(client)
        return client

    yield start
    for client in started:
        client.close()


def publish(control_url: str, channel: str, event: str, data: Any) -> tuple[int, Any]:
    import urllib.request

    request = urllib.request.Request(
        f"{control_url}/channels/{channel}/messages",
        data=json.dumps({"event": event, "data": data}).encode("utf-8"),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, json.loads(response.read())


def _until_subscription_answer(js: NodeClient) -> list[dict[str, Any]]:
    """Reports up to the AVAILABLE/UNAVAILABLE answering the subscription (the
    client's console chatter left out)."""
    js.until(lambda r: r["type"] == "event" and r["eventType"] in ("AVAILABLE", "UNAVAILABLE"))
    return [r for r in js.seen if r["type"] != "log"]


def _init_report(cid: str, scope: str) -> dict[str, Any]:
    data = {"cid": cid, "connection_count": 1, "metadata": None, "scope": scope, "channels": []}
    return {"type": "event", "channelId": None, "eventType": "INIT", "data": data}


def test_official_js_client_connects_subscribes_and_receives_a_published_message(node_client: Any) -> None:
    with serve_process("--token", TOKEN, "--channel", "room") as served:
        js = node_client(served.ws_url, TOKEN, "room")
        reports = _until_subscription_answer(js)
        cid = reports[4]["data"]["cid"] if len(reports) > 4 and reports[4].get("eventType") == "INIT" else None
        assert isinstance(cid, str), reports
        # The client reports "connected" on INIT, and subscribes from that callback,
        # before its serviceEvent listener sees the INIT itself.
        assert reports == [
            {"type": "state", "state": "connecting"},
            {"type": "state", "state": "authenticating"},
            {"type": "state", "state": "connected"},
            {"type": "subscribed", "channel": "room"},
            _init_report(cid, "token"),
            {
                "type": "event",
                "channelId": "room",
                "eventType": "AVAILABLE",
                "data": {"channel": {"id": "room", "project_id": PROJECT, "state": {}, "type": "private"}},
            },
        ]
        assert publish(served.control_url, "room", "chat", {"text": "hi from python"}) == (200, {"delivered": 1})
        received = js.until(lambda r: r["type"] == "event")
        assert received == {
            "type": "event",
            "channelId": "room",
            "eventType": "MESSAGE",
            "data": {"e": "chat", "d": {"text": "hi from python"}},
        }
        assert js.next() == {"type": "done"}
        assert js.proc.wait(10) == 0


def test_official_js_client_tokenless_is_not_granted_a_private_channel(node_client: Any) -> None:
    """The JS client omits ``token`` when it has none: the server takes that as a
    tokenless Identify (scope ``noauth``), which a private channel refuses."""
    with serve_process("--token", TOKEN, "--channel", "room") as served:
        js = node_client(served.ws_url, None, "room")
        reports = _until_subscription_answer(js)
        cid = reports[4]["data"]["cid"] if len(reports) > 4 and reports[4].get("eventType") == "INIT" else None
        assert isinstance(cid, str), reports
        assert reports == [
            {"type": "state", "state": "connecting"},
            {"type": "state", "state": "authenticating"},
            {"type": "state", "state": "connected"},
            {"type": "subscribed", "channel": "room"},
            _init_report(cid, "noauth"),
            {
                "type": "event",
                "channelId": "room",
                "eventType": "UNAVAILABLE",
                "data": {"graceful": False, "error_code": "NOT_GRANTED"},
            },
        ]


def test_official_js_client_survives_a_late_ack_with_its_optimistic_extra_beat(node_client: Any) -> None:
    """The JS client beats every interval (6 s here) and checks each ack 5 s later; a
    missing ack makes it send one extra, off-schedule beat and reconnect unless that
    one is acked within 750 ms. Acks paused for its first beat and resumed before the
    extra one: the server acks the extra beat, the client stays connected (no 4007,
    no reconnect) and still receives a message afterwards."""
    beats: list[float] = []

    def on_frame(cid: str, frame: Any) -> None:
        if isinstance(frame, ClientHeartbeat) and frame.tag is None:
            beats.append(time.monotonic())

    with LeapEdgeServer(heartbeat_interval=6.0, heartbeat_ack_delay=0.005, on_frame=on_frame) as server:
        server.add_token(TOKEN, project_id=PROJECT)
        server.create_channel("room", project_id=PROJECT)
        server.pause_acks(True)
        js = node_client(server.url, TOKEN, "room", timeout_ms=40000)
        _until_subscription_answer(js)
        server.wait_for(lambda s: bool(s.connections) and s.connections[0].heartbeats >= 1, timeout=15)
        server.pause_acks(False)  # the first beat went unacknowledged; the extra one will not
        # The extra beat ~5 s after the first, then the scheduled one ~1 s later.
        server.wait_for(lambda s: not s.connections or s.connections[0].heartbeats >= 3, timeout=15)
        assert [(c.open, c.close_code) for c in server.all_connections] == [(True, None)], js.seen
        assert 4.0 < beats[1] - beats[0] < 6.0, beats
        assert 0.2 < beats[2] - beats[1] < 2.0, beats
        (info,) = server.connections
        assert info.open and info.close_code is None
        assert len(server.all_connections) == 1  # never reconnected
        assert server.publish("room", "chat", {"after": "extra beat"}) == 1
        received = js.until(lambda r: r["type"] == "event" and r["eventType"] == "MESSAGE")
        assert received["data"] == {"e": "chat", "d": {"after": "extra beat"}}
        assert js.next() == {"type": "done"}
        assert js.proc.wait(10) == 0
        states = [r["state"] for r in js.seen if r["type"] == "state"]
        assert states == ["connecting", "authenticating", "connected"]
        assert len(server.all_connections) == 1
