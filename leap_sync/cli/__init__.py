"""The ``leap-sync`` command line (also ``python -m leap_sync``).

- ``leap-sync demo``: the whole loop on the embedded server, printed step by step.
- ``leap-sync listen``: tail a real Leap Edge endpoint (human lines on a terminal, one
  JSON object per line when piped).
- ``leap-sync serve``: the embedded Leap Edge server, standalone, with an HTTP control
  endpoint. Before serving it prints ``leap edge: ws://HOST:PORT/ws`` and
  ``control: http://HOST:PORT2`` on their own lines; Ctrl-C stops it (exit 0).
- ``leap-sync elstat``: tail an Elstat status page's Streaming API.

Exit status: 0 on success or Ctrl-C, 2 for a usage or connection error, 3 when the
server refused for good (Leap Edge's 4001, Elstat's 4200/4420) or the client gave up.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .. import __version__
from . import demo, elstat, listen, serve
from .common import EXIT_ERROR, EXIT_FATAL, EXIT_OK

__all__ = ["EXIT_ERROR", "EXIT_FATAL", "EXIT_OK", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="leap-sync",
        description="Synchronous Leap Edge and Elstat client: demo, listen, elstat, and an embedded test server.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    for command in (demo, listen, serve, elstat):
        command.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    status: int = args.func(args)
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
