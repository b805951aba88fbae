"""ElstatClient against the embedded ElstatServer (and a hostile one): subscriptions,
data of each kind, incidents, the 256-byte limit, fatal codes, re-subscription, pings,
and ``leap-sync elstat``."""

from __future__ import annotations

import datetime
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest
from clientkit import CountingTransport, StateRecorder, fast_backoff
from hostile import HostileServer, Peer

from leap_sync import Backoff, ChannelClosed, ConnectionState, LeapConnectionError, LeapTimeoutError
from leap_sync.connection.handler import Live
from leap_sync.elstat import DataEvent, ElstatClient, IncidentEvent, Op, streaming_url
from leap_sync.elstat.protocol import MAX_PAYLOAD, split_request
from leap_sync.testing import ElstatServer
from leap_sync.wire.wsframes import OP_CLOSE, OP_TEXT, unmasked_frame

CONNECTED = ConnectionState.CONNECTED
ERRORED = ConnectionState.ERRORED
UTC = datetime.timezone.utc
CHANNELS = ("status:api", "latency:api", "status:web", "graph:api")


@pytest.fixture
def elstat() -> Iterator[ElstatServer]:
    with ElstatServer(channels=CHANNELS) as server:
        yield server


@pytest.fixture
def client(elstat: ElstatServer) -> Iterator[ElstatClient]:
    client = ElstatClient(elstat.base_url, backoff=fast_backoff())
    yield client
    client.close()


def test_streaming_url() -> None:
    assert streaming_url("https://status.example.com") == "wss://status.example.com/api/streaming"
    assert streaming_url("http://h:8080/base/") == "ws://h:8080/base/api/streaming"
    assert streaming_url("ws://h/api/streaming") == "ws://h/api/streaming"
    for bad in ("ftp://h", "status.example.com", "http://h:99999"):
        with pytest.raises(ValueError):
            streaming_url(bad)


def test_connects_without_a_handshake_and_subscribes(elstat: ElstatServer, client: ElstatClient) -> None:
    recorder = StateRecorder()
    client.add_state_update_listener(recorder)
    client.connect(wait=True, timeout=5)
    assert recorder.states == [ConnectionState.CONNECTING, CONNECTED]  # no AUTHENTICATING: nothing to authenticate
    assert client.subscribe(["status:api", "latency:api"], timeout=5) == ["status:api", "latency:api"]
    assert client.subscriptions == ("status:api", "latency:api")
    [conn] = elstat.connections
    assert conn.subscriptions == frozenset({"status:api", "latency:api"})


def test_unknown_channels_are_left_out(elstat: ElstatServer, client: ElstatClient) -> None:
    client.connect()
    assert client.subscribe(["status:nope", "status:api", "latency:gone"], timeout=5) == ["status:api"]
    assert client.subscribe("status:nope", timeout=5) == []
    assert client.subscriptions == ("status:api",)


def test_unsubscribe_returns_what_was_unsubscribed(elstat: ElstatServer, client: ElstatClient) -> None:
    client.connect()
    client.subscribe(["status:api", "latency:api"], timeout=5)
    assert client.unsubscribe(["latency:api", "status:web"], timeout=5) == ["latency:api"]
    assert client.subscriptions == ("status:api",)
    elstat.wait_for(lambda s: s.connections[0].subscriptions == frozenset({"status:api"}))


