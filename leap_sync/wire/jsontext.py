"""JSON text as both protocols send and read it: compact, valid UTF-8, no NaN.

:func:`encode_json` refuses what JSON cannot carry (bytes, NaN, lone surrogates) with
:class:`~leap_sync.errors.LeapEncodeError`; :func:`decode_json` reads ``str`` or strict
UTF-8 ``bytes`` and raises only :class:`~leap_sync.errors.LeapProtocolError`, and with
``max_items`` refuses, before decoding, a text that holds more values than that
(:func:`check_items`).

With the ``fast`` extra (orjson) installed, :func:`decode_json` reads ``bytes`` with
``orjson.loads`` first, and takes the standard library's path for whatever orjson
refuses or would read differently (integers of 19 digits or more, which orjson turns
into floats beyond 64 bits; ``NaN``; escaped lone surrogates; nesting past 1024): the
result, and every error, is the same with and without the extra. Encoding stays on the
standard library's C encoder: orjson accepts what JSON here must refuse (NaN and
infinities become ``null``; enums, UUIDs and orjson fragments are encoded), and
refusing those would take a Python pass over the value that costs what orjson saves.
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import LeapEncodeError, LeapProtocolError

_orjson_loads: Callable[[bytes], Any] | None
try:  # the ``fast`` extra (imported by name: type checks pass with and without it)
    _orjson_loads = importlib.import_module("orjson").loads
except ImportError:  # pragma: no cover - the plain install
    _orjson_loads = None

__all__ = [
    "BACKENDS",
    "DEFAULT_MAX_ITEMS",
    "backend",
    "check_items",
    "decode_json",
    "decode_json_many",
    "encode_json",
    "set_backend",
]

BACKENDS = ("json", "orjson")

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


# Digits become "0", everything else " ": 19 zeros in a row mark an integer literal
# orjson might read as a float (or a run of digits in a string: harmless, just slower).
_DIGITS = bytes(0x30 if 0x30 <= i <= 0x39 else 0x20 for i in range(256))
_LONG_NUMBER = b"0" * 19
_fast_loads: Callable[[bytes], Any] | None = _orjson_loads


def backend() -> str:
    """The decoder in use: ``"orjson"`` (the ``fast`` extra) or ``"json"``."""
    return "json" if _fast_loads is None else "orjson"


def set_backend(name: str) -> None:
    """Choose the decoder: ``"orjson"`` (the default when the ``fast`` extra is
    installed; ``ImportError`` without it) or ``"json"`` (the standard library). For
    tests and benchmarks: results and errors are the same either way."""
    global _fast_loads
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, not {name!r}")
    if name == "orjson" and _orjson_loads is None:
        raise ImportError("orjson is not installed (pip install 'leap-sync[fast]')")
    _fast_loads = None if name == "json" else _orjson_loads


def decode_json(data: str | bytes, max_items: int | None = None) -> Any:
    """Decode JSON from ``str`` or strict UTF-8 ``bytes``; errors are
    :class:`LeapProtocolError`. With ``max_items``, a text holding more values than
    that is refused before decoding (:func:`check_items`).

    ``bytes`` go to orjson when it is installed (see the module's docstring for when
    it defers to the standard library). Otherwise minified JSON (what servers send)
    goes straight to the C scanner, skipping the layers of ``json.loads`` around it;
    anything else (surrounding whitespace, trailing bytes, invalid input) takes the
    full decoder, which also produces its errors.
    """
    if max_items is not None and len(data) > max_items:
        check_items(data, max_items)
    fast = _fast_loads
    if fast is not None and type(data) is bytes and _LONG_NUMBER not in data.translate(_DIGITS):
        try:
            return fast(data)
        except ValueError:  # orjson.JSONDecodeError: the standard library decides
            pass
    return _decode_stdlib(data)


def _decode_stdlib(data: str | bytes) -> Any:
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


def _only_bytes(payloads: Sequence[str | bytes]) -> bool:
    return set(map(type, payloads)) == {bytes}


def decode_json_many(
    payloads: Sequence[str | bytes], max_items: int | None = None
) -> tuple[list[Any], LeapProtocolError | None]:
    """Decode payloads in order, as :func:`decode_json` (with ``max_items``) would one
    at a time, stopping at the first that fails: ``(the values before it, its
    error)``, or ``(all values, None)``.

    Does less per payload than separate calls: with orjson, one scan of the whole batch
    for long numbers; with the standard library, one UTF-8 decode of the whole batch
    (when it is ASCII) and the C scanner at each payload's offset. A payload the batch
    pass does not read exactly is decoded on its own, so it costs only itself.
    """
    out: list[Any] = []
    add = out.append
    fast = _fast_loads
    try:
        if max_items is not None and payloads and max(map(len, payloads)) > max_items:
            pass  # a payload that must be counted first: one at a time, below
        elif fast is not None:
            if _only_bytes(payloads) and _LONG_NUMBER not in b" ".join(payloads).translate(_DIGITS):  # type: ignore[arg-type]
                for payload in payloads:
                    try:
                        add(fast(payload))  # type: ignore[arg-type]
                    except ValueError:  # orjson.JSONDecodeError: the standard library decides
                        add(_decode_stdlib(payload))
                return out, None
        elif payloads and _only_bytes(payloads):
            try:
                text = b"\n".join(payloads).decode("utf-8")  # type: ignore[arg-type]
            except UnicodeDecodeError:
                text = ""
            if text.isascii() and len(text) == sum(map(len, payloads)) + len(payloads) - 1:
                scan = _json_scan
                pos = 0
                for payload in payloads:
                    end = pos + len(payload)
                    try:
                        obj, stop = scan(text, pos)
                    except (StopIteration, ValueError, RecursionError):
                        stop = -1
                    # "\n" between payloads ends any number and is refused inside a
                    # string: a payload read exactly up to its end is read as alone.
                    add(obj if stop == end else decode_json(payload))
                    pos = end + 1
                return out, None
        for payload in payloads[len(out) :]:
            add(decode_json(payload, max_items))
    except LeapProtocolError as exc:
        return out, exc
    return out, None
