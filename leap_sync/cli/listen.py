"""``leap-sync listen``: tail a real Leap Edge endpoint (human lines on a terminal, one
JSON object per line when piped), messages and channel events in the order they
arrived."""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import os
import sys
from typing import Any

import attrs

from ..errors import ChannelUnavailableError, LeapAuthorizationError, LeapError
from ..protocol.codec import COMPRESSIONS, ENCODINGS
from ..protocol.models import MessageEvent
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

__all__ = ["add_parser", "fields", "run"]

DESCRIPTION = """Connect to a Leap Edge endpoint, subscribe to channels, and print what
arrives until Ctrl-C or SIGTERM: state changes, messages (channel and direct) and
channel events, in the order they arrived. On a terminal, one human line each;
piped, one JSON object per line ({"type": "state"|"subscribe"|"message"|"event", ...}).
The token is read from an environment variable, never from the command line."""


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


def fields(value: Any) -> Any:
    """An event's fields as plain data, for JSON: attrs instances (bounded depth: the
    models') become dicts; what they hold (a server's JSON, any depth) is left as it
    is, never walked here, so no depth a server sends can exhaust the stack."""
    if attrs.has(type(value)):
        return {field.name: fields(getattr(value, field.name)) for field in attrs.fields(type(value))}
    if isinstance(value, tuple) and any(attrs.has(type(item)) for item in value):
        return [fields(item) for item in value]
    return value


def run(args: argparse.Namespace) -> int:
    from .. import FmtLogger, LeapClient

    stop = stop_of(args)
    token = _read_token(args)
    human = sys.stdout.isatty() if args.format == "auto" else args.format == "text"
    emit = Emitter(human, on_gone=stop.request)

    try:
        client = LeapClient(
            args.project,
            token,
            FmtLogger(args.log_level) if args.log_level else None,
            url=args.url,
            encoding=args.encoding,
            compression=args.compression,
        )
    except (ValueError, TypeError, LeapError) as exc:  # a bad option; the etf extra missing
        print(f"leap-sync listen: {printable(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    arrivals = client._arrivals_channel()

    def show(event: Any) -> None:
        if isinstance(event, MessageEvent):
            record = {
                "channel": event.channel_id,
                "event": event.event_name,
                "data": event.data,
                "direct": event.is_direct_message,
                "unicast": event.unicast,
            }
            where = event.channel_id if event.channel_id is not None else "(direct)"
            emit("message", f"{where} {event.event_name} {_json(event.data)}", record)
            return
        name = type(event).__name__
        shown = fields(event)
        emit("event", f"{name} {_json(shown)}", {"event": name, **shown})

    def failed(exc: Exception, status: int) -> int:
        if stop.requested:  # the failure is the stop's close: quiet, exit 0
            return EXIT_OK
        print(f"leap-sync listen: {printable(str(exc))}", file=sys.stderr)
        return status

    try:
        with stopped_at_exit(client, stop, "listen", arrivals, emit, show):
            try:
                client.connect()
            except LeapError as exc:
                return failed(exc, EXIT_REFUSED if isinstance(exc, LeapAuthorizationError) else EXIT_CONNECT)
            try:
                client.wait_connected(timeout=args.timeout)
                for channel in args.channel or ():
                    subscribed = client.subscribe(channel, timeout=args.timeout)
                    catch_up("listen", arrivals, emit, show)  # what happened before it returned
                    emit("subscribe", f"{subscribed.id} ({subscribed.type})", {"channel": subscribed.id})
            except (ValueError, TypeError) as exc:  # a channel name the protocol cannot carry
                return failed(exc, EXIT_USAGE)
            except LeapError as exc:
                refused = isinstance(exc, (LeapAuthorizationError, ChannelUnavailableError))
                return failed(exc, EXIT_REFUSED if refused else EXIT_CONNECT)
            return follow("listen", client, arrivals, emit, show, stop)  # ends when the client stopped
    except KeyboardInterrupt:  # a signal before the client was registered to be closed
        return EXIT_OK
    finally:
        if args.stats:  # on stderr: stdout may be a pipe of JSON lines
            with contextlib.suppress(OSError, ValueError):
                print(f"stats: {json.dumps(client.stats.as_dict())}", file=sys.stderr, flush=True)


def add_parser(commands: Any) -> None:
    """Add the ``listen`` command to the ``leap-sync`` parser."""
    listen = commands.add_parser(
        "listen",
        help="tail a Leap Edge endpoint: messages and channel events as they arrive",
        description=DESCRIPTION,
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
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
    listen.add_argument("--encoding", choices=ENCODINGS, default="json", help="etf needs the 'etf' extra")
    listen.add_argument("--compression", choices=COMPRESSIONS, default="none")
    listen.add_argument(
        "--timeout", type=seconds, default=30.0, help="seconds to wait for connect and subscribe (default 30)"
    )
    listen.add_argument(
        "--stats", action="store_true", help="at exit, print the client's stats as one JSON line on stderr"
    )
    add_output_options(listen)
    listen.set_defaults(func=run)