def test_data_of_each_kind_is_typed(elstat: ElstatServer, client: ElstatClient) -> None:
    data = client.data_channel()
    client.connect()
    client.subscribe(list(CHANNELS), timeout=5)
    elstat.push_data("status:api", True, timestamp_ms=1531339962000)
    elstat.push_data("latency:api", 42, timestamp_ms=1531339962001)
    elstat.push_data("graph:api", {"points": [1, 2]}, timestamp_ms=1531339962002)
    elstat.push_data("status:web", False)
    got = [data.get(timeout=5) for _ in range(4)]
    assert got[0] == DataEvent(
        "status:api",
        datetime.datetime(2018, 7, 11, 20, 12, 42, tzinfo=UTC),
        1531339962000,
        True,
        (1531339962000, True),
    )
    assert (got[1].kind, got[1].value, got[1].timestamp.microsecond) == ("latency", 42, 1000)
    assert (got[2].kind, got[2].value) == ("graph", {"points": [1, 2]})
    assert got[3].value is False and got[3].timestamp.tzinfo is UTC
    assert abs(got[3].timestamp - datetime.datetime.now(UTC)) < datetime.timedelta(seconds=30)


def test_data_only_for_subscribed_channels(elstat: ElstatServer, client: ElstatClient) -> None:
    data = client.data_channel()
    client.connect()
    client.subscribe("status:api", timeout=5)
    assert elstat.push_data("status:web", True) == 0
    assert elstat.push_data("status:api", True) == 1
    assert data.get(timeout=5).channel == "status:api"
    assert data.empty()


@pytest.mark.parametrize(
    ("kind", "op"), [("new", Op.INCIDENT_NEW), ("update", Op.INCIDENT_UPDATE), ("close", Op.INCIDENT_CLOSE)]
)
def test_incidents(elstat: ElstatServer, client: ElstatClient, kind: str, op: Op) -> None:
    incidents = client.incident_channel()
    client.connect()
    incident = {
        "id": 12,
        "incident_type": "outage",
        "title": "API down",
        "content": "investigating",
        "ongoing": kind != "close",
        "start_date": 1531339962000,
        "end_date": 1531343562000 if kind == "close" else None,
        "stages": [{"title": "found", "content": "x", "created_at": 1531339962000}],
    }
    assert elstat.push_incident(kind, incident) == 1
    event = incidents.get(timeout=5)
    assert isinstance(event, IncidentEvent)
    assert (event.op, event.kind) == (op, kind)
    assert (event.incident.id, event.incident.title, event.incident.type) == ("12", "API down", "outage")
    assert event.incident.ongoing is (kind != "close")
    assert event.incident.start == datetime.datetime(2018, 7, 11, 20, 12, 42, tzinfo=UTC)
    assert event.incident.raw == incident


def test_a_long_channel_list_is_split_at_the_256_byte_limit(elstat: ElstatServer, client: ElstatClient) -> None:
    names = [f"status:service-number-{i:03d}" for i in range(40)]
    for name in names:
        elstat.add_channel(name)
    client.connect()
    groups = split_request(Op.SUBSCRIBE, names)
    assert len(groups) > 1
    assert all(len(json.dumps({"op": 0, "channels": g}, separators=(",", ":"))) <= MAX_PAYLOAD for g in groups)
    assert client.subscribe(names, timeout=5) == names
    [conn] = elstat.connections
    assert conn.frames_in == len(groups)  # each payload within the limit: no 4420
    assert conn.subscriptions == frozenset(names)
    assert client.unsubscribe(names, timeout=5) == names


def test_a_name_that_cannot_fit_is_refused_before_anything_is_sent(elstat: ElstatServer, client: ElstatClient) -> None:
    client.connect()
    too_long = "status:" + "x" * 250
    with pytest.raises(ValueError, match="cannot fit in one 256-byte Elstat payload"):
        client.subscribe(["status:api", too_long], timeout=5)
    with pytest.raises(ValueError, match="<type>:<name>"):
        client.subscribe(["nocolon"], timeout=5)
    assert elstat.connections[0].frames_in == 0  # nothing went out, not even status:api
    assert client.state.connection_state is CONNECTED


