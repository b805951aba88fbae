"""leap-sync under gevent (``gevent.monkey.patch_all()``, as gunicorn's gevent workers
run it), in a subprocess so that the patching stays out of the test process: against a
LeapEdgeServer and its control endpoint in this process, a client keeps strict
heartbeats at 50 ms while a greenlet busy-loops with ``gevent.sleep(0)``, receives,
reconnects after a drop (``POST /drop``), sends, is closed from another greenlet, and
50 clients connect, each receive one publish, and close."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from leap_sync.testing import ControlServer, LeapEdgeServer

gevent = pytest.importorskip("gevent")

TOKEN = "leap_token_gevent_0123456789"
CLIENTS = 50

SCRIPT = textwrap.dedent(
    """
    from gevent import monkey

    monkey.patch_all()

    import json
    import sys
    import time
    import urllib.request

    import gevent

    from leap_sync import ConnectionState, LeapClient

    ws_url, control, many_url, many_control, token, count = sys.argv[1:6] + [int(sys.argv[6])]
    out = {}


    def post(path, body=None, base=control):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(base + path, data=data, method="POST")
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.loads(answer.read())


    def until(predicate, timeout=10.0):
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError("condition not met")
            gevent.sleep(0.005)


    running = True
    turns = [0]


    def busy():
        while running:
            turns[0] += 1
            gevent.sleep(0)


    spinner = gevent.spawn(busy)
    client = LeapClient("project_x", token=token, url=ws_url)
    messages = client.message_event_channel()
    client.connect(wait=True, timeout=10)
    client.subscribe("room", timeout=10)
    gevent.sleep(1.0)  # twenty heartbeats at 50 ms, strictly judged, while the spinner spins
    stats = client.stats
    out["heartbeats"] = [stats.connections, stats.reconnects, stats.heartbeat_rtt is not None, turns[0] > 1000]
    out["publish"] = post("/channels/room/messages", {"event": "chat", "data": 1})
    out["received"] = messages.get(timeout=10).data
    out["drop"] = post("/drop")
    until(lambda: client.stats.connections == 2 and client.state.connection_state is ConnectionState.CONNECTED)
    client.send_message("room", "echo", {"n": 2})  # the server relays it to its sender too
    out["echo"] = messages.get(timeout=10).data
    closer = gevent.spawn(client.close)
    closer.join(10)
    out["closed"] = [closer.successful(), client.state.connection_state.value]

    many = [LeapClient("project_x", token=token, url=many_url) for _ in range(count)]
    channels = [c.message_event_channel() for c in many]
    gevent.joinall([gevent.spawn(c.connect, wait=True, timeout=20) for c in many], timeout=30, raise_error=True)
    gevent.joinall([gevent.spawn(c.subscribe, "room", timeout=20) for c in many], timeout=30, raise_error=True)
    out["many_publish"] = post("/channels/room/messages", {"event": "all", "data": 3}, many_control)
    out["many_received"] = sorted({ch.get(timeout=10).data for ch in channels})
    gevent.joinall([gevent.spawn(c.close) for c in many], timeout=30, raise_error=True)
    out["many_closed"] = sorted({c.state.connection_state.value for c in many})
    running = False
    spinner.join(5)
    import threading

    out["threads"] = sorted(t.name for t in threading.enumerate() if t.name.startswith("leap-sync-"))
    print(json.dumps(out))
    """
)


@pytest.mark.timeout(120)
def test_under_gevent_monkey_patching(tmp_path: Path) -> None:
    script = tmp_path / "gevent_client.py"
    script.write_text(SCRIPT, encoding="utf-8")
    # Strict: a beat later than 50 ms past its slot, or an early or extra one, is 4007.
    # The 50 clients beat every second, on a server of their own (fifty clients at 50 ms
    # on two shared cores would test the machine, not gevent).
    with (
        LeapEdgeServer(heartbeat_interval=0.05, strict_heartbeats=True, heartbeat_ack_delay=0.002) as server,
        ControlServer(server) as control,
        LeapEdgeServer(heartbeat_interval=1.0) as many,
        ControlServer(many) as many_control,
    ):
        for leap in (server, many):
            leap.add_token(TOKEN)
            leap.create_channel("room")
        args = [server.url, control.url, many.url, many_control.url, TOKEN, str(CLIENTS)]
        done = subprocess.run(
            [sys.executable, str(script), *args],
            capture_output=True,
            text=True,
            timeout=100,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-4000:]
        out = json.loads(done.stdout.splitlines()[-1])
        closes = [c.close_code for c in server.all_connections if not c.open]
        many_closes = {c.close_code for c in many.all_connections}
    assert out == {
        "heartbeats": [1, 0, True, True],
        "publish": {"delivered": 1},
        "received": 1,
        "drop": {"dropped": 1},
        "echo": {"n": 2},
        "closed": [True, "closed"],
        "many_publish": {"delivered": CLIENTS},
        "many_received": [3],
        "many_closed": ["closed"],
        "threads": [],
    }
    assert 4007 not in closes  # no connection was ever out of heartbeat sync
    assert sorted(set(closes)) == [1000, 1006]  # the drop, and close() a clean one
    assert many_closes == {1000}
