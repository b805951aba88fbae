"""Soak: four LeapClients through a fault proxy while a seeded injector breaks things.

Clients (one per (encoding, compression) pair, two with a token of their own, two
tokenless) connect through one :class:`~faultproxy.FaultProxy` to a
``LeapEdgeServer`` with a 0.5 s heartbeat, subscribe to two sequenced channels, and
consume while a publisher thread publishes steadily (each message's data starts with
its own sequence number). A ``random.Random(seed)`` injector keeps injecting, one
episode after another, faults in the network (latency and bandwidth spikes, one-way
blackholes, half-open stalls, resets; on one link or all, new links included) and in
the server (``disconnect()`` with a random close code, ``drop()``, ``silence()``,
``pause_acks()``), often an instant one in the middle of a held one. Then the faults
stop, every client must be back to CONNECTED and subscribed within a bound, and a
final burst must reach every client.

**Attribution.** Each client has its own (encoding, compression) pair, which the
server records on every connection (``ConnectionInfo.encoding``/``compression``), so
every server connection belongs to exactly one client; identified ones must also
carry that client's token (``None`` for the tokenless ones), which the test checks.
A connection carries sequence numbers only once identified, and a client identifies a
connection only after the server opened it (it answers Hello) and opens the next only
after abandoning it, so a client's identified connections appear in
``server.all_connections`` (history order) in the order the client used them.

**The prefix rule.** TCP delivers in order, so on each server connection a client
received a prefix of ``ConnectionInfo.sequences[channel]`` (what the server handed to
that socket). Bytes in flight at a reset or in a blackhole are lost by the network,
not by the client, so the prefix may be short, except when the client *received the
close frame* the server sent after the data: then it received all of it. Every
``disconnect()`` here targets one connection with a unique reason (``"soak <n>"``),
and the client reports each close frame it receives (``StateInfo.error.close_reason``),
so "received the close frame" is known exactly, even when the injector's own faults
ate it. For each client and channel, the received sequence numbers must be the
concatenation, over its connections in order, of a prefix of each one's written list
(the whole list for a confirmed close); and strictly increasing (no duplicate, no
reordering). The check allows every split (a token client's zombie connection and
its successor share a session, so their lists can overlap).

Also: the payload matches the sequence number, no thread died (``threading.excepthook``
saw nothing), no client gave up or reported a protocol or internal error, no server
connection ended with a code that means a client bug, no ``leap-sync-*`` thread is
left after closing.

Runs: two fixed seeds of 30 s each in the normal suite. ``LEAP_SOAK_SECONDS=600``
runs one soak that long (with its own pytest-timeout), with ``LEAP_SOAK_SEED`` or a
random seed; ``LEAP_SOAK_SEED`` alone runs 60 s with that seed. The seed and the counts
(faults by kind and scope, close codes, how connections ended, messages delivered,
reconnects) are printed: run with ``-s`` to see them. A seed fixes the sequence of
fault kinds, scopes, durations and codes; which link or connection a one-target fault
hits depends on timing (and a one-target fault finding nothing open hits everything).
"""

from __future__ import annotations

import bisect
import collections
import itertools
import os
import queue
import random
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from clientkit import PROJECT
from faultproxy import FaultProxy

from leap_sync import Backoff, ChannelClosed, ConnectionState, LeapClient, LeapConnectionError, StateInfo
from leap_sync.testing import ConnectionInfo, LeapEdgeServer

CHANNELS = ("soak-a", "soak-b")
CLOSE_CODES = (4000, 4002, 4003, 4004, 4005, 4007, 1000, 1001, 1011)  # never 4001: fatal by design
CLIENT_BUG_CODES = {1002, 1007, 1011, 4003, 4004, 4005}
"""Server-side close codes that mean a client misbehaved (unless the injector sent them)."""
HEARTBEAT = 0.5
RECOVERY_BOUND = 30.0
"""Seconds every client gets to be CONNECTED and subscribed again once faults stop."""
BURST = 100