@pytest.mark.parametrize(("code", "name"), [(4200, "INVALID_PAYLOAD"), (4420, "TOO_MUCH")])
def test_4200_and_4420_are_fatal_and_named(elstat: ElstatServer, client: ElstatClient, code: int, name: str) -> None:
    recorder = StateRecorder()
    client.add_state_update_listener(recorder)
    data = client.data_channel()
    client.connect()
    elstat.disconnect(code, "bad payload")
    infos = recorder.wait_for(lambda infos: infos[-1].connection_state is ERRORED)
    assert infos[-1].will_reconnect is False
    error = infos[-1].error
    assert isinstance(error, LeapConnectionError) and error.close_code == code
    assert f"{code} {name}" in str(error)
    with pytest.raises(ChannelClosed):
        data.get(timeout=5)
    assert len(elstat.all_connections) == 1  # never retried


def test_every_subscription_is_renewed_after_a_drop(elstat: ElstatServer, client: ElstatClient) -> None:
    recorder = StateRecorder()
    client.add_state_update_listener(recorder)
    data = client.data_channel()
    client.connect()
    client.subscribe(["status:api", "latency:api", "status:unknown"], timeout=5)
    first = elstat.connections[0].cid
    elstat.drop()
    recorder.wait_count(CONNECTED, 2)
    elstat.wait_for(
        lambda s: any(
            c.cid != first and c.subscriptions == frozenset({"status:api", "latency:api"}) for c in s.connections
        )
    )
    elstat.push_data("latency:api", 7)
    assert data.get(timeout=5).value == 7
    assert client.subscriptions == ("status:api", "latency:api")


def test_other_close_codes_reconnect(elstat: ElstatServer, client: ElstatClient) -> None:
    recorder = StateRecorder()
    client.add_state_update_listener(recorder)
    client.connect()
    elstat.disconnect(1011, "restarting")
    infos = recorder.wait_count(CONNECTED, 2)
    [errored] = [i for i in infos if i.connection_state is ERRORED]
    assert errored.will_reconnect is True


def test_a_peer_that_answers_nothing_is_presumed_dead() -> None:
    def deaf(peer: Peer) -> None:  # upgrades, then never answers a ping
        peer.upgrade()
        peer.wait(10)

    with HostileServer(deaf) as server:
        recorder = StateRecorder()
        client = ElstatClient(server.url, ping_interval=0.2, ping_timeout=0.3, backoff=fast_backoff())
        client.add_state_update_listener(recorder)
        client.connect()
        infos = recorder.wait_for(lambda infos: infos[-1].connection_state is ERRORED)
        assert "no answer to a ping" in str(infos[-1].error) and infos[-1].will_reconnect
        client.close()


def test_pings_keep_a_quiet_connection(elstat: ElstatServer) -> None:
    recorder = StateRecorder()
    client = ElstatClient(elstat.base_url, ping_interval=0.05, ping_timeout=0.5)
    client.add_state_update_listener(recorder)
    client.connect()
    # a dozen ping intervals, longer than ping_timeout: the pings are answered, no error
    with pytest.raises(AssertionError, match="not met"):
        recorder.wait_for(lambda infos: infos[-1].connection_state is not CONNECTED, timeout=0.6)
    data = client.data_channel()
    client.subscribe("status:api", timeout=5)
    elstat.push_data("status:api", True)
    assert data.get(timeout=5).value is True
    assert recorder.states == [ConnectionState.CONNECTING, CONNECTED]
    client.close()


def _cli_env() -> dict[str, str]:
    env = dict(os.environ)
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        env.pop(name, None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def test_leap_sync_elstat_prints_json_lines(elstat: ElstatServer) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "leap_sync",
            "elstat",
            "--url",
            elstat.base_url,
            "--channel",
            "status:api",
            "--channel",
            "status:nope",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_cli_env(),
    )
    assert proc.stdout is not None
    try:
        lines = []
        while not any(json.loads(line)["type"] == "subscribe" for line in lines):
            lines.append(proc.stdout.readline())
        subscribe = next(json.loads(line) for line in lines if json.loads(line)["type"] == "subscribe")
        assert subscribe == {"type": "subscribe", "channels": ["status:api"], "refused": ["status:nope"]}
        elstat.push_data("status:api", False, timestamp_ms=1531339962000)
        record = json.loads(proc.stdout.readline())
        assert record == {
            "type": "data",
            "channel": "status:api",
            "timestamp": "2018-07-11T20:12:42+00:00",
            "timestamp_ms": 1531339962000,
            "value": False,
        }
        elstat.push_incident("new", {"id": "i1", "title": "down"})
        assert json.loads(proc.stdout.readline()) == {
            "type": "incident",
            "kind": "new",
            "incident": {"id": "i1", "title": "down"},
        }
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err


