"""How a command stops, through subprocesses: SIGINT and SIGTERM at any moment after
it started (a second one during the close, one the kernel gives another thread), and
the reader of its output going away (a closed pipe, on a quiet channel too); plus the
usage errors and consoles found with them."""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import IO, Any

import pytest

from leap_sync import ConnectionState, LeapClient
from leap_sync.testing import ElstatServer, LeapEdgeServer

CLI = [sys.executable, "-m", "leap_sync"]
TOKEN = "tok_cli_stop"


def env(**extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if "proxy" not in k.lower() and k != "LEAP_TOKEN"}
    return {**base, **extra}


def read_until(stream: IO[str], kind: str) -> dict[str, Any]:
    while True:
        line = stream.readline()
        assert line, "the process ended"
        record: dict[str, Any] = json.loads(line)
        if record["type"] == kind:
            return record


def finish(proc: subprocess.Popen[str]) -> str:
    """Wait for the process (20 s: it must end by itself) and return its stderr."""
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
        raise
    assert proc.stderr is not None
    return proc.stderr.read()


@pytest.fixture
def leap() -> Iterator[LeapEdgeServer]:
    with LeapEdgeServer() as server:
        server.add_token(TOKEN)
        server.create_channel("room")
        yield server


def listen(server: LeapEdgeServer, *extra: str, **extra_env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*CLI, "listen", "--project", "project_x", "--url", server.url, "--channel", "room", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        errors="replace",
        env=env(LEAP_TOKEN=TOKEN, **extra_env),
    )


