"""ETF (Erlang External Term Format) through ``erlpack``, made safe for untrusted input.

``erlpack`` is an optional dependency (the ``etf`` extra). Its C decoder recurses
without a depth limit (a deeply nested term crashes the interpreter) and trusts length
fields, so :func:`decode` first walks the term iteratively with :func:`check_term`,
which bounds the nesting depth and checks every length against the bytes present, and
only then hands it to erlpack.

Decoded binaries and dict keys come back as ``str`` when they are valid UTF-8 (Elixir
strings are UTF-8 binaries) and as ``bytes`` otherwise: a binary is legal ETF whatever it
holds, so it is delivered, never refused. Atoms other than ``nil``/``true``/``false``
come back as ``erlpack.Atom`` (a ``str`` subclass). Encoding takes ``str`` and
``bytes`` alike to binaries.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import LeapEncodeError, LeapError, LeapProtocolError
from .etf_fast import decode as _fast_decode
from .etf_fast import decode_many as _fast_decode_many

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "binary_decoder",
    "check_term",
    "decode",
    "encode",
    "erlpack_available",
    "one_pass_many",
]

DEFAULT_MAX_DEPTH = 256
VERSION = 131

_MISSING = (
    "the 'etf' encoding needs erlpack: install leap-sync with the etf extra "
    "(pip install 'leap-sync[etf]'; erlpack builds from source with a C++ compiler)"
)

try:  # pragma: no cover - exercised by the presence or absence of the extra
    import erlpack as _erlpack
except ImportError:  # pragma: no cover
    _erlpack = None

_atom: Callable[[str], Any] | None = None if _erlpack is None else _erlpack.Atom


def erlpack_available() -> bool:
    """Whether the ``etf`` extra (erlpack) is installed."""
    return _erlpack is not None


def _require() -> Any:
    if _erlpack is None:
        raise LeapError(_MISSING)
    return _erlpack


# Fixed-size terms: tag -> bytes after the tag.
_FIXED = {
    70: 8,  # NEW_FLOAT_EXT
    97: 1,  # SMALL_INTEGER_EXT
    98: 4,  # INTEGER_EXT
    99: 31,  # FLOAT_EXT
    106: 0,  # NIL_EXT
}
# Terms with a length prefix of N bytes followed by that many bytes of data.
_SIZED = {
    100: 2,  # ATOM_EXT
    107: 2,  # STRING_EXT
    109: 4,  # BINARY_EXT
    115: 1,  # SMALL_ATOM_EXT
    118: 2,  # ATOM_UTF8_EXT
    119: 1,  # SMALL_ATOM_UTF8_EXT
}
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")


def check_term(data: bytes, max_depth: int = DEFAULT_MAX_DEPTH, max_items: int | None = None) -> None:
    """Check that ``data`` is one complete ETF term erlpack can safely decode.

    Walks the term without recursion. Raises :class:`LeapProtocolError` for a missing
    version byte, a truncated term, trailing bytes, nesting deeper than ``max_depth``,
    more than ``max_items`` terms (every element, map keys and list tails included, and
    each character of a ``STRING_EXT``, which decodes to a list of ints; counted as
    each container's header announces them, so the walk stops at the limit), or a term
    type outside what JSON-like payloads use (pids, ports, references, funs and
    compressed terms are refused). Every term takes at least one byte, so a term of at
    most ``max_items`` bytes is not counted at all.
    """
    n = len(data)
    if n == 0 or data[0] != VERSION:
        raise LeapProtocolError("ETF payload does not start with version byte 131")
    limit = max_items if max_items is not None and n > max_items else None
    items = 1
    pos = 1
    # Each stack entry is the number of terms still to read at that nesting level.
    stack = [1]
    while stack:
        if stack[-1] == 0:
            stack.pop()
            continue
        stack[-1] -= 1
        if pos >= n:
            raise LeapProtocolError("truncated ETF term")
        tag = data[pos]
        pos += 1
        size = _FIXED.get(tag)
        if size is not None:
            pos += size
        elif tag in _SIZED:
            width = _SIZED[tag]
            if pos + width > n:
                raise LeapProtocolError("truncated ETF term")
            if width == 1:
                length = data[pos]
            elif width == 2:
                length = _U16.unpack_from(data, pos)[0]
            else:
                length = _U32.unpack_from(data, pos)[0]
            pos += width + length
            if tag == 107 and limit is not None:  # STRING_EXT: a list of small ints
                items += length
                if items > limit:
                    raise LeapProtocolError(f"ETF term holds more than {limit} terms (max_message_items)")
        elif tag == 110 or tag == 111:  # SMALL_BIG_EXT, LARGE_BIG_EXT
            width = 1 if tag == 110 else 4
            if pos + width > n:
                raise LeapProtocolError("truncated ETF term")
            length = data[pos] if width == 1 else _U32.unpack_from(data, pos)[0]
            if length > 64:
                raise LeapProtocolError("ETF integer too large")
            pos += width + 1 + length
        elif tag in (104, 105, 108, 116):  # SMALL_TUPLE, LARGE_TUPLE, LIST, MAP
            width = 1 if tag == 104 else 4
            if pos + width > n:
                raise LeapProtocolError("truncated ETF term")
            count = data[pos] if width == 1 else _U32.unpack_from(data, pos)[0]
            pos += width
            if tag == 108:
                count += 1  # the list tail
            elif tag == 116:
                count *= 2
            # Every term takes at least one byte: a count beyond what is left is a lie.
            if count > n - pos:
                raise LeapProtocolError("truncated ETF term")
            # len(stack) - 1 containers are open; this one nests len(stack) deep.
            if len(stack) > max_depth:
                raise LeapProtocolError(f"ETF term nested deeper than {max_depth}")
            if limit is not None:
                items += count
                if items > limit:
                    raise LeapProtocolError(f"ETF term holds more than {limit} terms (max_message_items)")
            stack.append(count)
        else:
            raise LeapProtocolError(f"unsupported ETF term type {tag}")
        if pos > n:
            raise LeapProtocolError("truncated ETF term")
    if pos != n:
        raise LeapProtocolError("trailing bytes after ETF term")


def decoder() -> Callable[[bytes], Any]:
    """An erlpack decoder function that returns binaries as ``str`` (and raises
    ``UnicodeDecodeError`` for one that is not UTF-8: :func:`decode` then falls back to
    :func:`binary_decoder`)."""
    return _require().ErlangTermDecoder(encoding="utf-8").loads  # type: ignore[no-any-return]


def binary_decoder() -> Callable[[bytes], Any]:
    """An erlpack decoder function that returns every binary as ``bytes``."""
    return _require().ErlangTermDecoder(encoding=None).loads  # type: ignore[no-any-return]


def _text_where_possible(value: Any) -> Any:
    """``value`` (a decoded term of at most the checked depth) with every ``bytes`` that
    is valid UTF-8 turned into ``str``, dict keys included."""
    cls = value.__class__
    if cls is bytes:
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value
    if cls is list:
        return [_text_where_possible(item) for item in value]
    if cls is tuple:
        return tuple(_text_where_possible(item) for item in value)
    if cls is dict:
        return {_text_where_possible(k): _text_where_possible(v) for k, v in value.items()}
    return value


def one_pass_many(max_depth: int, max_items: int | None) -> Callable[[Sequence[bytes]], list[Any]] | None:
    """What :func:`decode` tries first (:mod:`.etf_fast`), for a batch: a function of
    the payloads that returns the values of the leading ones it decodes (all of them
    normally); the caller decodes the rest one at a time through :func:`decode`, which
    gives the value or the exact error. ``None`` without erlpack."""
    atom = _atom
    if atom is None:
        return None

    def many(payloads: Sequence[bytes]) -> list[Any]:
        return _fast_decode_many(payloads, max_depth, atom, max_items)

    return many


def decode(
    data: bytes,
    max_depth: int = DEFAULT_MAX_DEPTH,
    _loads: Callable[[bytes], Any] | None = None,
    *,
    max_items: int | None = None,
) -> Any:
    """Decode one ETF term from untrusted ``data``.

    Binaries come back as ``str`` when valid UTF-8, else as ``bytes``. Raises
    :class:`LeapProtocolError` for anything malformed (an atom that is not valid UTF-8
    included) or holding more than ``max_items`` terms (:func:`check_term`, before
    erlpack sees it), and :class:`LeapError` naming the ``etf`` extra when erlpack is
    not installed.
    """
    loads = _loads if _loads is not None else decoder()
    # What servers send, decoded and checked in one pass (etf_fast); anything it does
    # not take itself goes the general way below, which decides values and errors.
    atom = _atom
    if atom is not None:
        try:
            return _fast_decode(data, max_depth, atom, max_items)
        except Exception:  # Unhandled, or a fault to be reported by the general path
            pass
    check_term(data, max_depth, max_items)
    try:
        return loads(data)
    except UnicodeDecodeError:
        pass  # a binary that is not text (rare): decode binaries as bytes, then walk
    except Exception as exc:  # erlpack raises TypeError, ValueError and its own errors
        raise LeapProtocolError(f"invalid ETF payload: {exc}") from None
    try:
        raw = binary_decoder()(data)
    except Exception as exc:  # an atom that is not UTF-8
        raise LeapProtocolError(f"invalid ETF payload: {exc}") from None
    return _text_where_possible(raw)


def encode(obj: Any) -> bytes:
    """Encode ``obj`` as ETF (``str`` and ``bytes`` as binaries, ``None``/``True``/
    ``False`` as atoms).

    Raises :class:`LeapEncodeError` for values ETF cannot carry (ints beyond 64 bits,
    sets, arbitrary objects).
    """
    pack = _require().pack
    try:
        return pack(obj)  # type: ignore[no-any-return]
    except Exception as exc:
        raise LeapEncodeError(f"cannot encode value as ETF: {exc}") from None
