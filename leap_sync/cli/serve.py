"""``leap-sync serve``: the embedded Leap Edge server, standalone, with its HTTP
control endpoint. Before serving it prints ``leap edge: ws://HOST:PORT/ws`` and
``control: http://HOST:PORT2`` on their own lines; Ctrl-C or SIGTERM stops it (every
client gets a close frame, 1001; exit 0)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..errors import LeapError
from .common import EXIT_CODES, EXIT_OK, EXIT_USAGE, missing_extra, printable, stop_of
from .stopping import discard_output

__all__ = ["add_parser", "run"]

DESCRIPTION = """Run the embedded Leap Edge server, standalone, with its HTTP control
endpoint (needs the 'server' extra). It prints "leap edge: ws://HOST:PORT/ws" and
"control: http://HOST:PORT2" on their own lines, then serves until Ctrl-C or SIGTERM,
which close every connection with a close frame (1001)."""


def run(args: argparse.Namespace) -> int:
    try:
        from ..testing import ControlServer, LeapEdgeServer
    except ImportError as exc:
        return missing_extra("serve", "server", exc)
    try:
        server = LeapEdgeServer(
            args.host,
            args.port,
            heartbeat_interval=args.heartbeat_interval,
            identify_timeout=args.identify_timeout,
            heartbeat_ack_delay=args.heartbeat_ack_delay,
            project_id=args.project,
        )
        if args.token:
            server.add_token(args.token, project_id=args.project)
        for channel in args.channel or ():
            server.create_channel(channel, project_id=args.project)
    except (TypeError, ValueError, LeapError) as exc:  # an option out of range, a bad channel name
        print(f"leap-sync serve: {printable(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    stop = stop_of(args)
    # From here on a signal is a stop request, never an exception inside a server's
    # start: the wait below returns and the with-blocks close both servers. The
    # server outlives its output: a pipe closed after the two lines changes nothing.
    stop.keep_running_without_output()
    stop.on_stop(lambda: None)
    try:
        with server, ControlServer(server, args.host, args.control_port) as control:
            try:
                print(f"leap edge: {server.url}", flush=True)
                print(f"control: {control.url}", flush=True)
            except (OSError, ValueError):  # nobody reads the lines (EPIPE): nothing to serve
                discard_output()
                return EXIT_OK
            stop.wait()
    except KeyboardInterrupt:
        pass  # a signal before the stop request was armed: the with-blocks closed both servers
    except OSError as exc:  # the address does not resolve or cannot be bound
        print(f"leap-sync serve: cannot listen on {args.host}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


def add_parser(commands: Any) -> None:
    """Add the ``serve`` command to the ``leap-sync`` parser."""
    serve = commands.add_parser(
        "serve",
        help="run the embedded Leap Edge server (and its HTTP control endpoint) until Ctrl-C or SIGTERM",
        description=DESCRIPTION,
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind, IPv4 or IPv6 (default 127.0.0.1; ::1 for IPv6 loopback, :: for dual-stack)",
    )
    serve.add_argument("--port", type=int, default=0, help="websocket port (default: a free one)")
    serve.add_argument("--control-port", type=int, default=0, help="HTTP control port (default: a free one)")
    serve.add_argument(
        "--heartbeat-interval", type=float, default=30.0, help="seconds between client heartbeats (default 30)"
    )
    serve.add_argument("--identify-timeout", type=float, default=10.0, help="seconds to wait for Identify (10)")
    serve.add_argument(
        "--heartbeat-ack-delay",
        type=float,
        default=0.005,
        help="seconds each heartbeat ack is held back, like a network round trip (default 0.005: "
        "the official JS client takes an ack within the millisecond of its beat for a missing one)",
    )
    serve.add_argument("--project", default="project_x", help="project id (default project_x)")
    serve.add_argument("--token", help="register this Leap token, granted every channel of the project")
    serve.add_argument("--channel", action="append", help="create this private channel at start (repeatable)")
    serve.set_defaults(func=run)
