"""The I/O thread: connection attempts, serving one connection, and reconnecting.

One :class:`_Run` per ``connect()``: its thread makes the first attempt (reported to
``connect()`` through ``run.first``), then serves and reconnects until ``close()``, a
fatal close code, or ``max_attempts`` failed attempts. Loops are iterative, one attempt
is in flight at a time, and every wait (a phase of an attempt, the read loop, a backoff
delay) is interrupted by ``close()`` through ``run.stop`` and ``run.wakeup``.

Reconnect policy (:meth:`Supervisor._after`):

- Each reconnect waits the backoff delay (:class:`~leap_sync.backoff.Backoff`), at
  least what a 429/503 answer's ``Retry-After`` asked for.
- An attempt *fails* when it does not reach the connected state or is redirected; an
  attempt that connects resets the count of failed attempts (``max_attempts``) but not
  the delay, which only resets once a connection stayed up ``reset_after`` seconds.
- A redirect (4006) is followed at once the first time after a healthy connection, and
  after the backoff delay when it repeats. An attempt at a redirect target that fails
  sends the next attempt back to the configured URL: a target that does not work never
  captures the client.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import LeapClosedError, LeapConnectionError, LeapError, LeapTimeoutError
from ..state import ConnectionState, StateInfo
from ..wire.close import UNKNOWN_ERROR, CloseAction
from .handler import Future, Live
from .opening import Attempt, open_socket
from .timeouts import MAX_WAIT
from .transport import Transport
from .wakeup import Wakeup

if TYPE_CHECKING:
    from ..backoff import Backoff
    from .callbacks import Callbacks
    from .handler import Handler, Session
    from .options import ConnectOptions
    from .stats import Counters

__all__ = ["Core", "Supervisor"]


class Core(Protocol):
    """What the I/O thread needs of its :class:`~leap_sync.connection.core.ConnectionCore`
    (passed in, so that this module does not import the one that starts it). Every
    attribute is read under ``lock`` where the core says so; ``run``, ``live`` and ``url``
    are written by the I/O thread."""

    handler: Handler
    options: ConnectOptions
    backoff: Backoff
    clock: Callable[[], float]
    log: Callbacks
    lock: threading.RLock
    closing: threading.Event
    finished: bool
    number: int
    origin: str
    url: str
    run: Any
    live: Live | None
    counters: Counters

    def set_state(
        self, state: ConnectionState, error: BaseException | None = None, will_reconnect: bool = False
    ) -> None: ...

    def finish(self, error: BaseException, then: StateInfo | None = None) -> None: ...

    def report_closed(self) -> None: ...


class _Run:
    """One ``connect()``: its thread, the first attempt's outcome, its stop event."""

    def __init__(self, core: Core, target: Any) -> None:

        self.first = Future()
        self.stop = threading.Event()
        self.wakeup = Wakeup()
        self.attempt: Attempt | None = None
        self.abandoned = False
        self.thread = threading.Thread(target=target, args=(self,), name=f"leap-sync-io-{core.number}", daemon=True)


class _Outcome:
    __slots__ = ("connected", "error", "lived", "session", "wrote")

    def __init__(
        self,
        error: LeapConnectionError,
        session: Session | None = None,
        connected: bool = False,
        lived: float = 0.0,
        wrote: bool = False,
    ) -> None:
        self.error = error
        self.session = session
        self.connected = connected
        self.lived = lived
        self.wrote = wrote  # whether a data message of ours reached the socket