def test_leap_sync_elstat_exits_3_on_a_fatal_code(elstat: ElstatServer) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "leap_sync", "elstat", "--url", elstat.url, "--channel", "status:api"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_cli_env(),
    )
    assert proc.stdout is not None
    try:
        while json.loads(proc.stdout.readline())["type"] != "subscribe":
            pass
        elstat.disconnect(4420, "too much")
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 3
    assert "4420 TOO_MUCH" in err


# -- what an attack on ElstatClient found ----------------------------------------------------------


def test_an_unsolicited_subscribed_never_adds_channels_nobody_asked_for() -> None:
    def pushes(peer: Peer) -> None:
        peer.upgrade()
        for i in range(50):
            peer.json({"op": 1, "channels": [f"status:x{i}-{j}" for j in range(10)]})
        peer.wait(5)

    with HostileServer(pushes) as server:
        client = ElstatClient(server.url)
        client.connect()
        data = client.data_channel()
        assert data.empty()
        with pytest.raises(ChannelClosed):
            client.close()
            data.get(timeout=1)
        assert client.subscriptions == ()


def test_subscriptions_agree_with_the_server_after_an_unsubscribe_that_failed(elstat: ElstatServer) -> None:
    # A call that raised before anything was sent had no effect: both channels stay
    # wanted, are renewed, and client and server agree.
    recorder = StateRecorder()
    client = ElstatClient(elstat.base_url, backoff=Backoff(base=0.5, cap=0.5, uniform=lambda low, high: high))
    client.add_state_update_listener(recorder)
    client.connect()
    client.subscribe(["status:api", "status:web"], timeout=5)
    elstat.disconnect(1000)
    recorder.wait_for(lambda infos: infos[-1].connection_state is ERRORED)  # in the backoff wait
    with pytest.raises(LeapConnectionError, match="not connected"):
        client.unsubscribe("status:api", timeout=5)
    recorder.wait_count(CONNECTED, 2)
    both = frozenset({"status:api", "status:web"})
    elstat.wait_for(lambda s: bool(s.connections) and s.connections[-1].subscriptions == both)
    assert client.unsubscribe("status:web", timeout=5) == ["status:web"]  # a round trip after the renewal
    assert client.subscriptions == ("status:api",)
    assert elstat.connections[-1].subscriptions == frozenset({"status:api"})
    client.close()


def test_a_subscribe_that_failed_before_sending_changes_nothing(elstat: ElstatServer) -> None:
    client = ElstatClient(elstat.base_url)
    with pytest.raises(LeapConnectionError, match="not connected"):
        client.subscribe("status:api", timeout=1)
    client.connect()
    data = client.data_channel()
    elstat.push_data("status:api", True)
    elstat.wait_for(lambda s: bool(s.connections))
    assert elstat.connections[0].subscriptions == frozenset()  # the failed call was not replayed
    assert client.subscriptions == () and data.empty()
    client.close()


def test_a_subscribe_timeout_bounds_the_write_too() -> None:
    import time

    def never_reads(peer: Peer) -> None:
        peer.upgrade()
        peer.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        peer.wait(10)

    with HostileServer(never_reads) as server:
        client = ElstatClient(server.url, send_timeout=8)
        client.connect()
        channels = [f"status:{i:04d}" + "x" * 200 for i in range(400)]  # more than the socket takes
        started = time.monotonic()
        with pytest.raises(LeapTimeoutError):
            client.subscribe(channels, timeout=1.0)
        assert time.monotonic() - started < 2.0
        client.close()


