"""StateInfo compared with a ConnectionState: the natural spelling works."""

from __future__ import annotations

import operator

from leap_sync import ConnectionState, StateInfo

CONNECTED, CLOSED, ERRORED = ConnectionState.CONNECTED, ConnectionState.CLOSED, ConnectionState.ERRORED


def test_a_state_info_equals_its_connection_state() -> None:
    info = StateInfo(CONNECTED)
    assert info == CONNECTED
    assert operator.eq(CONNECTED, info)  # the enum on the left
    assert operator.ne(info, CONNECTED) is False
    assert info != CLOSED and operator.ne(CLOSED, info)
    assert info in (CLOSED, CONNECTED)
    assert info not in (CLOSED, ERRORED)
    assert info in {CONNECTED: "up"}  # hashes as its connection state


def test_state_infos_compare_state_and_will_reconnect_not_the_error() -> None:
    a = StateInfo(ERRORED, ValueError("a"), will_reconnect=True)
    b = StateInfo(ERRORED, KeyError("b"), will_reconnect=True)
    assert a == b and hash(a) == hash(b)
    assert a != StateInfo(ERRORED, None, will_reconnect=False)
    assert len({a, b, StateInfo(CLOSED)}) == 2


def test_other_types_are_not_equal() -> None:
    info = StateInfo(CONNECTED)
    assert info != "connected"
    assert info != 1
    assert info != None  # noqa: E711


def test_a_live_client_state_compares_with_connection_state(leap_edge_server: object) -> None:
    from leap_sync import LeapClient
    from leap_sync.testing import LeapEdgeServer

    assert isinstance(leap_edge_server, LeapEdgeServer)
    leap_edge_server.add_token("tok_state_cmp")
    client = LeapClient("project_x", "tok_state_cmp", url=leap_edge_server.url)
    assert client.state == ConnectionState.IDLE
    with client:
        client.connect(wait=True, timeout=10)
        assert client.state == ConnectionState.CONNECTED
    assert client.state == ConnectionState.CLOSED
