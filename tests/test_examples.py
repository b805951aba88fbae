"""Every example, run against the embedded server, with what it printed or served."""

from __future__ import annotations

import http.client
import importlib
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from clientkit import TOKEN

from leap_sync.testing import LeapEdgeServer

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture
def example_server() -> Iterator[LeapEdgeServer]:
    with LeapEdgeServer(heartbeat_interval=1.0) as server:
        server.add_token(TOKEN)
        server.create_channel("room")
        yield server


def example_env(server: LeapEdgeServer, **extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    pythonpath = os.pathsep.join(filter(None, [str(EXAMPLES), base.get("PYTHONPATH")]))
    return {
        **base,
        "LEAP_PROJECT": "project_x",
        "LEAP_TOKEN": TOKEN,
        "LEAP_URL": server.url,
        "PYTHONPATH": pythonpath,
        **extra,
    }


def read_line(stream: IO[str]) -> str:
    line = stream.readline()
    assert line, "the example ended early"
    return line.rstrip("\n")


def publish_when_subscribed(server: LeapEdgeServer, subscribers: int = 1) -> None:
    server.wait_for(lambda s: len(s.subscribers("room")) >= subscribers, timeout=10)
    server.publish("room", "chat", {"text": "one"})
    server.publish("room", "chat", [2])


def test_blocking_script(example_server: LeapEdgeServer) -> None:
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "blocking_script.py"), "--channel", "room", "--count", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=example_env(example_server),
    )
    assert proc.stdout is not None
    assert read_line(proc.stdout) == "subscribed to room"
    publish_when_subscribed(example_server)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert out.splitlines() == ['room chat {"text": "one"}', "room chat [2]"]
    assert "state: connected" in err and "state: closed" in err
    assert TOKEN not in out + err


def test_django_management_command(example_server: LeapEdgeServer) -> None:
    pytest.importorskip("django")
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "leap_listen", "--channel", "room", "--count", "2"],
        cwd=EXAMPLES / "django_project",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=example_env(example_server),
    )
    assert proc.stdout is not None
    assert read_line(proc.stdout) == "subscribed to room"
    publish_when_subscribed(example_server)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert out.splitlines() == ['room chat {"text": "one"}', "room chat [2]", "closed (closed)"]


def read_sse_events(response: http.client.HTTPResponse, count: int) -> list[tuple[str, str]]:
    events: list[tuple[str, str]] = []
    name = data = ""
    while len(events) < count:
        line = response.readline().decode().rstrip("\n")
        if line.startswith("event: "):
            name = line[len("event: ") :]
        elif line.startswith("data: "):
            data = line[len("data: ") :]
        elif line == "" and name:
            events.append((name, data))
            name = data = ""
    return events


def open_events(port: int, limit: int = 0) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", f"/events?limit={limit}")
    response = conn.getresponse()
    assert response.status == 200
    assert response.getheader("Content-Type", "").startswith("text/event-stream")
    assert response.readline() == b": connected\n"
    return conn, response


def test_flask_sse_app(example_server: LeapEdgeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("flask")
    from werkzeug.serving import make_server

    for key, value in example_env(example_server, LEAP_CHANNEL="room").items():
        monkeypatch.setenv(key, value)
    monkeypatch.syspath_prepend(str(EXAMPLES))
    sys.modules.pop("flask_sse", None)
    flask_sse: Any = importlib.import_module("flask_sse")
    assert flask_sse.leap_client.state.connection_state.value == "idle"  # import started nothing
    flask_sse.start_leap()
    http_server = make_server("127.0.0.1", 0, flask_sse.app, threaded=True)
    serving = threading.Thread(target=http_server.serve_forever)
    serving.start()
    try:
        conn, response = open_events(http_server.server_port)
        publish_when_subscribed(example_server)
        assert read_sse_events(response, 2) == [
            ("chat", '{"channel": "room", "data": {"text": "one"}}'),
            ("chat", '{"channel": "room", "data": [2]}'),
        ]
        conn.close()
        health = http.client.HTTPConnection("127.0.0.1", http_server.server_port, timeout=10)
        health.request("GET", "/health")
        body = health.getresponse().read().decode()
        assert '"state":"connected"' in body.replace(" ", "")
        health.close()
    finally:
        flask_sse.leap_client.close()
        http_server.shutdown()
        serving.join(10)
        sys.modules.pop("flask_sse", None)


def test_gunicorn_gives_each_worker_a_client(example_server: LeapEdgeServer) -> None:
    pytest.importorskip("gunicorn")
    pytest.importorskip("flask")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn_conf.py", "flask_sse:app"],
        cwd=EXAMPLES,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=example_env(example_server, GUNICORN_BIND="127.0.0.1:0", GUNICORN_WORKERS="2", LEAP_CHANNEL="room"),
    )
    assert proc.stderr is not None
    try:
        port = 0
        while not port:
            line = read_line(proc.stderr)
            match = re.search(r"Listening at: http://127\.0\.0\.1:(\d+)", line)
            if match:
                port = int(match.group(1))
        workers = example_server.wait_for_connections(2, timeout=30)
        assert len({c.cid for c in workers}) == 2
        example_server.wait_for(lambda s: len(s.subscribers("room")) == 2, timeout=10)
        conn, response = open_events(port, limit=1)
        example_server.publish("room", "chat", {"text": "via gunicorn"})
        assert read_sse_events(response, 1) == [("chat", '{"channel": "room", "data": {"text": "via gunicorn"}}')]
        assert response.read() == b""  # the stream ended after its one event
        conn.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _, log = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, log = proc.communicate()
            raise AssertionError(f"gunicorn did not stop on SIGTERM; its log:\n{log}") from None
    assert proc.returncode == 0, log
    example_server.wait_for(lambda s: not s.connections, timeout=10)
    codes = sorted(c.close_code for c in example_server.all_connections)
    assert codes == [1000, 1000], f"closed, not dropped; gunicorn's log:\n{log}"


def test_pytest_fixture_example() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLES / "test_notifier.py")],
        cwd=EXAMPLES,
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if "proxy" not in k.lower()},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout


def test_status_board_demo() -> None:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "status_board.py"), "--demo"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    board = done.stdout.split("final board:\n", 1)[1].splitlines()
    assert board == [
        "connection: closed",
        "service          status   latency",
        "api              up       41 ms",
        "web              DOWN     980 ms",
        "incident #1: web is slow",
    ]
