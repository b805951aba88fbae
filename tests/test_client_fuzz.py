"""A hypothesis state machine against a live client: random server behaviour (valid and
invalid frames, fragments, pings, close codes, stalls, drops, resets, redirects,
refusals) and random user behaviour (raising loggers and listeners, close() from a
callback, subscribe/unsubscribe/send races), with invariants checked after every step:

- no thread died (``threading.excepthook`` saw nothing);
- messages arrive in wire order, none twice;
- the client gives up only after 4001 (once identified) or ``max_attempts`` attempts
  in a row that failed;
- ``close()`` returns in bounded time, the state is CLOSED, and no library thread is
  left.

The normal suite runs a fixed number of derandomized examples (under a minute). Set
``LEAP_FUZZ_SECONDS`` to run random examples for that long (the closing note of the
issue reports such a run).
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import hypothesis.strategies as st
import pytest
from clientkit import PROJECT, TOKEN
from conftest import leap_threads
from hostile import HostileServer, Peer
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from leap_sync import (
    Backoff,
    ChannelUnavailableError,
    ConnectionState,
    LeapAuthorizationError,
    LeapClient,
    LeapClosedError,
    LeapConnectionError,
    LeapTimeoutError,
    MessageEvent,
)
from leap_sync.wire.wsframes import OP_CONTINUATION, OP_PING, OP_TEXT

MAX_ATTEMPTS = 2
FUZZ_SECONDS = float(os.environ.get("LEAP_FUZZ_SECONDS", "0"))
EXAMPLES_RUN = [0]

OPENINGS = ["normal", "refuse-503", "no-hello", "init-first", "bad-interval", "4001-before-identify", "reset"]
ACTIONS = [
    "messages",
    "messages",
    "messages",
    "messages",
    "fragmented",
    "fragmented",
    "pings",
    "garbage-json",
    "bad-opcode",
    "tagged-request",
    "huge-latency",
    "second-init",
    "close-4000",
    "close-4005",
    "close-1011",
    "close-4001",
    "close-no-code",
    "redirect-self",
    "drop",
    "reset",
    "stall",
    "pause-acks",
]


class Driven:
    """A connection the machine drives: a reader that acks beats and answers
    (UN)SUBSCRIBE, and a command queue the machine feeds."""

    def __init__(self, peer: Peer, machine: ClientMachine) -> None:
        self.peer = peer
        self.machine = machine
        self.commands: queue.Queue[tuple[Callable[[Peer], None], threading.Event]] = queue.Queue()
        self.acking = True
        self.identified = threading.Event()
        self.init_sent = False

    def read(self) -> None:
        peer = self.peer
        try:
            while not peer.stop.is_set():
                frame = peer.read_json(30)
                op = frame.get("op")
                if op == 2:
                    self.identified.set()
                elif op == 3 and frame.get("d") is None and self.acking:
                    self.send({"op": 4})
                elif op == 0:
                    d = frame["d"]
                    if d["e"] == "SUBSCRIBE":
                        channel = {"id": d["c"], "project_id": PROJECT, "state": {}, "type": "private"}
                        self.send({"op": 0, "d": {"c": d["c"], "e": "AVAILABLE", "d": {"channel": channel}}})
                    elif d["e"] == "UNSUBSCRIBE":
                        self.send({"op": 0, "d": {"c": d["c"], "e": "UNAVAILABLE", "d": {"graceful": True}}})
        except (OSError, EOFError, ValueError, KeyError, TypeError):
            pass

    _send_lock = threading.Lock()

    def send(self, obj: Any) -> None:
        with self._send_lock:
            self.peer.json(obj)


class ClientMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        EXAMPLES_RUN[0] += 1
        self.thread_errors: list[BaseException] = []
        self._previous_hook = threading.excepthook
        threading.excepthook = self._hook
        self.opening = "normal"
        self.seq = 0
        self.failed_in_a_row = 0  # connections (from the server's view) that failed in a row
        self.current: Driven | None = None
        self.lock = threading.Lock()
        self.logger_raises = False
        self.server = HostileServer(self._serve)
        self.received: list[int] = []
        self.client = LeapClient(
            PROJECT,
            TOKEN,
            self._logger(),
            url=self.server.url,
            connect_timeout=1.0,
            close_timeout=1.0,
            backoff=Backoff(base=0.01, cap=0.05, max_attempts=MAX_ATTEMPTS),
        )
        self.messages = self.client.message_event_channel()
        self.consumer = threading.Thread(target=self._consume, name="fuzz-consumer")
        self.consumer.start()
        self.closed = False
        self.client.connect(wait=True, timeout=5)  # every example starts connected
        self.connected = True

    # -- plumbing -----------------------------------------------------------------------

    def _hook(self, args: threading.ExceptHookArgs) -> None:
        self.thread_errors.append(args.exc_value or RuntimeError("thread died"))
        self._previous_hook(args)

    def _logger(self) -> Any:
        machine = self

        class Logger:
            def _maybe(self) -> None:
                if machine.logger_raises:
                    raise RuntimeError("logger broken")

            def debug(self, message: str, metadata: Any = None) -> None:
                self._maybe()

            def info(self, message: str, metadata: Any = None) -> None:
                self._maybe()

            def warn(self, message: str, metadata: Any = None) -> None:
                self._maybe()

            def error(self, message: str, err: Any = None, metadata: Any = None) -> None:
                self._maybe()

        return Logger()

    def _consume(self) -> None:
        for event in self.messages:
            assert isinstance(event, MessageEvent)
            with self.lock:
                self.received.append(event.data["seq"])

    def _serve(self, peer: Peer) -> None:
        opening = self.opening
        driven = Driven(peer, self)
        if opening == "refuse-503":
            self.failed_in_a_row += 1
            peer.refuse(503, "Busy")
            return
        if opening == "reset":
            self.failed_in_a_row += 1
            peer.read_request()
            peer.reset()
            return
        peer.upgrade()
        reader = threading.Thread(target=driven.read, daemon=True)
        reader.start()
        if opening == "init-first":
            self.failed_in_a_row += 1
            driven.send({"op": 0, "d": {"c": None, "e": "INIT", "d": {}}})
        elif opening == "no-hello":
            self.failed_in_a_row += 1
        elif opening == "bad-interval":
            self.failed_in_a_row += 1
            driven.send({"op": 1, "d": {"heartbeat_interval": 10**400}})
        elif opening == "4001-before-identify":
            self.failed_in_a_row += 1
            peer.close(4001, "no")
        else:
            driven.send({"op": 1, "d": {"heartbeat_interval": 200}})
            if driven.identified.wait(5):
                driven.send(
                    {
                        "op": 0,
                        "d": {
                            "c": None,
                            "e": "INIT",
                            "d": {"cid": f"c{peer.number}", "connection_count": 1, "scope": "token", "channels": []},
                        },
                    }
                )
                driven.init_sent = True
                self.failed_in_a_row = 0
        with self.lock:
            self.current = driven
        try:
            while not peer.stop.is_set():
                try:
                    command, done = driven.commands.get(timeout=0.2)
                except queue.Empty:
                    if not reader.is_alive():
                        break
                    continue
                try:
                    command(peer)
                finally:
                    done.set()
        finally:
            with self.lock:
                if self.current is driven:
                    self.current = None
            while not driven.commands.empty():  # commands that came too late: nothing to run them on
                driven.commands.get_nowait()[1].set()
            reader.join(5)

    def _on_peer(self, command: Callable[[Peer], None]) -> None:
        with self.lock:
            driven = self.current
        if driven is None:
            return
        done = threading.Event()
        driven.commands.put((command, done))
        deadline = time.monotonic() + 5
        while not done.wait(0.1):
            with self.lock:
                if self.current is not driven:  # the connection ended meanwhile
                    return
            assert time.monotonic() < deadline, "the server script did not run its command"

    # -- server behaviour -----------------------------------------------------------------

    @rule(opening=st.sampled_from(OPENINGS))
    def next_connection_opens(self, opening: str) -> None:
        self.opening = opening

    @precondition(lambda self: not self.closed)
    @rule(action=st.sampled_from(ACTIONS), count=st.integers(1, 20))
    def server_does(self, action: str, count: int) -> None:
        driven = self.current
        if driven is None:
            return

        def run(peer: Peer) -> None:
            if action == "messages":
                for _ in range(count):
                    self.seq += 1
                    driven.send({"op": 0, "d": {"c": "room", "e": "MESSAGE", "d": {"e": "n", "d": {"seq": self.seq}}}})
            elif action == "fragmented":
                self.seq += 1
                data = b'{"op":0,"d":{"c":"room","e":"MESSAGE","d":{"e":"n","d":{"seq":%d,"pad":"%s"}}}}' % (
                    self.seq,
                    b"x" * count * 10,
                )
                with driven._send_lock:
                    peer.frame(OP_TEXT, data[:10], fin=False)
                    peer.frame(OP_PING, b"p")
                    peer.frame(OP_CONTINUATION, data[10:])
            elif action == "pings":
                with driven._send_lock:
                    for _ in range(count):
                        peer.frame(OP_PING, b"x" * (count % 125))
            elif action == "garbage-json":
                with driven._send_lock:
                    peer.frame(OP_TEXT, b"{not json")
            elif action == "bad-opcode":
                with driven._send_lock:
                    peer.send(b"\x8f\x00")
            elif action == "tagged-request":
                driven.send({"op": 3, "d": {"tag": f"t{count}"}})
            elif action == "huge-latency":
                driven.send({"op": 4, "d": {"tag": "t", "latency": 10**400}})
            elif action == "second-init":
                driven.send({"op": 0, "d": {"c": None, "e": "INIT", "d": {}}})
            elif action.startswith("close-"):
                code = None if action == "close-no-code" else int(action[6:])
                with driven._send_lock:
                    peer.close(code, "fuzz")
            elif action == "redirect-self":
                self.failed_in_a_row += 1  # a redirected attempt counts as failed
                with driven._send_lock:
                    peer.close(4006, self.server.url)
            elif action == "drop":
                peer.sock.shutdown(2)
            elif action == "reset":
                self.failed_in_a_row += 1  # a reset may discard the INIT before the client read it
                peer.reset()
            elif action == "stall":
                peer.stop.wait(0.05 * count)
            elif action == "pause-acks":
                driven.acking = not driven.acking

        self._on_peer(run)

    # -- user behaviour ---------------------------------------------------------------------

    @precondition(lambda self: self.connected and not self.closed)
    @rule(channel=st.sampled_from(["room", "other"]), subscribe=st.booleans())
    def subscribe_or_unsubscribe(self, channel: str, subscribe: bool) -> None:
        try:
            if subscribe:
                self.client.subscribe(channel, timeout=0.5)
            else:
                self.client.unsubscribe(channel)
        except (ChannelUnavailableError, LeapConnectionError, LeapTimeoutError, LeapClosedError):
            pass

    @precondition(lambda self: self.connected and not self.closed)
    @rule(n=st.integers(0, 3))
    def send_message(self, n: int) -> None:
        try:
            self.client.send_message("room", "chat", {"n": n})
        except (LeapConnectionError, LeapClosedError):
            pass

    @rule()
    def toggle_logger(self) -> None:
        self.logger_raises = not self.logger_raises

    @rule(kind=st.sampled_from(["raise", "close-on-connected", "close-on-errored"]))
    def add_listener(self, kind: str) -> None:
        client = self.client

        def listener(info: Any) -> None:
            if kind == "raise":
                raise RuntimeError("listener broken")
            if kind == "close-on-connected" and info.connection_state is ConnectionState.CONNECTED:
                client.close()
            if kind == "close-on-errored" and info.connection_state is ConnectionState.ERRORED:
                client.close()

        client.add_state_update_listener(listener)

    @precondition(lambda self: not self.closed)
    @rule()
    def close_from_another_thread(self) -> None:
        closer = threading.Thread(target=self.client.close)
        closer.start()
        closer.join(5)
        assert not closer.is_alive(), "close() from another thread did not return"
        self.closed = True

    # -- invariants ------------------------------------------------------------------------

    @invariant()
    def no_thread_died(self) -> None:
        assert self.thread_errors == []

    @invariant()
    def wire_order(self) -> None:
        with self.lock:
            seen = list(self.received)
        assert seen == sorted(set(seen)), seen

    @invariant()
    def gives_up_only_for_a_reason(self) -> None:
        info = self.client.state
        if info.connection_state is ConnectionState.ERRORED and not info.will_reconnect:
            error = info.error
            if isinstance(error, LeapAuthorizationError):
                assert error.close_code == 4001
            elif self.connected:
                assert "gave up after" in str(error), error
                assert self.failed_in_a_row >= MAX_ATTEMPTS, (self.failed_in_a_row, error)

    def teardown(self) -> None:
        try:
            started = time.monotonic()
            self.client.close()
            took = time.monotonic() - started
            assert took < 4.0, f"close() took {took:.1f} s"
            assert self.client.state.connection_state is ConnectionState.CLOSED
            self.consumer.join(5)
            assert not self.consumer.is_alive()
            deadline = time.monotonic() + 5
            for thread in leap_threads():
                if thread.name.endswith(f"-{self.client._number}"):
                    thread.join(max(0.0, deadline - time.monotonic()))
                    assert not thread.is_alive(), f"{thread.name} outlived close()"
            assert self.thread_errors == []
        finally:
            self.server.close()
            threading.excepthook = self._previous_hook


if FUZZ_SECONDS:
    ClientMachine.TestCase.settings = settings(
        max_examples=50,
        stateful_step_count=25,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
else:
    ClientMachine.TestCase.settings = settings(
        max_examples=120,
        stateful_step_count=25,
        deadline=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )


@pytest.mark.timeout(FUZZ_SECONDS + 300 if FUZZ_SECONDS else 120)
def test_client_state_machine() -> None:
    if FUZZ_SECONDS:
        end = time.monotonic() + FUZZ_SECONDS
        while time.monotonic() < end:
            ClientMachine.TestCase().runTest()
        print(f"fuzz: {EXAMPLES_RUN[0]} examples in {FUZZ_SECONDS:g} s")
    else:
        ClientMachine.TestCase().runTest()
