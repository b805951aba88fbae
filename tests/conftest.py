"""Suite-wide fixtures: no proxies, loopback only, and no leaked leap-sync threads."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from clientkit import PROJECT, TOKEN, fast_backoff

from leap_sync import LeapClient
from leap_sync.testing import LeapEdgeServer

_PROXY_VARIABLES = (
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
)


@pytest.fixture(autouse=True)
def _no_proxy_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def leap_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("leap-sync-")]


@pytest.fixture(autouse=True)
def _no_leaked_threads() -> Iterator[None]:
    """Fail a test that leaves a ``leap-sync-*`` thread alive.

    A thread that is finishing (for example an I/O thread that ran ``close()`` from a
    listener) gets a short grace period, joined rather than slept.
    """
    before = set(leap_threads())
    yield
    deadline = time.monotonic() + 5.0
    leaked = [t for t in leap_threads() if t not in before]
    for thread in leaked:
        thread.join(max(0.0, deadline - time.monotonic()))
    alive = [t.name for t in leaked if t.is_alive()]
    assert not alive, f"test leaked threads: {alive}"


@pytest.fixture
def server() -> Iterator[LeapEdgeServer]:
    """A running server: token TOKEN (metadata user=alice), channels room, secret, lobby."""
    with LeapEdgeServer(heartbeat_interval=5.0) as srv:
        srv.add_token(TOKEN, project_id=PROJECT, metadata={"user": "alice"})
        srv.create_channel("room", project_id=PROJECT, state={"topic": "start"})
        srv.create_channel("secret", project_id=PROJECT)
        srv.create_channel("lobby", project_id=PROJECT, type="unprotected")
        yield srv


@pytest.fixture
def make_client() -> Iterator[Callable[..., LeapClient]]:
    clients: list[LeapClient] = []

    def make(server: LeapEdgeServer, token: str | None = TOKEN, **options: Any) -> LeapClient:
        options.setdefault("backoff", fast_backoff())
        client = LeapClient(PROJECT, token, url=server.url, **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()
