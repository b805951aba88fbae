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
from hostile import HostileServer, Peer, init_frame

from leap_sync.testing import ElstatServer, LeapEdgeServer
from leap_sync.wire.wsframes import OP_TEXT, unmasked_frame

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


def _init_and_messages_in_one_write(peer: Peer) -> None:
    """Upgrade, Hello, Identify; then INIT and two messages in ONE write (one read on
    the client's side); then a close that makes the client reconnect (the first
    connection only)."""
    peer.upgrade()
    peer.hello()
    peer.expect_identify()
    frames = [init_frame(f"c{peer.number}", ["room"], scope="project")] + [
        {"op": 0, "d": {"c": "room", "e": "MESSAGE", "d": {"e": "m", "d": [peer.number, n]}}} for n in range(2)
    ]
    peer.send(b"".join(unmasked_frame(OP_TEXT, json.dumps(f).encode()) for f in frames))
    if peer.number == 1:
        peer.close(4000, "bye")
    peer.wait()


def test_listen_prints_connected_before_the_messages_read_with_init() -> None:
    """A message that arrived in the same read as INIT comes after the ``connected``
    line INIT caused, on the first connection and after a reconnect (the old code
    printed it before)."""
    with HostileServer(_init_and_messages_in_one_write) as server:
        proc = subprocess.Popen(
            [*CLI, "listen", "--project", "p", "--tokenless", "--url", server.url, "--format", "json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            env=env(),
        )
        assert proc.stdout is not None
        try:
            records = [read_json(proc.stdout) for _ in range(10)]
        finally:
            _, err = stopped(proc)
    assert proc.returncode == 0, err
    assert [(r["type"], r.get("state"), r.get("data")) for r in records] == [
        ("state", "connecting", None),
        ("state", "authenticating", None),
        ("state", "connected", None),
        ("message", None, [1, 0]),
        ("message", None, [1, 1]),
        ("state", "errored", None),
        ("state", "connecting", None),
        ("state", "authenticating", None),
        ("state", "connected", None),
        ("message", None, [2, 0]),
    ]


def _data_with_the_upgrade(peer: Peer) -> None:
    """The 101 answer and a DATA frame in ONE write (Elstat is connected on the upgrade)."""
    peer.read_request()
    data = {"op": 3, "c": "status:api", "d": [1_000_000, True]}
    peer.send(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + peer.accept_key() + b"\r\n\r\n" + unmasked_frame(OP_TEXT, json.dumps(data).encode())
    )
    peer.json({"op": 1, "channels": peer.read_json()["channels"]})  # the SUBSCRIBE's answer
    peer.wait()


def test_elstat_prints_connected_before_data_read_with_the_upgrade() -> None:
    with HostileServer(_data_with_the_upgrade) as server:
        proc = subprocess.Popen(
            [*CLI, "elstat", "--url", server.url, "--channel", "status:api", "--format", "json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            env=env(),
        )
        assert proc.stdout is not None
        try:
            records = [read_json(proc.stdout) for _ in range(4)]
        finally:
            _, err = stopped(proc)
    assert proc.returncode == 0, err
    assert [(r["type"], r.get("state")) for r in records] == [
        ("state", "connecting"),
        ("state", "connected"),
        ("data", None),
        ("subscribe", None),
    ]
