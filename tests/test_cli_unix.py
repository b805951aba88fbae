"""The command line as a Unix tool, through subprocesses: --help, exit codes, SIGTERM,
missing extras, arrival order, and output that survives what a server sends and the
console it goes to."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import IO, Any

import pytest

from leap_sync import ConnectionState, LeapClient, StateInfo
from leap_sync.testing import ElstatServer, LeapEdgeServer

CLI = [sys.executable, "-m", "leap_sync"]
TOKEN = "tok_cli_unix"


def env(**extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if "proxy" not in k.lower() and k != "LEAP_TOKEN"}
    return {**base, **extra}


def read_json(stream: IO[str]) -> dict[str, Any]:
    line = stream.readline()
    assert line, "the process ended"
    record: dict[str, Any] = json.loads(line)
    return record


def read_until(stream: IO[str], kind: str) -> dict[str, Any]:
    while True:
        record = read_json(stream)
        if record["type"] == kind:
            return record


@pytest.fixture
def leap() -> Iterator[LeapEdgeServer]:
    with LeapEdgeServer() as server:
        server.add_token(TOKEN)
        server.create_channel("room")
        yield server


def listen(server: LeapEdgeServer, **extra_env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*CLI, "listen", "--project", "project_x", "--url", server.url, "--channel", "room"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        env=env(LEAP_TOKEN=TOKEN, **extra_env),
    )


def elstat(server: ElstatServer) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*CLI, "elstat", "--url", server.base_url, "--channel", "status:api"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env(),
    )


def stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> tuple[str, str]:
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=20)
    return out, err


# -- --help -----------------------------------------------------------------------------


def test_help_describes_every_command_and_the_exit_codes() -> None:
    done = subprocess.run([*CLI, "--help"], capture_output=True, text=True, timeout=30, env=env())
    assert done.returncode == 0
    for line in ("demo", "listen", "serve", "elstat"):
        described = [text for text in done.stdout.splitlines() if text.strip().startswith(line + " ")]
        assert described and len(described[0].split()) > 3, f"no description for {line}"
    for code in ("0  done", "2  usage error", "3  refused by the server", "4  could not connect"):
        assert code in done.stdout
    for command in ("demo", "listen", "serve", "elstat"):
        sub = subprocess.run([*CLI, command, "--help"], capture_output=True, text=True, timeout=30, env=env())
        assert sub.returncode == 0
        assert "exit status:" in sub.stdout and "3  refused by the server" in sub.stdout
        description = sub.stdout.split("\n\n")[1]
        assert len(description.split()) > 10, f"{command}: {description!r}"


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "0", "soon"])
@pytest.mark.parametrize("command", [["listen", "--project", "p", "--tokenless"], ["elstat", "--url", "http://x"]])
def test_a_bad_timeout_is_a_usage_error(command: list[str], value: str) -> None:
    done = subprocess.run([*CLI, *command, "--timeout", value], capture_output=True, text=True, timeout=30, env=env())
    assert done.returncode == 2
    assert "--timeout" in done.stderr and "Traceback" not in done.stderr
    assert done.stdout == ""


@pytest.mark.parametrize(
    "url", ["ws://127.0.0.1\x01:9/ws", "ftp://example.com", "ws://[::1", "ws://127.0.0.1:99999/ws"]
)
def test_a_hostile_url_is_a_usage_error(url: str) -> None:
    done = subprocess.run(
        [*CLI, "listen", "--project", "p", "--tokenless", "--url", url],
        capture_output=True,
        text=True,
        timeout=30,
        env=env(),
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("leap-sync listen: ") and done.stderr.count("\n") == 1
    assert "\x01" not in done.stderr


# -- SIGTERM ------------------------------------------------------------------------------


def test_sigterm_closes_listen_with_a_close_frame(leap: LeapEdgeServer) -> None:
    proc = listen(leap)
    assert proc.stdout is not None
    try:
        assert read_until(proc.stdout, "subscribe") == {"type": "subscribe", "channel": "room"}
    finally:
        out, err = stop(proc)
    assert proc.returncode == 0, err
    assert json.loads(out.splitlines()[-1]) == {"type": "state", "state": "closed"}
    assert "Traceback" not in err
    leap.wait_for(lambda s: [c.close_code for c in s.all_connections] == [1000], timeout=10)


def test_sigterm_closes_elstat_with_a_close_frame() -> None:
    with ElstatServer(channels=["status:api"]) as server:
        proc = elstat(server)
        assert proc.stdout is not None
        try:
            assert read_until(proc.stdout, "subscribe")["channels"] == ["status:api"]
        finally:
            _, err = stop(proc)
        assert proc.returncode == 0, err
        assert "Traceback" not in err
        server.wait_for(lambda s: [c.close_code for c in s.all_connections] == [1000], timeout=10)


def test_sigterm_stops_serve_and_its_clients_get_a_close_frame() -> None:
    proc = subprocess.Popen(
        [*CLI, "serve", "--token", TOKEN], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env()
    )
    assert proc.stdout is not None
    errored = threading.Event()
    infos: list[StateInfo] = []

    def on_state(info: StateInfo) -> None:
        infos.append(info)
        if info == ConnectionState.ERRORED:
            errored.set()

    try:
        url = proc.stdout.readline().strip().removeprefix("leap edge: ")
        assert url.startswith("ws://127.0.0.1:")
        with LeapClient("project_x", TOKEN, url=url) as client:
            client.add_state_update_listener(on_state)
            client.connect(wait=True, timeout=10)
            proc.send_signal(signal.SIGTERM)
            assert errored.wait(10)
    finally:
        try:
            _, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode == 0, err
    error = next(info.error for info in infos if info.error is not None)
    assert getattr(error, "close_code", None) == 1001  # the server's close frame, going away


# -- missing extras -----------------------------------------------------------------------

BLOCK = """
import sys, runpy
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError(f"No module named {{name!r}}", name=name)
        return None
