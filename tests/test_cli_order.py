"""`leap-sync listen` and `elstat` print state changes in the one ordered stream of what
happened: a connection's end (its ``errored`` line) after every event that arrived
before it, and ``closed`` last. Through subprocesses, against the embedded servers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import IO, Any

import pytest

from leap_sync.testing import ElstatServer, LeapEdgeServer

CLI = [sys.executable, "-m", "leap_sync"]
TOKEN = "tok_cli_order"
N = 300  # enough that the old code (states printed by another thread) printed one mid-stream


def env(**extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if "proxy" not in k.lower() and k != "LEAP_TOKEN"}
    return {**base, **extra}


def read_json(stream: IO[str]) -> dict[str, Any]:
    line = stream.readline()
    assert line, "the process ended"
    record: dict[str, Any] = json.loads(line)
    return record


def until_state(stream: IO[str]) -> list[dict[str, Any]]:
    """The records up to and including the next state line."""
    records = [read_json(stream)]
    while records[-1]["type"] != "state":
        records.append(read_json(stream))
    return records


def stopped(proc: subprocess.Popen[str]) -> tuple[str, str]:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    return proc.communicate(timeout=20)


@pytest.fixture
def leap() -> Iterator[LeapEdgeServer]:
    with LeapEdgeServer() as server:
        server.add_token(TOKEN)
        server.create_channel("room")
        yield server


def listen(server: LeapEdgeServer) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*CLI, "listen", "--project", "project_x", "--url", server.url, "--channel", "room", "--format", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        env=env(LEAP_TOKEN=TOKEN),
    )


def elstat(server: ElstatServer) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*CLI, "elstat", "--url", server.base_url, "--channel", "status:api", "--format", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        env=env(),
    )


ENDS: dict[str, Callable[[Any], object]] = {
    "protocol error": lambda server: server.send_raw("{not json"),
    "close frame": lambda server: server.disconnect(4000, "bye"),
}


@pytest.mark.parametrize("end", ENDS)
def test_listen_prints_errored_after_every_message_before_it(leap: LeapEdgeServer, end: str) -> None:
    proc = listen(leap)
    assert proc.stdout is not None
    try:
        first = [read_json(proc.stdout) for _ in range(4)]
        leap.publish_many("room", "m", range(N))
        ENDS[end](leap)
        records = until_state(proc.stdout)
    finally:
        _, err = stopped(proc)
    assert proc.returncode == 0, err
    assert first == [
        {"type": "state", "state": "connecting"},
        {"type": "state", "state": "authenticating"},
        {"type": "state", "state": "connected"},
        {"type": "subscribe", "channel": "room"},
    ]
    assert [(r["type"], r.get("data"), r.get("state")) for r in records] == [
        *(("message", n, None) for n in range(N)),
        ("state", None, "errored"),
    ]
    assert records[-1]["will_reconnect"] is True


def test_listen_prints_a_fatal_end_after_every_message_then_closed(leap: LeapEdgeServer) -> None:
    proc = listen(leap)
    assert proc.stdout is not None
    try:
        while read_json(proc.stdout)["type"] != "subscribe":
            pass
        leap.publish_many("room", "m", range(N))
        leap.disconnect(4001, "invalid auth")  # fatal: the client stops, the channel ends
        out, err = proc.communicate(timeout=20)
    finally:
        stopped(proc)
    assert proc.returncode == 3, err
    records = [json.loads(line) for line in out.splitlines()]
    assert [(r["type"], r.get("data"), r.get("state")) for r in records] == [
        *(("message", n, None) for n in range(N)),
        ("state", None, "errored"),
        ("state", None, "closed"),
    ]
    assert records[-2]["will_reconnect"] is False


@pytest.mark.parametrize("end", ENDS)
def test_elstat_prints_errored_after_every_data_event_before_it(end: str) -> None:
    with ElstatServer(channels=["status:api"]) as server:
        proc = elstat(server)
        assert proc.stdout is not None
        try:
            first = [read_json(proc.stdout) for _ in range(3)]
            for n in range(N):
                server.push_data("status:api", n % 2 == 0, timestamp_ms=1_000_000 + n)
            ENDS[end](server)
            records = until_state(proc.stdout)
        finally:
            _, err = stopped(proc)
    assert proc.returncode == 0, err
    assert first == [
        {"type": "state", "state": "connecting"},
        {"type": "state", "state": "connected"},
        {"type": "subscribe", "channels": ["status:api"], "refused": []},
    ]
    assert [(r["type"], r.get("timestamp_ms", 1_000_000) - 1_000_000, r.get("state")) for r in records] == [
        *(("data", n, None) for n in range(N)),
        ("state", 0, "errored"),
    ]
