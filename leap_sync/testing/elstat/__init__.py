"""The embedded Elstat server, on :mod:`leap_sync.testing.websocket`:
:mod:`.server` (``ElstatServer``) and :mod:`.connection` (Elstat's rules on one
connection)."""
