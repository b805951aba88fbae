"""What every ``leap-sync`` command shares: exit statuses and output helpers."""

from __future__ import annotations

import json
import math
import sys
import threading
import time
from typing import Any

__all__ = ["EXIT_ERROR", "EXIT_FATAL", "EXIT_OK", "Emitter", "add_output_options", "printable", "to_json"]

EXIT_OK = 0
EXIT_ERROR = 2
EXIT_FATAL = 3


def to_json(value: Any) -> str:
    """Compact JSON, always valid: values JSON has no type for are shown as ``str()``,
    non-finite numbers (NaN, infinities: JSON has none) as ``null``, and a lone
    surrogate as its ``\\uXXXX`` escape."""
    try:
        text = _dumps(value)
    except ValueError:  # NaN or an infinity somewhere in it
        text = _dumps(_finite(value))
    except RecursionError:
        text = _dumps(str(value))
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=str)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


_CONTROLS = {code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7F, 0xA0))}


def printable(text: str) -> str:
    """``text`` safe for a terminal and any output encoding: control characters
    (escape sequences a server may send) and lone surrogates become backslash escapes."""
    text = text.translate(_CONTROLS)
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def add_output_options(parser: Any) -> None:
    """``--format`` (text on a terminal, else JSON lines) and ``--log-level``."""
    parser.add_argument(
        "--format", choices=("auto", "text", "json"), default="auto", help="auto: text on a terminal, else JSON"
    )
    parser.add_argument(
        "--log-level", choices=("debug", "info", "warn", "error"), help="log the connection's story to stderr"
    )


class Emitter:
    """Prints records: ``HH:MM:SS kind text`` lines when ``human`` (the text made
    :func:`printable`), else one JSON object per line (``{"type": kind, ...record}``);
    one line at a time, from any thread. Never raises: once the output is gone (a
    closed pipe), :attr:`closed` is set and later records are dropped."""

    def __init__(self, human: bool) -> None:
        self.human = human
        self.closed = False
        self._lock = threading.Lock()

    def __call__(self, kind: str, human_text: str, record: dict[str, Any]) -> None:
        line = (
            f"{time.strftime('%H:%M:%S')} {kind:<8} {printable(human_text)}\n"
            if self.human
            else to_json({"type": kind, **record}) + "\n"
        )
        with self._lock:
            if self.closed:
                return
            try:
                sys.stdout.write(line)
                sys.stdout.flush()
            except (OSError, ValueError):  # the reader went away (EPIPE) or stdout was closed
                self.closed = True

    def state(self, info: Any) -> None:
        """A state listener that prints each transition (and its error)."""
        state = info.connection_state.value
        record: dict[str, Any] = {"state": state}
        text = state
        if info.error is not None:
            record["error"] = str(info.error)
            record["will_reconnect"] = info.will_reconnect
            text += f" ({info.error}; will_reconnect={info.will_reconnect})"
        self("state", text, record)
