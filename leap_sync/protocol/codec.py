"""Frame payload codecs: JSON and ETF, with Leap Edge's per-message zlib.

What travels, as the official SDKs do it:

- ``encoding=json``: text frames of compact UTF-8 JSON.
- ``encoding=etf``: binary frames, each one ETF term (first byte 131).
- ``compression=zlib``: the *server* sends binary frames, each a standalone zlib stream
  wrapping one JSON or ETF payload. Clients always send uncompressed frames.

:meth:`Codec.decode` tells these apart by content, so it accepts whatever a server
sends; everything it raises is :class:`LeapProtocolError`. Inflation is bounded by
``max_size`` so a zlib bomb is an error, not a ``MemoryError``, and what a message
decodes to by ``max_items`` (values, checked before the decode), so a small frame
cannot inflate into seconds of decoding either.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any, Literal

from ..errors import LeapError, LeapProtocolError
from ..wire.jsontext import DEFAULT_MAX_ITEMS, decode_json, encode_json
from ..wire.wsframes import DEFAULT_MAX_SIZE
from . import etf

__all__ = [
    "COMPRESSIONS",
    "ENCODINGS",
    "Codec",
    "Compression",
    "Encoding",
    "inflate",
    "is_zlib",
]

Encoding = Literal["json", "etf"]
Compression = Literal["zlib", "none"]
ENCODINGS: tuple[Encoding, ...] = ("json", "etf")
COMPRESSIONS: tuple[Compression, ...] = ("zlib", "none")

Payload = str | bytes


def is_zlib(data: bytes) -> bool:
    """Whether ``data`` starts with a zlib header (deflate, valid check bits).

    ETF starts with 131, which is never a valid zlib header, so the two cannot be
    confused.
    """
    return len(data) >= 2 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0


def inflate(data: bytes, max_size: int = DEFAULT_MAX_SIZE) -> bytes:
    """Inflate one standalone zlib stream, refusing to produce more than ``max_size``
    bytes. Raises :class:`LeapProtocolError` for a bomb, a corrupt or truncated stream,
    or trailing bytes."""
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, max_size + 1)
    except zlib.error as exc:
        raise LeapProtocolError(f"invalid zlib data: {exc}") from None
    if len(out) > max_size or inflater.unconsumed_tail:
        raise LeapProtocolError(f"zlib payload inflates beyond the {max_size}-byte limit")
    if not inflater.eof:
        raise LeapProtocolError("truncated zlib stream")
    if inflater.unused_data:
        raise LeapProtocolError("trailing bytes after zlib stream")
    return out


class Codec:
    """Encodes and decodes the payloads of one connection.

    ``encoding`` picks what :meth:`encode` produces; :meth:`decode` accepts JSON, ETF
    and zlib-wrapped either, whatever ``encoding`` is. ``max_size`` bounds an inflated
    message; ``max_items`` the values it decodes to (JSON: :func:`~leap_sync.wire.jsontext.check_items`;
    ETF: :func:`~leap_sync.protocol.etf.check_term`); ``max_depth`` bounds ETF nesting.
    A Codec holds no per-message state and may be shared by threads.
    """

    __slots__ = ("_etf_loads", "encoding", "max_depth", "max_items", "max_size")

    def __init__(
        self,
        encoding: str = "json",
        *,
        max_size: int = DEFAULT_MAX_SIZE,
        max_depth: int = etf.DEFAULT_MAX_DEPTH,
        max_items: int = DEFAULT_MAX_ITEMS,
    ) -> None:
        if encoding not in ENCODINGS:
            raise ValueError(f"encoding must be one of {ENCODINGS}, not {encoding!r}")
        if max_size <= 0:
            raise ValueError("max_size must be positive")
        if max_items <= 0:
            raise ValueError("max_items must be positive")
        self.encoding: Encoding = encoding
        self.max_size = max_size
        self.max_items = max_items
        self.max_depth = max_depth
        self._etf_loads: Callable[[bytes], Any] | None = None
        if encoding == "etf":
            self._etf_loads = etf.decoder()  # fails early, naming the extra

    def __repr__(self) -> str:
        return f"Codec(encoding={self.encoding!r}, max_size={self.max_size})"

    # -- decoding --------------------------------------------------------------------

    def decode(self, payload: Payload, binary: bool) -> Any:
        """Decode one websocket message.

        ``binary`` says whether it came in a binary frame. Text frames are JSON; a
        binary frame is a zlib stream (inflated, then decoded by content), an ETF term
        (first byte 131), or JSON. Raises :class:`LeapProtocolError` only.
        """
        if not binary:
            return decode_json(payload, self.max_items)
        if isinstance(payload, str):
            try:
                payload = payload.encode("utf-8")
            except UnicodeEncodeError as exc:  # lone surrogates
                raise LeapProtocolError(f"invalid payload text: {exc}") from None
        if is_zlib(payload):
            payload = inflate(payload, self.max_size)
        if payload[:1] == b"\x83":
            return self._decode_etf(payload)
        return decode_json(payload, self.max_items)

    def _decode_etf(self, data: bytes) -> Any:
        loads = self._etf_loads
        if loads is None:
            try:
                loads = self._etf_loads = etf.decoder()
            except LeapError as exc:
                raise LeapProtocolError(f"received an ETF payload: {exc}") from None
        return etf.decode(data, self.max_depth, loads, max_items=self.max_items)

    # -- encoding --------------------------------------------------------------------

    def encode(self, obj: Any) -> tuple[Payload, bool]:
        """Encode one frame object: ``(payload, binary)``.

        JSON gives a ``str`` for a text frame, ETF gives ``bytes`` for a binary frame.
        Raises :class:`LeapEncodeError` for values the encoding cannot carry.
        """
        if self.encoding == "json":
            return encode_json(obj), False
        return etf.encode(obj), True

    def encode_compressed(self, obj: Any) -> bytes:
        """Encode one frame object as a standalone zlib stream, for a binary frame
        (what a server with ``compression=zlib`` sends)."""
        payload, _binary = self.encode(obj)
        data = payload if isinstance(payload, bytes) else payload.encode("utf-8")
        return zlib.compress(data)
