"""squid as an HTTP CONNECT proxy between the client and the embedded server, with and
without basic auth."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from peers import (
    CONNECTED,
    ERRORED,
    Certificates,
    Daemon,
    Stream,
    nginx_argv,
    prepare,
    require,
    squid_argv,
    start_daemon,
    stopping,
    workdir_for,
)

from leap_sync import ConnectionState, LeapConnectionError
from leap_sync.testing import LeapEdgeServer

pytestmark = pytest.mark.timeout(60)

FIRST_CONNECT = [ConnectionState.CONNECTING, ConnectionState.AUTHENTICATING, CONNECTED]
USER, PASSWORD = "leap", "squid-pw"


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    yield from stopping()


@pytest.fixture
def squid() -> str:
    return require("squid", "squid")


@pytest.fixture
def workdir() -> Iterator[Path]:
    yield from workdir_for("squid")


@pytest.fixture
def edge() -> Iterator[LeapEdgeServer]:
    with LeapEdgeServer(heartbeat_interval=5.0) as server:
        prepare(server)
        yield server


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
        daemon.stop(signal.SIGTERM)  # the tunnel is cut; the port refuses until squid is back
        stream.recorder.wait_count(ERRORED, 1)
        restarted = start_daemon(
            "squid", workdir, lambda port: daemon.argv, port=daemon.port, stop_signal=signal.SIGKILL
        )
        daemons.append(restarted)
        stream.recorder.wait_count(CONNECTED, 2)
        stream.slice()
        stream.check()
        errored = next(i for i in stream.recorder.infos if i.connection_state is ERRORED)
        assert isinstance(errored.error, LeapConnectionError) and errored.will_reconnect
        assert str(errored.error) == "connection lost: closed without a close frame"
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
        with pytest.raises(LeapConnectionError) as failed:
            stream.client.connect()
        assert (failed.value.phase, failed.value.status_code) == ("proxy", 407)
        assert str(failed.value) == (
            f"could not connect: http proxy 127.0.0.1:{daemon.port} refused CONNECT to 127.0.0.1:{edge.port}: "
            "HTTP 407 Proxy Authentication Required"
        )
        assert PASSWORD not in str(failed.value) and "wrong" not in str(failed.value)
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
        with pytest.raises(LeapConnectionError) as failed:
            stream.client.connect()
        assert (failed.value.phase, failed.value.status_code) == ("proxy", 403)
        assert str(failed.value) == (
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
        front.stop()  # nginx restarts behind squid
        stream.recorder.wait_count(ERRORED, 1)
        daemons.append(start_daemon("nginx", workdir, lambda port: front.argv, port=front.port))
        stream.recorder.wait_count(CONNECTED, 2)
        stream.slice()
        stream.check()
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
        with pytest.raises(LeapConnectionError) as failed:
            stream.client.connect()
        assert failed.value.phase == "tcp"
        assert f"http proxy 127.0.0.1:{daemon.port}" in str(failed.value)
    finally:
        stream.close()


def test_squid_frozen_is_presumed_dead_and_the_client_reconnects_once_it_thaws(
    squid: str, workdir: Path, daemons: list[Daemon]
) -> None:
    # A proxy that hangs (SIGSTOP) keeps every socket open and forwards nothing.
    with LeapEdgeServer(heartbeat_interval=0.3) as edge:
        prepare(edge)
        daemon, stream = through_squid(squid, workdir, edge, daemons, False, connect_timeout=1.0)
        try:
            stream.open()
            stream.slice()
            daemon.freeze()
            infos = stream.recorder.wait_count(ERRORED, 3)
            daemon.freeze(False)
            stream.recorder.wait_count(CONNECTED, 2)
            stream.slice()
            stream.check()
            dead, *attempts = [i for i in infos if i.connection_state is ERRORED]
            assert isinstance(dead.error, LeapConnectionError) and dead.will_reconnect
            assert dead.error.phase is None and str(dead.error).endswith("connection presumed dead")
            for attempt in attempts:  # connects to the frozen proxy's backlog, then waits for its answer
                assert isinstance(attempt.error, LeapConnectionError) and attempt.will_reconnect
                assert attempt.error.phase == "proxy"
                assert str(attempt.error) == (
                    f"could not connect: proxy did not open a tunnel to 127.0.0.1:{edge.port} "
                    f"through the http proxy 127.0.0.1:{daemon.port} within 1 s"
                )
        finally:
            stream.close()
