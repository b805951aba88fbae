"""dante as a SOCKS5 proxy between the client and the embedded server: ``socks5`` and
``socks5h``, with and without username (RFC 1929) auth against system users."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from peers import (
    CONNECTED,
    ERRORED,
    FIRST_CONNECT,
    SOCKS_PASSWORD,
    SOCKS_USER,
    Daemon,
    Stream,
    daemons,
    edge,
    freeze_and_thaw,
    prepare,
    prepared_edge,
    require,
    require_socks_user,
    restart_under,
    start_daemon,
    workdir,
)
from peers_configs import dante_argv

from leap_sync import ConnectionState, LeapConnectionError
from leap_sync.testing import LeapEdgeServer

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def danted() -> str:
    return require("danted", "dante-server")


def through_dante(
    danted: str, workdir: Path, edge: LeapEdgeServer, daemons: list[Daemon], username: bool, **options: object
) -> tuple[Daemon, Stream]:
    if username:
        require_socks_user()
    daemon = start_daemon("danted", workdir, dante_argv(danted, workdir, username))
    daemons.append(daemon)
    url = options.pop("url", edge.url)
    stream = Stream(edge, str(url), http_proxy_host="127.0.0.1", http_proxy_port=daemon.port, **options)
    return daemon, stream


@pytest.mark.parametrize("username", [False, True], ids=["no-auth", "username"])
@pytest.mark.parametrize("proxy_type", ["socks5", "socks5h"])
def test_dante_stream_in_order_and_a_restart_reconnects(
    danted: str, workdir: Path, edge: LeapEdgeServer, daemons: list[Daemon], proxy_type: str, username: bool
) -> None:
    options: dict[str, object] = {"proxy_type": proxy_type}
    if proxy_type == "socks5h":  # the proxy resolves the name
        options["url"] = f"ws://localhost:{edge.port}/ws"
    if username:
        options["http_proxy_auth"] = (SOCKS_USER, SOCKS_PASSWORD)
    daemon, stream = through_dante(danted, workdir, edge, daemons, username, **options)
    try:
        stream.open()
        stream.slice()
        assert stream.recorder.states == FIRST_CONNECT
        restart_under(stream, daemon, daemons)  # the tunnel is cut; the port refuses until dante is back
        error = stream.lost_error()
        assert str(error) == "connection lost: closed without a close frame"
        assert len(edge.all_connections) == 2
    finally:
        stream.close()


@pytest.mark.parametrize(
    ("credentials", "reply"),
    [
        (None, "the SOCKS5 proxy accepts none of the offered authentication methods"),
        ((SOCKS_USER, "wrong-pw"), "the SOCKS5 proxy refused the user name and password"),
    ],
    ids=["none", "wrong"],
)
def test_dante_username_auth_failure_names_the_proxy_phase(
    danted: str,
    workdir: Path,
    edge: LeapEdgeServer,
    daemons: list[Daemon],
    credentials: tuple[str, str] | None,
    reply: str,
) -> None:
    options: dict[str, object] = {"proxy_type": "socks5"}
    if credentials:
        options["http_proxy_auth"] = credentials
    daemon, stream = through_dante(danted, workdir, edge, daemons, True, **options)
    try:
        failed = stream.connect_error()
        assert failed.phase == "proxy"
        assert str(failed) == (
            f"could not connect: socks5 proxy 127.0.0.1:{daemon.port} could not connect to 127.0.0.1:{edge.port}: "
            + reply
        )
    finally:
        stream.close()


def test_dante_refusing_the_destination_names_the_proxy_phase_and_the_reply(
    danted: str, workdir: Path, daemons: list[Daemon]
) -> None:
    with LeapEdgeServer() as edge:
        prepare(edge)
    daemon, stream = through_dante(danted, workdir, edge, daemons, False, proxy_type="socks5")  # nothing listens there
    try:
        failed = stream.connect_error()
        assert failed.phase == "proxy"
        assert str(failed) == (
            f"could not connect: socks5 proxy 127.0.0.1:{daemon.port} could not connect to 127.0.0.1:{edge.port}: "
            "the SOCKS5 proxy refused: connection refused"
        )
    finally:
        stream.close()


def test_dante_down_the_tcp_error_names_the_proxy(
    danted: str, workdir: Path, edge: LeapEdgeServer, daemons: list[Daemon]
) -> None:
    daemon, stream = through_dante(danted, workdir, edge, daemons, False, proxy_type="socks5")
    daemon.stop()
    try:
        failed = stream.connect_error()
        assert failed.phase == "tcp"
        assert f"socks5 proxy 127.0.0.1:{daemon.port}" in str(failed)
    finally:
        stream.close()


def test_dante_frozen_is_presumed_dead_and_the_client_reconnects_once_it_thaws(
    danted: str, workdir: Path, daemons: list[Daemon]
) -> None:
    # A proxy that hangs (SIGSTOP) keeps every socket open and forwards nothing.
    with prepared_edge(heartbeat_interval=0.3) as edge:
        daemon, stream = through_dante(danted, workdir, edge, daemons, False, proxy_type="socks5", connect_timeout=1.0)
        try:
            freeze_and_thaw(stream, daemon, edge, "socks5")
        finally:
            stream.close()
