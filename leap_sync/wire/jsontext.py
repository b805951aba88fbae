"""JSON text as both protocols send and read it: compact, valid UTF-8, no NaN.

:func:`encode_json` refuses what JSON cannot carry (bytes, NaN, lone surrogates) with
:class:`~leap_sync.errors.LeapEncodeError`; :func:`decode_json` reads ``str`` or strict
UTF-8 ``bytes`` and raises only :class:`~leap_sync.errors.LeapProtocolError`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from ..errors import LeapEncodeError, LeapProtocolError

__all__ = ["decode_json", "encode_json"]


def _not_json(value: Any) -> Any:
    """``JSONEncoder.default``: called only for values JSON has no type for."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        raise TypeError("bytes cannot travel in JSON (binaries need encoding='etf')")
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


_json_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_not_json)
_json_decoder = json.JSONDecoder()
_json_decode = _json_decoder.decode
# The C scanner json.loads ends in (typeshed does not declare the attribute).
_json_scan: Callable[[str, int], tuple[Any, int]] = _json_decoder.scan_once  # type: ignore[attr-defined]


def encode_json(obj: Any) -> str:
    """Compact JSON that is valid UTF-8 once encoded. Raises :class:`LeapEncodeError`
    for values JSON cannot carry, a string holding a lone surrogate included."""
    try:
        text = _json_encoder.encode(obj)
    except (TypeError, ValueError, RecursionError) as exc:
        raise LeapEncodeError(f"cannot encode value as JSON: {exc}") from None
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise LeapEncodeError(
                f"cannot encode value as JSON: a string holds {exc.object[exc.start : exc.end]!r}, "
                "a lone surrogate, which is not text"
            ) from None
    return text


def decode_json(data: str | bytes) -> Any:
    """Decode JSON from ``str`` or strict UTF-8 ``bytes``; errors are
    :class:`LeapProtocolError`.

    Minified JSON (what servers send) goes straight to the C scanner, skipping the
    layers of ``json.loads`` around it; anything else (surrounding whitespace, trailing
    bytes, invalid input) takes the full decoder, which also produces its errors.
    """
    try:
        if not isinstance(data, str):
            data = data.decode("utf-8")
        try:
            obj, end = _json_scan(data, 0)
        except StopIteration:
            return _json_decode(data)
        if end != len(data):
            return _json_decode(data)
        return obj
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise LeapProtocolError(f"invalid JSON payload: {exc}") from None
