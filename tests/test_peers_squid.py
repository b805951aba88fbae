"""squid as an HTTP CONNECT proxy between the client and the embedded server, with and
without basic auth."""

from __future__ import annotations

import signal
import subprocess
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
    freeze_and_thaw,
    prepared_edge,
    require,
    restart_under,
    start_daemon,
    workdir,
)
from peers_configs import Certificates, nginx_argv, squid_argv

from leap_sync import LeapConnectionError
from leap_sync.testing import LeapEdgeServer

pytestmark = pytest.mark.timeout(60)

USER, PASSWORD = "leap", "squid-pw"


@pytest.fixture
def squid() -> str:
    return require("squid", "squid")


def passwords(workdir: Path) -> Path:
    """An htpasswd file for squid's basic_ncsa_auth (MD5-crypt, made by openssl)."""
    openssl = require("openssl", "openssl")
    hashed = subprocess.run([openssl, "passwd", "-apr1", PASSWORD], check=True, capture_output=True, text=True)
    path = workdir / "passwords"
    path.write_text(f"{USER}:{hashed.stdout.strip()}\n")
    path.chmod(0o644)
    return path


def through_squid(
    squid: str, workdir: Path, edge: LeapEdgeServer, daemons: list[Daemon], auth: bool, **options: object
) -> tuple[Daemon, Stream]:
    argv = squid_argv(squid, workdir, passwords(workdir) if auth else None)
    daemon = start_daemon("squid", workdir, argv, stop_signal=signal.SIGKILL)
    daemons.append(daemon)
    stream = Stream(edge, edge.url, http_proxy_host="127.0.0.1", http_proxy_port=daemon.port, **options)
    return daemon, stream


@pytest.mark.parametrize("auth", [False, True], ids=["open", "basic-auth"])
def test_squid_stream_in_order_and_a_restart_reconnects(
    squid: str, workdir: Path, edge: LeapEdgeServer, daemons: list[Daemon], auth: bool
) -> None:
    credentials = {"http_proxy_auth": (USER, PASSWORD)} if auth else {}
    daemon, stream = through_squid(squid, workdir, edge, daemons, auth, **credentials)
    try:
        stream.open()
        stream.slice()
        assert stream.recorder.states == FIRST_CONNECT
        # SIGTERM: the tunnel is cut; the port refuses until squid is back
        restart_under(stream, daemon, daemons, signal.SIGTERM)
        error = stream.lost_error()
        assert str(error) == "connection lost: closed without a close frame"
        assert len(edge.all_connections) == 2
    finally:
        stream.close()


@pytest.mark.parametrize("credentials", [None, (USER, "wrong")], ids=["none", "wrong"])
def test_squid_407_names_the_proxy_phase_and_the_status(
    squid: str, workdir: Path, edge: LeapEdgeServer, daemons: list[Daemon], credentials: tuple[str, str] | None
) -> None:
    options = {"http_proxy_auth": credentials} if credentials else {}
    daemon, stream = through_squid(squid, workdir, edge, daemons, True, **options)
    try:
        failed = stream.connect_error()
        assert (failed.phase, failed.status_code) == ("proxy", 407)
        assert str(failed) == (
            f"could not connect: http proxy 127.0.0.1:{daemon.port} refused CONNECT to 127.0.0.1:{edge.port}: "
            "HTTP 407 Proxy Authentication Required"
        )
        assert PASSWORD not in str(failed) and "wrong" not in str(failed)
    finally:
        stream.close()


def test_squid_stock_rule_refusing_connect_to_a_port_other_than_443_names_the_proxy_phase_and_403(
    squid: str, workdir: Path, edge: LeapEdgeServer, daemons: list[Daemon]
) -> None:
    daemon = start_daemon(
        "squid", workdir, squid_argv(squid, workdir, None, stock_ports=True), stop_signal=signal.SIGKILL
    )
    daemons.append(daemon)
    stream = Stream(edge, edge.url, http_proxy_host="127.0.0.1", http_proxy_port=daemon.port)
    try:
        failed = stream.connect_error()
        assert (failed.phase, failed.status_code) == ("proxy", 403)
        assert str(failed) == (
            f"could not connect: http proxy 127.0.0.1:{daemon.port} refused CONNECT to 127.0.0.1:{edge.port}: "
            "HTTP 403 Forbidden"
        )
    finally:
        stream.close()


def test_squid_then_nginx_wss_through_connect_to_a_tls_terminator(
    squid: str, workdir: Path, edge: LeapEdgeServer, daemons: list[Daemon]
) -> None:
    # The corporate path: CONNECT through squid, TLS with nginx inside the tunnel
    # (verified against nginx's name, not squid's), plain ws behind nginx.
    nginx = require("nginx", "nginx")
    certs = Certificates(workdir)
    front = start_daemon("nginx", workdir, nginx_argv(nginx, workdir, edge.port, certs.cert, certs.key, "60s"))
    daemons.append(front)
    proxy = start_daemon("squid", workdir, squid_argv(squid, workdir, None), stop_signal=signal.SIGKILL)
    daemons.append(proxy)
    url = f"wss://localhost:{front.port}/ws"
    options = {"http_proxy_host": "127.0.0.1", "http_proxy_port": proxy.port, "sslopt": {"ca_certs": str(certs.ca)}}
    stream = Stream(edge, url, **options)
    try:
        stream.open()
        stream.slice()
        restart_under(stream, front, daemons)  # nginx restarts behind squid
        assert len(edge.all_connections) == 2
    finally:
        stream.close()


def test_squid_down_the_tcp_error_names_the_proxy(
    squid: str, workdir: Path, edge: LeapEdgeServer, daemons: list[Daemon]
) -> None:
    # While squid restarts its port refuses: the error (phase tcp) says "TCP connect to
    # 127.0.0.1:PORT failed", with nothing telling that this address is the proxy's.
    daemon, stream = through_squid(squid, workdir, edge, daemons, False)
    daemon.stop()
    try:
        failed = stream.connect_error()
        assert failed.phase == "tcp"
        assert f"http proxy 127.0.0.1:{daemon.port}" in str(failed)
    finally:
        stream.close()


def test_squid_frozen_is_presumed_dead_and_the_client_reconnects_once_it_thaws(
    squid: str, workdir: Path, daemons: list[Daemon]
) -> None:
    # A proxy that hangs (SIGSTOP) keeps every socket open and forwards nothing.
    with prepared_edge(heartbeat_interval=0.3) as edge:
        daemon, stream = through_squid(squid, workdir, edge, daemons, False, connect_timeout=1.0)
        try:
            freeze_and_thaw(stream, daemon, edge, "http")
        finally:
            stream.close()
