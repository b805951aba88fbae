"""Testing application code against the embedded Leap Edge server.

The ``leap_edge_server`` fixture comes with leap-sync (a pytest plugin installed with
the package): a real Leap Edge websocket server on loopback, started for the test and
closed after it. ``leap_edge_server_factory(**options)`` makes servers with options.
Run with ``pytest examples/test_notifier.py``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from notifier import collect_notifications

from leap_sync import LeapClient
from leap_sync.testing import LeapEdgeServer


def test_notifications_from_published_messages(leap_edge_server: LeapEdgeServer) -> None:
    leap_edge_server.add_token("leap_token_test", project_id="project_x")
    leap_edge_server.create_channel("alerts", project_id="project_x")

    def publish_when_subscribed() -> None:
        # wait_for re-checks its condition at every change on the server
        leap_edge_server.wait_for(lambda s: bool(s.subscribers("alerts")), timeout=5)
        leap_edge_server.publish("alerts", "deploy", {"text": "v2 is live"})
        leap_edge_server.publish("alerts", "ping", 42)

    with LeapClient("project_x", "leap_token_test", url=leap_edge_server.url) as client:
        client.connect(wait=True, timeout=5)
        publisher = threading.Thread(target=publish_when_subscribed)
        publisher.start()
        notes = collect_notifications(client, "alerts", 2)
        publisher.join(5)
    assert notes == ["deploy: v2 is live", "ping: 42"]


def test_client_reconnects_after_a_drop(leap_edge_server_factory: Callable[..., LeapEdgeServer]) -> None:
    server = leap_edge_server_factory(heartbeat_interval=1.0)
    server.add_token("leap_token_test")
    with LeapClient("project_x", "leap_token_test", url=server.url) as client:
        first = client.connect(wait=True, timeout=5) or client.wait_connected(timeout=5)
        server.drop()
        server.wait_for(lambda s: len(s.all_connections) == 2 and bool(s.connections), timeout=10)
        assert client.wait_connected(timeout=10).cid != first.cid