class Supervisor:
    """The code of the I/O thread of one :class:`~leap_sync.connection.core.ConnectionCore`."""

    def __init__(self, core: Core) -> None:
        self.core = core

    # -- runs (called by connect()) --------------------------------------------------------

    def start(self, deadline: float | None = None) -> _Run:
        """Start a run (``connect()``). A previous run whose first attempt failed is
        joined first *outside* ``core.lock`` (its last steps take it), then checked
        again. Raises :class:`LeapClosedError`, :class:`LeapError` (a run is going) or
        :class:`LeapTimeoutError` (that thread did not end by ``deadline``)."""
        core = self.core
        while True:
            with core.lock:
                if core.closing.is_set():
                    raise LeapClosedError("the client is closed")
                if core.finished:
                    raise LeapClosedError("the client stopped after a fatal error; make a new one")
                previous = core.run
                ending: threading.Thread | None = None
                if previous is not None and not previous.abandoned and previous.thread.is_alive():
                    if not previous.first.error:
                        raise LeapError("connect() was already called; the client reconnects by itself")
                    if previous.thread is not threading.current_thread():
                        ending = previous.thread
                if ending is None:
                    run = _Run(core, self._run)
                    core.run = run
                    core.log.start()
                    run.thread.start()
                    return run
            if not self._join(ending, deadline):  # outside the lock, which the thread takes on its way out
                raise LeapTimeoutError("the previous connection attempt's thread did not end in time")

    def abandon(self, run: _Run, error: LeapError) -> bool:
        """``connect()`` gave up waiting for the first attempt (past the attempt's
        deadline, a DNS lookup; or past the caller's own ``timeout``, any phase): the
        run stops (interrupting the attempt) and its thread ends at once, or once a
        lookup returns. ``False`` if the attempt finished first."""
        with self.core.lock:  # the thread reports its state under it: ERRORED comes last
            if not run.first.fail(error):
                return False
            run.abandoned = True
            run.stop.set()
            self.core.set_state(ConnectionState.ERRORED, error, False)
        run.wakeup.notify()
        return True

    def join_failed(self, run: _Run, deadline: float | None = None) -> None:
        """After a failed first attempt: let the thread end so a retry can start (until
        ``deadline``, monotonic, at most ``close_timeout``; never under ``core.lock``)."""
        if run.thread is not threading.current_thread():
            self._join(run.thread, deadline)

    def _join(self, thread: threading.Thread, deadline: float | None) -> bool:
        """Join ``thread`` until ``deadline`` (monotonic), at most ``close_timeout``;
        whether it ended. Never called under ``core.lock``."""
        limit = self.core.options.close_timeout
        if deadline is not None:
            limit = min(limit, max(0.0, deadline - time.monotonic()))
        thread.join(limit)
        return not thread.is_alive()

    # -- the thread -------------------------------------------------------------------------

    def _run(self, run: _Run) -> None:
        core = self.core
        try:
            self._supervise(run)
        except BaseException as exc:  # a bug: never die silently
            crash = LeapConnectionError(f"internal error: {exc!r}")
            crash = core.handler.scrub(crash)
            run.first.fail(crash)
            if not run.abandoned:
                core.log.error("I/O thread crashed", crash)
                core.finish(crash, StateInfo(ConnectionState.ERRORED, crash, False))
        finally:
            run.first.fail(LeapConnectionError("the connection attempt ended"))
            run.wakeup.close()
            if not run.abandoned:
                if core.closing.is_set():
                    core.report_closed()
                with core.lock:  # checked and stopped at once: a new run may start right after
                    if core.run is run:
                        core.log.stop()

    def _supervise(self, run: _Run) -> None:
        core = self.core
        first = True
        while not run.stop.is_set():
            core.set_state(ConnectionState.CONNECTING)
            attempt = Attempt(core.options.connect_timeout, run.stop, run.wakeup, core.handler.redact)
            run.attempt = attempt
            try:
                transport = self._open(attempt)
            except LeapConnectionError as exc:
                if run.stop.is_set():
                    run.first.fail(LeapClosedError("the client was closed while connecting"))
                    return  # close() abandoned the attempt: not an error
                error = core.handler.scrub(exc)
                if first:
                    if run.first.fail(error):
                        core.set_state(ConnectionState.ERRORED, error, False)
                    return
                core.log.info("connection attempt failed", {"phase": error.phase, "error": str(error)})
                outcome = _Outcome(error)
            else:
                served = self._serve(run, transport, attempt, first)
                if served is None:
                    return  # connect() abandoned the attempt at this very moment
                outcome = served
                first = False
            if run.stop.is_set():
                return
            delay = self._after(outcome)
            if delay is None or run.stop.wait(min(delay, MAX_WAIT)):
                return

    def _open(self, attempt: Attempt) -> Transport:
        core = self.core
        options = core.options
        url = core.url
        core.log.debug("connecting", {"url": url})
        sock, early = open_socket(
            options.endpoint(url),
            attempt,
            headers=options.headers,
            proxy=options.proxy,
            no_proxy=options.no_proxy,
            trust_env=options.trust_env,
            tls_context=options.tls_context,
            server_name=options.server_name,
        )
        core.log.debug("websocket upgraded", {"url": url})
        return Transport(
            sock,
            attempt.wakeup,
            early=early,
            send_timeout=options.send_timeout,
            max_message_size=options.max_message_size,
            counters=core.counters,
        )

    # -- serving one connection -------------------------------------------------------------

    def _serve(self, run: _Run, transport: Transport, attempt: Attempt, first: bool) -> _Outcome | None:
        """Serve one upgraded connection until it ends. For the first attempt, report
        it to ``connect()`` once the state says upgraded; ``None`` if ``connect()`` gave
        up on it at that very moment."""

        core = self.core
        clock = time.monotonic
        session = core.handler.new_session()
        live = Live(session, transport)
        with core.lock:
            if run.stop.is_set():
                transport.close()
                return _Outcome(LeapConnectionError("the client was closed"), session)
            core.live = live
        connected_at: float | None = None
        closing_by: float | None = None
        try:
            for frame in session.start(clock()):
                live.emit(frame, urgent=True)
            state = ConnectionState.AUTHENTICATING
            if session.connected:  # a protocol without a handshake of its own (Elstat)
                connected_at = core.clock()
                core.handler.on_connected(live)
                state = ConnectionState.CONNECTED
            with core.lock:  # abandon() reports under it: never a stale state after its ERRORED
                if first and run.first.done:
                    return None  # connect() gave up on this attempt
                core.set_state(state)
            if first and not run.first.set():  # connect() returns now, the state is current
                return None
            while True:
                now = clock()
                if closing_by is None and run.stop.is_set():
                    if connected_at is not None:
                        transport.send_close(1000, "")
                        closing_by = now + min(1.0, core.options.close_timeout)
                    else:  # never CONNECTED (Hello, Identify, INIT): no handshake to wait for
                        closing_by = now
                if closing_by is not None and now >= closing_by:
                    transport.abort(LeapConnectionError("the client was closed"))
                if connected_at is None and closing_by is None and now >= attempt.deadline:
                    phase, what = core.handler.awaiting(session)
                    error = LeapConnectionError(f"no {what} within {attempt.timeout:g} s", phase=phase)
                    transport.fail(UNKNOWN_ERROR, error)
                    return _Outcome(error, session)
                timer = session.next_timer()
                if timer is not None and now >= timer and closing_by is None:
                    session.received_bytes(transport.last_received)
                    result = session.on_timer(now)
                    if result.error is not None:
                        core.log.warn("connection presumed dead", {"error": str(result.error)})
                        transport.fail(result.close_code, result.error)
                        return self._lost(result.error, session, connected_at, transport)
                    for frame in result.send:
                        live.emit(frame, urgent=True)
                    if result.ping and not transport.ended:
                        transport.send_ping()
                    timer = session.next_timer()
                wait = _earliest(
                    timer if closing_by is None else None,
                    attempt.deadline if connected_at is None else None,
                    closing_by,
                )
                batch = transport.receive(None if wait is None else max(0.0, wait - now))
                if not batch:
                    continue
                core.counters.received(batch)
                with live.lock:
                    # When the bytes arrived, not when they were processed: Hello's
                    # anchors the beat grid, an ack's measures the round trip.
                    result = session.receive(batch, transport.last_received)
                for frame in result.send:
                    live.emit(frame, urgent=True)
                core.handler.deliver(live, result)
                if connected_at is None and session.connected:
                    connected_at = core.clock()
                    core.handler.on_connected(live)
                    core.set_state(ConnectionState.CONNECTED)
                if result.error is not None:
                    core.log.error("protocol error from server", result.error)
                    error = LeapConnectionError(f"protocol error: {result.error}")
                    transport.fail(1002, error)
                    # A close frame read behind the bad message is the server's word on
                    # how the connection ended (a 4200 or a 4001 stays fatal).
                    return self._lost(transport.peer_close or error, session, connected_at, transport)
        except LeapConnectionError as exc:
            return self._lost(exc, session, connected_at, transport)
        except Exception as exc:  # a fault in our own handling: this connection ends, the client goes on
            error = LeapConnectionError(f"internal error while reading: {exc!r}")
            core.log.error("internal error while reading", error)
            transport.abort(error)
            return self._lost(error, session, connected_at, transport)
        finally:
            with core.lock:
                if core.live is live:
                    core.live = None
            transport.close()

    def _lost(
        self, error: LeapConnectionError, session: Session, connected_at: float | None, transport: Transport
    ) -> _Outcome:
        if connected_at is None and error.phase is None:  # the attempt failed in its handshake
            error.phase = self.core.handler.awaiting(session)[0]
        lived = 0.0 if connected_at is None else self.core.clock() - connected_at
        return _Outcome(error, session, connected_at is not None, lived, transport.data_written)

    # -- after a connection or an attempt ended ------------------------------------------

    def _after(self, outcome: _Outcome) -> float | None:
        """Decide what comes next; the delay before the next attempt, or ``None``
        when the client gives up (already reported)."""
        core = self.core
        backoff = core.backoff
        error = core.handler.scrub(outcome.error)
        core.handler.on_lost(error, outcome.session)
        if error.close_code is not None:
            core.log.info("connection closed", {"code": error.close_code, "reason": error.close_reason or ""})
        # Decided on the error as it came (a 4006 redirect goes to the URL the server
        # sent, credentials included); what is reported or logged is scrubbed.
        decision = core.handler.decide(outcome.error, outcome.session, outcome.wrote)
        if decision.action is CloseAction.FATAL:
            self._give_up(decision.error)
            return None
        if outcome.connected and outcome.lived >= backoff.reset_after:
            backoff.reset()
        immediate = False
        if decision.action is CloseAction.REDIRECT and decision.url is not None:
            backoff.attempt_failed()
            immediate = backoff.failures == 0
            core.log.info("redirected (4006)", {"url": decision.url, "immediate": immediate})
            core.url = decision.url
        elif outcome.connected:
            backoff.attempt_succeeded()
        else:
            backoff.attempt_failed()
            if core.url != core.origin:
                core.log.info("the redirect target failed: back to the configured endpoint", {"url": core.origin})
                core.url = core.origin
        if backoff.exhausted:
            self._give_up(
                error.with_message(f"gave up after {backoff.max_attempts} failed reconnect attempts: {error}")
            )
            return None
        delay = backoff.next_delay()
        if immediate:
            delay = 0.0
        if error.retry_after is not None:
            delay = max(delay, error.retry_after)
        core.set_state(ConnectionState.ERRORED, error, True)
        core.log.info("reconnecting", {"delay": round(delay, 3), "failed_attempts": backoff.failed_attempts})
        return delay

    def _give_up(self, error: LeapConnectionError) -> None:
        core = self.core
        error = core.handler.scrub(error)
        core.log.error("not reconnecting", error)
        core.finish(error, StateInfo(ConnectionState.ERRORED, error, False))


def _earliest(*instants: float | None) -> float | None:
    present = [t for t in instants if t is not None]
    return min(present) if present else None
