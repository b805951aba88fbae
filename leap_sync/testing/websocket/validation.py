"""Checks of the embedded servers' constructor options, run before anything is set up,
so that a value no connection could work with is refused at construction
(``TypeError`` for a wrong type, ``ValueError`` for a value out of range) instead of
failing every connection on a server thread.

Durations are ``int`` or ``float`` seconds, finite, and at most :data:`MAX_SECONDS`
(one day); sizes are ``int`` bytes. ``bool`` is refused where a number is expected.
"""

from __future__ import annotations

import math
import ssl
from typing import Any

__all__ = [
    "MAX_QUEUE_BYTES",
    "MAX_SECONDS",
    "check_count",
    "check_host_port",
    "check_seconds",
    "check_size",
    "check_ssl_context",
    "check_text",
]

MAX_SECONDS = 86_400.0
"""The longest duration any server option takes: one day."""
MAX_QUEUE_BYTES = 1 << 40
"""The largest ``send_queue_limit`` (1 TiB) and ``max_message_size``."""


def check_seconds(name: str, value: Any, *, minimum: float = 0.0, inclusive: bool = False) -> float:
    """``value`` as a float of seconds: a finite ``int``/``float`` above ``minimum``
    (at least ``minimum`` when ``inclusive``), at most :data:`MAX_SECONDS`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    seconds = float(value)
    if math.isnan(seconds) or math.isinf(seconds):
        raise ValueError(f"{name} must be finite, not {value!r}")
    if seconds < minimum or (seconds == minimum and not inclusive):
        raise ValueError(f"{name} must be {'at least' if inclusive else 'above'} {minimum:g} s, not {value!r}")
    if seconds > MAX_SECONDS:
        raise ValueError(f"{name} must be at most {MAX_SECONDS:g} s (a day), not {value!r}")
    return seconds


def check_size(name: str, value: Any, *, minimum: int = 1, maximum: int = MAX_QUEUE_BYTES) -> int:
    """``value`` as an ``int`` of bytes in ``[minimum, maximum]``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int of bytes, not {type(value).__name__}")
    if not minimum <= value <= maximum:
        raise ValueError(f"{name} must be between {minimum} and {maximum} bytes, not {value!r}")
    return int(value)


def check_count(name: str, value: Any, *, maximum: int = 10_000_000) -> int:
    """``value`` as an ``int`` in ``[0, maximum]`` (a count of things kept)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not 0 <= value <= maximum:
        raise ValueError(f"{name} must be between 0 and {maximum}, not {value!r}")
    return int(value)


def check_host_port(host: Any, port: Any) -> None:
    """``host`` a ``str``, ``port`` an ``int`` in ``[0, 65535]`` (0: a free one)."""
    if not isinstance(host, str):
        raise TypeError(f"host must be a str, not {type(host).__name__}")
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"port must be an int, not {type(port).__name__}")
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be between 0 and 65535, not {port!r}")


def check_ssl_context(value: Any) -> None:
    """``None`` or an :class:`ssl.SSLContext`."""
    if value is not None and not isinstance(value, ssl.SSLContext):
        raise TypeError(f"ssl_context must be an ssl.SSLContext or None, not {type(value).__name__}")


def check_text(name: str, value: Any) -> str:
    """``value``, a non-empty ``str`` that UTF-8 can encode (no lone surrogates)."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {type(value).__name__}")
    if not value:
        raise ValueError(f"{name} must not be empty")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{name} must be text UTF-8 can encode (no lone surrogates)") from None
    return value
