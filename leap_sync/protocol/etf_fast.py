"""ETF decoding in one pass, with the safety checks made on the way.

:func:`decode` reads the term types JSON-like payloads use (maps, lists, binaries,
small and 32-bit integers, new floats, small atoms, nil), checking every length
against the bytes present and the nesting depth as it goes, and builds exactly what
:func:`leap_sync.protocol.etf.decode` builds from the same bytes (erlpack's values:
binaries as ``str`` when UTF-8, else ``bytes``; ``erlpack.Atom`` for atoms other than
``true``/``false``/``nil``). It is about as fast as erlpack's own decoder, so it
replaces the separate check pass plus erlpack for what servers send.

Anything else (another term type, a truncated or malformed term, an error erlpack
would raise) makes it raise :class:`Unhandled`: the caller then takes the general
path (:func:`~leap_sync.protocol.etf.check_term` and erlpack), which gives the value
or the exact error. So this module never decides an error, and never returns a value
that path would not.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["Unhandled", "decode", "decode_many"]

_u32 = struct.Struct(">I").unpack_from
_i32 = struct.Struct(">i").unpack_from
_f64 = struct.Struct(">d").unpack_from


class Unhandled(Exception):
    """Not for this decoder: take the general path."""


def decode(data: bytes, max_depth: int, atom: Callable[[str], Any], max_items: int | None = None) -> Any:
    """The term in ``data`` (version byte included); ``atom`` makes an atom's value
    (``erlpack.Atom``). Raises :class:`Unhandled` (or any other exception) for
    anything it does not decode itself (a term of more than ``max_items`` terms,
    counted as :func:`~leap_sync.protocol.etf.check_term` counts them, included);
    never returns a value the general path would refuse or decode differently."""
    n = len(data)
    if n < 2 or data[0] != 131:
        raise Unhandled
    # Every term takes at least a byte: one no longer than the bound is within it.
    budget = None if max_items is None or n <= max_items else [max_items - 1]
    value, pos = _term(data, 1, n, max_depth, atom, budget)
    if pos != n:
        raise Unhandled
    return value


def decode_many(
    payloads: Sequence[bytes], max_depth: int, atom: Callable[[str], Any], max_items: int | None = None
) -> list[Any]:
    """What :func:`decode` makes of each of the leading ``payloads``: all of them
    normally, or up to the first it raises for, which the caller then takes the
    general way. One call for a batch of payloads."""
    out: list[Any] = []
    add = out.append
    for data in payloads:
        try:
            add(decode(data, max_depth, atom, max_items))
        except Exception:  # Unhandled, or a malformed term: the general path decides
            break
    return out


def _binary(data: bytes, pos: int, n: int) -> tuple[Any, int]:
    """A BINARY_EXT whose tag is at ``pos``."""
    start = pos + 5
    end = start + _u32(data, pos + 1)[0]
    if end > n:
        raise Unhandled
    raw = data[start:end]
    try:
        return raw.decode(), end
    except UnicodeDecodeError:
        return raw, end


def _term(
    data: bytes, pos: int, n: int, depth: int, atom: Callable[[str], Any], budget: list[int] | None
) -> tuple[Any, int]:
    """The term whose tag is at ``pos``, and the position after it. ``depth``: how
    many more containers may open (``check_term`` counts the same way); ``budget``:
    how many more terms may follow, ``None`` for no bound."""
    tag = data[pos]
    if tag == 109:  # BINARY_EXT
        return _binary(data, pos, n)
    if tag == 116:  # MAP_EXT
        count = _u32(data, pos + 1)[0]
        pos += 5
        if count * 2 > n - pos or depth <= 0:
            raise Unhandled
        if budget is not None:
            budget[0] -= count * 2
            if budget[0] < 0:
                raise Unhandled
        out: dict[Any, Any] = {}
        key: Any
        inner = depth - 1
        for _ in range(count):
            # Keys and values are mostly binaries and small integers: read inline
            # (what _binary does, without a call per term).
            if data[pos] == 109:
                start = pos + 5
                pos = start + _u32(data, pos + 1)[0]
                if pos > n:
                    raise Unhandled
                raw = data[start:pos]
                try:
                    key = raw.decode()
                except UnicodeDecodeError:
                    key = raw
            else:
                key, pos = _term(data, pos, n, inner, atom, budget)
            tag = data[pos]
            if tag == 109:
                start = pos + 5
                pos = start + _u32(data, pos + 1)[0]
                if pos > n:
                    raise Unhandled
                raw = data[start:pos]
                try:
                    out[key] = raw.decode()
                except UnicodeDecodeError:
                    out[key] = raw
            elif tag == 97:
                if pos + 2 > n:
                    raise Unhandled
                out[key] = data[pos + 1]
                pos += 2
            else:
                out[key], pos = _term(data, pos, n, inner, atom, budget)
        return out, pos
    if tag == 97:  # SMALL_INTEGER_EXT
        if pos + 2 > n:
            raise Unhandled
        return data[pos + 1], pos + 2
    if tag == 98:  # INTEGER_EXT
        if pos + 5 > n:
            raise Unhandled
        return _i32(data, pos + 1)[0], pos + 5
    if tag == 119 or tag == 115:  # SMALL_ATOM_UTF8_EXT, SMALL_ATOM_EXT
        if pos + 2 > n:
            raise Unhandled
        start = pos + 2
        end = start + data[pos + 1]
        if end > n:
            raise Unhandled
        raw = data[start:end]
        if raw == b"true":
            return True, end
        if raw == b"false":
            return False, end
        if raw == b"nil":
            return None, end
        return atom(raw.decode("utf-8" if tag == 119 else "latin-1")), end
    if tag == 108:  # LIST_EXT: items, then a tail that must read as []
        count = _u32(data, pos + 1)[0]
        pos += 5
        if count + 1 > n - pos or depth <= 0:
            raise Unhandled
        if budget is not None:
            budget[0] -= count + 1
            if budget[0] < 0:
                raise Unhandled
        inner = depth - 1
        items = []
        for _ in range(count):
            value, pos = _term(data, pos, n, inner, atom, budget)
            items.append(value)
        if data[pos] != 106:  # NIL_EXT; any other tail: the general path decides
            raise Unhandled
        return items, pos + 1
    if tag == 106:  # NIL_EXT
        return [], pos + 1
    if tag == 70:  # NEW_FLOAT_EXT
        if pos + 9 > n:
            raise Unhandled
        return _f64(data, pos + 1)[0], pos + 9
    raise Unhandled
