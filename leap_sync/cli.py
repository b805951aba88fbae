"""The ``leap-sync`` command line: ``demo``, ``listen``, ``serve``.

``leap-sync serve`` runs the embedded Leap Edge server standalone and prints, before
serving, ``leap edge: ws://HOST:PORT/ws`` and ``control: http://HOST:PORT2`` on their
own lines; Ctrl-C stops it (exit 0).
"""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Sequence
from typing import Optional

__all__ = ["main"]


def _serve(args: argparse.Namespace) -> int:
    try:
        from .testing import ControlServer, LeapEdgeServer
    except ImportError as exc:
        print(f"leap-sync serve: {exc}", file=sys.stderr)
        return 2
    server = LeapEdgeServer(
        args.host,
        args.port,
        heartbeat_interval=args.heartbeat_interval,
        identify_timeout=args.identify_timeout,
        project_id=args.project,
    )
    if args.token:
        server.add_token(args.token, project_id=args.project)
    for channel in args.channel or ():
        server.create_channel(channel, project_id=args.project)
    stop = threading.Event()
    with server:
        with ControlServer(server, args.host, args.control_port) as control:
            print(f"leap edge: {server.url}", flush=True)
            print(f"control: {control.url}", flush=True)
            try:
                stop.wait()
            except KeyboardInterrupt:
                pass
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="leap-sync",
        description="Synchronous Leap Edge client: demo, listen, and an embedded test server.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    serve = commands.add_parser("serve", help="run the embedded Leap Edge server until Ctrl-C")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=0, help="websocket port (default: a free one)")
    serve.add_argument("--control-port", type=int, default=0, help="HTTP control port (default: a free one)")
    serve.add_argument(
        "--heartbeat-interval", type=float, default=30.0, help="seconds between client heartbeats (default 30)"
    )
    serve.add_argument("--identify-timeout", type=float, default=10.0, help="seconds to wait for Identify (10)")
    serve.add_argument("--project", default="project_x", help="project id (default project_x)")
    serve.add_argument("--token", help="register this Leap token, granted every channel of the project")
    serve.add_argument("--channel", action="append", help="create this private channel at start (repeatable)")
    serve.set_defaults(func=_serve)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    status: int = args.func(args)
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
