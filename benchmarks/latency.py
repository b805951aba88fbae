"""Latency: one-way delivery, connect, reconnect and heartbeat jitter of leap_sync.

Every measurement is printed beside its DESIGN.md section 7 target:

1. one-way latency at a fixed rate (``--rate`` msg/s for ``--seconds`` s, default
   10,000 for 5 s): a blaster process (``_blaster.py``) writes each MESSAGE with the
   ``time.monotonic_ns()`` of its write; the consumer thread subtracts it from its own
   reading when ``message_event_channel().get()`` returns it. CLOCK_MONOTONIC is
   system-wide on Linux, so the two processes' readings compare. Target: p99 < 1 ms.
2. connect -> CONNECTED: ``connect(wait=True)`` until INIT, median of ``--connects``
   (default 50) fresh clients, against the blaster and against the embedded
   ``LeapEdgeServer`` (which runs in this process and so shares its GIL). Target: < 5 ms.
3. reconnect after a drop with zero backoff (``Backoff(base=0)``): the blaster cuts the
   TCP connection right after writing a MESSAGE stamped with the moment of the cut; the
   time runs from that stamp to the next CONNECTED state reported to a listener. Also
   against the embedded server, from ``server.drop()``. Target: < 20 ms.
4. heartbeat jitter while the stream runs flat out: Hello sets a 100 ms interval and
   the blaster floods MESSAGE dispatches as fast as the client reads them, recording
   when each op 3 heartbeat arrives; the lateness of beat k is its arrival minus
   (Hello written + k * interval), so it includes loopback transit. Target: p99 < 5 ms.

With ``--repeat R`` everything runs R times and the median of each statistic is printed.

Run: ``python -m benchmarks.latency [--rate 10000] [--seconds 5] [--connects 50]
[--repeat 3]``.
"""

from __future__ import annotations

import argparse
import inspect
import json
import queue
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import websocket
from websockets.sync.client import connect as websockets_connect

from leap_sync import Backoff, ConnectionState, LeapClient, StateInfo
from leap_sync.testing import LeapEdgeServer

from ._blaster import PROJECT, TOKEN, Blaster, percentile

_TIMEOUT = 10.0
# websockets 16+ warns unless a directly used connection opts into ``legacy``.
_LEGACY: dict[str, Any] = {"legacy": True} if "legacy" in inspect.signature(websockets_connect).parameters else {}
_MS = 1e6  # nanoseconds per millisecond


def _summary(values_ms: list[float]) -> dict[str, float]:
    return {
        "p50": percentile(values_ms, 50),
        "p99": percentile(values_ms, 99),
        "max": max(values_ms) if values_ms else float("nan"),
        "n": float(len(values_ms)),
    }


# -- 1. one-way latency ------------------------------------------------------------------


def one_way(blaster: Blaster, rate: int, seconds: float) -> tuple[dict[str, float], float]:
    """Latencies (ms) of a paced stream, and the rate actually achieved (msg/s)."""
    count = int(rate * seconds)
    client = LeapClient(PROJECT, TOKEN, url=blaster.url("/ws", mode="paced", rate=rate, seconds=seconds))
    channel = client.message_event_channel()
    latencies: list[int] = []
    stamps: list[int] = []
    try:
        client.connect(wait=True, timeout=_TIMEOUT)
        get = channel.get
        now = time.monotonic_ns
        add = latencies.append
        for _ in range(count):
            data = get(timeout=_TIMEOUT).data
            add(now() - data["t"])
            stamps.append(data["t"])
    finally:
        client.close()
    achieved = (count - 1) / ((stamps[-1] - stamps[0]) / 1e9) if count > 1 else float("nan")
    return _summary([ns / _MS for ns in latencies]), achieved


def _paced_peer(recv: Callable[[], str | bytes], count: int) -> dict[str, float]:
    now = time.monotonic_ns
    loads = json.loads
    latencies = []
    for _ in range(count):
        stamp = loads(recv())["d"]["d"]["d"]["t"]
        latencies.append(now() - stamp)
    return _summary([ns / _MS for ns in latencies])


def one_way_websockets(blaster: Blaster, rate: int, seconds: float) -> dict[str, float]:
    """The same paced stream through ``websockets.sync.client`` (a reader thread and a
    handoff to the caller, like leap_sync): ``json.loads(ws.recv())``."""
    ws = websockets_connect(
        blaster.url("/raw", mode="paced", rate=rate, seconds=seconds),
        compression=None,
        ping_interval=None,
        ping_timeout=None,
        close_timeout=2,
        **_LEGACY,
    )
    try:
        return _paced_peer(ws.recv, int(rate * seconds))
    finally:
        ws.close()


