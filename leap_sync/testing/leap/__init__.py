"""The embedded Leap Edge server, on :mod:`leap_sync.testing.websocket`.

- :mod:`.server`: ``LeapEdgeServer``, the public face; :mod:`.control`: its HTTP control
  endpoint (``leap-sync serve``).
- :mod:`.model`: projects, tokens, channels, sessions, Pipe rooms (plain records).
- :mod:`.core`, :mod:`.registry`, :mod:`.events`, :mod:`.handling`, :mod:`.faults`,
  :mod:`.introspection`: the server's business logic by concern.
- :mod:`.connection`: Leap Edge's rules on one connection.
"""
