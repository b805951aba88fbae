"""Throughput contenders: every client (and decode-only ceiling) on the identical stream.

Each contender is a function ``(blaster, n, size) -> rate`` that reads the blaster's
stream of ``n`` MESSAGE dispatches of ``size`` bytes of JSON each and returns messages
per second, timed from the first message delivered to the last: ``(n - 1) / seconds``.
It raises :class:`WrongCount` unless exactly the ``n`` messages arrived, in order (the
smoke mode's correctness check). A contender whose package is missing is left out of
:func:`contenders` (with the reason in :func:`missing`); leap_sync itself never is.
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import inspect
import json
import os
import shutil
import subprocess
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leap_sync import LeapClient
from leap_sync.protocol import etf
from leap_sync.protocol.codec import Codec
from leap_sync.wire import jsontext

from ._blaster import PROJECT, TOKEN, Blaster, json_payloads, message_frame

TIMEOUT = 60.0
JS_DIR = Path(__file__).resolve().parent / "js"
JS_CACHE = Path(os.environ.get("LEAP_BENCH_CACHE", Path.home() / ".cache" / "leap-sync-bench")) / "node"


class WrongCount(RuntimeError):
    """A contender did not deliver exactly the stream it was sent."""


def _check(count: int, last: Any, n: int, who: str) -> None:
    if count != n or last != n - 1:
        raise WrongCount(f"{who}: {count} of {n} messages, last n={last!r}")


@dataclass(frozen=True)
class Contender:
    key: str
    label: str
    kind: str  # "leap_sync", "peer", "ceiling"
    run: Callable[[Blaster, int, int], float]
    wire: str = "json"  # what it reads: json, json+zlib, etf, etf+zlib


# -- leap_sync -------------------------------------------------------------------------------


def leap_sync_runner(encoding: str, compression: str, fast: bool, batch: bool) -> Callable[[Blaster, int, int], float]:
    """leap_sync's ``message_event_channel()``, consumed by this thread with ``get()``
    (or ``get_many(4096)`` with ``batch``); ``fast`` picks the orjson decoder."""

    def run(blaster: Blaster, n: int, size: int) -> float:
        before = jsontext.backend()
        jsontext.set_backend("orjson" if fast else "json")
        client = LeapClient(
            PROJECT,
            TOKEN,
            url=blaster.url("/ws", mode="blast", n=n, size=size),
            encoding=encoding,
            compression=compression,
        )
        channel = client.message_event_channel()
        try:
            client.connect(wait=True, timeout=TIMEOUT)
            last = channel.get(timeout=TIMEOUT)
            count = 1
            start = time.perf_counter()
            if batch:
                get_many = channel.get_many
                while count < n:
                    events = get_many(4096, TIMEOUT)
                    count += len(events)
                    last = events[-1]
            else:
                get = channel.get
                for _ in range(n - 1):
                    last = get(timeout=TIMEOUT)
                count = n if n > 1 else 1
            elapsed = time.perf_counter() - start
        finally:
            client.close()
            jsontext.set_backend(before)
        _check(count, last.data.get("n") if isinstance(last.data, dict) else None, n, "leap_sync")
        return (n - 1) / elapsed

    return run


# -- Python peers: json.loads per frame ----------------------------------------------------


def _recv_loop(recv: Callable[[], Any], n: int, who: str) -> float:
    loads = json.loads
    loads(recv())
    start = time.perf_counter()
    for _ in range(n - 2):
        loads(recv())
    last = loads(recv())
    elapsed = time.perf_counter() - start
    _check(n, last["d"]["d"]["d"]["n"], n, who)
    return (n - 1) / elapsed


def run_websockets(blaster: Blaster, n: int, size: int) -> float:
    """``websockets.sync.client``: ``json.loads(ws.recv())`` (no compression, no pings)."""
    from websockets.sync.client import connect

    legacy = {"legacy": True} if "legacy" in inspect.signature(connect).parameters else {}
    ws = connect(
        blaster.url("/raw", n=n, size=size),
        compression=None,
        ping_interval=None,
        ping_timeout=None,
        max_size=1 << 24,
        close_timeout=2,
        open_timeout=TIMEOUT,
        **legacy,
    )
    try:
        return _recv_loop(ws.recv, n, "websockets")
    finally:
        ws.close()


def run_websocket_client(blaster: Blaster, n: int, size: int) -> float:
    """websocket-client: ``json.loads(ws.recv())`` with ``skip_utf8_validation=True``
    (as leap_sync; ``recv()`` still decodes the text strictly)."""
    import websocket

    ws = websocket.create_connection(blaster.url("/raw", n=n, size=size), skip_utf8_validation=True, timeout=TIMEOUT)
    try:
        return _recv_loop(ws.recv, n, "websocket-client")
    finally:
        ws.close()


def run_picows(blaster: Blaster, n: int, size: int) -> float:
    """picows (Cython, asyncio): ``json.loads`` of each text frame in ``on_ws_frame``."""
    import picows

    loads = json.loads
    text = picows.WSMsgType.TEXT
    state: dict[str, Any] = {"count": 0, "last": None, "start": 0.0, "end": 0.0}

    async def main() -> None:
        done = asyncio.get_running_loop().create_future()

        class Listener(picows.WSListener):  # type: ignore[misc]
            def on_ws_frame(self, transport: Any, frame: Any) -> None:
                if frame.msg_type is not text:
                    return
                obj = loads(frame.get_payload_as_bytes())
                count = state["count"] = state["count"] + 1
                if count == 1:
                    state["start"] = time.perf_counter()
                elif count == n:
                    state["end"] = time.perf_counter()
                    state["last"] = obj["d"]["d"]["d"]["n"]
                    if not done.done():
                        done.set_result(None)

            def on_ws_disconnected(self, transport: Any) -> None:
                if not done.done():
                    done.set_result(None)

        transport, _ = await picows.ws_connect(Listener, blaster.url("/raw", n=n, size=size), max_frame_size=1 << 24)
        try:
            await asyncio.wait_for(done, TIMEOUT)
        finally:
            transport.send_close()
            transport.disconnect()
            await transport.wait_disconnected()

    asyncio.run(main())
    _check(state["count"], state["last"], n, "picows")
    return (n - 1) / (state["end"] - state["start"])


# -- the official JS client under Node --------------------------------------------------------


def node_ready() -> str | None:
    """Install ``@onehop/leap-edge-js`` (pinned in ``js/package.json``) into the cache
    directory once; ``None`` when ready, else why the contender is skipped."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        return "node/npm not found"
    JS_CACHE.mkdir(parents=True, exist_ok=True)
    for name in ("package.json", "bench.cjs"):
        shutil.copy2(JS_DIR / name, JS_CACHE / name)
    installed = JS_CACHE / "node_modules" / "@onehop" / "leap-edge-js" / "package.json"
    if not installed.exists():
        try:
            result = subprocess.run(
                [npm, "install", "--no-audit", "--no-fund"],
                cwd=JS_CACHE,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=300,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"npm install failed: {exc}"
        if result.returncode != 0 or not installed.exists():
            return f"npm install failed ({result.returncode}): {result.stderr[-300:]}"
    return None


def node_versions() -> dict[str, str]:
    out: dict[str, str] = {}
    node = shutil.which("node")
    if node:
        out["node"] = subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip()
    installed = JS_CACHE / "node_modules" / "@onehop" / "leap-edge-js" / "package.json"
    if installed.exists():
        out["@onehop/leap-edge-js"] = json.loads(installed.read_text())["version"]
    return out


def run_node(blaster: Blaster, n: int, size: int) -> float:
    """``@onehop/leap-edge-js`` under Node: its ``serviceEvent`` per MESSAGE
    (``JSON.parse`` per frame inside the client), counted in ``bench.cjs``."""
    node = shutil.which("node")
    assert node is not None
    result = subprocess.run(
        [node, "bench.cjs", blaster.url("/ws", mode="blast", n=n, size=size), str(n), str(int(TIMEOUT * 1000))],
        cwd=JS_CACHE,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT + 30,
        env={**os.environ, "NODE_NO_WARNINGS": "1"},
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise WrongCount(f"node: no report (exit {result.returncode}): {result.stderr[-300:]}")
    report = json.loads(lines[-1])
    _check(report["count"], report["last"], n, "node")
    return (n - 1) / report["seconds"]


# -- decode-only ceilings ---------------------------------------------------------------------

_payload_cache: dict[tuple[str, int, int], tuple[Any, ...]] = {}


def payloads(wire: str, n: int, size: int) -> tuple[Any, ...]:
    """The stream's payloads, in process: ``str`` for json (what ``json.loads`` takes in
    the peers), ``bytes`` for the others.

    Kept as a tuple: the cyclic collector untracks a tuple of strings after its first
    pass, so the cache (several 200,000-item sequences) adds nothing to the full
    collections the contenders that follow may trigger (a list would be traversed item
    by item in each one, a cost no real application's heap puts on them)."""
    key = (wire, n, size)
    if key not in _payload_cache:
        built: list[Any]
        if wire == "json":
            built = json_payloads(n, size)
        elif wire == "json-bytes":
            built = [p.encode() for p in json_payloads(n, size)]
        else:
            encoding, _, compression = wire.partition("+")
            codec = Codec(encoding)
            if compression == "zlib":
                built = [codec.encode_compressed(message_frame(i, size)) for i in range(n)]
            else:
                built = [codec.encode(message_frame(i, size))[0] for i in range(n)]
        _payload_cache[key] = tuple(built)
        del built
        gc.collect(0)  # untrack it now (its items are strings): see above
    return _payload_cache[key]


def clear_payloads() -> None:
    """Forget the payloads kept for the ceilings."""
    _payload_cache.clear()


def ceiling_runner(wire: str, decode: Callable[[Any], Any]) -> Callable[[Blaster, int, int], float]:
    def run(blaster: Blaster, n: int, size: int) -> float:
        data = payloads(wire, n, size)
        start = time.perf_counter()
        for payload in data:
            decode(payload)
        return n / (time.perf_counter() - start)

    return run


def _have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


_MISSING: dict[str, str] = {}


def missing() -> dict[str, str]:
    """Contenders left out, and why."""
    return dict(_MISSING)


def contenders(*, node: bool = True) -> list[Contender]:
    """Every contender this machine can run, leap_sync first."""
    _MISSING.clear()
    fast = _have("orjson")
    etf_ok = etf.erlpack_available()
    out: list[Contender] = [
        Contender("ls_json", "leap_sync json, get()", "leap_sync", leap_sync_runner("json", "none", False, False)),
        Contender(
            "ls_json_many", "leap_sync json, get_many()", "leap_sync", leap_sync_runner("json", "none", False, True)
        ),
    ]
    if fast:
        out += [
            Contender(
                "ls_json_fast",
                "leap_sync[fast] json, get()",
                "leap_sync",
                leap_sync_runner("json", "none", True, False),
            ),
            Contender(
                "ls_json_fast_many",
                "leap_sync[fast] json, get_many()",
                "leap_sync",
                leap_sync_runner("json", "none", True, True),
            ),
        ]
    else:
        _MISSING["leap_sync[fast]"] = "orjson not installed"
    out.append(
        Contender(
            "ls_json_zlib",
            "leap_sync json+zlib",
            "leap_sync",
            leap_sync_runner("json", "zlib", False, False),
            "json+zlib",
        )
    )
    if fast:
        out.append(
            Contender(
                "ls_json_zlib_fast",
                "leap_sync[fast] json+zlib",
                "leap_sync",
                leap_sync_runner("json", "zlib", True, False),
                "json+zlib",
            )
        )
    if etf_ok:
        out += [
            Contender("ls_etf", "leap_sync etf", "leap_sync", leap_sync_runner("etf", "none", False, False), "etf"),
            Contender(
                "ls_etf_zlib",
                "leap_sync etf+zlib",
                "leap_sync",
                leap_sync_runner("etf", "zlib", False, False),
                "etf+zlib",
            ),
        ]
    else:
        _MISSING["leap_sync etf"] = "erlpack not installed"
    for key, label, module, run in (
        ("picows", "picows + json.loads", "picows", run_picows),
        ("websockets", "websockets.sync + json.loads", "websockets", run_websockets),
        ("websocket_client", "websocket-client + json.loads", "websocket", run_websocket_client),
    ):
        if _have(module):
            out.append(Contender(key, label, "peer", run))
        else:
            _MISSING[label] = f"{module} not installed"
    if node:
        why = node_ready()
        if why is None:
            out.append(Contender("node", "@onehop/leap-edge-js (Node)", "peer", run_node))
        else:
            _MISSING["@onehop/leap-edge-js (Node)"] = why
    out.append(Contender("ceil_json", "ceiling: json.loads", "ceiling", ceiling_runner("json", json.loads)))
    if fast:
        orjson_loads = importlib.import_module("orjson").loads
        out.append(
            Contender("ceil_orjson", "ceiling: orjson.loads", "ceiling", ceiling_runner("json-bytes", orjson_loads))
        )
    out.append(
        Contender(
            "ceil_zlib_json",
            "ceiling: zlib + json.loads",
            "ceiling",
            ceiling_runner("json+zlib", lambda p: json.loads(zlib.decompress(p))),
            "json+zlib",
        )
    )
    if etf_ok:
        erlpack = importlib.import_module("erlpack")
        out += [
            Contender(
                "ceil_erlpack", "ceiling: erlpack.unpack", "ceiling", ceiling_runner("etf", erlpack.unpack), "etf"
            ),
            Contender(
                "ceil_etf_checked",
                "ceiling: leap_sync etf.decode (checked)",
                "ceiling",
                ceiling_runner("etf", etf.decode),
                "etf",
            ),
        ]
    return out