def one_way_websocket_client(blaster: Blaster, rate: int, seconds: float) -> dict[str, float]:
    """The same paced stream read by websocket-client on the calling thread."""
    url = blaster.url("/raw", mode="paced", rate=rate, seconds=seconds)
    ws = websocket.create_connection(url, skip_utf8_validation=True, timeout=_TIMEOUT)
    try:
        return _paced_peer(ws.recv, int(rate * seconds))
    finally:
        ws.close()


# -- 2. connect ---------------------------------------------------------------------------


def connect_times(url: str, count: int) -> dict[str, float]:
    """``connect(wait=True)`` durations (ms) of ``count`` fresh clients."""
    times: list[float] = []
    for _ in range(count):
        client = LeapClient(PROJECT, TOKEN, url=url)
        try:
            start = time.perf_counter_ns()
            client.connect(wait=True, timeout=_TIMEOUT)
            times.append((time.perf_counter_ns() - start) / _MS)
        finally:
            client.close()
    return _summary(times)


# -- 3. reconnect -------------------------------------------------------------------------


def _connected_listener(sink: Callable[[int], None]) -> Callable[[StateInfo], None]:
    def listener(info: StateInfo) -> None:
        if info.connection_state is ConnectionState.CONNECTED:
            sink(time.monotonic_ns())

    return listener


def reconnect_blaster(blaster: Blaster, cycles: int) -> dict[str, float]:
    """Drop-to-CONNECTED times (ms): the blaster cuts every connection 30 ms after INIT."""
    connected: list[int] = []
    client = LeapClient(PROJECT, TOKEN, url=blaster.url("/ws", mode="drop", after=30), backoff=Backoff(base=0))
    client.add_state_update_listener(_connected_listener(connected.append))
    channel = client.message_event_channel()
    drops: list[int] = []
    try:
        client.connect(wait=True, timeout=_TIMEOUT)
        while len(drops) < cycles:
            drops.append(channel.get(timeout=_TIMEOUT).data["t"])
        deadline = time.monotonic() + _TIMEOUT
        while connected[-1] < drops[-1] and time.monotonic() < deadline:
            time.sleep(0.001)
    finally:
        client.close()
    times = []
    for stamp in drops:
        after = [t for t in connected if t > stamp]
        if after:
            times.append((after[0] - stamp) / _MS)
    return _summary(times)


def reconnect_embedded(cycles: int) -> dict[str, float]:
    """``server.drop()``-to-CONNECTED times (ms) against the in-process LeapEdgeServer."""
    connected: queue.Queue[int] = queue.Queue()
    times: list[float] = []
    with LeapEdgeServer() as server:
        server.add_token(TOKEN, project_id=PROJECT)
        client = LeapClient(PROJECT, TOKEN, url=server.url, backoff=Backoff(base=0))
        client.add_state_update_listener(_connected_listener(connected.put))
        try:
            client.connect(wait=True, timeout=_TIMEOUT)
            connected.get(timeout=_TIMEOUT)
            for _ in range(cycles):
                time.sleep(0.02)
                start = time.monotonic_ns()
                server.drop()
                times.append((connected.get(timeout=_TIMEOUT) - start) / _MS)
        finally:
            client.close()
    return _summary(times)


def connect_embedded(count: int) -> dict[str, float]:
    with LeapEdgeServer() as server:
        server.add_token(TOKEN, project_id=PROJECT)
        return connect_times(server.url, count)


# -- 4. heartbeat jitter ------------------------------------------------------------------


def heartbeat_jitter(blaster: Blaster, seconds: float, interval_ms: int = 100) -> tuple[dict[str, float], float]:
    """Lateness (ms) of each heartbeat against the Hello-anchored grid while the
    stream runs flat out, and the message rate the consumer saw."""
    client = LeapClient(
        PROJECT, TOKEN, url=blaster.url("/ws", mode="flood", hb=interval_ms, seconds=seconds + _TIMEOUT)
    )
    channel = client.message_event_channel(maxsize=200_000)  # a lagging consumer must not eat the RAM
    received = 0
    try:
        client.connect(wait=True, timeout=_TIMEOUT)
        get = channel.get
        get(timeout=_TIMEOUT)
        start = time.monotonic()
        deadline = start + seconds
        while time.monotonic() < deadline:
            for _ in range(1000):
                get(timeout=_TIMEOUT)
            received += 1000
        elapsed = time.monotonic() - start
    finally:
        client.close()
    report = blaster.report(_TIMEOUT)
    step = report.interval_ms * _MS
    lateness = [(t - (report.hello_ns + k * step)) / _MS for k, t in enumerate(report.heartbeats_ns, start=1)]
    if channel.dropped:
        print(f"  (the consumer fell behind: {channel.dropped:,} messages dropped)")
    return _summary(lateness), received / elapsed