def test_close_after_a_fatal_code_is_bounded_with_a_blocking_listener() -> None:
    import threading
    import time

    release = threading.Event()

    def fatal(peer: Peer) -> None:
        peer.upgrade()
        peer.close(4200, "invalid payload")
        peer.wait(5)

    with HostileServer(fatal) as server:
        recorder = StateRecorder()
        client = ElstatClient(server.url, close_timeout=1)
        client.add_state_update_listener(recorder)
        client.add_state_update_listener(
            lambda info: release.wait(20) if info.connection_state.value == "closed" else None
        )
        client.connect()
        recorder.wait_for(lambda infos: infos[-1].connection_state is ERRORED and not infos[-1].will_reconnect)
        started = time.monotonic()
        client.close()  # the callbacks thread had ended: CLOSED goes to a new one, joined at most 1 s
        assert time.monotonic() - started < 2.0
        release.set()
        client._core.log.join(5)


# -- what a third attack found ---------------------------------------------------------------------


def _answers_all_but_the_first(peer: Peer) -> None:
    peer.upgrade()
    peer.read_json()  # the first SUBSCRIBE: never answered
    for _ in range(2):
        asked = peer.read_json()
        peer.json({"op": 1, "channels": asked["channels"]})
    peer.wait(10)


def test_an_unanswered_subscribe_never_shifts_the_answers_behind_it() -> None:
    with HostileServer(_answers_all_but_the_first) as server:
        client = ElstatClient(server.url, backoff=fast_backoff())
        client.connect()
        with pytest.raises(LeapTimeoutError):
            client.subscribe("status:a", timeout=0.3)
        assert client.subscribe("status:b", timeout=5) == ["status:b"]
        assert client.subscribe("status:c", timeout=5) == ["status:c"]
        assert client.subscriptions == ("status:b", "status:c")
        client.close()


def test_answers_out_of_order_go_to_the_calls_that_asked() -> None:
    def reversed_answers(peer: Peer) -> None:
        peer.upgrade()
        first, second = peer.read_json(), peer.read_json()
        peer.json({"op": 1, "channels": second["channels"]})
        peer.json({"op": 1, "channels": first["channels"]})
        peer.wait(10)

    with HostileServer(reversed_answers) as server:
        client = ElstatClient(server.url, backoff=fast_backoff())
        client.connect()
        results: dict[str, list[str]] = {}
        callers = [
            threading.Thread(target=lambda name=name: results.update({name: client.subscribe(name, timeout=5)}))
            for name in ("status:a", "status:b")
        ]
        for caller in callers:
            caller.start()
        for caller in callers:
            caller.join(10)
        assert results == {"status:a": ["status:a"], "status:b": ["status:b"]}
        client.close()


@pytest.mark.parametrize("code", [4200, 4420])
def test_a_fatal_close_behind_a_malformed_frame_stays_fatal(code: int) -> None:
    def bad(peer: Peer) -> None:
        peer.upgrade()
        peer.send(unmasked_frame(OP_TEXT, b'{"op": 3, "c": 5}') + unmasked_frame(OP_CLOSE, code.to_bytes(2, "big")))
        peer.drain(3)

    with HostileServer(bad) as server:
        recorder = StateRecorder()
        client = ElstatClient(server.url, backoff=fast_backoff())
        client.add_state_update_listener(recorder)
        client.connect()
        infos = recorder.wait_for(lambda infos: infos[-1].connection_state is ERRORED)
        assert infos[-1].will_reconnect is False
        assert isinstance(infos[-1].error, LeapConnectionError) and infos[-1].error.close_code == code
        client.close()
        assert server.accepted == 1


