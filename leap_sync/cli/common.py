"""What every ``leap-sync`` command shares: exit statuses, argument types, signals
and output helpers.

The output is hostile input twice over: what a server sends (any text, any depth)
and the console it goes to (an encoding that cannot show every character, a pipe
that closes). Nothing either does stops the output or the command: a character the
console cannot encode is written as a backslash escape, a value too deep to show as
JSON is shown as a placeholder, and an event that cannot be printed at all is
reported on stderr and skipped.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ..channels import EventChannel
from ..errors import ChannelClosed
from ..log import printable
from ..state import ConnectionState, StateInfo
from .stopping import Stop, discard_output

__all__ = [
    "EXIT_CODES",
    "EXIT_CONNECT",
    "EXIT_ERROR",
    "EXIT_FATAL",
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_USAGE",
    "Emitter",
    "add_output_options",
    "catch_up",
    "exit_status",
    "follow",
    "missing_extra",
    "printable",
    "seconds",
    "stop_of",
    "stopped_at_exit",
    "to_json",
    "tolerant_console",
]

EXIT_OK = 0
"""Done: Ctrl-C, SIGTERM, or the reader of the output went away."""
EXIT_USAGE = 2
"""A usage error: bad arguments or options, or a missing extra (argparse's 2)."""
EXIT_REFUSED = 3
"""The server refused: credentials (Leap's 4001), a channel (NOT_GRANTED), or what
the client sent (Elstat's 4200/4420)."""
EXIT_CONNECT = 4
"""Could not connect, or the connection failed for good (unreachable, timed out)."""
EXIT_ERROR = EXIT_USAGE  # the names of earlier releases
EXIT_FATAL = EXIT_REFUSED

EXIT_CODES = f"""exit status:
  {EXIT_OK}  done (Ctrl-C, SIGTERM, or the output's reader went away)
  {EXIT_USAGE}  usage error (bad arguments, or a missing extra to install)
  {EXIT_REFUSED}  refused by the server (credentials, a channel, what was sent)
  {EXIT_CONNECT}  could not connect, or the connection failed for good"""

PLACEHOLDER = "<nested too deep to show>"


def seconds(text: str) -> float:
    """An argparse type: a finite, positive number of seconds (``nan``, ``inf``,
    ``0`` and negative values are usage errors)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"seconds must be a finite number above 0, not {text!r}")
    return value


def missing_extra(command: str, extra: str, exc: ImportError) -> int:
    """Say (one line on stderr) which extra to install; returns :data:`EXIT_USAGE`."""
    what = f" ({exc.name} is missing)" if exc.name else ""
    print(
        f"leap-sync {command}: needs the {extra!r} extra{what}: pip install 'leap-sync[{extra}]'",
        file=sys.stderr,
    )
    return EXIT_USAGE


def tolerant_console() -> None:
    """Make stdout and stderr write what their encoding cannot show as backslash
    escapes (a cp1252 console shows ``\u2603`` for a snowman) instead of raising."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            with contextlib.suppress(ValueError, OSError):
                stream.reconfigure(errors="backslashreplace")


def to_json(value: Any, ascii_only: bool = False) -> str:
    """Compact JSON, always valid: values JSON has no type for are shown as ``str()``
    (map keys too: ETF maps may have any term as a key), non-finite numbers (NaN,
    infinities: JSON has none) as ``null``, a lone surrogate as its ``\\uXXXX``
    escape, and a value nested too deep for the encoder as the string
    ``"<nested too deep to show>"``. ``ascii_only``: every other character as a
    JSON escape too (for a console that cannot encode them all)."""
    try:
        text = _dumps(value, ascii_only)
    except RecursionError:
        text = _dumps(PLACEHOLDER, ascii_only)
    except (ValueError, TypeError):  # NaN or an infinity; a key JSON cannot hold (ETF)
        try:
            text = _dumps(_plain(value), ascii_only)
        except RecursionError:
            text = _dumps(PLACEHOLDER, ascii_only)
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _dumps(value: Any, ascii_only: bool = False) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=ascii_only, allow_nan=False, default=str)


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
    :func:`printable`; what the console cannot encode as backslash escapes), else one
    JSON object per line (``{"type": kind, ...record}``; ASCII with JSON escapes
    unless stdout is UTF-8);
    one line at a time, from any thread. Never raises: once the output is gone (a
    closed pipe), :attr:`closed` is set, stdout is pointed at the null device, later
    records are dropped and ``on_gone`` is called (once, outside the printer's lock:
    it may close the client)."""

    def __init__(self, human: bool, on_gone: Callable[[], object] | None = None) -> None:
        self.human = human
        self._on_gone = on_gone
        encoding = (getattr(sys.stdout, "encoding", None) or "").lower().replace("_", "-")
        # JSON lines stay valid JSON on a console that cannot encode every character
        self._ascii = encoding not in ("utf-8", "utf8")
        self.closed = False
        self.last_state: ConnectionState | None = None  # of the last state line
        self._lock = threading.Lock()

    def __call__(self, kind: str, human_text: str, record: dict[str, Any]) -> None:
        line = (
            f"{time.strftime('%H:%M:%S')} {kind:<8} {printable(human_text)}\n"
            if self.human
            else to_json({"type": kind, **record}, self._ascii) + "\n"
        )
        with self._lock:
            if self.closed:
                return
            try:
                try:
                    sys.stdout.write(line)
                except UnicodeEncodeError:  # a console that cannot show it, not reconfigured
                    encoding = getattr(sys.stdout, "encoding", None) or "ascii"
                    sys.stdout.write(line.encode(encoding, "backslashreplace").decode(encoding, "replace"))
                sys.stdout.flush()
                return
            except (OSError, ValueError):  # the reader went away (EPIPE) or stdout was closed
                self.closed = True
                discard_output()
        if self._on_gone is not None:
            self._on_gone()

    def state(self, info: StateInfo) -> None:
        """Print a state transition (and its error)."""
        self.last_state = info.connection_state
        state = info.connection_state.value
        record: dict[str, Any] = {"state": state}
        text = state
        if info.error is not None:
            record["error"] = str(info.error)
            record["will_reconnect"] = info.will_reconnect
            text += f" ({info.error}; will_reconnect={info.will_reconnect})"
        self("state", text, record)


def stop_of(args: argparse.Namespace) -> Stop:
    """The command's :class:`~leap_sync.cli.stopping.Stop` (``main()`` gives one; a
    command run on its own gets a new one, which no signal reaches)."""
    stop = getattr(args, "stop", None)
    return stop if isinstance(stop, Stop) else Stop()


def follow(
    command: str, client: Any, events: Iterable[Any], emit: Emitter, show: Callable[[Any], None], stop: Stop
) -> int:
    """Show each of ``events`` (the client's arrivals channel: its events of every
    kind and its state transitions, :class:`StateInfo`, in the order they happened)
    until the channel ends, which means the client stopped for good (its error on
    stderr, then :func:`exit_status` of it) or was closed by ``stop``
    (:data:`EXIT_OK`; :func:`stopped_at_exit` prints the rest), or until nobody
    reads the output any more (:data:`EXIT_OK`). An event ``show`` cannot print is
    reported on stderr and skipped: the next ones are still shown."""
    for event in events:
        if emit.closed or stop.requested:
            return EXIT_OK
        _show(command, event, emit, show)
    if emit.closed or stop.requested:
        return EXIT_OK
    error = client.state.error
    print(f"leap-sync {command}: stopped: {printable(str(error))}", file=sys.stderr)
    return exit_status(error)


def catch_up(command: str, events: EventChannel[Any], emit: Emitter, show: Callable[[Any], None]) -> None:
    """Show what ``events`` (as :func:`follow`'s) holds now, without waiting: what
    happened before a line the command prints itself (a subscription), or before it
    stops."""
    while not emit.closed:
        try:
            event = events.get_nowait()
        except (queue.Empty, ChannelClosed):
            return
        _show(command, event, emit, show)


def _show(command: str, event: Any, emit: Emitter, show: Callable[[Any], None]) -> None:
    """A state transition as a state line, any other event with ``show``; an event
    that cannot be printed is reported on stderr and skipped."""
    try:
        if isinstance(event, StateInfo):
            emit.state(event)
        else:
            show(event)
    except Exception as exc:
        message = f"leap-sync {command}: cannot print a {type(event).__name__}: {type(exc).__name__}"
        with contextlib.suppress(OSError, ValueError):
            print(message, file=sys.stderr)


def exit_status(error: BaseException | None) -> int:
    """:data:`EXIT_CONNECT` for a connection that failed without the server's word
    (no close code: unreachable, timed out, cut), :data:`EXIT_REFUSED` otherwise."""
    if getattr(error, "close_code", None) is None and not _refusal(error):
        return EXIT_CONNECT
    return EXIT_REFUSED


def _refusal(error: BaseException | None) -> bool:
    from ..errors import ChannelUnavailableError, LeapAuthorizationError

    return isinstance(error, (ChannelUnavailableError, LeapAuthorizationError))


@contextlib.contextmanager
def stopped_at_exit(
    client: Any,
    stop: Stop,
    command: str,
    events: EventChannel[Any],
    emit: Emitter,
    show: Callable[[Any], None],
) -> Iterator[None]:
    """However the command ends: close ``client``, which sends a close frame if it is
    connected, then show what ``events`` (as :func:`follow`'s) still holds and, last,
    the ``CLOSED`` state line (unless the channel's last transition was it). From
    the block's start, a stop request (a signal, the output gone) closes it from the
    ``leap-sync-cli-stop`` thread, which ends what the block waits for."""
    stop.on_stop(client.close)
    try:
        yield
    finally:
        client.close()
        catch_up(command, events, emit, show)
        state = client.state
        if emit.last_state is not state.connection_state:
            emit.state(state)
