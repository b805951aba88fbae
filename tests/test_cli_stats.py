"""``leap-sync listen --stats``: the client's stats as one JSON line on stderr at exit."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from leap_sync.testing import LeapEdgeServer

TOKEN = "leap_token_cli_stats_0123456789"
TIMEOUT = 10.0
CLI = [sys.executable, "-m", "leap_sync"]


def test_listen_stats_prints_the_client_stats_at_exit() -> None:
    with LeapEdgeServer() as server:
        server.add_token(TOKEN)
        server.create_channel("room")
        proc = subprocess.Popen(
            [*CLI, "listen", "--project", "project_x", "--url", server.url, "--channel", "room", "--stats"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**{k: v for k, v in os.environ.items() if "proxy" not in k.lower()}, "LEAP_TOKEN": TOKEN},
        )
        try:
            assert proc.stdout is not None
            while json.loads(proc.stdout.readline()) != {"type": "subscribe", "channel": "room"}:
                pass
            assert server.publish("room", "chat", {"n": 1}) == 1
            assert json.loads(proc.stdout.readline())["data"] == {"n": 1}
            server.disconnect(4001, "invalid auth")  # fatal: listen ends by itself
            out, err = proc.communicate(timeout=TIMEOUT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    (line,) = [line for line in err.splitlines() if line.startswith("stats: ")]
    stats = json.loads(line.removeprefix("stats: "))
    assert stats["state"] == "closed"
    assert (stats["connections"], stats["reconnects"]) == (1, 0)
    assert (stats["messages_in"], stats["messages_out"]) == (4, 2)  # Hello, INIT, AVAILABLE, chat; Identify, SUBSCRIBE
    assert stats["connected_for"] is None and stats["connected_total"] > 0
    assert stats["channels"] == []  # ended with the client (piped: JSON lines on stdout)
    assert TOKEN not in out + err
