"""What ``ElstatClient``'s calls share: the SUBSCRIBE/UNSUBSCRIBE requests on the
wire and the calls waiting for them, what the application wants (re-subscribed after
every reconnect) and what the server confirmed.

The rules (see :mod:`leap_sync.elstat.session` for how replies find their requests):

- a call records what it asks right before its frame is queued; a call that fails
  before that changes nothing;
- a channel whose latest pending request on the connection is of the same kind and
  still awaited is not sent again: the call shares that request's answer for it;
- a call that times out leaves its requests to their answers (which still update
  :attr:`Requests.confirmed`, for channels still wanted) and lets later requests take
  their channels over;
- a call that fails with a connection error changes nothing: what it changed in what
  the application wants is put back, and a newer connection already set up with it
  is sent what puts it back. Calls end in any order; each channel's changes are
  settled newest first, so that failed calls undo exactly their own changes, never a
  later call's that stands (a per-channel version tells).
"""

from __future__ import annotations

import functools
import time
from typing import Any, cast

from ..connection.core import ConnectionCore
from ..connection.handler import Future, Live, holding_live
from ..connection.timeouts import check_timeout
from ..errors import LeapConnectionError, LeapTimeoutError
from .protocol import Op, Reply, split_request
from .session import ElstatSession

__all__ = ["Change", "Request", "Requests"]


class Request:
    """A SUBSCRIBE/UNSUBSCRIBE on the wire: what it asked, its answer (``future``: the
    channels confirmed, set whether or not anyone still waits), how many calls wait
    for it, and the session (connection) it went out on."""

    __slots__ = ("before", "channels", "future", "generation", "number", "op", "session", "waiters")

    def __init__(self, op: Op, channels: list[str], session: ElstatSession, number: int, waiters: int) -> None:
        self.op = op
        self.channels = channels
        self.future = Future()
        self.session = session
        self.number = number
        self.waiters = waiters
        self.before: dict[str, Change] = {}  # a call's: what it changed for each channel
        self.generation = 0  # the connection (counted by on_connected) it went out on


class Change:
    """What one call's request changed for one channel: the request, whether the
    channel was wanted before, the channel's version before and the one it set, and
    ``outcome`` (``None`` while the call runs, then ``"kept"`` or ``"failed"``)."""

    __slots__ = ("after", "before", "outcome", "request", "was_wanted")

    def __init__(self, request: Request, was_wanted: bool, before: int, after: int) -> None:
        self.request = request
        self.was_wanted = was_wanted
        self.before = before
        self.after = after
        self.outcome: str | None = None


