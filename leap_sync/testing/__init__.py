"""Test servers that speak the real protocols, for leap-sync's own tests, the demo, and
your test suites (needs the ``server`` extra: ``pip install 'leap-sync[server]'``).

- :class:`LeapEdgeServer`: an embedded, protocol-complete Leap Edge server with a
  control API and fault injection.
- :class:`ControlServer`: its HTTP control endpoint (what ``leap-sync serve`` runs).
- :class:`ElstatServer`: an embedded Elstat Streaming API server with a control API
  (DATA, incidents) and fault injection.
- The ``leap_edge_server`` and ``elstat_server`` pytest fixtures come with the package
  (a ``pytest11`` plugin).
"""

from .elstat.server import ElstatConnectionInfo, ElstatServer
from .leap.control import ControlServer
from .leap.server import ConnectionInfo, LeapEdgeServer

__all__ = ["ConnectionInfo", "ControlServer", "ElstatConnectionInfo", "ElstatServer", "LeapEdgeServer"]
