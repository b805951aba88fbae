"""pytest plugin (registered through the ``pytest11`` entry point): fixtures that run
an embedded server for the duration of one test.

- ``leap_edge_server``: a running :class:`~leap_sync.testing.LeapEdgeServer` on
  loopback with default settings (project ``project_x``).
- ``leap_edge_server_factory``: ``factory(**options)`` starts servers with options
  (``heartbeat_interval=...`` and so on); all are closed after the test.
- ``elstat_server``: a running :class:`~leap_sync.testing.ElstatServer` on loopback
  with no channels (add them with ``add_channel``).
- ``elstat_server_factory``: ``factory(**options)`` starts Elstat servers with options
  (``channels=[...]`` and so on); all are closed after the test.

Needs the ``server`` extra (``websockets``); the plugin imports it only when a
fixture is used.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

if TYPE_CHECKING:
    from .elstat.server import ElstatServer
    from .leap.server import LeapEdgeServer
    from .websocket.embedded import EmbeddedServer

_Server = TypeVar("_Server", bound="EmbeddedServer[Any]")


def _servers(cls: type[_Server]) -> Iterator[Callable[..., _Server]]:
    """A factory of started ``cls`` servers, every one closed at the end (even if one
    fails to close: the first error is raised after all were tried)."""
    servers: list[_Server] = []

    def factory(**options: Any) -> _Server:
        server = cls(**options).start()
        servers.append(server)
        return server

    try:
        yield factory
    finally:
        errors: list[BaseException] = []
        for server in reversed(servers):
            try:
                server.close()
            except BaseException as exc:
                errors.append(exc)
        if errors:
            raise errors[0]


@pytest.fixture
def leap_edge_server_factory() -> Iterator[Callable[..., LeapEdgeServer]]:
    """``factory(**options)`` starts a :class:`~leap_sync.testing.LeapEdgeServer` with
    those options (``heartbeat_interval=...`` and so on) and returns it, started; every
    server it made is closed after the test. Raises what the constructor raises for a
    bad option."""
    from .leap.server import LeapEdgeServer

    yield from _servers(LeapEdgeServer)


@pytest.fixture
def leap_edge_server(leap_edge_server_factory: Callable[..., LeapEdgeServer]) -> LeapEdgeServer:
    """A running :class:`~leap_sync.testing.LeapEdgeServer` on 127.0.0.1 and a free
    port, default settings (default project ``project_x``), closed after the test. Add
    tokens and channels to it (``add_token``, ``create_channel``); connect to its
    ``url``."""
    return leap_edge_server_factory()


@pytest.fixture
def elstat_server_factory() -> Iterator[Callable[..., ElstatServer]]:
    """``factory(**options)`` starts an :class:`~leap_sync.testing.ElstatServer` with
    those options (``channels=[...]`` and so on) and returns it, started; every server
    it made is closed after the test."""
    from .elstat.server import ElstatServer

    yield from _servers(ElstatServer)


@pytest.fixture
def elstat_server(elstat_server_factory: Callable[..., ElstatServer]) -> ElstatServer:
    """A running :class:`~leap_sync.testing.ElstatServer` on 127.0.0.1 and a free port,
    with no channels (add them with ``add_channel``), closed after the test. Give an
    :class:`~leap_sync.elstat.ElstatClient` its ``base_url``."""
    return elstat_server_factory()
