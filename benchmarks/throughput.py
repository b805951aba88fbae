"""Throughput: Leap Edge MESSAGE dispatches per second delivered to a consumer.

One stream of ``--messages`` MESSAGE dispatches (~200 bytes of JSON each) comes from a
blaster process (see ``_blaster.py``) that writes it pre-encoded in big ``sendall()``
chunks, so the server is never the bottleneck. On that stream it measures:

a. leap_sync: ``LeapClient.message_event_channel()``, consumed by the main thread
   while the client's I/O thread reads (the Leap handshake happens first);
b. ``websockets.sync.client.connect()`` with a ``json.loads(ws.recv())`` loop
   (no compression, no pings);
c. websocket-client: ``websocket.create_connection()`` with a
   ``json.loads(ws.recv())`` loop;
d. the ceiling: ``json.loads`` alone over the same payload strings, in process;

and, to show the blaster is not the bottleneck, how fast a raw socket drains the same
stream without parsing it.

Each client's rate is (messages - 1) / (time from the first message it delivered to the
last). The ratios are taken within each run (same machine state) and their median over
``--repeat`` runs is reported; DESIGN.md section 7 asks for leap_sync >= 2x b,
>= 2.5x c, and about half of d. ``--encoding etf`` / ``--compression zlib`` change the
stream leap_sync gets (the baselines always get plain JSON text frames) and add the
matching decode-only ceiling (e). ``--profile`` runs leap_sync once more under cProfile
(I/O thread and consumer separately) and prints the top functions by own time.

Run: ``python -m benchmarks.throughput [--messages N] [--repeat R] [--encoding json|etf]
[--compression none|zlib] [--profile]``.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import inspect
import io
import json
import pstats
import statistics
import sys
import time
import zlib
from collections.abc import Callable
from typing import Any

import websocket
from websockets.sync.client import connect as websockets_connect

from leap_sync import LeapClient
from leap_sync.protocol.codec import Codec
from leap_sync.wire.wsframes import unmasked_frame_header

from ._blaster import PROJECT, TOKEN, Blaster, json_payloads, message_frame

_TIMEOUT = 60.0
# websockets 16+ warns unless a directly used connection opts into ``legacy``.
_LEGACY: dict[str, Any] = {"legacy": True} if "legacy" in inspect.signature(websockets_connect).parameters else {}


def _check_last(data: Any, n: int) -> None:
    if not (isinstance(data, dict) and data.get("n") == n - 1):
        raise RuntimeError(f"stream out of order or incomplete: last message {data!r:.80}")


def run_leap_sync(
    blaster: Blaster, n: int, encoding: str, compression: str, profile: dict[str, cProfile.Profile] | None = None
) -> float:
    """a. leap_sync's message channel, consumed by this thread."""
    client = LeapClient(
        PROJECT,
        TOKEN,
        url=blaster.url("/ws", mode="blast", n=n),
        encoding=encoding,
        compression=compression,
    )
    restore: Any = None
    if profile is not None:  # profile the I/O thread's read loop too (a private hook)
        from leap_sync.connection.supervisor import Supervisor

        serve = restore = Supervisor._serve
        io_profiler = profile["io"] = cProfile.Profile()

        def profiled_serve(self: Any, *args: Any) -> Any:
            io_profiler.enable()
            try:
                return serve(self, *args)
            finally:
                io_profiler.disable()

        Supervisor._serve = profiled_serve  # type: ignore[method-assign]
    channel = client.message_event_channel()
    try:
        client.connect(wait=True, timeout=_TIMEOUT)
        get = channel.get
        consumer: cProfile.Profile | None = None
        if profile is not None:
            consumer = profile["consumer"] = cProfile.Profile()
        get(timeout=_TIMEOUT)
        start = time.perf_counter()
        if consumer is not None:
            consumer.enable()
        for _ in range(n - 2):
            get(timeout=_TIMEOUT)
        last = get(timeout=_TIMEOUT)
        if consumer is not None:
            consumer.disable()
        elapsed = time.perf_counter() - start
    finally:
        client.close()
        if restore is not None:
            from leap_sync.connection.supervisor import Supervisor

            Supervisor._serve = restore  # type: ignore[method-assign]
    _check_last(last.data, n)
    return (n - 1) / elapsed


