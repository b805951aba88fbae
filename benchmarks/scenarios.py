"""The scenarios besides throughput: one-way latency, heartbeat lateness under a
flat-out stream, connect and reconnect, many clients in one process, server fan-out.

Each function runs one round and returns plain numbers (milliseconds unless named
otherwise); :mod:`benchmarks.__main__` repeats them and takes medians.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from multiprocessing.connection import Connection

from leap_sync import LeapClient
from leap_sync.wire import jsontext

from . import fanout, latency
from ._blaster import PROJECT, TOKEN, Blaster, percentile

_MS = 1e6
TIMEOUT = 30.0


def _stats(values_ms: list[float]) -> dict[str, float]:
    return {
        "p50": percentile(values_ms, 50),
        "p99": percentile(values_ms, 99),
        "p99.9": percentile(values_ms, 99.9),
        "max": max(values_ms) if values_ms else float("nan"),
        "n": float(len(values_ms)),
    }


def one_way(blaster: Blaster, rate: int, seconds: float, fast: bool = False) -> dict[str, float]:
    """One-way latency (ms) of a paced stream through ``message_event_channel().get()``:
    the blaster stamps each message with ``monotonic_ns()`` as it writes it."""
    count = int(rate * seconds)
    before = jsontext.backend()
    jsontext.set_backend("orjson" if fast else "json")
    client = LeapClient(PROJECT, TOKEN, url=blaster.url("/ws", mode="paced", rate=rate, seconds=seconds))
    channel = client.message_event_channel()
    latencies: list[int] = []
    try:
        client.connect(wait=True, timeout=TIMEOUT)
        get = channel.get
        now = time.monotonic_ns
        add = latencies.append
        for _ in range(count):
            stamp = get(timeout=TIMEOUT).data["t"]
            add(now() - stamp)
    finally:
        client.close()
        jsontext.set_backend(before)
    if len(latencies) != count:
        raise RuntimeError(f"one-way: {len(latencies)} of {count} messages")
    return _stats([ns / _MS for ns in latencies])


def heartbeat(blaster: Blaster, seconds: float) -> dict[str, float]:
    """Heartbeat lateness (ms) against the Hello-anchored 100 ms grid while the stream
    runs flat out; ``rate`` is what the consumer took (msg/s)."""
    stats, rate = latency.heartbeat_jitter(blaster, seconds)
    stats["rate"] = rate
    return stats


def connect(blaster: Blaster, count: int) -> dict[str, float]:
    """``connect(wait=True)`` until INIT (ms), fresh clients against the blaster."""
    return latency.connect_times(blaster.url("/ws"), count)


def connect_embedded(count: int) -> dict[str, float]:
    """The same against the embedded ``LeapEdgeServer`` (same process, same GIL)."""
    return latency.connect_embedded(count)


def reconnect(blaster: Blaster, cycles: int) -> dict[str, float]:
    """From the blaster's cut of the TCP connection to the next CONNECTED (ms), with
    ``Backoff(base=0)``."""
    return latency.reconnect_blaster(blaster, cycles)


# -- many clients in one process ----------------------------------------------------------


def _status() -> dict[str, int]:
    """VmRSS (KiB) and Threads of this process, from /proc (Linux)."""
    out: dict[str, int] = {}
    try:
        with open("/proc/self/status") as status:
            for line in status:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "Threads"):
                    out[key] = int(value.split()[0])
    except OSError:
        pass
    return out


def _many_clients_child(url: str, count: int, pipe: Connection) -> None:  # pragma: no cover - child
    import gc

    gc.collect()
    before = _status()
    py_before = threading.active_count()
    clients = [LeapClient(PROJECT, TOKEN, url=url) for _ in range(count)]
    start = time.perf_counter()
    try:
        for client in clients:
            client.connect(wait=True, timeout=TIMEOUT)
        connected_s = time.perf_counter() - start
        gc.collect()
        after = _status()
        py_after = threading.active_count()
    finally:
        closing = time.perf_counter()
        for client in clients:
            client.close()
        closed_s = time.perf_counter() - closing
    left = threading.active_count()
    pipe.send(
        {
            "clients": count,
            "threads_per_client": (after.get("Threads", 0) - before.get("Threads", 0)) / count,
            "py_threads_per_client": (py_after - py_before) / count,
            "rss_kib_per_client": (after.get("VmRSS", 0) - before.get("VmRSS", 0)) / count,
            "rss_mib_before": before.get("VmRSS", 0) / 1024,
            "rss_mib_after": after.get("VmRSS", 0) / 1024,
            "connect_all_s": connected_s,
            "close_all_s": closed_s,
            "threads_left": left - py_before,
        }
    )


def many_clients(blaster: Blaster, count: int) -> dict[str, float]:
    """``count`` connected clients in one fresh process: OS threads and RSS per client
    (the difference before and after they connected, over ``count``)."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_many_clients_child, args=(blaster.url("/ws"), count, child), name="leap-bench-many")
    proc.start()
    child.close()
    try:
        if not parent.poll(300):
            raise RuntimeError("many clients: no report within 300 s")
        result: dict[str, float] = parent.recv()
    finally:
        proc.join(60)
        if proc.is_alive():
            proc.kill()
            proc.join()
    return result


def fan_out(clients: int, messages: int, size: int, rounds: int) -> list[dict[str, float]]:
    """The embedded server publishing ``messages`` to ``clients`` subscribers (readers in
    a child process, connected once for all ``rounds``): messages delivered per second,
    and how long ``publish_many`` took (ms), per round."""
    return [
        {"rate": rate, "publish_ms": published * 1000}
        for rate, published, _ in fanout.run_rounds(clients, messages, size, False, rounds)
    ]
