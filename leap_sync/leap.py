"""Leap Edge's part of a client connection: what :class:`~leap_sync.connection.core.ConnectionCore`
asks of ``LeapClient`` (see :class:`~leap_sync.connection.core.Handler`).

:class:`LeapHandler` routes what a connection produced (messages and channel events to
their event channels, AVAILABLE/UNAVAILABLE answers to the ``subscribe()`` calls
waiting for them), keeps the subscriptions the server's answers left, re-subscribes
after a reconnect, says what a close code means (4001 fatal once identified, 4006 a
redirect), and keeps the token out of every error. It runs on the I/O thread and never
blocks.
"""

from __future__ import annotations

import threading
import urllib.parse
from typing import Any, cast

import attrs

from .connection.core import ConnectionCore
from .connection.handler import (
    ARRIVALS,
    STATE_CHANGE,
    Decision,
    Future,
    Live,
    holding_live,
    in_arrival_order,
    scrub_error,
)
from .connection.options import ConnectOptions
from .errors import ChannelUnavailableError, LeapAuthorizationError, LeapConnectionError
from .protocol import frames
from .protocol.codec import Codec
from .protocol.models import AvailableEvent, Hello, InitEvent, UnavailableEvent
from .protocol.opcodes import CloseCode, close_action
from .protocol.session import Answer, ClientSession, ReceiveResult
from .wire.close import CloseAction
from .wire.secrets import PIECE, Secrets, TokenRedactor
from .wire.urls import redact_url, redact_urls

__all__ = ["CHANNEL_EVENTS", "MESSAGES", "PIECE", "LeapHandler", "Undo", "leap_session", "with_query"]

MESSAGES = "messages"
CHANNEL_EVENTS = "channel_events"
_REDACTED = "<redacted>"


def with_query(url: str, encoding: str, compression: str) -> str:
    """``url`` with its ``encoding`` and ``compression`` query parameters set (other
    parameters kept). Raises ``ValueError`` for a URL that is not ``ws://`` or
    ``wss://`` with a host, ``TypeError`` for one that is not a ``str``."""
    if not isinstance(url, str):
        raise TypeError(f"a Leap Edge URL is a str, not {type(url).__name__}")
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:  # urllib's text may quote the password: never shown
        raise ValueError(f"Leap Edge URL has a bad host or port: {redact_url(url)!r}") from None
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"Leap Edge URL must be ws:// or wss:// with a host, not {redact_url(url)!r}")
    query = [
        (k, v)
        for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        if k not in ("encoding", "compression")
    ]
    query += [("encoding", encoding), ("compression", compression)]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query), path=parts.path or "/"))


def leap_session(session: Any) -> ClientSession:
    """The core's session of a Leap connection is a :class:`ClientSession`."""
    return cast(ClientSession, session)


@attrs.define(eq=False)
class Undo:
    """What one ``subscribe()``/``unsubscribe()`` call changed on its channel when its
    frame was queued: the connection generation then, whether the channel was
    subscribed and being unsubscribed before, the channel's version before and the
    one this call set, and ``outcome`` (``None`` while the call runs, then ``"kept"``
    or ``"failed"``: never written)."""

    generation: int
    subscribed: bool
    unsubscribing: bool
    before: int
    after: int
    outcome: str | None = None


