"""A raw Leap Edge client for the embedded server's tests.

It sits directly on ``websockets.sync.client`` (never on ``leap_sync.LeapClient``) and
decodes what it receives on its own (``json``, ``erlpack``, ``zlib``), checking the
frame kind the connection's encoding and compression require, so the tests prove the
wire format independently of leap_sync's codec.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

try:
    import erlpack
except ImportError:  # pragma: no cover - erlpack is a test dependency
    erlpack = None

COMBOS = [
    pytest.param(("json", "none"), id="json-none"),
    pytest.param(("json", "zlib"), id="json-zlib"),
    pytest.param(
        ("etf", "none"), id="etf-none", marks=pytest.mark.skipif(erlpack is None, reason="erlpack not installed")
    ),
    pytest.param(
        ("etf", "zlib"), id="etf-zlib", marks=pytest.mark.skipif(erlpack is None, reason="erlpack not installed")
    ),
]
"""Every encoding x compression pair, for ``@pytest.mark.parametrize("combo", COMBOS)``."""

# websockets 16+ warns unless a directly-used connection opts into ``legacy``.
_LEGACY: dict[str, Any] = {"legacy": True} if "legacy" in inspect.signature(connect).parameters else {}

PROJECT = "project_x"
TOKEN = "leap_token_x"
TIMEOUT = 5.0
Raw = str | bytes


def hello(interval_ms: int) -> dict[str, Any]:
    return {"op": 1, "d": {"heartbeat_interval": interval_ms}}


def dispatch(event: str, channel: str | None, data: Any, **extra: Any) -> dict[str, Any]:
    """A server dispatch frame as the tests expect it decoded (``u`` only when given)."""
    d: dict[str, Any] = {"c": channel, "e": event, "d": data}
    d.update(extra)
    return {"op": 0, "d": d}


def channel_obj(channel_id: str, type: str = "private", state: Any = None, project_id: str = PROJECT) -> dict[str, Any]:
    return {"id": channel_id, "project_id": project_id, "state": {} if state is None else state, "type": type}


def available(channel_id: str, type: str = "private", state: Any = None, project_id: str = PROJECT) -> dict[str, Any]:
    return dispatch("AVAILABLE", channel_id, {"channel": channel_obj(channel_id, type, state, project_id)})


def unavailable(channel_id: str, error_code: str | None, graceful: bool = False) -> dict[str, Any]:
    return dispatch("UNAVAILABLE", channel_id, {"graceful": graceful, "error_code": error_code})


def message(channel_id: str, event: str, data: Any) -> dict[str, Any]:
    return dispatch("MESSAGE", channel_id, {"e": event, "d": data}, u=False)


def sub(channel_id: str) -> dict[str, Any]:
    return {"op": 0, "d": {"c": channel_id, "e": "SUBSCRIBE", "d": None}}


def decode_frame(raw: Raw, encoding: str, compression: str) -> Any:
    """Decode a server message, asserting the frame kind the connection's encoding
    and compression require (zlib: one standalone zlib stream in a binary frame)."""
    if compression == "zlib":
        assert isinstance(raw, bytes), f"zlib connection got a text frame: {raw!r}"
        assert raw[:1] == b"\x78", f"not a zlib stream: {raw[:8]!r}"
        inflater = zlib.decompressobj()
        data = inflater.decompress(raw)
        assert inflater.eof and not inflater.unused_data, "not one standalone zlib stream"
        if encoding == "json":
            return json.loads(data.decode("utf-8"))
        assert data[:1] == b"\x83", f"inflated payload is not ETF: {data[:8]!r}"
        return erlpack.ErlangTermDecoder(encoding="utf-8").loads(data)
    if encoding == "json":
        assert isinstance(raw, str), f"json connection got a binary frame: {raw!r}"
        return json.loads(raw)
    assert isinstance(raw, bytes), f"etf connection got a text frame: {raw!r}"
    assert raw[:1] == b"\x83", f"not an ETF term: {raw[:8]!r}"
    return erlpack.ErlangTermDecoder(encoding="utf-8").loads(raw)


def encode_frame(frame: Any, encoding: str) -> Raw:
    """A client frame in ``encoding``, uncompressed (``str`` for a text frame)."""
    if encoding == "etf":
        packed: bytes = erlpack.pack(frame)
        return packed
    return json.dumps(frame)


class RawClient:
    """One raw websocket connection to a Leap Edge endpoint.

    ``encoding``/``compression`` go in the query string (``query`` replaces it, ``""``
    sends none). :meth:`recv` returns one decoded frame and checks its frame kind;
    :meth:`recv_raw` returns the payload untouched; :meth:`expect_close` waits for
    the close and returns ``(code, reason)`` (``code`` ``None`` when the TCP connection
    ended without a close frame).
    """

    def __init__(
        self,
        url: str,
        encoding: str = "json",
        compression: str = "none",
        *,
        query: str | None = None,
        open_timeout: float = TIMEOUT,
    ) -> None:
        self.encoding = encoding
        self.compression = compression
        if query is None:
            query = f"?encoding={encoding}&compression={compression}"
        self.ws: ClientConnection = connect(
            url + query,
            compression=None,
            open_timeout=open_timeout,
            close_timeout=2,
            proxy=None,
            max_size=None,
            **_LEGACY,
        )
        self.init: dict[str, Any] = {}
        """INIT's ``d`` once :meth:`identify` returned."""

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self.ws.close()

    # -- sending ------------------------------------------------------------------------

    def send(self, frame: Any) -> None:
        """Send one frame in this connection's encoding, uncompressed (as clients do)."""
        payload = encode_frame(frame, self.encoding)
        self.ws.send(payload, text=isinstance(payload, str))

    def send_text(self, text: str) -> None:
        self.ws.send(text, text=True)

    def send_binary(self, data: bytes) -> None:
        self.ws.send(data, text=False)

    def beat(self, tag: str | None = None) -> None:
        self.send({"op": 3} if tag is None else {"op": 3, "d": {"tag": tag}})

    # -- receiving ----------------------------------------------------------------------

    def recv_raw(self, timeout: float = TIMEOUT) -> Raw:
        """The next message, as it came (``str`` for text frames). ``TimeoutError``
        when nothing came; ``ConnectionClosed`` when the connection ended."""
        return self.ws.recv(timeout=timeout)

    def decode(self, raw: Raw) -> Any:
        return decode_frame(raw, self.encoding, self.compression)

    def recv(self, timeout: float = TIMEOUT) -> Any:
        """The next frame, decoded."""
        return self.decode(self.recv_raw(timeout))

    def recv_until(self, predicate: Any, timeout: float = TIMEOUT) -> tuple[Any, list[Any]]:
        """Frames until one matches ``predicate``: ``(match, skipped)``."""
        deadline = time.monotonic() + timeout
        skipped = []
        while True:
            frame = self.recv(max(deadline - time.monotonic(), 0.0))
            if predicate(frame):
                return frame, skipped
            skipped.append(frame)

    def expect_close(self, timeout: float = TIMEOUT) -> tuple[int | None, str]:
        """Wait for the connection to end, asserting no frame arrives before it."""
        code, reason, frames = self.close_after(timeout)
        assert frames == [], f"frames before the close: {frames!r}"
        return code, reason

    def close_after(self, timeout: float = TIMEOUT) -> tuple[int | None, str, list[Any]]:
        """Wait for the connection to end: ``(code, reason, frames received before)``."""
        deadline = time.monotonic() + timeout
        frames = []
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"connection still open after {timeout} s (got {frames!r})")
                frames.append(self.decode(self.ws.recv(timeout=remaining)))
        except ConnectionClosed as closed:
            if closed.rcvd is None:
                return None, "", frames
            return closed.rcvd.code, closed.rcvd.reason, frames
        except TimeoutError:
            raise AssertionError(f"connection still open after {timeout} s (got {frames!r})") from None

    def expect_nothing(self, timeout: float) -> None:
        """Assert that no message arrives within ``timeout`` seconds (for properties
        that are an absence: a silenced connection, paused acks)."""
        try:
            raw = self.ws.recv(timeout=timeout)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected message: {raw!r}")

    # -- the handshake ------------------------------------------------------------------

    def expect_hello(self, interval_ms: int) -> None:
        assert self.recv() == hello(interval_ms)

    def identify(self, token: str | None = TOKEN, project_id: str = PROJECT) -> dict[str, Any]:
        """Send Identify and return INIT's ``d`` (asserting the frame's envelope)."""
        self.send({"op": 2, "d": {"project_id": project_id, "token": token}})
        frame = self.recv()
        assert frame["op"] == 0 and frame["d"]["e"] == "INIT" and frame["d"]["c"] is None, frame
        assert set(frame["d"]) == {"c", "e", "d"}, frame
        self.init = frame["d"]["d"]
        return self.init


