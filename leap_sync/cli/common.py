"""What every ``leap-sync`` command shares: exit statuses and output helpers."""

from __future__ import annotations

import contextlib
import json
import math
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ..log import printable

__all__ = [
    "EXIT_ERROR",
    "EXIT_FATAL",
    "EXIT_OK",
    "Emitter",
    "add_output_options",
    "follow",
    "printable",
    "stopped_at_exit",
    "to_json",
]

EXIT_OK = 0
EXIT_ERROR = 2
EXIT_FATAL = 3


def to_json(value: Any) -> str:
    """Compact JSON, always valid: values JSON has no type for are shown as ``str()``
    (map keys too: ETF maps may have any term as a key), non-finite numbers (NaN,
    infinities: JSON has none) as ``null``, and a lone surrogate as its ``\\uXXXX``
    escape."""
    try:
        text = _dumps(value)
    except RecursionError:
        text = _dumps(str(value))
    except (ValueError, TypeError):  # NaN or an infinity; a key JSON cannot hold (ETF)
        try:
            text = _dumps(_plain(value))
        except RecursionError:
            text = _dumps(str(value))
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=str)


def _plain(value: Any) -> Any:
    """``value`` with what JSON cannot hold replaced: non-finite numbers by ``None``,
    map keys that are not text, numbers, booleans or ``None`` by their ``str()``."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {
            (key if isinstance(key, (str, int, float, bool)) or key is None else str(key)): _plain(item)
            for key, item in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


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


def follow(command: str, client: Any, events: Iterable[Any], emit: Emitter, show: Callable[[Any], None]) -> int:
    """Show each of ``events`` until the channel ends, which means the client stopped
    for good (its error on stderr, :data:`EXIT_FATAL`), or until nobody reads the
    output any more (:data:`EXIT_OK`)."""
    for event in events:
        if emit.closed:
            return EXIT_OK
        show(event)
    print(f"leap-sync {command}: stopped: {printable(str(client.state.error))}", file=sys.stderr)
    return EXIT_FATAL


@contextlib.contextmanager
def stopped_at_exit(client: Any, printer: threading.Thread) -> Iterator[None]:
    """However the command ends: close ``client``, then wait a little for ``printer``
    (the thread printing the second channel) if it was started."""
    try:
        yield
    finally:
        client.close()
        if printer.is_alive():
            printer.join(5)