sys.meta_path.insert(0, Block())
sys.argv = ["leap-sync", *sys.argv[1:]]
runpy.run_module("leap_sync", run_name="__main__")
"""


def without(blocked: set[str], *args: str) -> subprocess.CompletedProcess[str]:
    code = BLOCK.format(blocked=blocked)
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60, env=env())


@pytest.mark.parametrize(
    ("blocked", "args", "extra"),
    [
        ({"erlpack"}, ["listen", "--project", "p", "--tokenless", "--encoding", "etf"], "etf"),
        ({"erlpack"}, ["demo", "--encoding", "etf"], "etf"),
        ({"websockets"}, ["serve"], "server"),
        ({"websockets"}, ["demo"], "server"),
    ],
)
def test_a_missing_extra_is_one_line_naming_it(blocked: set[str], args: list[str], extra: str) -> None:
    done = without(blocked, *args)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert f"pip install 'leap-sync[{extra}]'" in done.stderr
    assert done.stdout == ""


# -- arrival order ------------------------------------------------------------------------


def test_listen_prints_messages_and_channel_events_in_arrival_order(leap: LeapEdgeServer) -> None:
    proc = listen(leap)
    assert proc.stdout is not None
    try:
        read_until(proc.stdout, "subscribe")
        for n in range(40):
            leap.publish("room", "chat", {"n": n})
            leap.set_channel_state("room", {"n": n})
        records = [read_json(proc.stdout) for _ in range(80)]
    finally:
        _, err = stop(proc)
    assert proc.returncode == 0, err
    seen = [(r["type"], r["data"]["n"] if r["type"] == "message" else r["state"]["n"]) for r in records]
    assert seen == [(kind, n) for n in range(40) for kind in ("message", "event")]


def test_elstat_prints_data_and_incidents_in_arrival_order() -> None:
    with ElstatServer(channels=["status:api"]) as server:
        proc = elstat(server)
        assert proc.stdout is not None
        try:
            read_until(proc.stdout, "subscribe")
            for n in range(40):
                server.push_data("status:api", n % 2 == 0, timestamp_ms=1_000_000 + n)
                server.push_incident("new", {"id": f"i{n}", "title": "t"})
            records = [read_json(proc.stdout) for _ in range(80)]
        finally:
            _, err = stop(proc)
        assert proc.returncode == 0, err
    seen = [(r["type"], r["timestamp_ms"] - 1_000_000 if r["type"] == "data" else r["incident"]["id"]) for r in records]
    assert seen == [item for n in range(40) for item in (("data", n), ("incident", f"i{n}"))]


# -- hostile output -----------------------------------------------------------------------


def test_listen_on_a_cp1252_console_prints_every_event(leap: LeapEdgeServer) -> None:
    proc = listen(leap, PYTHONIOENCODING="cp1252")
    assert proc.stdout is not None
    try:
        read_until(proc.stdout, "subscribe")
        leap.publish("room", "chat", "☃ 😀")
        leap.set_channel_state("room", {"snow": "☃"})
        leap.publish("room", "chat", "after")
        records = [read_json(proc.stdout) for _ in range(3)]
    finally:
        out, err = stop(proc)
    assert proc.returncode == 0, err
    assert [r.get("data", r.get("state")) for r in records] == ["☃ 😀", {"snow": "☃"}, "after"]
    assert json.loads(out.splitlines()[-1]) == {"type": "state", "state": "closed"}


def test_listen_human_lines_on_a_cp1252_console_use_escapes(leap: LeapEdgeServer) -> None:
    proc = subprocess.Popen(
        [*CLI, "listen", "--project", "project_x", "--url", leap.url, "--channel", "room", "--format", "text"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env(LEAP_TOKEN=TOKEN, PYTHONIOENCODING="cp1252"),
    )
    assert proc.stdout is not None
    try:
        while b"subscribe" not in proc.stdout.readline():
            pass
        leap.publish("room", "chat", "☃ 😀")
        leap.publish("room", "chat", "after")
        first, second = proc.stdout.readline(), proc.stdout.readline()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert b'"\\u2603 \\U0001f600"' in first
    assert b'"after"' in second


def test_a_channel_event_nested_600_deep_does_not_stop_the_output(leap: LeapEdgeServer) -> None:
    deep: Any = "bottom"
    for _ in range(600):
        deep = {"a": deep}
    proc = listen(leap)
    assert proc.stdout is not None
    try:
        read_until(proc.stdout, "subscribe")
        leap.send_frame({"op": 0, "d": {"c": "room", "e": "STATE_UPDATE", "d": {"state": {"deep": deep}}}})
        leap.set_channel_state("room", {"after": 1})
        leap.publish("room", "chat", "still here")
        records = [read_json(proc.stdout) for _ in range(3)]
    finally:
        _, err = stop(proc)
    assert proc.returncode == 0, err
    assert records[0]["type"] == "event" and records[0]["event"] == "StateUpdateEvent"
    assert records[1]["state"] == {"after": 1}
    assert records[2]["data"] == "still here"
    assert "RecursionError" not in err and "Traceback" not in err
