"""pytest plugin (registered through the ``pytest11`` entry point): fixtures that run
an embedded Leap Edge server for the duration of one test.

- ``leap_edge_server``: a running :class:`~leap_sync.testing.LeapEdgeServer` on
  loopback with default settings (project ``project_x``).
- ``leap_edge_server_factory``: ``factory(**options)`` starts servers with options
  (``heartbeat_interval=...`` and so on); all are closed after the test.

Needs the ``server`` extra (``websockets``); the plugin imports it only when a
fixture is used.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .server import LeapEdgeServer


@pytest.fixture
def leap_edge_server_factory() -> Iterator[Callable[..., LeapEdgeServer]]:
    from .server import LeapEdgeServer

    servers: list[LeapEdgeServer] = []

    def factory(**options: Any) -> LeapEdgeServer:
        server = LeapEdgeServer(**options).start()
        servers.append(server)
        return server

    try:
        yield factory
    finally:
        errors: list[BaseException] = []
        for server in reversed(servers):  # every one is closed, even if one fails
            try:
                server.close()
            except BaseException as exc:
                errors.append(exc)
        if errors:
            raise errors[0]


@pytest.fixture
def leap_edge_server(leap_edge_server_factory: Callable[..., LeapEdgeServer]) -> LeapEdgeServer:
    return leap_edge_server_factory()
