"""``python -m leap_sync``: the ``leap-sync`` command line."""

import sys

from .cli import main

sys.exit(main())
