"""The protocol-agnostic connection core and its I/O, shared by ``LeapClient`` and
``ElstatClient``. A protocol plugs in through :mod:`.handler`'s interfaces.

Data flows socket → :mod:`.transport` (frames, on the I/O thread) → the protocol's
session → :class:`~leap_sync.channels.EventChannel`.

- :mod:`.core`: ``ConnectionCore``: state, listeners, channels, ``connect()``, ``close()``.
- :mod:`.supervisor`: the I/O thread: attempts, backoff, reconnects, the read loop.
- :mod:`.handler`: what a protocol gives the core (``Handler``, ``Session``) and gets
  (``Live``, ``Future``, ``Decision``).
- :mod:`.opening`, :mod:`.attempt`: one connection attempt phase by phase (DNS, TCP,
  proxy, TLS, upgrade) under one deadline, interruptible by ``close()``.
- :mod:`.proxy`, :mod:`.tls`: proxy settings from options and the environment; TLS
  contexts from ``sslopt``.
- :mod:`.transport`, :mod:`.writer`, :mod:`.wakeup`: the open socket: reads, queued
  writes, waking the I/O thread.
- :mod:`.callbacks`: the thread that runs user code (listeners, the logger).
- :mod:`.registry`: the event channels a client feeds, held weakly (a dropped channel
  is freed and no longer fed).
- :mod:`.options`, :mod:`.timeouts`: connection options and the checks on every duration.
"""
