"""The connection core: what every leap-sync client does that is not its protocol.

:class:`ConnectionCore` owns the client's lifecycle (``connect()``, ``close()``, the
state and its listeners), its two threads, the event channels it feeds, and sending.
The I/O thread's work (connection attempts, reading, timers, reconnecting) lives in
:mod:`leap_sync.connection.supervisor`. A protocol plugs in (:mod:`leap_sync.connection.handler`) through
a ``Handler`` (its façade: ``LeapClient``, ``ElstatClient``) and a ``Session`` (its
sans-I/O state machine for one connection).

Threads, started by :meth:`ConnectionCore.connect`, never before; daemon; joined by
:meth:`ConnectionCore.close`:

- ``leap-sync-io-<n>`` owns the socket: every connection phase, every read and write,
  the heartbeat schedule and zombie detection, reconnecting with backoff. It never
  runs application code and never blocks except in a DNS lookup.
- ``leap-sync-callbacks-<n>`` runs state listeners and the logger, in order
  (:mod:`leap_sync.connection.callbacks`).

When ``close()`` returns the state is ``CLOSED``, every event channel is ended, no
reconnect will happen and both threads have ended, with two documented exceptions a
thread cannot be forced out of: a DNS lookup in progress (the I/O thread ends when it
returns, touching nothing; the callbacks thread is joined all the same) and a listener
or logger call that does not return (the callbacks thread ends after it).

Locks: no method waits for another thread (a join, an event, a future) while holding
``lock``, since the awaited thread may need it; and every wait a caller bounds with a
``timeout`` is bounded by it, whatever the options (``connect_timeout``,
``close_timeout``) would allow.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from ..backoff import Backoff
from ..channels import EventChannel
from ..errors import LeapClosedError, LeapConnectionError, LeapError, LeapTimeoutError
from ..log import Logger
from ..state import ConnectionState, StateInfo
from .callbacks import Callbacks, StateListener
from .handler import ARRIVALS, Handler, Live, Session
from .options import ConnectOptions
from .registry import ChannelRegistry
from .stats import Counters, Stats
from .supervisor import Supervisor
from .timeouts import check_timeout

__all__ = ["ConnectionCore"]

_numbers = itertools.count(1)  # only for naming threads
_FIRST_ATTEMPT_GRACE = 0.1  # seconds the I/O thread gets to report its own deadline


class ConnectionCore:
    """The protocol-agnostic client core (see the module docstring).

    ``url`` is where connections go (a 4006-style redirect may change it for a while);
    ``options`` are validated :class:`ConnectOptions`; ``clock`` (monotonic seconds)
    measures how long connections lived, for the backoff reset; ``lock`` (an RLock the
    handler shares, or a new one) guards the channels, the run and the handler's
    bookkeeping.
    """

    def __init__(
        self,
        handler: Handler,
        *,
        url: str,
        options: ConnectOptions,
        logger: Logger,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
        lock: threading.RLock | None = None,
    ) -> None:
        ConnectOptions.endpoint(url)  # raises ValueError now, not in a connection attempt
        if backoff is not None and not isinstance(backoff, Backoff):
            raise TypeError(f"backoff must be a leap_sync.Backoff, not {type(backoff).__name__}")
        if not callable(clock):
            raise TypeError("clock must be a callable returning seconds")
        self.handler = handler
        self.origin = url
        self.url = url
        self.options = options
        # A Backoff is a policy the application may share between clients: each client
        # counts its failures on a copy of its own.
        self.backoff = backoff.for_client() if backoff is not None else Backoff()
        self.clock = clock
        self.counters = Counters(clock)  # client.stats
        self.number = next(_numbers)
        self.pid: int | None = None  # the process connect() was called in
        self.log = Callbacks(f"leap-sync-callbacks-{self.number}", logger)
        self.log.redact = self.show  # every log record, whatever produced it
        self.lock = lock if lock is not None else threading.RLock()
        self.closing = threading.Event()
        self.finished = False  # channels ended: nothing will be delivered again
        self._closed_reported = False
        self.live: Live | None = None
        self.run: Any = None  # the supervisor's current run
        self._supervisor = Supervisor(self)
        self.registry = ChannelRegistry(self.lock)
        self._state = StateInfo(ConnectionState.IDLE)
        self._state_cond = threading.Condition()

    def show(self, text: str) -> str:
        """``text`` as it may be shown (a log record, a ``repr``, an error): the
        handler's ``redact`` (the secrets of every URL in it, userinfo and
        credential-named parameters, and the token in every form: ``<redacted>``)."""
        return self.handler.redact(text)

    # -- processes ---------------------------------------------------------------------------

    def forked(self) -> bool:
        """Whether this is a child process of the one that connected this client
        (after ``fork()``): its threads and socket belong to the parent."""
        return self.pid is not None and os.getpid() != self.pid

    def check_process(self) -> None:
        """Raise :class:`LeapClosedError` in a forked child of the connected process."""
        if self.forked():
            raise LeapClosedError(
                f"this client was connected in process {self.pid}; threads and sockets do not survive fork(): "
                "create (or at least connect) a client in this process"
            )

    # -- state and listeners -------------------------------------------------------------

    @property
    def state(self) -> StateInfo:
        """The current state; in a forked child of the connected process, ``CLOSED``
        with the error every call there raises (the parent's state is not this one's)."""
        if self.forked():
            try:
                self.check_process()
            except LeapClosedError as exc:
                return StateInfo(ConnectionState.CLOSED, exc, False)
        return self._state

    def stats(self, heartbeat_rtt: float | None) -> Stats:
        """A :class:`~leap_sync.connection.stats.Stats` snapshot (any thread, cheap): the
        state is the one the counters recorded under their lock, so it agrees with the
        numbers (``CLOSED`` in a forked child)."""
        closed = ConnectionState.CLOSED if self.forked() else None
        return self.counters.snapshot(heartbeat_rtt, self.registry.by_kind(), closed)

    def add_state_update_listener(self, listener: StateListener) -> Callable[[], None]:
        if not callable(listener):
            raise TypeError("listener must be callable")
        with self.lock:
            self.log.listeners += (listener,)

        def remove() -> None:
            with self.lock:
                self.log.listeners = tuple(f for f in self.log.listeners if f is not listener)

        return remove

    def set_state(
        self, state: ConnectionState, error: BaseException | None = None, will_reconnect: bool = False
    ) -> None:
        """Record a transition and queue it for the listeners (never after CLOSED), and
        feed it to the ``ARRIVALS`` channels behind the events delivered before it (on
        the I/O thread; ``close()`` reports once that thread ended, ``connect()``
        abandons only an attempt that delivered nothing)."""
        info = StateInfo(state, error, will_reconnect)
        with self._state_cond:
            if self._state.connection_state is ConnectionState.CLOSED:
                return
            self._state = info
            self.counters.state_changed(state)
            if self.registry.references(ARRIVALS):  # before anyone sees the state; never blocks
                self.registry.feed(ARRIVALS, (info,))
            self._state_cond.notify_all()
        if state is ConnectionState.ERRORED:
            self.log.warn(
                "connection errored", {"state": state.value, "will_reconnect": will_reconnect, "error": str(error)}
            )
        else:
            self.log.debug("state", {"state": state.value})
        self.log.state(info)

    def settle(self, deadline: float | None = None) -> None:
        """Let the state listeners catch up with the transitions reported so far (until
        ``deadline``, monotonic, or at most ``close_timeout``), so a call that reports a
        state returns after the listeners saw it. At once on the callbacks thread."""
        limit = self.options.close_timeout
        if deadline is not None:
            limit = min(limit, max(0.0, deadline - time.monotonic()))
        self.log.flush(limit)

    def wait_connected(self, timeout: float | None, connected: Callable[[], Any]) -> Any:
        """Block until ``connected()`` returns a value in state CONNECTED (see
        ``LeapClient.wait_connected`` for what raises), then let the listeners catch
        up (:meth:`settle`)."""
        self.check_process()
        timeout = check_timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            return self._wait_connected(deadline, timeout, connected)
        finally:
            self.settle(deadline)

    def _wait_connected(self, deadline: float | None, timeout: float | None, connected: Callable[[], Any]) -> Any:
        with self._state_cond:
            while True:
                info = self._state
                state = info.connection_state
                value = connected() if state is ConnectionState.CONNECTED else None
                if value is not None:
                    return value
                if state is ConnectionState.CLOSED or self.closing.is_set():
                    raise LeapClosedError("the client is closed")
                if state is ConnectionState.IDLE:
                    raise LeapError("connect() has not been called")
                if state is ConnectionState.ERRORED and not info.will_reconnect:
                    if isinstance(info.error, LeapError):
                        raise info.error
                    raise LeapConnectionError(f"the client will not reconnect: {info.error}")
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise LeapTimeoutError(f"not connected within {timeout:g} s (state: {state.value})")
                self._state_cond.wait(remaining)

    # -- event channels (held weakly: see :mod:`leap_sync.connection.registry`) ------------

    def new_channel(self, kind: str, maxsize: int, overflow: str) -> EventChannel[Any]:
        """A channel fed with events of ``kind`` (already ended once the client
        finished) for as long as the application holds it; raises
        :class:`LeapClosedError` in a forked child, where nothing would ever feed it."""
        self.check_process()
        channel: EventChannel[Any] = EventChannel(maxsize, overflow, on_close=self.registry.detach)
        with self.lock:
            if self.finished:
                channel._finish(None)
            else:
                self.registry.add(kind, channel)
        return channel

    def channels(self, kind: str) -> tuple[EventChannel[Any], ...]:
        """The open channels of ``kind`` still referenced (a snapshot; lock-free)."""
        return self.registry.channels(kind)

    def finish(self, error: BaseException, then: StateInfo | None = None) -> None:
        """Nothing more will be delivered: end every channel, fail every waiter; then
        report ``then`` (the state this ends in: :meth:`set_state`), which the
        ``ARRIVALS`` channels get as their last item before they end."""
        with self.lock:
            self.finished = True
            last = self.registry.channels(ARRIVALS) if then is not None else ()
            channels = self.registry.clear()
        for channel in last:
            channel._put_many((then,))
        for channel in channels:
            channel._finish(None)
        self.handler.on_finish(error)
        if then is not None:
            self.set_state(then.connection_state, then.error, then.will_reconnect)

    # -- sending ------------------------------------------------------------------------------

    def send(
        self,
        frame: dict[str, Any],
        wait: bool,
        timeout: float | None,
        register: Callable[[Session], Any] | None = None,
    ) -> Any:
        """Send ``frame`` on the live connection and return once it is written.

        ``timeout`` bounds the whole call (waiting for the connection with ``wait``,
        then for the write). ``register(session)``, if given, runs under the
        connection's lock right before the frame is queued (it records a request in
        the session) and its result is returned. Raises :class:`LeapClosedError`,
        :class:`LeapConnectionError` (not connected; the connection ended before the
        frame was written; not written within ``send_timeout``),
        :class:`LeapTimeoutError` (``timeout`` passed: the frame may still be written),
        or the encoding error.
        """
        self.check_process()
        timeout = check_timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        if wait:  # no settle(): nothing is reported, so nothing waits for the listeners
            self._wait_connected(deadline, timeout, lambda: True)
        if self.closing.is_set():
            raise LeapClosedError("the client is closed")
        live = self.live
        if live is None or not live.session.connected:
            raise LeapConnectionError(
                f"not connected (state: {self._state.connection_state.value}); "
                "pass wait=True to wait for the connection"
            )
        payload, binary = live.session.encode(frame)
        try:
            with live.lock:
                registered = register(live.session) if register is not None else None
                outgoing = live.transport.send(payload, binary)
            limit = self.options.send_timeout
            wait_for = limit + 1.0
            if deadline is not None and deadline - time.monotonic() < wait_for:
                if not outgoing.wait(max(0.0, deadline - time.monotonic())):
                    raise LeapTimeoutError("not written before the timeout (the socket is full)")
            elif not outgoing.wait(wait_for):
                raise LeapConnectionError(f"cannot send: not written within {limit:g} s")
            if outgoing.error is not None:
                raise outgoing.error
        except LeapConnectionError as exc:
            raise self.handler.scrub(exc) from None  # its text may quote the server
        return registered

    # -- connecting and closing -----------------------------------------------------------

    def connect(self, deadline: float | None = None, timeout: float | None = None) -> None:
        """One connection attempt on a new I/O thread; returns once upgraded (see
        ``LeapClient.connect``), after the listeners saw the state (waiting for them
        until ``deadline``, monotonic, at most ``close_timeout``).

        ``deadline`` is the caller's (``timeout`` seconds from the call, for messages):
        when it comes before the attempt's own (``connect_timeout``), the attempt is
        abandoned then and :class:`LeapTimeoutError` is raised; the client is
        ``ERRORED`` (``will_reconnect=False``) and ``connect()`` may be called again,
        as after any failed attempt. Never waits while holding ``lock``."""
        self.check_process()
        self.pid = os.getpid()
        with self.lock:
            for channel in self.registry.all():
                channel._pid = self.pid  # made before a fork(), fed in this process
        run = self._supervisor.start(deadline)
        limit = self.options.connect_timeout + _FIRST_ATTEMPT_GRACE
        callers = False
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining < self.options.connect_timeout - _FIRST_ATTEMPT_GRACE:
            # The caller's deadline comes first (clearly: at about the same time, the
            # attempt's own error says more, naming its phase).
            limit, callers = max(0.0, remaining), True
        if not run.first.wait(limit):
            attempt = run.attempt
            error: LeapError
            if callers:  # the caller's timeout, whatever the attempt's own
                phase = attempt.phase if attempt is not None else "dns"
                shown = f"{timeout:g} s" if timeout is not None else "the timeout"
                error = LeapTimeoutError(f"not connected within {shown} (the attempt was in its {phase} phase)")
            else:  # only a DNS lookup outlives the attempt's deadline: abandon it
                error = self.handler.scrub(
                    attempt.expired_error() if attempt is not None else LeapConnectionError("could not connect in time")
                )
            if self._supervisor.abandon(run, error):
                self.settle(deadline)
                raise error
        if run.first.error is not None:
            if not self.closing.is_set():
                self._supervisor.join_failed(run, deadline)  # so that connect() may be called again at once
            self.settle(deadline)
            raise run.first.error
        self.settle(deadline)

    def close(self) -> None:
        """Close for good (idempotent, any thread; see the module docstring). In a
        forked child it only marks this copy closed: the socket, the wakeup, the threads
        and the locks are the parent's, and it touches none of them (its event channels
        raise :class:`ChannelClosed` there once drained)."""
        if self.forked():
            # No lock: one a parent's thread held at fork() time stays held here forever.
            self.run = self.live = None
            self._closed_reported = True
            self._state = StateInfo(ConnectionState.CLOSED)
            return
        with self.lock:
            first = not self.closing.is_set()
            self.closing.set()
            run = self.run
        if first:
            self.log.debug("closing", None)
        if run is not None:
            run.stop.set()
            run.wakeup.notify()
            run.first.fail(LeapClosedError("the client was closed while connecting"))
        with self._state_cond:
            self._state_cond.notify_all()
        timeout = self.options.close_timeout
        if run is not None and run.thread is not threading.current_thread():
            attempt = run.attempt
            io_timeout = timeout
            if attempt is not None and attempt.resolving:
                io_timeout = 0.0  # a lookup cannot be interrupted: do not wait for it (the thread ends after it)
            run.thread.join(io_timeout)  # the thread waits at most a second for the close frame's answer
            if run.thread.is_alive():
                self.log.warn("the I/O thread did not stop in time", {"phase": attempt.phase if attempt else None})
        self.log.start()  # CLOSED goes to the listeners on their thread: close() stays bounded
        self.report_closed()
        with self.lock:  # an I/O thread ending now stops the callbacks thread under it too
            self.log.stop()
        if not self.log.join(timeout):
            pass  # a listener or logger that does not return: its thread ends after it

    def report_closed(self) -> None:
        """End everything and report CLOSED, once (close(), or the I/O thread when it
        ends after close())."""
        with self.lock:
            if self._closed_reported:
                return
            self._closed_reported = True
        self.finish(LeapClosedError("the client was closed"), StateInfo(ConnectionState.CLOSED))
