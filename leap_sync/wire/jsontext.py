"""JSON text as both protocols send and read it: compact, valid UTF-8, no NaN.

:func:`encode_json` refuses what JSON cannot carry (bytes, NaN, lone surrogates) with
:class:`~leap_sync.errors.LeapEncodeError`; :func:`decode_json` reads ``str`` or strict
UTF-8 ``bytes`` and raises only :class:`~leap_sync.errors.LeapProtocolError`, and with
``max_items`` refuses, before decoding, a text that holds more values than that
(:func:`check_items`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from ..errors import LeapEncodeError, LeapProtocolError

__all__ = ["DEFAULT_MAX_ITEMS", "check_items", "decode_json", "encode_json"]

DEFAULT_MAX_ITEMS = 1_000_000
"""Default bound on the values one message may decode to (every value counts:
containers, strings, numbers, literals and object keys)."""


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


# A JSON string, escapes included (unrolled: no backtracking per character). The closing
# quote is optional: a string left open runs to the end of the text (which is then no
# JSON), so a text full of quotes that never close is one match, not one scan to the end
# from each quote (quadratic, holding the GIL).
_STRING_TEXT = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
_STRING_BYTES = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)


def _most_values(data: str | bytes) -> int:
    """At least the number of values in the JSON text ``data``: one, plus one for each
    ``,`` (another element or member), ``:`` (a member's value beside its key), ``[``
    and ``{`` (a container's first element or member), minus one for each ``[]`` and
    ``{}`` (a container without one). Exact for minified JSON whose strings hold none
    of those characters; characters inside strings only ever add. Each ``count`` runs
    at C speed."""
    if isinstance(data, str):
        opens = data.count("[") + data.count("{") - data.count("[]") - data.count("{}")
        return 1 + data.count(",") + data.count(":") + opens
    opens = data.count(b"[") + data.count(b"{") - data.count(b"[]") - data.count(b"{}")
    return 1 + data.count(b",") + data.count(b":") + opens


def check_items(data: str | bytes, max_items: int) -> None:
    """Raise :class:`LeapProtocolError` when the JSON text ``data`` holds more than
    ``max_items`` values (object keys included), without decoding it.

    A text of at most ``max_items`` characters cannot (every value takes one), so it
    costs one ``len``. A longer one is estimated by :func:`_most_values`, which can
    only over-count (when strings hold those characters, or whitespace sits inside an
    empty container); when the estimate is over, the count is made again with every
    string replaced by one character (one linear regular-expression pass, whatever
    the quotes and escapes), so a minified text is refused only when it truly holds
    more values.
    """
    if len(data) <= max_items or _most_values(data) <= max_items:
        return
    # Each string becomes one character: it is a value, and "[]" must not appear where a
    # string stood (``["a"]`` holds two values, ``[]`` one).
    stripped = _STRING_TEXT.sub("0", data) if isinstance(data, str) else _STRING_BYTES.sub(b"0", data)
    if _most_values(stripped) > max_items:
        raise LeapProtocolError(f"message holds more than {max_items} values (max_message_items)")


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


def decode_json(data: str | bytes, max_items: int | None = None) -> Any:
    """Decode JSON from ``str`` or strict UTF-8 ``bytes``; errors are
    :class:`LeapProtocolError`. With ``max_items``, a text holding more values than
    that is refused before decoding (:func:`check_items`).

    Minified JSON (what servers send) goes straight to the C scanner, skipping the
    layers of ``json.loads`` around it; anything else (surrounding whitespace, trailing
    bytes, invalid input) takes the full decoder, which also produces its errors.
    """
    if max_items is not None and len(data) > max_items:
        check_items(data, max_items)
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