def _recv_loads_rate(recv: Callable[[], Any], n: int) -> float:
    """Messages/s of a ``json.loads(recv())`` loop, timed from the first message to the last."""
    loads = json.loads
    loads(recv())
    start = time.perf_counter()
    for _ in range(n - 2):
        loads(recv())
    last = loads(recv())
    elapsed = time.perf_counter() - start
    _check_last(last["d"]["d"]["d"], n)
    return (n - 1) / elapsed


def run_websockets(blaster: Blaster, n: int) -> float:
    """b. websockets' threaded client: ``json.loads(ws.recv())``."""
    ws = websockets_connect(
        blaster.url("/raw", n=n),
        compression=None,
        ping_interval=None,
        ping_timeout=None,
        max_size=1 << 20,
        close_timeout=2,
        open_timeout=_TIMEOUT,
        **_LEGACY,
    )
    try:
        return _recv_loads_rate(ws.recv, n)
    finally:
        ws.close()


def run_websocket_client(blaster: Blaster, n: int) -> float:
    """c. websocket-client, hand-written: ``json.loads(ws.recv())``.

    ``skip_utf8_validation=True`` (what leap_sync passes too): ``recv()`` still decodes
    the text strictly, and without the optional ``wsaccel`` the default pure-Python
    validation would make this baseline several times slower."""
    ws = websocket.create_connection(blaster.url("/raw", n=n), skip_utf8_validation=True, timeout=_TIMEOUT)
    try:
        return _recv_loads_rate(ws.recv, n)
    finally:
        ws.close()


def run_drain(blaster: Blaster, n: int, total: int) -> float:
    """The server's capacity: the same stream read from the raw socket and thrown away
    (websocket-client only does the upgrade)."""
    ws = websocket.create_connection(blaster.url("/raw", n=n), timeout=_TIMEOUT)
    try:
        sock = ws.sock
        if sock is None:
            raise RuntimeError("websocket-client returned an unconnected websocket")
        buf = bytearray(1 << 20)
        recv_into = sock.recv_into
        start = time.perf_counter()
        got = 0
        while got < total:
            count = recv_into(buf)
            if not count:
                raise RuntimeError("the blaster closed the stream early")
            got += count
        elapsed = time.perf_counter() - start
    finally:
        ws.close()
    return n / elapsed


def run_ceiling(payloads: list[str]) -> float:
    """d. ``json.loads`` alone over the same payload strings."""
    loads = json.loads
    start = time.perf_counter()
    for payload in payloads:
        loads(payload)
    return len(payloads) / (time.perf_counter() - start)


def wire_decoder(encoding: str, compression: str) -> Callable[[bytes], Any]:
    """The C decoders alone for a wire format (no checks): the format's ceiling."""
    if encoding == "etf":
        import erlpack

        loads: Callable[[bytes], Any] = erlpack.ErlangTermDecoder(encoding="utf-8").loads
    else:
        loads = json.loads
    if compression == "zlib":
        decompress = zlib.decompress
        return lambda data: loads(decompress(data))
    return loads


def run_wire_ceiling(payloads: list[bytes], decode: Callable[[bytes], Any]) -> float:
    """e. the wire format's decoders alone (zlib, erlpack) over the same payloads."""
    start = time.perf_counter()
    for payload in payloads:
        decode(payload)
    return len(payloads) / (time.perf_counter() - start)


def _wire_payloads(n: int, encoding: str, compression: str) -> list[bytes]:
    codec = Codec(encoding)
    if compression == "zlib":
        return [codec.encode_compressed(message_frame(i)) for i in range(n)]
    out: list[bytes] = []
    for i in range(n):
        payload = codec.encode(message_frame(i))[0]
        out.append(payload if isinstance(payload, bytes) else payload.encode())
    return out


def _print_profile(title: str, profiler: cProfile.Profile, top: int = 15) -> None:
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    print(f"\n--- cProfile, {title} (top {top} by tottime) ---")
    lines = out.getvalue().splitlines()
    start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
    print("\n".join(line for line in lines[start:] if line.strip()))


