"""nginx as a TLS-terminating websocket reverse proxy in front of the embedded server."""

from __future__ import annotations

import subprocess
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
    edge,
    prepare,
    prepared_edge,
    require,
    restart_under,
    start_daemon,
    wait_until,
    workdir,
)
from peers_configs import Certificates, nginx_argv

from leap_sync import ConnectionState, LeapConnectionError
from leap_sync.testing import LeapEdgeServer

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def nginx() -> str:
    return require("nginx", "nginx")


def behind_nginx(
    nginx: str, workdir: Path, server: LeapEdgeServer, daemons: list[Daemon], read_timeout: str = "60s", main: str = ""
) -> tuple[Daemon, Stream]:
    certs = Certificates(workdir)
    argv = nginx_argv(nginx, workdir, server.port, certs.cert, certs.key, read_timeout, main)
    daemon = start_daemon("nginx", workdir, argv)
    daemons.append(daemon)
    return daemon, Stream(server, f"wss://localhost:{daemon.port}/ws", sslopt={"ca_certs": str(certs.ca)})


def test_nginx_stream_in_order_and_a_restart_reconnects(
    nginx: str, workdir: Path, edge: LeapEdgeServer, daemons: list[Daemon]
) -> None:
    daemon, stream = behind_nginx(nginx, workdir, edge, daemons)
    try:
        stream.open()
        stream.slice()
        restart_under(stream, daemon, daemons)  # the connection is cut; the port refuses until nginx is back
        stream.lost_error()
        assert len(edge.all_connections) == 2
    finally:
        stream.close()


def reload(daemon: Daemon, nginx: str) -> None:
    """``nginx -s reload`` for this daemon, then wait until its old worker is
    shutting down gracefully (the new one serves from then on)."""
    conf = daemon.argv[daemon.argv.index("-c") + 1]
    subprocess.run([nginx, "-p", str(daemon.workdir), "-c", conf, "-s", "reload"], check=True, capture_output=True)
    log = daemon.workdir / "nginx-error.log"
    wait_until(lambda: "gracefully shutting down" in log.read_text(), 10, "the old nginx worker shuts down")


def test_nginx_reload_keeps_a_live_websocket(
    nginx: str, workdir: Path, edge: LeapEdgeServer, daemons: list[Daemon]
) -> None:
    # The old worker keeps an upgraded connection until it closes: nothing is cut.
    daemon, stream = behind_nginx(nginx, workdir, edge, daemons)
    try:
        stream.open()
        stream.slice()
        reload(daemon, nginx)
        stream.slice()
        stream.check()
        assert stream.recorder.states == FIRST_CONNECT
        assert len(edge.all_connections) == 1
    finally:
        stream.close()


def test_nginx_reload_with_worker_shutdown_timeout_reconnects_promptly(
    nginx: str, workdir: Path, edge: LeapEdgeServer, daemons: list[Daemon]
) -> None:
    # worker_shutdown_timeout: the old worker closes the websocket after 0.5 s; the
    # client reconnects through the new worker.
    daemon, stream = behind_nginx(nginx, workdir, edge, daemons, main="worker_shutdown_timeout 500ms;")
    try:
        stream.open()
        stream.slice()
        reload(daemon, nginx)
        stream.recorder.wait_count(CONNECTED, 2)
        stream.slice()
        stream.check()
        error = stream.lost_error()
        assert error.phase is None  # lost once connected
        assert len(edge.all_connections) == 2
    finally:
        stream.close()


def test_nginx_read_timeout_shorter_than_the_heartbeat_interval_cuts_and_reconnects(
    nginx: str, workdir: Path, daemons: list[Daemon]
) -> None:
    with prepared_edge(heartbeat_interval=5.0) as edge:
        _, stream = behind_nginx(nginx, workdir, edge, daemons, read_timeout="300ms")
        try:
            stream.open()
            stream.slice()
            stream.recorder.wait_count(CONNECTED, 2)  # idle past 300 ms: nginx closed it
            stream.slice()
            stream.check()
            error = stream.lost_error()
            assert str(error) == "connection lost: closed without a close frame"
            assert (error.phase, error.close_code) == (None, None)
        finally:
            stream.close()


def test_nginx_read_timeout_longer_than_the_heartbeat_interval_stays_connected(
    nginx: str, workdir: Path, daemons: list[Daemon]
) -> None:
    with prepared_edge(heartbeat_interval=0.3) as edge:
        _, stream = behind_nginx(nginx, workdir, edge, daemons, read_timeout="1s")
        try:
            stream.open()
            stream.slice()
            # six beats (about 1.8 s): well past one read timeout with no message
            edge.wait_for(lambda s: s.connections[0].heartbeats >= 6, timeout=10)
            stream.slice()
            stream.check()
            assert stream.recorder.states == FIRST_CONNECT
            assert len(edge.all_connections) == 1
        finally:
            stream.close()


def test_nginx_with_the_edge_down_reports_the_upgrade_phase_and_502(
    nginx: str, workdir: Path, daemons: list[Daemon]
) -> None:
    with LeapEdgeServer() as edge:
        prepare(edge)
    daemon, stream = behind_nginx(nginx, workdir, edge, daemons)  # the edge's port is closed now
    try:
        failed = stream.connect_error()
        assert (failed.phase, failed.status_code) == ("upgrade", 502)
        assert str(failed) == (
            f"could not connect: websocket upgrade refused: HTTP 502 Bad Gateway from localhost:{daemon.port}"
        )
    finally:
        stream.close()


def test_nginx_with_an_untrusted_certificate_reports_the_tls_phase(
    nginx: str, workdir: Path, edge: LeapEdgeServer, daemons: list[Daemon]
) -> None:
    _, stream = behind_nginx(nginx, workdir, edge, daemons)
    stream.close()
    daemon = daemons[0]
    untrusting = Stream(edge, f"wss://localhost:{daemon.port}/ws")
    try:
        failed = untrusting.connect_error()
        assert failed.phase == "tls"
        assert str(failed) == (
            f"could not connect: TLS handshake with localhost:{daemon.port} failed: "
            "unable to get local issuer certificate"
        )
    finally:
        untrusting.close()


def test_nginx_passes_the_servers_close_code_and_reason_through(
    nginx: str, workdir: Path, edge: LeapEdgeServer, daemons: list[Daemon]
) -> None:
    _, stream = behind_nginx(nginx, workdir, edge, daemons)
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
