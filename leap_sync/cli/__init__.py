"""The ``leap-sync`` command line (also ``python -m leap_sync``).

- ``leap-sync demo``: the whole loop on the embedded server, printed step by step.
- ``leap-sync listen``: tail a real Leap Edge endpoint (human lines on a terminal, one
  JSON object per line when piped).
- ``leap-sync serve``: the embedded Leap Edge server, standalone, with an HTTP control
  endpoint. Before serving it prints ``leap edge: ws://HOST:PORT/ws`` and
  ``control: http://HOST:PORT2`` on their own lines; Ctrl-C or SIGTERM stops it (exit 0).
- ``leap-sync elstat``: tail an Elstat status page's Streaming API.

Exit status (``--help`` shows it too): 0 done (Ctrl-C, SIGTERM, or the output's
reader went away), 2 usage error (bad arguments, or a missing extra: a one-line
message names what to install), 3 refused by the server (Leap Edge's 4001, a channel
not granted, Elstat's 4200/4420), 4 could not connect or the connection failed for
good. SIGTERM does what Ctrl-C does, at any moment once the command started: the
connection is closed with a close frame (:mod:`leap_sync.cli.stopping`). A pipe on
stdout whose reader left ends ``listen``, ``elstat`` and ``demo`` at once.
Characters the console cannot encode are written as backslash escapes.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .. import __version__
from . import demo, elstat, listen, serve
from .common import (
    EXIT_CODES,
    EXIT_CONNECT,
    EXIT_ERROR,
    EXIT_FATAL,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_USAGE,
    tolerant_console,
)
from .stopping import stopping

__all__ = [
    "EXIT_CONNECT",
    "EXIT_ERROR",
    "EXIT_FATAL",
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_USAGE",
    "build_parser",
    "main",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="leap-sync",
        description="Synchronous Leap Edge and Elstat client: demo, listen, elstat, and an embedded test server.",
        epilog=EXIT_CODES + "\n\n'leap-sync COMMAND --help' describes each command.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    commands.required = True
    for command in (demo, listen, serve, elstat):
        command.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status. While it runs (on the main
    thread), SIGINT and SIGTERM stop the command at any moment: what it opened is
    closed (a close frame) and the status is :data:`EXIT_OK`; so does the reader of
    a piped stdout going away (:mod:`leap_sync.cli.stopping`)."""
    try:
        with stopping() as stop:
            tolerant_console()
            args = build_parser().parse_args(argv)
            args.stop = stop
            status: int = args.func(args)
            return EXIT_OK if stop.requested else status
    except KeyboardInterrupt:  # a signal before the command had anything open
        return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
