"""What a protocol plugs into the connection core (:mod:`leap_sync.connection.core`): its
sans-I/O :class:`Session` for one connection, the :class:`Handler` its façade
implements, and the small values they exchange (:class:`Decision`, :class:`Live`,
:class:`Future`).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

from ..errors import LeapConnectionError
from ..wire.close import CloseAction
from .timeouts import MAX_WAIT
from .transport import Transport

__all__ = [
    "ARRIVALS",
    "Decision",
    "Future",
    "Handler",
    "Live",
    "Session",
    "holding_live",
    "in_arrival_order",
    "scrub_error",
]

ARRIVALS = "arrivals"
"""The channel kind fed with every event a protocol delivers, of whatever kind, and
every state transition (a ``StateInfo``, fed by the core), in the order they
happened (what ``leap-sync listen`` and ``elstat`` print from)."""


def in_arrival_order(first: Sequence[Any], placed: Sequence[tuple[int, Any]]) -> list[Any]:
    """``first`` (one kind of events, in wire order) merged with ``placed``, the other
    kind, each ``(how many of first arrived before it, event)``, in wire order."""
    merged: list[Any] = []
    taken = 0
    for before, event in placed:
        if before > taken:
            merged += first[taken:before]
            taken = before
        merged.append(event)
    merged += first[taken:]
    return merged


class Session(Protocol):
    """A protocol's sans-I/O state for one connection (see ``ClientSession``)."""

    @property
    def connected(self) -> bool: ...

    def start(self, now: float) -> Sequence[dict[str, Any]]: ...

    def receive(self, batch: Sequence[tuple[bytes, bool]], now: float) -> Any: ...

    def received_bytes(self, now: float) -> None: ...

    def next_timer(self) -> float | None: ...

    def on_timer(self, now: float) -> Any: ...

    def encode(self, frame: dict[str, Any]) -> tuple[str | bytes, bool]: ...


class Decision:
    """What to do after a connection ended: ``action`` (a :class:`CloseAction`),
    the ``error`` to report and, for a redirect, the ``url`` to go to."""

    __slots__ = ("action", "error", "url")

    def __init__(self, action: CloseAction, error: LeapConnectionError, url: str | None = None) -> None:
        self.action = action
        self.error = error
        self.url = url


class Handler(Protocol):
    """What a protocol's façade tells the core. Called on the I/O thread; must never
    block (deliver to channels and futures only)."""

    def new_session(self) -> Session: ...

    def deliver(self, live: Live, result: Any) -> None: ...

    def on_connected(self, live: Live) -> None: ...

    def on_lost(self, error: LeapConnectionError, session: Session | None) -> None: ...

    def on_finish(self, error: BaseException) -> None: ...

    def decide(self, error: LeapConnectionError, session: Session | None, wrote: bool) -> Decision:
        """What to do after ``error`` ended a connection (or an attempt: ``session`` is
        ``None`` when none was upgraded). ``wrote``: whether a data message of ours was
        written whole before the end; a close code that judges what the client sent is
        no verdict when nothing was."""
        ...

    def awaiting(self, session: Session) -> tuple[str, str]: ...

    def scrub(self, error: LeapConnectionError) -> LeapConnectionError:
        """``error`` with :meth:`redact` applied to its message and close reason
        (:func:`scrub_error`): what reaches a ``StateInfo`` or a caller."""
        ...

    def redact(self, text: str) -> str:
        """``text`` as it may be shown (log records, ``repr``, errors): the secrets of
        every URL in it (:func:`~leap_sync.wire.urls.redact_urls`) and the handler's
        own secret (a token) redacted."""
        ...


class Live:
    """The connection being served: its session, its transport, and ``lock``, held
    while frames that expect answers are registered and queued (so the session's
    record of requests has the wire's order) and while the session reads a batch."""

    __slots__ = ("lock", "session", "transport")

    def __init__(self, session: Session, transport: Transport) -> None:
        self.session = session
        self.transport = transport
        self.lock = threading.Lock()

    def emit(self, frame: dict[str, Any], urgent: bool = False) -> bool:
        """(The I/O thread.) Queue a frame the protocol sends by itself (Identify, a
        heartbeat, a re-subscription); ``False`` if the connection is ending, and the
        frame was dropped quietly (the reader reports why the connection ended, with
        its close code): a caller emitting many frames stops there."""
        payload, binary = self.session.encode(frame)
        try:
            self.transport.send(payload, binary, urgent=urgent)
        except LeapConnectionError:
            return False
        return True


class Future:
    """A one-shot result handed from the I/O thread to a waiting caller."""

    __slots__ = ("_done", "error", "value")

    def __init__(self) -> None:
        self._done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None

    def set(self, value: Any = None) -> bool:
        """Resolve with ``value``; ``False`` if it was already done."""
        if self._done.is_set():
            return False
        self.value = value
        self._done.set()
        return True

    def fail(self, error: BaseException) -> bool:
        """Fail with ``error``; ``False`` if it was already done."""
        if self._done.is_set():
            return False
        self.error = error
        self._done.set()
        return True

    def wait(self, timeout: float | None) -> bool:
        return self._done.wait(None if timeout is None else min(timeout, MAX_WAIT))

    @property
    def done(self) -> bool:
        return self._done.is_set()


@contextlib.contextmanager
def holding_live(core: Any, lock: Any) -> Iterator[Live | None]:
    """Hold the live connection's lock (if there is one: ``core.live``), then ``lock``
    (the order every thread takes them in), with ``core.live`` still that connection
    (re-checked under ``lock``, under which it changes); yields it."""
    while True:
        live = core.live
        with live.lock if live is not None else contextlib.nullcontext(), lock:
            if core.live is live:
                yield live
                return


def scrub_error(error: LeapConnectionError, redact: Callable[[str], str]) -> LeapConnectionError:
    """``error``, or a copy of it with ``redact`` applied to its message and close
    reason when that changes either (a handler's ``scrub``)."""
    reason = error.close_reason
    text = str(error)
    shown_reason = redact(reason) if reason is not None else None
    shown = redact(text)
    if shown == text and shown_reason == reason:
        return error
    scrubbed = error.with_message(shown)
    scrubbed.close_reason = shown_reason
    return scrubbed
