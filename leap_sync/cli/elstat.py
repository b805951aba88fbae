"""``leap-sync elstat``: tail an Elstat status page's Streaming API.

Human lines on a terminal (``status:api up``, ``latency:api 42 ms``, incidents), one
JSON object per line when piped: ``{"type": "data", "channel", "timestamp",
"timestamp_ms", "value"}``, ``{"type": "incident", "kind", "incident"}`` and
``{"type": "state", ...}``. Ctrl-C exits 0; Elstat closing with 4200 or 4420 exits 3.
"""

from __future__ import annotations

import argparse
import sys
import threading
from typing import Any

from ..elstat.protocol import CloseCode
from ..errors import LeapError
from .common import (
    EXIT_ERROR,
    EXIT_FATAL,
    EXIT_OK,
    Emitter,
    add_output_options,
    follow,
    printable,
    stopped_at_exit,
)
from .common import to_json as _json

__all__ = ["add_parser", "run"]

FATAL_CODES = (CloseCode.INVALID_PAYLOAD, CloseCode.TOO_MUCH)


def _shown(kind: str, value: Any) -> str:
    if kind == "status" and isinstance(value, bool):
        return "up" if value else "down"
    if kind == "latency" and isinstance(value, int):
        return f"{value} ms"
    return _json(value)


def run(args: argparse.Namespace) -> int:
    from .. import FmtLogger
    from ..elstat import ElstatClient

    emit = Emitter(sys.stdout.isatty() if args.format == "auto" else args.format == "text")

    try:
        client = ElstatClient(args.url, FmtLogger(args.log_level) if args.log_level else None)
    except (ValueError, LeapError) as exc:
        print(f"leap-sync elstat: {printable(str(exc))}", file=sys.stderr)
        return EXIT_ERROR
    client.add_state_update_listener(emit.state)
    data = client.data_channel()
    incidents = client.incident_channel()

    def print_incidents() -> None:
        for event in incidents:
            incident = event.incident
            text = f"{event.kind} #{incident.id} {incident.title or ''}".rstrip()
            emit("incident", text, {"kind": event.kind, "incident": incident.raw})

    def show(event: Any) -> None:
        record = {
            "channel": event.channel,
            "timestamp": event.timestamp.isoformat(),
            "timestamp_ms": event.timestamp_ms,
            "value": event.value,
        }
        when = event.timestamp.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        emit("data", f"{event.channel} {_shown(event.kind, event.value)} at {when}", record)

    printer = threading.Thread(target=print_incidents, name="leap-sync-cli-incidents", daemon=True)
    try:
        with stopped_at_exit(client, printer):
            try:
                client.connect()
                printer.start()
                if args.channel:
                    confirmed = client.subscribe(args.channel, timeout=args.timeout)
                    missing = [c for c in args.channel if c not in confirmed]
                    emit("subscribe", ", ".join(confirmed) or "(nothing)", {"channels": confirmed, "refused": missing})
            except (ValueError, LeapError) as exc:
                print(f"leap-sync elstat: {printable(str(exc))}", file=sys.stderr)
                # Elstat refusing the SUBSCRIBE itself (4200/4420) is as fatal as later
                return EXIT_FATAL if getattr(exc, "close_code", None) in FATAL_CODES else EXIT_ERROR
            return follow("elstat", client, data, emit, show)
    except KeyboardInterrupt:
        return EXIT_OK


def add_parser(commands: Any) -> None:
    """Add the ``elstat`` command to the ``leap-sync`` parser."""
    elstat = commands.add_parser("elstat", help="tail an Elstat status page's Streaming API")
    elstat.add_argument("--url", required=True, help="the status page (http(s)://...) or its streaming endpoint")
    elstat.add_argument("--channel", action="append", help="subscribe to this <type>:<name> channel (repeatable)")
    elstat.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the subscription")
    add_output_options(elstat)
    elstat.set_defaults(func=run)
