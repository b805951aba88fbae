"""Sans-I/O wire code that both protocols (Leap Edge and Elstat) use: no sockets, no
threads, no clocks of its own.

- :mod:`.wsframes`: websocket frames (RFC 6455): the reader for server frames, the
  builders of unmasked (server) frames, close payloads.
- :mod:`.handshake`: the HTTP exchanges before a websocket: the upgrade request and its
  answer, a proxy's ``CONNECT``, ``Retry-After``.
- :mod:`.socks`: SOCKS4, 4a, 5 and 5h, as exchanges of bytes.
- :mod:`.jsontext`: JSON text as both protocols send and read it.
- :mod:`.keepalive`: ping keepalive and :class:`~.keepalive.TimerResult`, what a session's
  timer asks of the connection core.
- :mod:`.close`: a client's reaction to a close code (:class:`~.close.CloseAction`).
"""