class LeapHandler:
    """The Leap side of one ``LeapClient`` (its :attr:`core` is set right after
    construction). ``waiters`` maps ``(id(session), request)`` to the channel and the
    :class:`~leap_sync.connection.core.Future` of a ``subscribe()`` call; ``subscriptions`` is an
    ordered set of channel ids; both are guarded by ``lock``."""

    def __init__(
        self, project_id: str, token: str | None, codec: Codec, encoding: str, compression: str, lock: threading.RLock
    ) -> None:
        self.project_id = project_id
        self._token = token
        self._redactor = TokenRedactor(token) if token else None
        # Every secret the client knows (the token, URL and proxy secrets: the client
        # adds those at construction, the connection an environment proxy's).
        self.secrets = Secrets(token)
        self.codec = codec
        self.encoding = encoding
        self.compression = compression
        self.lock = lock
        self.core: ConnectionCore = None  # type: ignore[assignment]
        self.waiters: dict[tuple[int, int], tuple[str, Future]] = {}
        # Per waiting call, a refusal its channel got while it waited that went to an
        # abandoned request ahead of it (reported should the call time out).
        self.refusals: dict[tuple[int, int], ChannelUnavailableError] = {}
        self.subscriptions: dict[str, None] = {}
        self.unsubscribing: dict[str, None] = {}  # unsubscribed by a call, not yet answered
        self.generation = 0  # connections set up (on_connected)
        # Per channel, the calls whose effect may still be undone, oldest first, and
        # the channel's version (the ``after`` of the last call whose effect stands).
        self.calls: dict[str, list[Undo]] = {}
        self.versions: dict[str, int] = {}
        self._clock = 0
        self.init_event: InitEvent | None = None
        self.latency: float | None = None  # the last connection's

    def new_session(self) -> ClientSession:
        return ClientSession(self.project_id, self._token, self.codec)

    def deliver(self, live: Live, result: ReceiveResult) -> None:
        core = self.core
        if result.messages:
            core.registry.feed(MESSAGES, result.messages)
        events: list[Any] = []
        placed: list[tuple[int, Any]] = []  # (messages before it, event) for ARRIVALS
        after = result.after if len(result.after) == len(result.events) else [len(result.messages)] * len(result.events)
        session_id = id(live.session)
        for before, event in zip(after, result.events, strict=True):  # in wire order, answers in their place
            if isinstance(event, Answer):
                answer = event.event
                self._track(answer, answered=True)
                with self.lock:
                    entry = self.waiters.pop((session_id, event.request), None)
                    self.refusals.pop((session_id, event.request), None)
                    if entry is None and isinstance(answer, UnavailableEvent) and not answer.graceful:
                        self._refused_meanwhile(session_id, answer)
                if entry is None:
                    placed.append((before, answer))
                    events.append(answer)  # nobody waits (a timed-out call, an unsubscribe, a resubscription)
                elif isinstance(answer, AvailableEvent):
                    entry[1].set(answer.channel)
                else:
                    code = self.redact(answer.error_code) if answer.error_code is not None else None
                    entry[1].fail(ChannelUnavailableError(entry[0], code, graceful=answer.graceful))
            elif isinstance(event, Hello):
                core.log.debug("hello", {"heartbeat_interval": event.heartbeat_interval})
                core.log.debug("identify", {"project_id": self.project_id, "token": _REDACTED if self._token else None})
            elif isinstance(event, InitEvent):  # CONNECTED takes its place in ARRIVALS
                # Set up here, in wire order: a channel event behind INIT in the same
                # read must find the subscriptions INIT gave, not change them first.
                self.on_connected(live)
                placed.append((before, STATE_CHANGE))
            else:
                self._track(event)
                placed.append((before, event))
                events.append(event)
        if events:
            core.registry.feed(CHANNEL_EVENTS, events)
        if (result.messages or events) and core.registry.references(ARRIVALS):
            core.feed_arrivals(in_arrival_order(result.messages, placed))

    def _refused_meanwhile(self, session_id: int, answer: UnavailableEvent) -> None:
        """(Under :attr:`lock`.) A refusal that answered an abandoned SUBSCRIBE: the
        live ``subscribe()`` calls of its channel keep waiting for their own answer,
        and report this refusal if none comes (the server may never answer the
        abandoned request, so this may have been theirs)."""
        code = self.redact(answer.error_code) if answer.error_code is not None else None
        for key, (channel_id, _waiter) in self.waiters.items():
            if key[0] == session_id and channel_id == answer.channel_id:
                self.refusals[key] = ChannelUnavailableError(channel_id, code, graceful=False)

    def _track(self, event: Any, answered: bool = False) -> None:
        """Keep :attr:`subscriptions` as the server's AVAILABLE/UNAVAILABLE left them.

        An AVAILABLE answering a SUBSCRIBE (``answered``) of a channel a call
        unsubscribed since (its UNSUBSCRIBE not yet answered) is not kept: it answers a
        request sent before the UNSUBSCRIBE, which the server will undo. An AVAILABLE
        push is the server's latest word (a server need not answer an UNSUBSCRIBE; a
        connection of the same session subscribed it): kept, and it settles the
        unsubscribe. A graceful UNAVAILABLE settles an unsubscribe."""
        if isinstance(event, AvailableEvent):
            channel_id = event.channel_id or event.channel.id
            with self.lock:
                if not answered:
                    self.unsubscribing.pop(channel_id, None)
                if channel_id not in self.unsubscribing:
                    self.subscriptions[channel_id] = None
        elif isinstance(event, UnavailableEvent) and event.channel_id is not None:
            with self.lock:
                self.subscriptions.pop(event.channel_id, None)
                if event.graceful:
                    self.unsubscribing.pop(event.channel_id, None)

    # -- the calls' bookkeeping (under the connection's lock, right before the frame is queued)

    def subscribing(self, session: ClientSession, channel_id: str, waiter: Future) -> tuple[int, Undo]:
        """Record a ``subscribe()`` call's SUBSCRIBE: it cancels an unsubscribe in
        progress. Returns its request number and what :meth:`call_ended` needs."""
        request = session.expect_answer(channel_id, True)
        with self.lock:
            undo = self._record(channel_id)
            self.unsubscribing.pop(channel_id, None)  # the latest call wins
            self.waiters[(id(session), request)] = (channel_id, waiter)
        return request, undo

    def unsubscribed(self, session: ClientSession, channel_id: str) -> Undo:
        """Record an ``unsubscribe()`` call's UNSUBSCRIBE: the channel is forgotten
        now, and neither re-subscribed nor kept from a later INIT until a call
        subscribes it again (or the server says it is subscribed). Returns what
        :meth:`call_ended` needs."""
        session.expect_answer(channel_id, False)
        with self.lock:
            undo = self._record(channel_id)
            self.subscriptions.pop(channel_id, None)
            self.unsubscribing[channel_id] = None
        return undo

    def _record(self, channel_id: str) -> Undo:
        """(Under :attr:`lock`.) A call's :class:`Undo`, before it changes anything."""
        self._clock += 1
        undo = Undo(
            self.generation,
            channel_id in self.subscriptions,
            channel_id in self.unsubscribing,
            self.versions.get(channel_id, 0),
            self._clock,
        )
        self.versions[channel_id] = self._clock
        self.calls.setdefault(channel_id, []).append(undo)
        return undo

    def call_ended(self, channel_id: str, undo: Undo, failed: bool) -> None:
        """The call that recorded ``undo`` ended: its frame was written or may still be
        (``failed=False``: its effect stands), or never was, the connection ended first
        (``failed=True``: its effect is undone, unless a later call's effect stands).
        Calls end in any order; they are settled newest first, so failed calls undo
        exactly their own effects, each restoring what the channel was before it (the
        frames of one connection are written in order: the calls that fail on it are
        its last ones). If a newer connection was set up meanwhile, it is told (a
        SUBSCRIBE for a channel put back, an UNSUBSCRIBE for one its INIT kept that an
        unsubscribe still wants gone)."""
        with holding_live(self.core, self.lock) as live:
            undo.outcome = "failed" if failed else "kept"
            stack = self.calls.get(channel_id, [])
            while stack and stack[-1].outcome is not None:
                top = stack.pop()
                if top.outcome == "failed" and self.versions.get(channel_id) == top.after:
                    self.versions[channel_id] = top.before
                    self._restore(live, channel_id, top)
            if not stack:
                self.calls.pop(channel_id, None)
                self.versions.pop(channel_id, None)

    def _restore(self, live: Live | None, channel_id: str, undo: Undo) -> None:
        """(Under both locks.) Put ``channel_id`` back as it was before ``undo``'s call."""
        if undo.subscribed:
            self.subscriptions[channel_id] = None
        else:
            self.subscriptions.pop(channel_id, None)
        if undo.unsubscribing:
            self.unsubscribing[channel_id] = None
        else:
            self.unsubscribing.pop(channel_id, None)
        if self.generation == undo.generation:
            return  # the connection the call was made on (or none since): nothing was sent
        connected = live is not None and live.session.connected and not self.core.closing.is_set()
        session = leap_session(live.session) if live is not None and connected else None
        if undo.subscribed and session is not None:
            session.expect_answer(channel_id, True)
            live.emit(frames.subscribe(channel_id))  # type: ignore[union-attr]
        elif undo.unsubscribing:
            init = session.init if session is not None else None
            if init is not None and any(channel.id == channel_id for channel in init.channels):
                assert session is not None and live is not None
                session.expect_answer(channel_id, False)
                live.emit(frames.unsubscribe(channel_id))
            elif live is not None and live.session.connected:
                del self.unsubscribing[channel_id]  # settled: that connection never had it

    def sending(self, session: ClientSession, channel_id: str) -> None:
        """Record a MESSAGE or SET_CHANNEL_STATE to ``channel_id``: should the server
        refuse it (UNAVAILABLE ``UNKNOWN``: not subscribed, perhaps dropped while the
        frame was in flight), the refusal answers this frame, never a ``subscribe()``
        sent after it. (Under the connection's lock, right before the frame is queued:
        its number in write order is the transport's next.)"""
        live = self.core.live
        if live is not None and live.session is session:
            transport = live.transport
            session.write_order = transport.written_before
            session.expect_refusal(channel_id, transport.queued_data + 1)
        else:
            session.expect_refusal(channel_id)

    def release(self, session: Any, channel_id: str, request: int) -> ChannelUnavailableError | None:
        """(A ``subscribe()`` call that gave up.) Make its request an orphan in answer
        matching (:meth:`ClientSession.release`), if ``session`` is still the live one
        (else it ended with its connection). Returns the refusal its channel got while
        it waited that went to an abandoned request ahead of it, if any: the call
        reports it rather than a timeout."""
        with self.lock:
            self.waiters.pop((id(session), request), None)
            refusal = self.refusals.pop((id(session), request), None)
        live = self.core.live
        if live is not None and live.session is session:
            with live.lock:
                leap_session(session).release(channel_id, request)
        return refusal

    def on_connected(self, live: Live) -> None:
        """Set up a connection once its INIT arrived: subscriptions as INIT lists them,
        re-subscriptions sent. Called by :meth:`deliver` at INIT's place in its batch;
        the supervisor's call after the batch is then a no-op (once per session)."""
        session = leap_session(live.session)
        init = session.init
        assert init is not None
        if self.init_event is init:  # this session is set up already
            return
        self.init_event = init
        kept = {channel.id for channel in init.channels}
        # Under the connection's lock, as calls register theirs: an unsubscribe()
        # either registers first (and is not re-subscribed here) or its UNSUBSCRIBE
        # follows the re-subscription on the wire (and the server ends unsubscribed).
        with live.lock:
            with self.lock:
                self.generation += 1
                missing = [c for c in self.subscriptions if c not in kept]
                stale = [c for c in kept if c in self.unsubscribing]  # unsubscribed; the server never heard
                for channel_id in [c for c in self.unsubscribing if c not in kept]:
                    del self.unsubscribing[channel_id]  # settled: this session does not have it
                for channel_id in kept:
                    if channel_id not in self.unsubscribing:
                        self.subscriptions[channel_id] = None
            for channel_id, subscribe in [(c, False) for c in stale] + [(c, True) for c in missing]:
                if self.core.closing.is_set():  # close() wants the thread: stop re-subscribing
                    break
                session.expect_answer(channel_id, subscribe)
                if not live.emit(frames.subscribe(channel_id) if subscribe else frames.unsubscribe(channel_id)):
                    break
        self.core.log.debug(
            "init",
            {
                "cid": init.cid,
                "scope": init.scope,
                "channels": len(kept),
                "resubscribing": len(missing),
                "unsubscribing": len(stale),
            },
        )

    def on_lost(self, error: LeapConnectionError, session: Any) -> None:
        if session is not None and leap_session(session).latency is not None:
            self.latency = leap_session(session).latency
        self._fail_waiters(LeapConnectionError(f"connection lost: {error}"))

    def on_finish(self, error: BaseException) -> None:
        self._fail_waiters(error)

    def _fail_waiters(self, error: BaseException) -> None:
        with self.lock:
            waiters = list(self.waiters.values())
            self.waiters.clear()
            self.refusals.clear()
        for _channel_id, waiter in waiters:
            waiter.fail(error)

    def awaiting(self, session: Any) -> tuple[str, str]:
        return ("hello", "Hello") if session.hello is None else ("init", "INIT")

    def decide(self, error: LeapConnectionError, session: Any, wrote: bool) -> Decision:
        code = error.close_code
        action = close_action(code)
        if action is CloseAction.FATAL:
            # Identify is the first data message of a connection: once it was written
            # the 4001 is a verdict on the token.
            if session is not None and session.hello is not None and wrote:
                return Decision(
                    CloseAction.FATAL,
                    LeapAuthorizationError(
                        f"Leap Edge rejected the credentials (close code {code}: "
                        f"{error.close_reason or CloseCode.INVALID_AUTH.description})",
                        close_code=code,
                        close_reason=error.close_reason,
                    ),
                )
            self.core.log.warn("ignoring 4001 before Identify was sent", {"reason": (error.close_reason or "")[:200]})
        elif action is CloseAction.REDIRECT:
            target = self._redirect_target(error.close_reason or "")
            if target is not None:
                return Decision(CloseAction.REDIRECT, error, target)
        return Decision(CloseAction.RECONNECT, error)

    def _redirect_target(self, reason: str) -> str | None:
        """The URL a 4006 close reason names, with our query; ``None`` if unusable."""
        try:
            target = with_query(reason.strip(), self.encoding, self.compression)
            ConnectOptions.endpoint(target)
        except ValueError:
            self.core.log.warn("ignoring 4006 with an unusable endpoint", {"reason": reason[:200]})
            return None
        if self.core.url.startswith("wss:") and not target.startswith("wss:"):
            self.core.log.warn("ignoring 4006 redirect from wss to plain ws", {"url": target})
            return None
        if self.carries_token(target):  # never keep (or show) a URL holding the token
            self.core.log.warn("ignoring 4006 redirect to an endpoint that carries the token", None)
            return None
        return target

    def redact(self, text: str) -> str:
        """``text`` as it may be shown: every secret the client knows (the token, a
        proxy password and its Basic form, a URL's password and credential-named
        parameter values: :attr:`secrets`) replaced by ``<redacted>`` in every
        form it can take on its way (as is, escaped by ``repr`` or JSON,
        percent-encoded, UTF-8 read as Latin-1, or cut: any run of :data:`PIECE` of its
        characters), then the secrets of every URL in it (userinfo, credential-named
        parameters: :func:`~leap_sync.wire.urls.redact_urls`)."""
        text = self.secrets(text)  # first: a token with a space would end a URL early
        return redact_urls(text)

    def carries_token(self, text: str) -> bool:
        """Whether ``text``, or its percent-decoded form, holds the token."""
        redactor = self._redactor
        decoded = urllib.parse.unquote_plus(text)
        return redactor is not None and (redactor(text) != text or redactor(decoded) != decoded)

    def scrub(self, error: LeapConnectionError) -> LeapConnectionError:
        """``error`` with the token and URL secrets removed from its message and close
        reason (:meth:`redact`)."""
        return scrub_error(error, self.redact)
