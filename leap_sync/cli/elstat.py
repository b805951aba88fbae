"""``leap-sync elstat``: tail an Elstat status page's Streaming API.

Human lines on a terminal (``status:api up``, ``latency:api 42 ms``, incidents), one
JSON object per line when piped: ``{"type": "data", "channel", "timestamp",
"timestamp_ms", "value"}``, ``{"type": "incident", "kind", "incident"}`` and
``{"type": "state", ...}``, data and incidents in the order they arrived. Ctrl-C and
SIGTERM exit 0; Elstat closing with 4200 or 4420 exits 3.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..elstat.protocol import CloseCode, DataEvent
from ..errors import LeapError
from .common import (
    EXIT_CODES,
    EXIT_CONNECT,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_USAGE,
    Emitter,
    add_output_options,
    catch_up,
    follow,
    printable,
    seconds,
    stop_of,
    stopped_at_exit,
)
from .common import to_json as _json

__all__ = ["add_parser", "run"]

FATAL_CODES = (CloseCode.INVALID_PAYLOAD, CloseCode.TOO_MUCH)
DESCRIPTION = """Connect to an Elstat status page's Streaming API, subscribe to
<type>:<name> channels (status:api, latency:api), and print what arrives until Ctrl-C
or SIGTERM: state changes, data and incidents, in the order they arrived. On a
terminal, one human line each; piped, one JSON object per line
({"type": "state"|"subscribe"|"data"|"incident", ...})."""


def _shown(kind: str, value: Any) -> str:
    if kind == "status" and isinstance(value, bool):
        return "up" if value else "down"
    if kind == "latency" and isinstance(value, int):
        return f"{value} ms"
    return _json(value)


def run(args: argparse.Namespace) -> int:
    from .. import FmtLogger
    from ..elstat import ElstatClient

    stop = stop_of(args)
    emit = Emitter(sys.stdout.isatty() if args.format == "auto" else args.format == "text", on_gone=stop.request)

    try:
        client = ElstatClient(args.url, FmtLogger(args.log_level) if args.log_level else None)
    except (ValueError, TypeError, LeapError) as exc:
        print(f"leap-sync elstat: {printable(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    arrivals = client._arrivals_channel()

    def show(event: Any) -> None:
        if isinstance(event, DataEvent):
            record = {
                "channel": event.channel,
                "timestamp": event.timestamp.isoformat(),
                "timestamp_ms": event.timestamp_ms,
                "value": event.value,
            }
            when = event.timestamp.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
            emit("data", f"{event.channel} {_shown(event.kind, event.value)} at {when}", record)
            return
        incident = event.incident
        text = f"{event.kind} #{incident.id} {incident.title or ''}".rstrip()
        emit("incident", text, {"kind": event.kind, "incident": incident.raw})

    def failed(exc: Exception, status: int) -> int:
        if stop.requested:  # the failure is the stop's close: quiet, exit 0
            return EXIT_OK
        print(f"leap-sync elstat: {printable(str(exc))}", file=sys.stderr)
        return status

    try:
        with stopped_at_exit(client, stop, "elstat", arrivals, emit, show):
            try:
                client.connect()
            except LeapError as exc:
                return failed(exc, EXIT_CONNECT)
            try:
                if args.channel:
                    confirmed = client.subscribe(args.channel, timeout=args.timeout)
                    missing = [c for c in args.channel if c not in confirmed]
                    catch_up("elstat", arrivals, emit, show)  # what happened before it returned
                    emit("subscribe", ", ".join(confirmed) or "(nothing)", {"channels": confirmed, "refused": missing})
            except (ValueError, TypeError) as exc:  # a channel name too long for a payload
                return failed(exc, EXIT_USAGE)
            except LeapError as exc:
                # Elstat refusing the SUBSCRIBE itself (4200/4420) is as fatal as later
                return failed(exc, EXIT_REFUSED if getattr(exc, "close_code", None) in FATAL_CODES else EXIT_CONNECT)
            return follow("elstat", client, arrivals, emit, show, stop)
    except KeyboardInterrupt:  # a signal before the client was registered to be closed
        return EXIT_OK


def add_parser(commands: Any) -> None:
    """Add the ``elstat`` command to the ``leap-sync`` parser."""
    elstat = commands.add_parser(
        "elstat",
        help="tail an Elstat status page's Streaming API: data and incidents as they arrive",
        description=DESCRIPTION,
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    elstat.add_argument("--url", required=True, help="the status page (http(s)://...) or its streaming endpoint")
    elstat.add_argument("--channel", action="append", help="subscribe to this <type>:<name> channel (repeatable)")
    elstat.add_argument(
        "--timeout", type=seconds, default=30.0, help="seconds to wait for the subscription (default 30)"
    )
    add_output_options(elstat)
    elstat.set_defaults(func=run)