def open_client(
    server: Any, combo: tuple[str, str] = ("json", "none"), token: str | None = TOKEN, *, interval_ms: int | None = None
) -> RawClient:
    """Connect, read Hello, identify; the returned client has its INIT in ``.init``."""
    client = RawClient(server.url, *combo)
    expected = round(server.heartbeat_interval * 1000) if interval_ms is None else interval_ms
    client.expect_hello(expected)
    client.identify(token)
    return client


@pytest.fixture(autouse=True)
def _no_server_errors() -> Iterator[None]:
    """Fail a test during which the server logged an error (an exception in a
    connection's thread is logged to ``leap_sync.testing``, not raised; websockets
    logs its own protocol errors)."""
    records: list[logging.LogRecord] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = _Collect(logging.ERROR)
    loggers = [logging.getLogger("websockets"), logging.getLogger("leap_sync.testing")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
    assert not records, "server logged errors: " + "; ".join(
        f"{r.getMessage()} {r.exc_info[1]!r}" if r.exc_info else r.getMessage() for r in records
    )


# -- `leap-sync serve` as a subprocess ---------------------------------------------------

SERVE_WS_LINE = re.compile(r"^leap edge: (ws://127\.0\.0\.1:(\d+)/ws)$")
SERVE_CONTROL_LINE = re.compile(r"^control: (http://127\.0\.0\.1:(\d+))$")


def _default_sigint() -> None:  # pragma: no cover - runs in the child
    # A child of a shell's background job inherits SIGINT ignored, and Python then
    # installs no KeyboardInterrupt handler: give `serve` the disposition Ctrl-C has.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class ServeProcess:
    """A running ``leap-sync serve``: ``proc``, ``lines`` (the first two stdout lines),
    ``ws_url``, ``control_url``; :meth:`line` reads further stdout lines."""

    def __init__(self, proc: subprocess.Popen[str], out: queue.Queue[str | None]) -> None:
        self.proc = proc
        self._out = out
        self.lines = [self.line(), self.line()]
        ws = SERVE_WS_LINE.match(self.lines[0])
        control = SERVE_CONTROL_LINE.match(self.lines[1])
        assert ws and control, f"unexpected serve output: {self.lines!r}"
        self.ws_url = ws.group(1)
        self.control_url = control.group(1)

    def line(self, timeout: float = 20.0) -> str:
        try:
            line = self._out.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no output from leap-sync serve within {timeout} s") from None
        if line is None:
            raise AssertionError(f"leap-sync serve exited ({self.proc.poll()}): {self.stderr()}")
        return line.rstrip("\n")

    def stderr(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return "(running)"
        return self.proc.stderr.read()


@contextlib.contextmanager
def serve_process(*args: str) -> Iterator[ServeProcess]:
    """Run ``python -m leap_sync serve *args``; killed at exit if still running."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "leap_sync", "serve", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint,
    )
    out: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            out.put(line)
        out.put(None)

    reader = threading.Thread(target=pump, name="test-serve-stdout", daemon=True)
    reader.start()
    try:
        yield ServeProcess(proc, out)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        reader.join(10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def wait_until(deadline: float) -> None:
    """Sleep until a monotonic deadline (a schedule, not a guess)."""
    remaining = deadline - time.monotonic()
    if remaining > 0:
        time.sleep(remaining)