class Requests:
    """The subscriptions side of one ``ElstatClient`` (see the module docstring);
    guarded by the core's lock (:attr:`lock`), taken after a connection's lock."""

    def __init__(self, core: ConnectionCore) -> None:
        self.core = core
        self.lock = core.lock
        self.requests: dict[tuple[int, int], Request] = {}
        self.wanted: dict[str, None] = {}  # what the application asked for: re-subscribed after reconnects
        self.confirmed: dict[str, None] = {}  # what the server confirmed
        # Per channel, the calls' changes that may still be undone (oldest first), and
        # its version (the ``after`` of the newest change that stands).
        self._changes: dict[str, list[Change]] = {}
        self._versions: dict[str, int] = {}
        self._clock = 0
        self._generation = 0  # connections set up (on_connected)

    def call(self, op: Op, channels: list[str], timeout: float | None, wait: bool) -> list[str]:
        """Send ``op`` for ``channels`` and wait for the answers (see the module
        :mod:`leap_sync.elstat.session` for how answers find their requests).

        A channel whose latest pending request on this connection is of the same kind
        and still awaited is not sent again: this call shares that request's answer
        for it. A call that times out leaves its requests to their answers, which
        still update :attr:`confirmed`, and lets a later request take their
        channels over. A call that fails with a connection error changes nothing
        (see :meth:`_settle`)."""
        names = [name for group in split_request(op, channels) for name in group]  # ValueError before anything
        timeout = check_timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        held: list[Request] = []  # the requests this call waits for (their ``waiters`` count it)
        shared_count = 0  # the first ones are other calls' requests it shares
        answered_by: dict[str, Request] = {}
        failed = False  # with a connection error: the call changes nothing
        try:
            if wait:  # as core.send(wait=True): no settle(), nothing is reported
                self.core.check_process()
                self.core._wait_connected(deadline, timeout, lambda: True)
            live = self.core.live
            if live is not None and live.session.connected and not self.core.closing.is_set():
                session = cast(ElstatSession, live.session)
                with live.lock, self.lock:
                    for name in names:
                        number = session.sharing(op, name)
                        shared = self.requests.get((id(session), number)) if number is not None else None
                        if shared is not None and shared.session is session:
                            if shared not in held:
                                shared.waiters += 1
                                held.append(shared)
                            answered_by[name] = shared
            shared_count = len(held)
            to_send = [name for name in names if name not in answered_by]
            for group in split_request(op, to_send) if to_send else ():
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                self.core.send(
                    {"op": int(op), "channels": group},
                    False,
                    remaining,
                    functools.partial(self._expect, op=op, group=group, held=held),
                )
            for request in held[shared_count:]:  # this call's own requests
                for name in request.channels:
                    answered_by[name] = request
            self.core.log.debug(
                "subscribe" if op is Op.SUBSCRIBE else "unsubscribe",
                {"channels": len(names), "shared": len(names) - len(to_send)},
            )
            for request in held:
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                if not request.future.wait(remaining):
                    raise LeapTimeoutError(f"no answer to {op.name} within {timeout:g} s")
                if request.future.error is not None:
                    raise request.future.error
            return [name for name in names if name in answered_by[name].future.value]
        except LeapConnectionError:
            failed = True
            raise
        finally:
            self._let_go(held)
            self._settle(held[shared_count:], failed)

    def _let_go(self, held: list[Request]) -> None:
        """A call stops waiting for ``held``: a request nobody waits for any more and
        still unanswered is abandoned in its session (see
        :meth:`ElstatSession.abandon`)."""
        if not held:
            return
        with holding_live(self.core, self.lock) as live:
            for request in held:
                request.waiters -= 1
                unanswered = request.waiters == 0 and not request.future.done
                if unanswered and live is not None and request.session is live.session:
                    request.session.abandon(request.number)

    def _settle(self, requests: list[Request], failed: bool) -> None:
        """(A call ended; ``failed``: with a connection error, the connection ended.)
        Mark its changes, then settle each channel's changes newest first while they
        are ended: a failed one whose effect still stands (no later change stands) puts
        back whether the channel was wanted. If a newer connection was already set up
        with the changed wishes, send it what puts them back (a SUBSCRIBE for what is
        wanted again, an UNSUBSCRIBE for what no longer is)."""
        if not requests:
            return
        with holding_live(self.core, self.lock) as live:
            names: dict[str, None] = {}
            for request in requests:
                for name, change in request.before.items():
                    change.outcome = "failed" if failed else "kept"
                    names[name] = None
            fix: dict[Op, list[str]] = {Op.SUBSCRIBE: [], Op.UNSUBSCRIBE: []}
            for name in names:
                stack = self._changes.get(name, [])
                wanted_before = name in self.wanted
                stale = False  # a newer connection was set up with a change undone here
                while stack and stack[-1].outcome is not None:
                    change = stack.pop()
                    if change.outcome == "failed" and self._versions.get(name) == change.after:
                        self._versions[name] = change.before
                        if change.was_wanted:
                            self.wanted[name] = None
                        else:
                            self.wanted.pop(name, None)
                            self.confirmed.pop(name, None)
                        stale = stale or change.request.generation != self._generation
                if not stack:
                    self._changes.pop(name, None)
                    self._versions.pop(name, None)
                wanted = name in self.wanted
                if stale and wanted != wanted_before:
                    fix[Op.SUBSCRIBE if wanted else Op.UNSUBSCRIBE].append(name)
            if live is None or not live.session.connected:
                return
            session = cast(ElstatSession, live.session)
            for op, fixed in fix.items():
                for group in split_request(op, fixed) if fixed else ():
                    if self.core.closing.is_set():
                        return
                    self._expect(session, op, group, None)
                    if not live.emit({"op": int(op), "channels": group}):
                        return

    def _expect(self, session: Any, op: Op, group: list[str], held: list[Request] | None) -> None:
        """(Under the connection's lock, right before the frame is queued.) Record the
        request (awaited by the calling call, if ``held`` is given), and what the
        application wants from now on: a call that fails before sending changes
        nothing."""
        session = cast(ElstatSession, session)
        number = session.expect_reply(op, group)
        request = Request(op, group, session, number, 0 if held is None else 1)
        if held is not None:
            held.append(request)
        with self.lock:
            self.requests[(id(session), number)] = request
            request.generation = self._generation
            for name in group:
                if held is not None:  # a call's, not the client's own re-subscription
                    self._clock += 1
                    change = Change(request, name in self.wanted, self._versions.get(name, 0), self._clock)
                    request.before[name] = change
                    self._versions[name] = self._clock
                    self._changes.setdefault(name, []).append(change)
                if op is Op.SUBSCRIBE:
                    self.wanted[name] = None
                else:
                    self.wanted.pop(name, None)

    def on_replies(self, live: Live, replies: list[tuple[int | None, Reply, frozenset[str]]]) -> None:
        """(The I/O thread.) Hand each reply to its request, and keep
        :attr:`confirmed` as the replies leave it."""
        for number, reply, claimed in replies:
            with self.lock:
                request = self.requests.pop((id(live.session), number), None) if number is not None else None
                if reply.op is Op.SUBSCRIBED:
                    for name in claimed:
                        if name not in reply.channels:
                            self.confirmed.pop(name, None)  # refused (again)
                    asked = claimed if request is not None else self.wanted
                    for name in reply.channels:
                        # never a channel this client did not ask for, nor one a
                        # later call unsubscribed (its UNSUBSCRIBE follows this answer)
                        if name in asked and name in self.wanted:
                            self.confirmed[name] = None
                else:
                    for name in reply.channels:
                        self.confirmed.pop(name, None)
            if request is not None:
                request.future.set([name for name in request.channels if name in reply.channels])

    def on_connected(self, live: Live) -> None:
        """(The I/O thread, the connection just set up.) Subscribe it to what the
        application wants."""
        session = cast(ElstatSession, live.session)
        # Under the connection's lock, as calls register theirs: an unsubscribe()
        # either registers first (and is not re-subscribed here) or its UNSUBSCRIBE
        # follows the re-subscription on the wire (and the server ends unsubscribed).
        with live.lock:
            with self.lock:
                # A new connection has no subscription yet: what stands is what is wanted
                # and was confirmed before, until the answers to the re-subscriptions say
                # otherwise.
                self._generation += 1
                self.confirmed = {name: None for name in self.confirmed if name in self.wanted}
                wanted = list(self.wanted)
            if not wanted:
                return
            self.core.log.debug("resubscribing", {"channels": len(wanted)})
            for group in split_request(Op.SUBSCRIBE, wanted):
                if self.core.closing.is_set():  # close() wants the thread: stop re-subscribing
                    return
                self._expect(session, Op.SUBSCRIBE, group, None)
                if not live.emit({"op": int(Op.SUBSCRIBE), "channels": group}):
                    return

    def fail(self, error: BaseException) -> None:
        """(The connection ended, or the client finished.) Fail every pending
        request."""
        with self.lock:
            requests = list(self.requests.values())
            self.requests.clear()
        for request in requests:
            request.future.fail(error)
