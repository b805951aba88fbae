"""``python -m leap_sync``: the ``leap-sync`` command line."""

import signal
import sys

from .cli import main

# main() takes SIGINT and SIGTERM over while the command runs, then gives these back:
# after the command, a late Ctrl-C or SIGTERM changes nothing (no traceback, the
# status stays the command's).
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
sys.exit(main())