def _fmt_rate(rate: float) -> str:
    return f"{rate:>12,.0f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--messages", "-n", type=int, default=200_000, help="messages per stream (default 200000)")
    parser.add_argument("--repeat", "-r", type=int, default=5, help="runs; medians are reported (default 5)")
    parser.add_argument("--encoding", choices=("json", "etf"), default="json", help="leap_sync's encoding")
    parser.add_argument("--compression", choices=("none", "zlib"), default="none", help="leap_sync's compression")
    parser.add_argument("--profile", action="store_true", help="profile one extra leap_sync run")
    args = parser.parse_args(argv)
    n: int = args.messages
    if n < 3 or args.repeat < 1:
        parser.error("need --messages >= 3 and --repeat >= 1")
    encoding: str = args.encoding
    compression: str = args.compression
    plain = encoding == "json" and compression == "none"

    payloads = json_payloads(n)
    size = sum(map(len, payloads)) / n
    wire: list[bytes] = [] if plain else _wire_payloads(n, encoding, compression)
    prebuild = [(n, "json", "none")] + ([] if plain else [(n, encoding, compression)])
    print(
        f"leap_sync throughput: {n:,} MESSAGE dispatches, {size:.0f} B of JSON each"
        + ("" if plain else f" ({sum(map(len, wire)) / n:.0f} B as {encoding}/{compression} for leap_sync)")
        + f"; {args.repeat} run(s), medians; Python {sys.version.split()[0]}"
    )

    stream_bytes = sum(len(unmasked_frame_header(0x1, len(p.encode()))) + len(p.encode()) for p in payloads)
    runners: dict[str, Callable[[Blaster], float]] = {
        "a": lambda b: run_leap_sync(b, n, encoding, compression),
        "b": lambda b: run_websockets(b, n),
        "c": lambda b: run_websocket_client(b, n),
        "d": lambda b: run_ceiling(payloads),
        "s": lambda b: run_drain(b, n, stream_bytes),
    }
    if not plain:
        decode = wire_decoder(encoding, compression)
        runners["e"] = lambda b: run_wire_ceiling(wire, decode)
    keys = list(runners)
    rates: dict[str, list[float]] = {k: [] for k in keys}
    ratios: dict[str, list[float]] = {k: [] for k in keys if k not in ("a", "s")}
    with Blaster(prebuild) as blaster:
        for r in range(args.repeat):
            order = keys[r % len(keys) :] + keys[: r % len(keys)]  # rotate who goes first
            run: dict[str, float] = {}
            for key in order:
                gc.collect()
                run[key] = runners[key](blaster)
                rates[key].append(run[key])
            for key in ratios:
                ratios[key].append(run["a"] / run[key])
            print(f"run {r + 1}: " + "  ".join(f"{k}={run[k]:,.0f}/s" for k in keys))
        profile: dict[str, cProfile.Profile] = {}
        if args.profile:
            run_leap_sync(blaster, n, encoding, compression, profile)

    labels = {
        "a": f"a. leap_sync message_event_channel() [{encoding}/{compression}]",
        "b": "b. websockets.sync  json.loads(ws.recv())",
        "c": "c. websocket-client json.loads(ws.recv())",
        "d": "d. json.loads only (ceiling)",
        "e": f"e. {encoding}/{compression} decoders only (ceiling)",
        "s": "server capacity: raw socket drain, no parsing",
    }
    print()
    print(f"{'client':<56}{'msgs/s median':>14}{'min':>12}{'max':>12}")
    for key in keys:
        values = rates[key]
        print(f"{labels[key]:<56}{_fmt_rate(statistics.median(values)):>14}{min(values):>12,.0f}{max(values):>12,.0f}")
    print()
    print(f"{'ratio (median of per-run ratios)':<40}{'measured':>10}  {'target':<22}verdict")
    # "About half" of the ceiling: counted as met from 0.45.
    targets = {"b": (2.0, ">= 2x"), "c": (2.5, ">= 2.5x"), "d": (0.45, "about 0.5 (half)")}
    for key, (goal, text) in targets.items():
        value = statistics.median(ratios[key])
        verdict = ("met" if value >= goal else "missed") if plain else "n/a (targets are for json/none)"
        print(f"{'leap_sync / ' + key + '.':<40}{value:>9.3g}x  {text:<22}{verdict}")
    if "e" in ratios:
        print(f"{'leap_sync / e.':<40}{statistics.median(ratios['e']):>9.3g}x  {'(reference)':<22}-")
    if profile:
        _print_profile("leap_sync I/O thread (LeapClient._serve)", profile["io"])
        _print_profile("consumer thread (EventChannel.get loop)", profile["consumer"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
