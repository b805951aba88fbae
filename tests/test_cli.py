"""The command line, through subprocesses: demo, and listen against serve."""

from __future__ import annotations

import io
import json
import math
import os
import pty
import select
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from typing import IO

import pytest

from leap_sync import FmtLogger, LeapError
from leap_sync.cli.common import to_json

CLI = [sys.executable, "-m", "leap_sync"]


def env(**extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if "proxy" not in k.lower() and k != "LEAP_TOKEN"}
    return {**base, **extra}


@pytest.mark.parametrize(("encoding", "compression"), [("json", "none"), ("etf", "zlib")])
def test_demo_runs_the_whole_loop(encoding: str, compression: str) -> None:
    done = subprocess.run(
        [*CLI, "demo", "--encoding", encoding, "--compression", compression],
        capture_output=True,
        text=True,
        timeout=60,
        env=env(),
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for expected in [
        "embedded Leap Edge server at ws://127.0.0.1:",
        f"connecting with encoding={encoding} compression={compression}",
        "state: connected",
        "INIT: cid=conn_",
        "subscribed to 'demo-room': type=private",
        'MESSAGE demo-room chat {"n":0,"text":"hello"}',
        'MESSAGE demo-room chat {"n":2,"text":"leap-sync"}',
        'StateUpdateEvent: {"topic":"demo running"}',
        'DIRECT_MESSAGE notice {"text":"just for you"} (direct=True)',
        "tagged heartbeat 'demo-tag' answered in",
        "heartbeat round trip:",
        "state: errored (server closed the connection (code 4000: demo: forced reconnect); will_reconnect=True)",
        '{"text":"still here after the reconnect"}',
        "closed: state=closed",
        "demo finished",
    ]:
        assert expected in out
    assert out.count("state: connected") == 2
    assert "leap_token_demo" not in out + done.stderr
    assert done.stderr == ""


class Serve:
    def __init__(self, proc: subprocess.Popen[str], url: str, control: str) -> None:
        self.proc, self.url, self.control = proc, url, control

    def post(self, path: str, body: object, method: str = "POST") -> dict[str, object]:
        request = urllib.request.Request(
            self.control + path,
            data=json.dumps(body).encode(),
            method=method,
            headers={"Content-Type": "application/json"},
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(request, timeout=10) as response:
            result: dict[str, object] = json.loads(response.read())
            return result


@pytest.fixture
def serve() -> Iterator[Serve]:
    proc = subprocess.Popen(
        [*CLI, "serve", "--token", "tok_cli", "--channel", "room", "--heartbeat-interval", "1"],
        stdout=subprocess.PIPE,
        text=True,
        env=env(),
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip().removeprefix("leap edge: ")
        control = proc.stdout.readline().strip().removeprefix("control: ")
        assert url.startswith("ws://127.0.0.1:") and control.startswith("http://127.0.0.1:")
        yield Serve(proc, url, control)
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0


def read_line(stream: IO[str]) -> str:
    line = stream.readline()
    assert line, "the process ended"
    return line


def test_listen_piped_prints_json_lines(serve: Serve) -> None:
    proc = subprocess.Popen(
        [*CLI, "listen", "--project", "project_x", "--url", serve.url, "--channel", "room"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env(LEAP_TOKEN="tok_cli"),
    )
    assert proc.stdout is not None
    try:
        states = [json.loads(read_line(proc.stdout)) for _ in range(3)]
        assert states == [
            {"type": "state", "state": "connecting"},
            {"type": "state", "state": "authenticating"},
            {"type": "state", "state": "connected"},
        ]
        assert json.loads(read_line(proc.stdout)) == {"type": "subscribe", "channel": "room"}
        assert serve.post("/channels/room/messages", {"event": "chat", "data": {"text": "hi"}}) == {"delivered": 1}
        assert json.loads(read_line(proc.stdout)) == {
            "type": "message",
            "channel": "room",
            "event": "chat",
            "data": {"text": "hi"},
            "direct": False,
            "unicast": False,
        }
        serve.post("/tokens/tok_cli/messages", {"event": "dm", "data": [1, 2]})
        direct = json.loads(read_line(proc.stdout))
        assert (direct["channel"], direct["event"], direct["data"], direct["direct"]) == (None, "dm", [1, 2], True)
        serve.post("/channels/room/state", {"topic": "t"}, method="PUT")
        assert json.loads(read_line(proc.stdout)) == {
            "type": "event",
            "event": "StateUpdateEvent",
            "channel_id": "room",
            "state": {"topic": "t"},
        }
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert json.loads(out.splitlines()[-1]) == {"type": "state", "state": "closed"}
    assert "tok_cli" not in out + err


def test_listen_on_a_terminal_prints_human_lines(serve: Serve) -> None:
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [*CLI, "listen", "--project", "project_x", "--url", serve.url, "--channel", "room"],
        stdout=slave,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=env(LEAP_TOKEN="tok_cli"),
    )
    os.close(slave)
    buffer = b""

    def read_until(text: bytes) -> None:
        nonlocal buffer
        while text not in buffer:
            ready, _, _ = select.select([master], [], [], 10)
            assert ready, f"no {text!r} in {buffer!r}"
            buffer += os.read(master, 4096)

    try:
        read_until(b"subscribe room (private)")
        serve.post("/channels/room/messages", {"event": "chat", "data": {"text": "hi"}})
        read_until(b'message  room chat {"text":"hi"}')
        assert b"state    connected" in buffer
        assert b'{"type"' not in buffer
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(10)
        os.close(master)
    assert proc.returncode == 0


def test_listen_exits_non_zero_on_invalid_auth(serve: Serve) -> None:
    done = subprocess.run(
        [*CLI, "listen", "--project", "project_x", "--url", serve.url, "--channel", "room"],
        capture_output=True,
        text=True,
        timeout=30,
        env=env(LEAP_TOKEN="tok_wrong_cli"),
    )
    assert done.returncode == 3
    assert "rejected the credentials (close code 4001" in done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert lines[-2]["state"] == "errored" and lines[-2]["will_reconnect"] is False
    assert "tok_wrong_cli" not in done.stdout + done.stderr


def test_listen_tokenless_cannot_reach_private_channels(serve: Serve) -> None:
    done = subprocess.run(
        [*CLI, "listen", "--project", "project_x", "--url", serve.url, "--channel", "room", "--tokenless"],
        capture_output=True,
        text=True,
        timeout=30,
        env=env(LEAP_TOKEN="tok_cli"),
    )
    assert done.returncode == 3  # refused by the server
    assert "error_code=NOT_GRANTED" in done.stderr


def test_listen_unreachable_endpoint() -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    done = subprocess.run(
        [*CLI, "listen", "--project", "p", "--url", f"ws://127.0.0.1:{port}/ws", "--tokenless"],
        capture_output=True,
        text=True,
        timeout=30,
        env=env(),
    )
    assert done.returncode == 4  # could not connect
    assert "could not connect" in done.stderr


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--heartbeat-interval", "nan"], "heartbeat_interval must be finite"),
        (["--port", "99999"], "port must be between 0 and 65535"),
        (["--identify-timeout", "-1"], "identify_timeout"),
    ],
)
def test_serve_refuses_bad_options_with_a_message(options: list[str], message: str) -> None:
    done = subprocess.run([*CLI, "serve", *options], capture_output=True, text=True, timeout=30, env=env())
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr


def test_python_dash_m_and_help() -> None:
    done = subprocess.run([*CLI, "--help"], capture_output=True, text=True, timeout=30, env=env())
    assert done.returncode == 0
    for command in ("demo", "listen", "serve"):
        assert command in done.stdout


def test_json_lines_hold_whatever_a_server_sends() -> None:
    """ETF maps may have any term as a key; JSON has no NaN; a lone surrogate cannot be
    written as UTF-8: every record is still one valid JSON line."""
    value = {(1, 2): "tuple key", b"\xff": math.nan, "list": [math.inf, {b"k": "\ud800"}], 3: None}
    line = to_json(value)
    assert json.loads(line) == {"(1, 2)": "tuple key", "b'\\xff'": None, "list": [None, {"b'k'": "\ud800"}], "3": None}
    line.encode("utf-8")  # writable


def test_fmt_logger_escapes_what_a_server_wrote() -> None:
    stream = io.StringIO()
    FmtLogger("debug", stream).error("closed", LeapError("reason \x1b]0;title\x07 \x1b[2J \ud800"), {"x": "\x1b[31m"})
    line = stream.getvalue()
    assert "\x1b" not in line and "\x07" not in line
    assert "reason \\x1b]0;title\\x07 \\x1b[2J \\ud800" in line
    line.encode("utf-8")