def elstat(server: ElstatServer, *channels: str, **extra_env: str) -> subprocess.Popen[str]:
    args = [arg for channel in channels for arg in ("--channel", channel)]
    return subprocess.Popen(
        [*CLI, "elstat", "--url", server.base_url, *args, "--format", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        errors="replace",
        env=env(**extra_env),
    )


def closed_with(server: LeapEdgeServer | ElstatServer, code: int) -> None:
    server.wait_for(lambda s: [c.close_code for c in s.all_connections] == [code], timeout=10)


# -- signals --------------------------------------------------------------------------------

BOTH = [signal.SIGTERM, signal.SIGINT]


@pytest.mark.parametrize("signals", [[signal.SIGINT], [signal.SIGTERM], BOTH], ids=["INT", "TERM", "TERM+INT"])
def test_demo_stops_quietly_whenever_a_signal_comes(signals: list[signal.Signals]) -> None:
    for lines in (1, 2, 3, 5, 8, 11, 13):  # starting, connecting, INIT, messages, heartbeat, reconnect
        proc = subprocess.Popen([*CLI, "demo"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
        assert proc.stdout is not None
        for _ in range(lines):
            assert proc.stdout.readline()
        for sig in signals:
            proc.send_signal(sig)
        _, err = proc.communicate(timeout=20)
        assert (lines, proc.returncode, err) == (lines, 0, "")


@pytest.mark.parametrize("command", ["listen", "elstat"])
def test_a_second_signal_during_the_close_still_closes_with_a_close_frame(command: str, leap: LeapEdgeServer) -> None:
    with ElstatServer(channels=["status:api"]) as status:
        server: LeapEdgeServer | ElstatServer = leap if command == "listen" else status
        proc = listen(leap) if command == "listen" else elstat(status, "status:api")
        assert proc.stdout is not None
        read_until(proc.stdout, "subscribe")
        for sig in BOTH:  # SIGTERM, then an impatient Ctrl-C while the first one closes
            proc.send_signal(sig)
        err = finish(proc)
        assert (proc.returncode, err) == (0, "")
        closed_with(server, 1000)


def test_a_signal_the_kernel_gives_another_thread_stops_listen(leap: LeapEdgeServer) -> None:
    # The main thread waits for the next event on a quiet channel, where no Python
    # handler runs: a SIGTERM taken by the I/O or the callbacks thread must stop it.
    try:
        tgkill = ctypes.CDLL(None, use_errno=True).tgkill
    except (AttributeError, OSError):
        pytest.skip("no tgkill() (glibc 2.30, Linux)")
    proc = listen(leap)
    assert proc.stdout is not None
    read_until(proc.stdout, "subscribe")
    others = [int(tid) for tid in os.listdir(f"/proc/{proc.pid}/task") if int(tid) != proc.pid]
    assert others
    for tid in others:
        assert tgkill(proc.pid, tid, signal.SIGTERM) == 0
    err = finish(proc)
    assert (proc.returncode, err) == (0, "")
    closed_with(leap, 1000)


def test_a_signal_while_listen_connects_ends_it_quietly() -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never answers the upgrade
        port = silent.getsockname()[1]
        proc = subprocess.Popen(
            [*CLI, "listen", "--project", "p", "--tokenless", "--url", f"ws://127.0.0.1:{port}/ws"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env(),
        )
        peer, _ = silent.accept()
        with peer:
            peer.settimeout(30)
            assert peer.recv(65536).startswith(b"GET /ws")  # inside connect(): awaiting the upgrade answer
            proc.send_signal(signal.SIGINT)
            err = finish(proc)
    assert (proc.returncode, err) == (0, "")


# -- the output's reader going away ------------------------------------------------------


def test_listen_ends_when_its_reader_leaves_a_quiet_channel(leap: LeapEdgeServer) -> None:
    proc = listen(leap)
    assert proc.stdout is not None
    read_until(proc.stdout, "subscribe")
    proc.stdout.close()  # as `head` does; nothing is published afterwards
    err = finish(proc)
    assert (proc.returncode, err) == (0, "")
    closed_with(leap, 1000)


def test_elstat_ends_when_its_reader_leaves_a_quiet_channel() -> None:
    with ElstatServer(channels=["status:api"]) as server:
        proc = elstat(server, "status:api")
        assert proc.stdout is not None
        read_until(proc.stdout, "subscribe")
        proc.stdout.close()
        err = finish(proc)
        assert (proc.returncode, err) == (0, "")
        closed_with(server, 1000)


def test_demo_piped_into_head_ends_quietly() -> None:
    proc = subprocess.Popen([*CLI, "demo"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
    assert proc.stdout is not None
    first = [proc.stdout.readline() for _ in range(2)]
    proc.stdout.close()  # `leap-sync demo | head -n 2`
    err = finish(proc)
    assert (proc.returncode, err) == (0, "")
    assert "embedded Leap Edge server at ws://127.0.0.1:" in first[0]


def without_reader(*args: str) -> subprocess.CompletedProcess[str]:
    """Run with stdout a pipe whose reader is gone before the command starts."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run([*CLI, *args], stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=30, env=env())
    finally:
        os.close(write_end)


def test_serve_whose_lines_nobody_reads_exits_0_quietly() -> None:
    done = without_reader("serve")
    assert (done.returncode, done.stderr) == (0, "")  # was 2: "cannot listen on 127.0.0.1: Broken pipe"


def test_demo_whose_output_nobody_reads_exits_0_quietly() -> None:
    done = without_reader("demo")
    assert (done.returncode, done.stderr) == (0, "")


def test_serve_keeps_serving_after_its_reader_read_the_two_lines() -> None:
    proc = subprocess.Popen(
        [*CLI, "serve", "--token", TOKEN], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env()
    )
    assert proc.stdout is not None
    try:
        url = proc.stdout.readline().strip().removeprefix("leap edge: ")
        assert proc.stdout.readline().startswith("control: http://")
        proc.stdout.close()  # `leap-sync serve | head -n 2`: the server's work is serving
        with LeapClient("project_x", TOKEN, url=url) as client:
            client.connect(wait=True, timeout=10)
            assert client.state == ConnectionState.CONNECTED
    finally:
        proc.send_signal(signal.SIGTERM)
        err = finish(proc)
    assert (proc.returncode, err) == (0, "")


# -- usage errors and consoles -----------------------------------------------------------


def test_an_empty_channel_name_is_a_one_line_usage_error(leap: LeapEdgeServer) -> None:
    done = subprocess.run(
        [*CLI, "listen", "--project", "project_x", "--url", leap.url, "--channel", ""],
        capture_output=True,
        text=True,
        timeout=30,
        env=env(LEAP_TOKEN=TOKEN),
    )
    assert (done.returncode, done.stderr) == (2, "leap-sync listen: channel_id must be a non-empty string\n")


@pytest.mark.parametrize("console", ["ascii", "cp1252", "latin-1"])
@pytest.mark.parametrize("form", ["text", "json"])
def test_listen_on_a_console_that_cannot_encode_prints_every_event(
    leap: LeapEdgeServer, console: str, form: str
) -> None:
    proc = subprocess.Popen(
        [*CLI, "listen", "--project", "project_x", "--url", leap.url, "--channel", "room", "--format", form],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env(LEAP_TOKEN=TOKEN, PYTHONIOENCODING=console),
    )
    assert proc.stdout is not None
    while b"subscribe" not in proc.stdout.readline():
        pass
    leap.publish("room", "chat", {"text": "snowman \u2603 caf\u00e9"})
    for n in range(3):
        leap.publish("room", "chat", {"text": f"plain {n}"})
    lines = [proc.stdout.readline() for _ in range(4)]
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert (proc.returncode, err) == (0, b"")
    assert lines[0].decode(console).count("\\u2603") == 1  # as an escape, in either format
    assert [b"plain %d" % n in line for n, line in enumerate(lines[1:])] == [True] * 3
    if form == "json":
        assert json.loads(lines[0])["data"] == {"text": "snowman \u2603 caf\u00e9"}


@pytest.mark.parametrize("console", ["ascii", "cp1252", "latin-1"])
def test_elstat_with_a_channel_name_the_console_cannot_encode(console: str) -> None:
    odd = "status:caf\u00e9\u2603"
    with ElstatServer(channels=[odd, "status:main"]) as server:
        proc = elstat(server, odd, "status:main", PYTHONIOENCODING=console)
        assert proc.stdout is not None
        subscribed = read_until(proc.stdout, "subscribe")
        for n in range(3):
            server.push_data("status:main", n % 2 == 0, timestamp_ms=1_000_000 + n)
        records = [read_until(proc.stdout, "data") for _ in range(3)]
        proc.send_signal(signal.SIGTERM)
        err = finish(proc)
    assert (proc.returncode, err) == (0, "")
    assert subscribed["channels"] == [odd, "status:main"]
    assert [r["timestamp_ms"] for r in records] == [1_000_000, 1_000_001, 1_000_002]
