"""What every ``leap-sync`` command shares: exit statuses and output helpers."""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any

__all__ = ["EXIT_ERROR", "EXIT_FATAL", "EXIT_OK", "Emitter", "add_output_options", "to_json"]

EXIT_OK = 0
EXIT_ERROR = 2
EXIT_FATAL = 3


def to_json(value: Any) -> str:
    """Compact JSON; values JSON has no type for are shown as ``str()``."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


def add_output_options(parser: Any) -> None:
    """``--format`` (text on a terminal, else JSON lines) and ``--log-level``."""
    parser.add_argument(
        "--format", choices=("auto", "text", "json"), default="auto", help="auto: text on a terminal, else JSON"
    )
    parser.add_argument(
        "--log-level", choices=("debug", "info", "warn", "error"), help="log the connection's story to stderr"
    )


class Emitter:
    """Prints records: ``HH:MM:SS kind text`` lines when ``human``, else one JSON
    object per line (``{"type": kind, ...record}``); one line at a time."""

    def __init__(self, human: bool) -> None:
        self.human = human
        self._lock = threading.Lock()

    def __call__(self, kind: str, human_text: str, record: dict[str, Any]) -> None:
        with self._lock:
            if self.human:
                sys.stdout.write(f"{time.strftime('%H:%M:%S')} {kind:<8} {human_text}\n")
            else:
                sys.stdout.write(to_json({"type": kind, **record}) + "\n")
            sys.stdout.flush()

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
