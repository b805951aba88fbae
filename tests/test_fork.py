"""Fork safety: a client connected before fork() is unusable in the child, with a clear
error, and never touches the parent's connection; a client created before the fork and
connected after it works on its own in each child; forked workers draw different
reconnect delays."""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable, Iterator

import pytest
from clientkit import PROJECT, TOKEN

from leap_sync import ChannelClosed, ConnectionState, LeapClient, LeapClosedError, NopLogger
from leap_sync.testing import LeapEdgeServer

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


@pytest.fixture
def server() -> Iterator[LeapEdgeServer]:
    with LeapEdgeServer() as srv:
        srv.add_token(TOKEN, project_id=PROJECT)
        srv.create_channel("room", project_id=PROJECT)
        yield srv


def in_child(body: Callable[[], str]) -> str:
    """Run ``body`` in a forked child; return what it returned (or its exception)."""
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork() of a process with threads
        pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        try:
            result = body()
        except BaseException as exc:
            result = f"raised {type(exc).__name__}: {exc}"
        try:
            os.write(write_end, result.encode()[:60_000])
        finally:
            os._exit(0)
    os.close(write_end)
    chunks = []
    while chunk := os.read(read_end, 65536):
        chunks.append(chunk)
    os.close(read_end)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    return b"".join(chunks).decode()


def test_a_client_connected_before_fork_is_unusable_in_the_child(server: LeapEdgeServer) -> None:
    client = LeapClient(PROJECT, TOKEN, NopLogger(), url=server.url)
    messages = client.message_event_channel()
    client.connect(wait=True, timeout=10)
    client.subscribe("room", timeout=5)
    [parent_conn] = server.connections

    def child() -> str:
        outcomes = []
        for call in (
            lambda: client.send_message("room", "x", 1),
            lambda: client.subscribe("room", timeout=1),
            lambda: client.connect(),
            lambda: client.wait_connected(timeout=1),
            lambda: messages.get(timeout=1),
            lambda: client.message_event_channel(),  # nothing would ever feed it
            lambda: client.channel_event_channel(),
        ):
            try:
                call()
                outcomes.append("no error")
            except (LeapClosedError, ChannelClosed) as exc:
                outcomes.append(type(exc).__name__ + (" fork" if "fork()" in str(exc) else ""))
        outcomes.append(client.state.connection_state.value)  # not the parent's CONNECTED
        client.close()  # touches nothing of the parent's
        outcomes.append(client.state.connection_state.value)
        return ",".join(outcomes)

    assert in_child(child) == ",".join(
        ["LeapClosedError fork"] * 4 + ["ChannelClosed fork"] + ["LeapClosedError fork"] * 2 + ["closed", "closed"]
    )
    # the parent's connection is untouched: still open, never closed by the child
    server.publish("room", "after", 1)
    assert messages.get(timeout=5).event_name == "after"
    [conn] = server.connections
    assert conn.cid == parent_conn.cid and conn.open
    assert client.state.connection_state is ConnectionState.CONNECTED
    client.close()


def test_a_client_created_before_fork_works_in_each_child(server: LeapEdgeServer) -> None:
    client = LeapClient(PROJECT, TOKEN, NopLogger(), url=server.url)  # nothing started yet
    messages = client.message_event_channel()

    def child() -> str:
        client.connect(wait=True, timeout=10)
        client.subscribe("room", timeout=5)
        event = messages.get(timeout=10)
        cid = client.init_event.cid if client.init_event else "?"
        client.close()
        return f"{cid}:{event.data}"

    def publish_when_two_subscribe() -> None:
        server.wait_for(lambda s: len(s.subscribers("room")) == 2, timeout=20)
        server.publish("room", "hello", "both")

    import threading

    results: list[str] = []
    publisher = threading.Thread(target=publish_when_two_subscribe)
    publisher.start()
    children = [threading.Thread(target=lambda: results.append(in_child(child))) for _ in range(2)]
    for thread in children:
        thread.start()
    for thread in children:
        thread.join(30)
    publisher.join(30)
    assert len(results) == 2 and all(r.endswith(":both") for r in results), results
    assert results[0].split(":")[0] != results[1].split(":")[0]  # two connections of their own
    assert client.state.connection_state is ConnectionState.IDLE  # the parent's copy never connected


def test_forked_workers_draw_different_reconnect_delays() -> None:
    client = LeapClient(PROJECT, TOKEN, NopLogger(), url="ws://127.0.0.1:9/ws")

    def child() -> str:
        backoff = client._core.backoff
        return ",".join(f"{backoff.next_delay():.9f}" for _ in range(6))

    draws = {in_child(child) for _ in range(3)}
    assert len(draws) == 3  # no two workers come back in lockstep
    client.close()


if sys.platform == "darwin":  # pragma: no cover
    pytestmark = pytest.mark.skip(reason="fork() with threads is unsafe on macOS")