@dataclass(frozen=True)
class Spec:
    name: str
    token: str | None
    encoding: str
    compression: str


SPECS = (
    Spec("json-token", "leap_token_soak_1", "json", "none"),
    Spec("etf-zlib-token", "leap_token_soak_2", "etf", "zlib"),
    Spec("json-zlib-tokenless", None, "json", "zlib"),
    Spec("etf-tokenless", None, "etf", "none"),
)
assert len({(s.encoding, s.compression) for s in SPECS}) == len(SPECS)  # attribution relies on it


def _cases() -> list[Any]:
    seconds = os.environ.get("LEAP_SOAK_SECONDS")
    seed = os.environ.get("LEAP_SOAK_SEED")
    if seconds is None and seed is None:
        return [
            pytest.param(seed, 30.0, marks=pytest.mark.timeout(240), id=f"seed{seed}") for seed in (20240611, 1010101)
        ]
    duration = float(seconds or 60.0)
    chosen = int(seed) if seed is not None else secrets.randbelow(2**32)
    return [pytest.param(chosen, duration, marks=pytest.mark.timeout(duration + 300), id=f"seed{chosen}")]


# -- the clients' side ------------------------------------------------------------------


class Watcher:
    """One client, what it received (per channel, in order) and every state it reported."""

    def __init__(self, spec: Spec, server: LeapEdgeServer, proxy: FaultProxy, hard_deadline: float) -> None:
        self.spec = spec
        self.client = LeapClient(
            PROJECT,
            spec.token,
            url=proxy.url_for(server.url),
            encoding=spec.encoding,
            compression=spec.compression,
            backoff=Backoff(base=0.02, cap=0.5, reset_after=5.0),
            connect_timeout=3.0,
            close_timeout=2.0,
        )
        self.received: dict[str, list[int]] = {channel: [] for channel in CHANNELS}
        self.problems: list[str] = []
        self.infos: list[StateInfo] = []
        self.cond = threading.Condition()
        self._hard_deadline = hard_deadline
        self.messages = self.client.message_event_channel()
        self.client.add_state_update_listener(self._on_state)
        self.thread = threading.Thread(target=self._consume, name=f"soak-consume-{spec.name}", daemon=True)

    def _on_state(self, info: StateInfo) -> None:
        with self.cond:
            self.infos.append(info)
            self.cond.notify_all()

    def _consume(self) -> None:
        while time.monotonic() < self._hard_deadline:
            try:
                event = self.messages.get(timeout=1.0)
            except queue.Empty:
                continue
            except ChannelClosed:
                return
            seq = event.seq
            ok = (
                event.channel_id in CHANNELS
                and event.event_name == "n"
                and not event.direct
                and isinstance(seq, int)
                and isinstance(event.data, list)
                and event.data[:1] == [seq]
            )
            with self.cond:
                if not ok:
                    self.problems.append(f"unexpected event {event!r}")
                    continue
                self.received[event.channel_id].append(seq)
                self.cond.notify_all()
        self.problems.append("the consumer ran out of time")

    def wait_received(self, last: dict[str, int], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not all(self.received[c] and self.received[c][-1] >= seq for c, seq in last.items()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    tails = {c: self.received[c][-3:] for c in CHANNELS}
                    raise AssertionError(f"{self.spec.name} did not receive up to {last} in {timeout:g} s: {tails}")
                self.cond.wait(remaining)

    @property
    def close_reasons(self) -> set[str]:
        """The reasons of every close frame the client reported receiving."""
        with self.cond:
            return {
                i.error.close_reason
                for i in self.infos
                if isinstance(i.error, LeapConnectionError) and i.error.close_reason is not None
            }

    def endings(self) -> collections.Counter[str]:
        """How the client's connections and attempts ended, by kind."""
        kinds: collections.Counter[str] = collections.Counter()
        with self.cond:
            errors = [i.error for i in self.infos if i.connection_state is ConnectionState.ERRORED]
        for error in errors:
            if isinstance(error, LeapConnectionError) and error.close_code is not None:
                kinds[f"close frame {int(error.close_code)}"] += 1
            elif "presumed dead" in str(error):
                kinds["zombie (heartbeat)"] += 1
            elif isinstance(error, LeapConnectionError) and error.phase is not None:
                kinds[f"attempt failed ({error.phase})"] += 1
            else:
                kinds["tcp lost"] += 1
        return kinds

    def count(self, state: ConnectionState) -> int:
        with self.cond:
            return sum(i.connection_state is state for i in self.infos)


# -- the injector -------------------------------------------------------------------------


@dataclass
class Injector:
    """Seeded random faults, one episode at a time (see the module docstring)."""

    seed: int
    server: LeapEdgeServer
    proxy: FaultProxy
    counts: collections.Counter[str] = field(default_factory=collections.Counter)
    """Faults injected, by kind and scope (``[all]``: every link or connection)."""
    close_codes: collections.Counter[int] = field(default_factory=collections.Counter)
    """Connections closed by ``disconnect()``, by code."""
    reasons: dict[str, str] = field(default_factory=dict)
    """cid -> the unique close reason ``disconnect()`` gave it."""
    codes: dict[str, int] = field(default_factory=dict)
    """cid -> the close code ``disconnect()`` gave it."""
    silenced: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self._pause = threading.Event()  # never set: waits out a fault's duration
        self._closes = itertools.count(1)

    HELD = {"latency": 3, "bandwidth": 2, "blackhole": 2, "half_open": 2, "pause_acks": 1}
    INSTANT = {"disconnect": 4, "drop": 2, "proxy_reset": 2, "silence": 1}

    def run(self, until: float) -> None:
        kinds = {**self.HELD, **self.INSTANT}
        names, weights = list(kinds), list(kinds.values())
        while time.monotonic() < until:
            kind = self.rng.choices(names, weights)[0]
            if kind in self.HELD:
                hold = self.rng.uniform(0.3, 2.0)
                self._start(kind)
                self._pause.wait(hold / 2)
                if self.rng.random() < 0.35:
                    self._instant(self.rng.choice(list(self.INSTANT)))
                self._pause.wait(hold / 2)
                self._end(kind)
            else:
                self._instant(kind)
            self._pause.wait(self.rng.uniform(0.1, 0.8))

    def stop(self) -> None:
        self.proxy.heal()
        self.server.pause_acks(False)

    def _all(self) -> bool:
        return self.rng.random() < 0.25

    # Each decision draws a fixed number of values from the generator, whatever the
    # number of links or connections at that moment, so a seed always gives the same
    # sequence of kinds, scopes, directions, durations and codes; only which link or
    # connection a one-target fault hits depends on timing (one finding nothing open hits all).

    def _link(self, kind: str) -> int | None:
        """One open link, or ``None`` for every link (and new ones); counts the fault."""
        ids = sorted(link.id for link in self.proxy.links)
        every, pick = self._all(), self.rng.random()
        if every or not ids:
            self.counts[f"{kind}[all]"] += 1
            return None
        self.counts[f"{kind}[one]"] += 1
        return ids[int(pick * len(ids))]

    def _cids(self, kind: str) -> list[str]:
        """One open server connection, or all of them; counts the fault."""
        cids = sorted(conn.cid for conn in self.server.connections)
        every, pick = self._all(), self.rng.random()
        if every or not cids:
            self.counts[f"{kind}[all]"] += 1
            return cids
        self.counts[f"{kind}[one]"] += 1
        return [cids[int(pick * len(cids))]]

    def _start(self, kind: str) -> None:
        rng = self.rng
        try:
            if kind == "latency":
                direction = rng.choice(["up", "down", "both"])
                self.proxy.set_latency(rng.uniform(0.05, 0.6), direction, link=self._link(kind))
            elif kind == "bandwidth":
                direction = rng.choice(["up", "down", "both"])
                self.proxy.set_bandwidth(rng.choice([2_000, 10_000, 50_000]), direction, link=self._link(kind))
            elif kind == "blackhole":
                self.proxy.blackhole(rng.choice(["up", "down"]), link=self._link(kind))
            elif kind == "half_open":
                self.proxy.half_open(link=self._link(kind))
            elif kind == "pause_acks":
                self.counts[f"{kind}[all]"] += 1
                self.server.pause_acks(True)
        except KeyError:
            self.counts[f"{kind} (link gone)"] += 1

    def _end(self, kind: str) -> None:
        if kind == "pause_acks":
            self.server.pause_acks(False)
        else:
            self.proxy.heal()

    def _instant(self, kind: str) -> None:
        if kind == "proxy_reset":
            try:
                self.proxy.reset(link=self._link(kind))
            except KeyError:
                self.counts[f"{kind} (link gone)"] += 1
            return
        code = self.rng.choice(CLOSE_CODES)
        for cid in self._cids(kind):
            try:
                if kind == "disconnect":
                    reason = f"soak {next(self._closes)}"
                    self.reasons[cid] = reason
                    self.codes[cid] = code
                    self.server.disconnect(code, reason, cid=cid)
                    self.close_codes[code] += 1
                elif kind == "drop":
                    self.server.drop(cid=cid)
                elif kind == "silence":
                    self.server.silence(cid=cid)
                    self.silenced.add(cid)
            except KeyError:
                self.counts[f"{kind} (connection gone)"] += 1


def publish(server: LeapEdgeServer, next_seq: dict[str, int], channel: str, count: int, pad: int) -> None:
    """Publish ``count`` messages whose data starts with the sequence number the server
    gives them (one publisher at a time, so the server's count is ours)."""
    first = next_seq[channel]
    server.publish_many(channel, "n", [[first + i, "x" * pad] for i in range(count)])
    next_seq[channel] = first + count


# -- the check ------------------------------------------------------------------------------


def check_prefixes(name: str, channel: str, received: list[int], conns: list[tuple[ConnectionInfo, bool]]) -> None:
    """``received`` must be the concatenation, over ``conns`` in order, of a prefix of
    each connection's written sequence numbers (all of them where the flag says the
    client received the close frame). Raises ``AssertionError`` with the details."""
    assert len(set(received)) == len(received), f"{name}/{channel}: duplicate sequence numbers"
    assert received == sorted(received), f"{name}/{channel}: sequence numbers out of order"
    index = {seq: i for i, seq in enumerate(received)}
    starts = sorted({index[w[0]] for conn, _ in conns if (w := conn.sequences.get(channel)) and w[0] in index})
    positions = {0}
    for number, (conn, whole) in enumerate(conns):
        written = conn.sequences.get(channel, ())
        reachable: set[int] = set()
        for p in positions:
            common = 0
            limit = min(len(written), len(received) - p)
            while common < limit and received[p + common] == written[common]:
                common += 1
            if whole:
                if common == len(written):
                    reachable.add(p + common)
                continue
            # Any split p..p+common is allowed; only those where a later connection can
            # start (or the end) matter.
            reachable.add(p + common)
            lo, hi = bisect.bisect_left(starts, p), bisect.bisect_right(starts, p + common)
            reachable.update(starts[lo:hi])
        if not reachable:
            at = min(positions)
            raise AssertionError(
                f"{name}/{channel}: connection #{number} {conn.cid} (close code {conn.close_code}, "
                f"close frame received: {whole}) wrote {_sketch(written)}, but after position {at} the client "
                f"received {_sketch(received[at : at + len(written) + 3])}"
            )
        positions = reachable
    if len(received) not in positions:
        at = max(positions)
        seq = received[at]
        holders = [
            f"{c.cid} wrote {_sketch(c.sequences[channel])}" for c, _ in conns if seq in c.sequences.get(channel, ())
        ]
        raise AssertionError(
            f"{name}/{channel}: no connection's prefix explains {seq}, received at position {at} "
            f"(after {_sketch(received[max(0, at - 3) : at])}); {'; '.join(holders) or 'no connection wrote it'}"
        )


def _sketch(seqs: Any) -> str:
    seqs = list(seqs)
    if len(seqs) <= 8:
        return str(seqs)
    return f"[{seqs[0]}..{seqs[-1]}] ({len(seqs)}: {seqs[:4]}...{seqs[-4:]})"


def leap_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("leap-sync-")]


def _conn(cid: str, seqs: list[int]) -> ConnectionInfo:
    return ConnectionInfo(
        cid=cid,
        token=None,
        project_id=PROJECT,
        encoding="json",
        compression="none",
        identified=True,
        subscriptions=frozenset(),
        pipe_rooms=frozenset(),
        frames_in=0,
        frames_out=len(seqs),
        heartbeats=0,
        last_heartbeat=None,
        connected_at=0.0,
        open=False,
        close_code=1006,
        sequences={"c": tuple(seqs)},
    )


@pytest.mark.parametrize(
    ("received", "conns", "problem"),
    [
        ([1, 2, 3, 7, 8], [([1, 2, 3, 4], False), ([7, 8, 9], False)], None),  # prefixes
        ([1, 2, 3, 4, 7], [([1, 2, 3, 4], True), ([7, 8, 9], False)], None),  # whole, then a prefix
        ([], [([1, 2], False), ([], False)], None),  # nothing arrived
        ([1, 2, 5, 6], [([1, 2, 3, 4, 5], False), ([5, 6, 7], False)], None),  # a zombie's list overlaps the next
        ([1, 2, 3, 6], [([1, 2, 3, 4, 5, 6], False), ([6], False)], None),  # the split is at 6, not after 3
        ([1, 2, 7], [([1, 2, 3, 4], True), ([7, 8], False)], r"close frame received: True\) wrote \[1, 2, 3, 4\]"),
        ([1, 3, 4], [([1, 2, 3, 4], False)], "no connection's prefix explains 3"),  # a gap inside a connection
        ([1, 2, 2, 3], [([1, 2, 3], False)], "duplicate"),
        ([2, 1], [([1, 2], False), ([2, 3], False)], "out of order"),
        ([1, 2, 3], [([1, 2], False)], "explains 3, received at position 2 .* no connection wrote it"),
        ([7, 8, 1], [([7, 8], False), ([1], False)], "out of order"),
    ],
)
def test_the_prefix_rule_checker(received: list[int], conns: list[tuple[list[int], bool]], problem: str | None) -> None:
    infos = [(_conn(f"conn_{i}", seqs), whole) for i, (seqs, whole) in enumerate(conns)]
    if problem is None:
        check_prefixes("client", "c", received, infos)
    else:
        with pytest.raises(AssertionError, match=problem):
            check_prefixes("client", "c", received, infos)


# -- the test ---------------------------------------------------------------------------------


@pytest.fixture
def thread_crashes(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    crashes: list[str] = []

    def hook(args: threading.ExceptHookArgs) -> None:
        crashes.append(f"{args.thread.name if args.thread else '?'}: {args.exc_type.__name__}: {args.exc_value}")

    monkeypatch.setattr(threading, "excepthook", hook)
    yield crashes


@pytest.mark.parametrize(("seed", "seconds"), _cases())
def test_soak(seed: int, seconds: float, thread_crashes: list[str]) -> None:
    print(f"\nsoak: seed={seed} seconds={seconds:g} (LEAP_SOAK_SEED={seed} LEAP_SOAK_SECONDS={seconds:g} reproduces)")
    before = set(leap_threads())
    hard_deadline = time.monotonic() + seconds + 240
    server = LeapEdgeServer(
        heartbeat_interval=HEARTBEAT, heartbeat_tolerance=0.2, identify_timeout=5.0, close_timeout=1.0
    ).start()
    proxy = FaultProxy("127.0.0.1", server.port)
    watchers: list[Watcher] = []
    stop_publishing = threading.Event()
    publisher: threading.Thread | None = None
    try:
        for spec in SPECS:
            if spec.token is not None:
                server.add_token(spec.token, project_id=PROJECT)
        for channel in CHANNELS:
            server.create_channel(channel, project_id=PROJECT, type="unprotected", sequenced=True)
        for spec in SPECS:
            watcher = Watcher(spec, server, proxy, hard_deadline)
            watchers.append(watcher)
            watcher.thread.start()
            watcher.client.connect(wait=True, timeout=10)
            for channel in CHANNELS:
                watcher.client.subscribe(channel, timeout=10)

        next_seq = dict.fromkeys(CHANNELS, 1)
        publish_rng = random.Random(seed ^ 0x5EED)

        def publish_steadily() -> None:
            while not stop_publishing.is_set() and time.monotonic() < hard_deadline:
                pad = publish_rng.choice([0, 0, 0, 100, 2000])
                publish(server, next_seq, publish_rng.choice(CHANNELS), publish_rng.randint(1, 8), pad)
                stop_publishing.wait(0.01)

        publisher = threading.Thread(target=publish_steadily, name="soak-publish", daemon=True)
        publisher.start()

        injector = Injector(seed, server, proxy)
        injector.run(until=time.monotonic() + seconds)
        injector.stop()
        quiet_since = time.monotonic()  # the server's clock too (last_heartbeat is monotonic)
        stop_publishing.set()
        publisher.join(10)
        assert not publisher.is_alive()

        # Every client back to CONNECTED on a connection that is subscribed, not silenced,
        # and proven healthy since the faults stopped: the heal itself may reset a link
        # that lost bytes, and a client may not have noticed yet. Beats keep arriving for
        # three intervals after the heal only on a connection whose both directions work
        # (a client hearing nothing would have left it after one and a half).
        proven = quiet_since + 3 * HEARTBEAT

        def recovered(server: LeapEdgeServer) -> bool:
            open_conns = {conn.cid: conn for conn in server.connections}
            for watcher in watchers:
                client = watcher.client
                init = client.init_event
                if client.state.connection_state is not ConnectionState.CONNECTED or init is None:
                    return False
                conn = open_conns.get(init.cid)
                if conn is None or init.cid in injector.silenced or not set(CHANNELS) <= conn.subscriptions:
                    return False
                if conn.last_heartbeat is None or conn.last_heartbeat < proven:
                    return False
            return True

        started = time.monotonic()
        try:
            server.wait_for(recovered, timeout=RECOVERY_BOUND)
        except TimeoutError:
            states = {w.spec.name: w.client.state for w in watchers}
            raise AssertionError(f"not every client recovered within {RECOVERY_BOUND:g} s: {states}") from None
        recovery = time.monotonic() - started

        # A final burst reaches every client.
        for channel in CHANNELS:
            publish(server, next_seq, channel, BURST, 10)
        last = {channel: next_seq[channel] - 1 for channel in CHANNELS}
        for watcher in watchers:
            try:
                watcher.wait_received(last, timeout=30)
            except AssertionError as missing:  # say whether the server wrote them, and where
                init = watcher.client.init_event
                spec = watcher.spec
                mine = [
                    (
                        conn.cid,
                        conn.open,
                        conn.close_code,
                        sorted(conn.subscriptions),
                        conn.frames_out,
                        conn.queued,
                        {c: list(conn.sequences.get(c, ()))[-3:] for c in CHANNELS},
                    )
                    for conn in server.all_connections
                    if (conn.encoding, conn.compression) == (spec.encoding, spec.compression)
                ][-4:]
                raise AssertionError(
                    f"{missing}; current cid {init.cid if init else None}; its last server connections "
                    f"(cid, open, close, subscriptions, frames_out, queued, last seqs): {mine}; "
                    f"silenced {sorted(injector.silenced)}; state {watcher.client.state}; "
                    f"states {[i.connection_state.value for i in watcher.infos[-6:]]}"
                ) from None
            for channel in CHANNELS:
                tail = watcher.received[channel][-BURST:]
                assert tail == list(range(last[channel] - BURST + 1, last[channel] + 1)), watcher.spec.name
    finally:
        stop_publishing.set()
        if publisher is not None:
            publisher.join(10)
        for watcher in watchers:
            watcher.client.close()
        for watcher in watchers:
            watcher.thread.join(10)
        proxy.close()  # resets what is left of the links
        try:
            server.wait_for(lambda s: not s.connections, timeout=10)
        except TimeoutError:
            pass  # reported below, without hiding an earlier failure
        left_open = [conn.cid for conn in server.connections]
        history = server.all_connections
        server.close()

    # -- what happened ---------------------------------------------------------------------
    delivered = {w.spec.name: sum(len(r) for r in w.received.values()) for w in watchers}
    reconnects = {w.spec.name: w.count(ConnectionState.CONNECTED) - 1 for w in watchers}
    confirmed = {cid for w in watchers for cid, reason in injector.reasons.items() if reason in w.close_reasons}
    ends = collections.Counter(None if c.close_code is None else int(c.close_code) for c in history)
    print(f"soak: seed={seed} faults: {dict(sorted(injector.counts.items()))}")
    print(f"soak: disconnect() closes by code: {dict(sorted(injector.close_codes.items()))}")
    endings = sum((w.endings() for w in watchers), collections.Counter[str]())
    print(f"soak: how the clients' connections ended: {dict(sorted(endings.items()))}")
    print(
        f"soak: published {dict(next_seq)} (next seq), delivered {delivered}, reconnects {reconnects}, "
        f"server connections {len(history)}, their close codes {dict(sorted(ends.items(), key=str))}, "
        f"disconnect() closes confirmed by the client {len(confirmed)} of {len(injector.reasons)}, "
        f"recovery {recovery:.2f} s, proxy links {proxy.accepted} ({proxy.resets} reset)"
    )

    # -- the exact checks ------------------------------------------------------------------
    assert thread_crashes == []
    assert left_open == []
    for watcher in watchers:
        name = watcher.spec.name
        assert watcher.problems == [], name
        assert watcher.client.state.connection_state is ConnectionState.CLOSED, name
        gave_up = [i for i in watcher.infos if i.connection_state is ConnectionState.ERRORED and not i.will_reconnect]
        assert gave_up == [], name
        bad = [str(i.error) for i in watcher.infos if str(i.error).startswith(("protocol error", "internal error"))]
        assert bad == [], name
        owned = [c for c in history if (c.encoding, c.compression) == (watcher.spec.encoding, watcher.spec.compression)]
        for conn in owned:
            if conn.identified:
                assert conn.token == watcher.spec.token, f"{name}: {conn.cid} is not its connection"
            else:
                assert not any(conn.sequences.values()), f"{name}: {conn.cid} carries messages unidentified"
        for channel in CHANNELS:
            check_prefixes(name, channel, watcher.received[channel], [(c, c.cid in confirmed) for c in owned])
    suspicious = [
        (c.cid, c.close_code)
        for c in history
        if c.close_code in CLIENT_BUG_CODES and injector.codes.get(c.cid) != c.close_code
    ]
    assert suspicious == []
    assert sum(delivered.values()) > 0 and all(n > 0 for n in reconnects.values())
    deadline = time.monotonic() + 10
    for thread in leap_threads():
        thread.join(max(0.0, deadline - time.monotonic()))
    assert [t.name for t in leap_threads() if t.is_alive() and t not in before] == []
