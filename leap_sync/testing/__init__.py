"""Test servers that speak the real protocols, for leap-sync's own tests, the demo, and
your test suites (needs the ``server`` extra: ``pip install 'leap-sync[server]'``).

- :class:`LeapEdgeServer`: an embedded, protocol-complete Leap Edge server with a
  control API and fault injection.
- :class:`ControlServer`: its HTTP control endpoint (what ``leap-sync serve`` runs).
- The ``leap_edge_server`` pytest fixture comes with the package (a ``pytest11``
  plugin).
"""

from .control import ControlServer
from .server import ConnectionInfo, LeapEdgeServer

__all__ = ["ConnectionInfo", "ControlServer", "LeapEdgeServer"]
