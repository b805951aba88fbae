"""Fan-out of the embedded Leap Edge server: messages per second delivered to 1,000
subscribed connections, with and without one stalled reader among them.

The server runs in this process (what is measured); the readers run in a child
process (spawned with ``multiprocessing``) that opens ``--clients`` raw websocket
connections, identifies and subscribes each, then reads all of them from one thread
with a selector, parsing frames with ``leap_sync.wire.wsframes.FrameReader`` and
counting messages. The stalled reader subscribes with a 4 KiB receive buffer and never
reads again: the server sheds it (close 4000) once its queue overflows, and the others
must not slow down. Prints numbers; asserts nothing.

    python -m benchmarks.fanout [--clients 1000] [--messages 200] [--size 200] [--repeat 3]
"""

from __future__ import annotations

import argparse
import base64
import json
import multiprocessing
import os
import selectors
import socket
import statistics
import time
from multiprocessing.connection import Connection as Pipe
from typing import Any

TOKEN = "leap_token_bench"
PROJECT = "project_x"


def _masked(payload: bytes) -> bytes:
    """One masked text frame (zero mask key: valid, and XOR is a no-op)."""
    assert len(payload) < 126
    return bytes([0x81, 0x80 | len(payload)]) + b"\0\0\0\0" + payload


def _open(port: int, rcvbuf: int | None = None) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET /ws?encoding=json&compression=none HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(4096)
    assert response.startswith(b"HTTP/1.1 101"), response[:80]
    rest = response.split(b"\r\n\r\n", 1)[1]
    from leap_sync.wire.wsframes import FrameReader

    reader = FrameReader()
    frames = reader.feed(rest) if rest else []

    def next_frame() -> Any:
        while not frames:
            frames.extend(reader.feed(sock.recv(65536)))
        payload, _binary = frames.pop(0)
        return json.loads(payload)

    assert next_frame()["op"] == 1  # Hello
    sock.sendall(_masked(json.dumps({"op": 2, "d": {"project_id": PROJECT, "token": TOKEN}}).encode()))
    assert next_frame()["d"]["e"] == "INIT"
    sock.sendall(_masked(b'{"op":0,"d":{"c":"room","e":"SUBSCRIBE","d":null}}'))
    while next_frame()["d"]["e"] != "AVAILABLE":
        pass
    assert not frames
    return sock


def _readers(port: int, clients: int, stalled: bool, pipe: Pipe) -> None:  # pragma: no cover - child
    """The child: open and subscribe ``clients`` connections, report ready; then, for
    each number of messages the parent sends (``None``: stop), count that many more on
    every connection and report ``(delivered, done, first, last)``."""
    from leap_sync.wire.wsframes import FrameReader

    socks = [_open(port) for _ in range(clients)]
    stuck = _open(port, rcvbuf=4096) if stalled else None
    pipe.send("ready")
    poller = selectors.DefaultSelector()
    readers = [FrameReader() for _ in range(clients)]
    for sock in socks:
        sock.setblocking(False)
    while (expected := pipe.recv()) is not None:
        counts = dict.fromkeys(range(clients), 0)
        for i, sock in enumerate(socks):
            poller.register(sock, selectors.EVENT_READ, (i, readers[i]))
        done = 0
        first = last = None
        deadline = time.monotonic() + 120
        while done < clients and time.monotonic() < deadline:
            for key, _ in poller.select(1.0):
                i, reader = key.data
                try:
                    data = key.fileobj.recv(262144)  # type: ignore[union-attr]
                except BlockingIOError:
                    continue
                got = len(reader.feed(data))
                if got:
                    now = time.monotonic()
                    first = first or now
                    last = now
                    counts[i] += got
                    if counts[i] >= expected:
                        poller.unregister(key.fileobj)
                        done += 1
        for key in list(poller.get_map().values()):
            poller.unregister(key.fileobj)
        pipe.send((sum(counts.values()), done, first, last))
    for sock in socks + ([stuck] if stuck else []):
        sock.close()


def run_rounds(clients: int, messages: int, size: int, stalled: bool, rounds: int) -> list[tuple[float, float, str]]:
    """``rounds`` publishes of ``messages`` to the same ``clients`` subscribers:
    ``(messages delivered per second, seconds publish_many took, what became of the
    stalled reader)`` for each."""
    from leap_sync.testing import LeapEdgeServer

    results: list[tuple[float, float, str]] = []
    # The raw readers never send heartbeats: a long interval keeps the first of them
    # subscribed while the last are still connecting.
    with LeapEdgeServer(close_timeout=0.5, heartbeat_interval=3600.0) as server:
        server.add_token(TOKEN, project_id=PROJECT)
        server.create_channel("room", project_id=PROJECT)
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_readers, args=(server.port, clients, stalled, child))
        proc.start()
        try:
            assert parent.poll(300), "readers did not connect"
            assert parent.recv() == "ready"
            total = clients + (1 if stalled else 0)
            server.wait_for(lambda s: len(s.subscribers("room")) >= total, timeout=60)
            text = "x" * max(0, size - 60)
            for _ in range(rounds):
                parent.send(messages)
                started = time.monotonic()
                server.publish_many("room", "bench", ({"n": n, "t": text} for n in range(messages)))
                published = time.monotonic() - started
                assert parent.poll(180), "readers did not finish"
                delivered, done, _first, last = parent.recv()
                assert done == clients, f"{done} of {clients} readers got everything"
                elapsed = (last or started) - started
                shed = "-"
                if stalled:
                    codes = [c.close_code for c in server.all_connections if c.close_code is not None]
                    shed = f"stalled reader closed {codes[0]}" if codes else "stalled reader still open"
                results.append((delivered / elapsed, published, shed))
        finally:
            parent.send(None)
            proc.join(30)
            if proc.is_alive():
                proc.kill()
                proc.join()
    return results


def run(clients: int, messages: int, size: int, stalled: bool) -> tuple[float, float, str]:
    """One publish of ``messages`` to ``clients`` fresh subscribers."""
    return run_rounds(clients, messages, size, stalled, 1)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=200, help="messages published (each to every client)")
    parser.add_argument("--size", type=int, default=200, help="approximate bytes per MESSAGE frame")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    sizes = f"{args.messages} messages of ~{args.size} B each"
    print(f"fan-out: {args.clients} subscribers, {sizes}, median of {args.repeat}")
    for stalled in (False, True):
        rates, publish_times, notes = [], [], []
        for rate, published, note in run_rounds(args.clients, args.messages, args.size, stalled, args.repeat):
            rates.append(rate)
            publish_times.append(published)
            notes.append(note)
        label = "with one stalled reader" if stalled else "all reading          "
        print(
            f"  {label}: {statistics.median(rates):>10,.0f} msg/s delivered; "
            f"publish_many returned in {statistics.median(publish_times) * 1000:.0f} ms"
            + (f"; {notes[-1]}" if stalled else "")
        )


if __name__ == "__main__":
    main()