# -- report -------------------------------------------------------------------------------


def _median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def _row(label: str, stats: dict[str, float], target_key: str, limit_ms: float | None, target: str) -> None:
    """One result line; ``limit_ms=None`` marks a reference (no verdict)."""
    verdict = "-" if limit_ms is None else "met" if stats[target_key] < limit_ms else "missed"
    print(
        f"{label:<44}{stats['p50']:>8.3f}{stats['p99']:>9.3f}{stats['max']:>9.3f}{int(stats['n']):>7}"
        f"   {target:<18}{verdict}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rate", type=int, default=10_000, help="paced stream rate, msg/s (default 10000)")
    parser.add_argument("--seconds", type=float, default=5.0, help="paced and flood durations (default 5)")
    parser.add_argument("--connects", type=int, default=50, help="connects per server (default 50)")
    parser.add_argument("--reconnects", type=int, default=30, help="drops per server (default 30)")
    parser.add_argument(
        "--no-peers", dest="peers", action="store_false", help="skip the websockets/websocket-client one-way runs"
    )
    parser.add_argument("--repeat", "-r", type=int, default=3, help="runs; medians are reported (default 3)")
    args = parser.parse_args(argv)
    if args.rate < 1 or args.seconds <= 0 or args.connects < 1 or args.reconnects < 1 or args.repeat < 1:
        parser.error("all options must be positive")
    print(
        f"leap_sync latency: {args.rate:,} msg/s for {args.seconds:g} s, {args.connects} connects, "
        f"{args.reconnects} drops; {args.repeat} run(s), medians; Python {sys.version.split()[0]}"
    )
    results: dict[str, list[dict[str, float]]] = {}
    rates: dict[str, list[float]] = {"paced": [], "flood": []}

    def record(key: str, stats: dict[str, float]) -> None:
        results.setdefault(key, []).append(stats)

    with Blaster() as blaster:
        for r in range(args.repeat):
            stats, achieved = one_way(blaster, args.rate, args.seconds)
            record("one_way", stats)
            rates["paced"].append(achieved)
            if args.peers:
                record("one_way_websockets", one_way_websockets(blaster, args.rate, args.seconds))
                record("one_way_websocket_client", one_way_websocket_client(blaster, args.rate, args.seconds))
            record("connect_blaster", connect_times(blaster.url("/ws"), args.connects))
            record("connect_embedded", connect_embedded(args.connects))
            record("reconnect_blaster", reconnect_blaster(blaster, args.reconnects))
            record("reconnect_embedded", reconnect_embedded(args.reconnects))
            stats, flood_rate = heartbeat_jitter(blaster, args.seconds)
            record("heartbeat", stats)
            rates["flood"].append(flood_rate)
            print(
                f"run {r + 1}: one-way p99 {results['one_way'][-1]['p99']:.3f} ms, "
                f"connect p50 {results['connect_blaster'][-1]['p50']:.2f} ms, "
                f"reconnect p50 {results['reconnect_blaster'][-1]['p50']:.2f} ms, "
                f"heartbeat p99 {results['heartbeat'][-1]['p99']:.2f} ms (flood {flood_rate:,.0f} msg/s)"
            )

    print()
    print(f"{'measurement (ms)':<44}{'p50':>8}{'p99':>9}{'max':>9}{'n':>7}   {'target':<18}verdict")
    m = {key: _median_of(runs) for key, runs in results.items()}
    _row(f"one-way @ {statistics.median(rates['paced']):,.0f} msg/s", m["one_way"], "p99", 1.0, "p99 < 1 ms")
    if "one_way_websockets" in m:
        _row("  peer: websockets.sync recv (same stream)", m["one_way_websockets"], "p99", None, "(reference)")
        _row("  peer: websocket-client recv (same stream)", m["one_way_websocket_client"], "p99", None, "(reference)")
    _row("connect -> CONNECTED, blaster", m["connect_blaster"], "p50", 5.0, "median < 5 ms")
    _row("connect -> CONNECTED, embedded server", m["connect_embedded"], "p50", 5.0, "median < 5 ms")
    _row("reconnect after drop (base=0), blaster", m["reconnect_blaster"], "p50", 20.0, "median < 20 ms")
    _row("reconnect after drop (base=0), embedded", m["reconnect_embedded"], "p50", 20.0, "median < 20 ms")
    _row(
        f"heartbeat lateness @ {statistics.median(rates['flood']):,.0f} msg/s",
        m["heartbeat"],
        "p99",
        5.0,
        "p99 < 5 ms",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
