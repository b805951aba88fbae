"""HAProxy terminating TLS in front of the embedded server: ``timeout tunnel`` and
``timeout client`` around websockets, and a soft stop with a new process taking over."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from peers import (
    CONNECTED,
    ERRORED,
    FIRST_CONNECT,
    Daemon,
    Stream,
    daemons,
    prepare,
    prepared_edge,
    require,
    restart,
    restart_under,
    start_daemon,
    workdir,
)
from peers_configs import Certificates, haproxy_argv

from leap_sync import ConnectionState, LeapConnectionError
from leap_sync.testing import LeapEdgeServer

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def haproxy() -> str:
    return require("haproxy", "haproxy")


def behind_haproxy(
    haproxy: str, workdir: Path, server: LeapEdgeServer, daemons: list[Daemon], tunnel: str = "60s", client: str = "30s"
) -> tuple[Daemon, Stream]:
    certs = Certificates(workdir)
    daemon = start_daemon(
        "haproxy", workdir, haproxy_argv(haproxy, workdir, server.port, certs.combined, tunnel, client)
    )
    daemons.append(daemon)
    return daemon, Stream(server, f"wss://localhost:{daemon.port}/ws", sslopt={"ca_certs": str(certs.ca)})


def test_haproxy_soft_stop_hands_over_to_a_new_process_and_the_client_reconnects(
    haproxy: str, workdir: Path, daemons: list[Daemon]
) -> None:
    with prepared_edge(heartbeat_interval=5.0) as edge:
        old, stream = behind_haproxy(haproxy, workdir, edge, daemons)
        try:
            stream.open()
            stream.slice()
            old.send(signal.SIGUSR1)  # soft stop: stop listening, keep connections until hard-stop-after (1 s)
            daemons.append(restart(old))
            assert old.wait(10) == 0  # the old process ends at hard-stop-after, closing the websocket
            stream.recorder.wait_count(CONNECTED, 2)
            # one reconnect, at once: the new process was listening before the old one ended
            assert stream.recorder.states == [*FIRST_CONNECT, ERRORED, *FIRST_CONNECT]
            stream.slice()
            stream.check()
            error = stream.lost_error()
            assert str(error) == "connection lost: closed without a close frame"
            assert len(edge.all_connections) == 2
        finally:
            stream.close()


def test_haproxy_restart_reconnects_and_nothing_is_lost(haproxy: str, workdir: Path, daemons: list[Daemon]) -> None:
    with prepared_edge(heartbeat_interval=5.0) as edge:
        daemon, stream = behind_haproxy(haproxy, workdir, edge, daemons)
        try:
            stream.open()
            stream.slice()
            restart_under(stream, daemon, daemons)
            assert len(edge.all_connections) == 2
        finally:
            stream.close()


def test_haproxy_timeout_tunnel_shorter_than_the_heartbeat_interval_cuts_and_reconnects(
    haproxy: str, workdir: Path, daemons: list[Daemon]
) -> None:
    with prepared_edge(heartbeat_interval=5.0) as edge:
        _, stream = behind_haproxy(haproxy, workdir, edge, daemons, tunnel="300ms")
        try:
            stream.open()
            stream.slice()
            stream.recorder.wait_count(CONNECTED, 2)  # idle past 300 ms: HAProxy closed the tunnel
            stream.slice()
            stream.check()
            error = stream.lost_error()
            assert str(error) == "connection lost: closed without a close frame"
            assert (error.phase, error.close_code) == (None, None)
        finally:
            stream.close()


def test_haproxy_timeout_tunnel_longer_than_the_heartbeat_interval_stays_connected_despite_a_short_timeout_client(
    haproxy: str, workdir: Path, daemons: list[Daemon]
) -> None:
    # Once upgraded, the tunnel timeout applies, not the (shorter) client timeout.
    with prepared_edge(heartbeat_interval=0.3) as edge:
        _, stream = behind_haproxy(haproxy, workdir, edge, daemons, tunnel="1s", client="200ms")
        try:
            stream.open()
            stream.slice()
            edge.wait_for(lambda s: s.connections[0].heartbeats >= 6, timeout=10)
            stream.slice()
            stream.check()
            assert stream.recorder.states == FIRST_CONNECT
            assert len(edge.all_connections) == 1
        finally:
            stream.close()


def test_haproxy_with_the_edge_down_reports_the_upgrade_phase_and_503(
    haproxy: str, workdir: Path, daemons: list[Daemon]
) -> None:
    with LeapEdgeServer() as edge:
        prepare(edge)
    daemon, stream = behind_haproxy(haproxy, workdir, edge, daemons)
    try:
        failed = stream.connect_error()
        assert (failed.phase, failed.status_code) == ("upgrade", 503)
        assert str(failed) == (
            f"could not connect: websocket upgrade refused: HTTP 503 Service Unavailable from localhost:{daemon.port}"
        )
    finally:
        stream.close()


def test_haproxy_passes_the_servers_close_code_and_reason_through(
    haproxy: str, workdir: Path, daemons: list[Daemon]
) -> None:
    with prepared_edge(heartbeat_interval=5.0) as edge:
        _, stream = behind_haproxy(haproxy, workdir, edge, daemons)
        try:
            stream.open()
            stream.slice()
            edge.disconnect(4005, "bye")
            stream.recorder.wait_count(CONNECTED, 2)
            stream.slice()
            stream.check()
            error = stream.lost_error()
            assert (error.close_code, error.close_reason) == (4005, "bye")
            assert str(error) == "server closed the connection (code 4005: bye)"
        finally:
            stream.close()
