"""``leap-sync listen``: tail a real Leap Edge endpoint (human lines on a terminal, one
JSON object per line when piped)."""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import os
import sys
import threading
from typing import Any

import attrs

from ..errors import LeapAuthorizationError, LeapError
from ..protocol.codec import COMPRESSIONS, ENCODINGS
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


def _read_token(args: argparse.Namespace) -> str | None:
    if args.tokenless:
        return None
    token = os.environ.get(args.token_env)
    if token:
        return token
    if sys.stdin.isatty():
        entered = getpass.getpass(f"Leap token ({args.token_env} is not set; empty for tokenless): ")
        return entered.strip() or None
    return None


def run(args: argparse.Namespace) -> int:
    from .. import FmtLogger, LeapClient

    token = _read_token(args)
    human = sys.stdout.isatty() if args.format == "auto" else args.format == "text"
    emit = Emitter(human)

    try:
        client = LeapClient(
            args.project,
            token,
            FmtLogger(args.log_level) if args.log_level else None,
            url=args.url,
            encoding=args.encoding,
            compression=args.compression,
        )
    except (ValueError, LeapError) as exc:
        print(f"leap-sync listen: {printable(str(exc))}", file=sys.stderr)
        return EXIT_ERROR
    client.add_state_update_listener(emit.state)
    messages = client.message_event_channel()
    events = client.channel_event_channel()

    def print_events() -> None:
        for event in events:
            name = type(event).__name__
            fields = attrs.asdict(event)
            emit("event", f"{name} {_json(fields)}", {"event": name, **fields})

    def show(message: Any) -> None:
        record = {
            "channel": message.channel_id,
            "event": message.event_name,
            "data": message.data,
            "direct": message.is_direct_message,
            "unicast": message.unicast,
        }
        where = message.channel_id if message.channel_id is not None else "(direct)"
        emit("message", f"{where} {message.event_name} {_json(message.data)}", record)

    printer = threading.Thread(target=print_events, name="leap-sync-cli-events", daemon=True)
    try:
        with stopped_at_exit(client, printer):
            try:
                client.connect()
            except LeapError as exc:
                print(f"leap-sync listen: {printable(str(exc))}", file=sys.stderr)
                return EXIT_ERROR
            printer.start()
            try:
                client.wait_connected(timeout=args.timeout)
                for channel in args.channel or ():
                    subscribed = client.subscribe(channel, timeout=args.timeout)
                    emit("subscribe", f"{subscribed.id} ({subscribed.type})", {"channel": subscribed.id})
            except LeapError as exc:
                print(f"leap-sync listen: {printable(str(exc))}", file=sys.stderr)
                return EXIT_FATAL if isinstance(exc, LeapAuthorizationError) else EXIT_ERROR
            return follow("listen", client, messages, emit, show)  # ends when the client stopped
    except KeyboardInterrupt:
        return EXIT_OK
    finally:
        if args.stats:  # on stderr: stdout may be a pipe of JSON lines
            with contextlib.suppress(OSError, ValueError):
                print(f"stats: {json.dumps(client.stats.as_dict())}", file=sys.stderr, flush=True)


def add_parser(commands: Any) -> None:
    """Add the ``listen`` command to the ``leap-sync`` parser."""
    listen = commands.add_parser("listen", help="tail a Leap Edge endpoint")
    listen.add_argument("--project", required=True, help="project id")
    listen.add_argument(
        "--token-env",
        default="LEAP_TOKEN",
        help="environment variable holding the Leap token (default LEAP_TOKEN); "
        "when unset, a terminal is prompted and a pipe connects tokenless",
    )
    listen.add_argument("--tokenless", action="store_true", help="connect without a token")
    listen.add_argument("--url", default="wss://leap.hop.io/ws", help="Leap Edge endpoint")
    listen.add_argument("--channel", action="append", help="subscribe to this channel (repeatable)")
    listen.add_argument("--encoding", choices=ENCODINGS, default="json")
    listen.add_argument("--compression", choices=COMPRESSIONS, default="none")
    listen.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for connect and subscribe")
    listen.add_argument(
        "--stats", action="store_true", help="at exit, print the client's stats as one JSON line on stderr"
    )
    add_output_options(listen)
    listen.set_defaults(func=run)