def test_bad_arguments_are_refused_at_construction() -> None:
    for url in (5, None, b"http://h"):
        with pytest.raises(TypeError):
            ElstatClient(url)  # type: ignore[arg-type]
    for options in ({"ping_interval": "5"}, {"ping_timeout": float("nan")}, {"ping_interval": 0}):
        with pytest.raises((TypeError, ValueError)):
            ElstatClient("http://h", **options)  # type: ignore[arg-type]


def _hostile_status_page(peer: Peer) -> None:
    peer.upgrade()
    asked = peer.read_json()
    peer.json({"op": 1, "channels": asked["channels"]})
    for value in ('"\\ud800\\u001b[2J"', "NaN", "1e999"):
        peer.send(unmasked_frame(OP_TEXT, f'{{"op": 3, "c": "graph:api", "d": [1531339962000, {value}]}}'.encode()))
    peer.send(unmasked_frame(OP_TEXT, b'{"op": 4, "d": {"id": "i1", "title": "\\ud800\\u001b]0;pwned\\u0007"}}'))
    peer.json({"op": 3, "c": "graph:api", "d": [1531339962000, "last"]})
    peer.wait(20)


@pytest.mark.parametrize("output", ["json", "text"])
def test_leap_sync_elstat_prints_whatever_a_server_sends_safely(output: str) -> None:
    """Lone surrogates, terminal escapes and numbers JSON cannot hold: every line is
    printed (valid JSON when piped, escaped on a terminal) and nothing dies."""
    with HostileServer(_hostile_status_page) as server:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "leap_sync",
                "elstat",
                "--url",
                server.url,
                "--channel",
                "graph:api",
                "--format",
                output,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=_cli_env(),
        )
        assert proc.stdout is not None
        try:
            lines: list[bytes] = []
            # incidents are printed by a thread of their own: wait for both kinds
            while not (any(b"last" in line for line in lines) and any(b"incident" in line for line in lines)):
                line = proc.stdout.readline()
                assert line, f"output ended after {lines!r}"
                lines.append(line)
        finally:
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert b"Traceback" not in err
    text = b"".join(lines).decode("utf-8")
    assert "\x1b" not in text and "\x07" not in text
    if output == "json":
        records = [json.loads(line) for line in lines]
        values = [r["value"] for r in records if r["type"] == "data"]
        assert values == ["\ud800\x1b[2J", None, None, "last"]
        [incident] = [r for r in records if r["type"] == "incident"]
        assert incident["incident"]["title"] == "\ud800\x1b]0;pwned\x07"
    else:
        assert '"\\ud800\\u001b[2J"' in text  # the value as JSON
        assert "incident new #i1 \\ud800\\x1b]0;pwned\\x07" in text  # the title as text, escaped


@pytest.mark.parametrize("code", [4200, 4420])
def test_leap_sync_elstat_exits_3_when_the_subscribe_itself_is_refused(code: int) -> None:
    def refuses(peer: Peer) -> None:
        peer.upgrade()
        peer.read_json()
        peer.close(code, "no")
        peer.drain(5)

    with HostileServer(refuses) as server:
        proc = subprocess.run(
            [sys.executable, "-m", "leap_sync", "elstat", "--url", server.url, "--channel", "status:api"],
            capture_output=True,
            text=True,
            env=_cli_env(),
            timeout=30,
        )
    assert proc.returncode == 3, proc.stderr
    assert f"{code} " in proc.stderr and "refused what this client sent" in proc.stderr


def test_close_stops_a_long_resubscription_at_once() -> None:
    """After a reconnect every wanted channel is renewed, frame by frame, on the I/O
    thread: close() in the middle stops it there (it used to go on to the end)."""
    client = ElstatClient("ws://127.0.0.1:9/api/streaming")
    core = client._core
    with client._lock:
        for i in range(10_000):
            client._wanted[f"status:{i:05d}-" + "x" * 200] = None  # one name per payload
    transport = CountingTransport(core.closing, limit=100)
    client._on_connected(Live(client._new_session(), transport))  # type: ignore[arg-type]
    assert transport.sent == 100
    client.close()
