"""Happy Eyeballs (RFC 8305) for the TCP phase: several addresses, one deadline.

A name often resolves to several addresses (IPv6 and IPv4 of a dual-stack host, several
A records), and one of them may be dead: its SYNs dropped by a blackholed route or a
firewall, so a connect to it never completes. Trying the addresses one after another
spends the whole ``connect_timeout`` on the dead one. Instead:

- :func:`order` (pure, tested without sockets) sorts the resolver's answer as RFC 8305
  section 4 says: the families interleaved, starting with the family of the first
  address ``getaddrinfo()`` returned (it already sorted them by RFC 6724), duplicates
  dropped.
- :func:`connect_first` starts a non-blocking connect to the first address, and to the
  next one :data:`ATTEMPT_DELAY` later (or at once when an earlier one fails) while the
  earlier ones stay in flight; the first to connect wins and every other socket is
  closed. All of them are waited on in one ``poll()`` together with the attempt's
  wakeup descriptor, on the calling thread (no thread of its own), so ``close()``
  interrupts the race at once, and the attempt's single deadline bounds it as a whole.
- When no address connects, the one error names phase ``"tcp"`` and lists every
  address tried and what each did (refused, unreachable, no answer).

RFC 8305's resolution delay (section 3) does not apply: ``getaddrinfo()`` answers for
both families at once.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import LeapConnectionError
from .attempt import Abandoned, Attempt
from .timeouts import poll_ms

__all__ = ["ATTEMPT_DELAY", "AddrInfo", "connect_first", "order"]

ATTEMPT_DELAY = 0.25
"""Seconds between starting one address and the next (RFC 8305 section 5's
recommended "Connection Attempt Delay")."""

AddrInfo = tuple[Any, ...]
"""One entry of ``getaddrinfo()``: ``(family, type, proto, canonname, sockaddr)``."""

_HAS_POLL = hasattr(select, "poll")
_IN_PROGRESS = {
    errno.EINPROGRESS,
    errno.EWOULDBLOCK,
    errno.EAGAIN,
    errno.EALREADY,
    getattr(errno, "WSAEWOULDBLOCK", -1),
}
_DONE = select.POLLOUT | select.POLLERR | select.POLLHUP if _HAS_POLL else 0


def order(infos: Sequence[AddrInfo]) -> list[AddrInfo]:
    """The addresses in the order to try them (RFC 8305 section 4): one of the first
    address's family, then one of the other family, and so on, each family keeping the
    resolver's order; once a family runs out the rest follow. An address (family and
    ``sockaddr``) repeated in ``infos`` is kept once. Pure."""
    seen: set[tuple[Any, Any]] = set()
    families: dict[Any, list[AddrInfo]] = {}
    for info in infos:
        key = (info[0], info[4])
        if key in seen:
            continue
        seen.add(key)
        families.setdefault(info[0], []).append(info)
    queues = list(families.values())  # dicts keep insertion order: the first family first
    result: list[AddrInfo] = []
    while queues:
        for queue in queues:
            result.append(queue.pop(0))
        queues = [queue for queue in queues if queue]
    return result


def show(sockaddr: Any, port: int) -> str:
    """An address for an error message: ``10.0.0.7``, ``::1``, or with its port
    (``[::1]:8080``) when that is not the ``port`` asked for."""
    host = str(sockaddr[0])
    if sockaddr[1] == port:
        return host
    return f"[{host}]:{sockaddr[1]}" if ":" in host else f"{host}:{sockaddr[1]}"


class _Try:
    """One address being tried: its socket while in flight, what happened to it."""

    def __init__(self, info: AddrInfo, port: int) -> None:
        self.info = info
        self.label = show(info[4], port)
        self.sock: socket.socket | None = None
        self.outcome = "no answer"


def connect_first(
    infos: Sequence[AddrInfo],
    host: str,
    port: int,
    attempt: Attempt,
    *,
    delay: float = ATTEMPT_DELAY,
    new_socket: Callable[[int, int, int], socket.socket] = socket.socket,
    label: str | None = None,
) -> socket.socket:
    """Race TCP connects to ``infos`` (ordered by :func:`order`) as the module
    docstring says; return the first connected socket (non-blocking, ``TCP_NODELAY``
    set). ``host:port`` is what was resolved; messages name it as ``label`` where given
    (a proxy: ``http proxy host:port``); ``new_socket(family, type, proto)`` makes each
    socket.

    Runs on the calling thread and sets ``attempt.phase`` to ``"tcp"``. Raises
    :class:`LeapConnectionError` (phase ``"tcp"``) when every address failed or the
    attempt's deadline passed, listing each address tried and its outcome, and
    :class:`~leap_sync.connection.attempt.Abandoned` when ``attempt.stop`` is set.
    Every socket but the one returned is closed, whatever happens.
    """
    attempt.phase = "tcp"
    attempt.host = label or (f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    pending = [_Try(info, port) for info in order(infos)]
    tried: list[_Try] = []
    flying: list[_Try] = []
    next_start = time.monotonic()
    winner: socket.socket | None = None
    try:
        while True:
            if attempt.stop.is_set():
                raise Abandoned
            now = time.monotonic()
            remaining = attempt.deadline - now
            if remaining <= 0:
                raise _failed(attempt, host, tried, len(pending), timed_out=True)
            if pending and (now >= next_start or not flying):
                current = pending.pop(0)
                tried.append(current)
                if _start(current, new_socket):
                    flying.append(current)
                    next_start = time.monotonic() + delay
                else:
                    next_start = time.monotonic()  # failed at once: the next one starts now
                if current.sock is not None and current.outcome == "connected":
                    winner, current.sock = current.sock, None
                    break
                continue
            if not flying:
                raise _failed(attempt, host, tried, len(pending), timed_out=False)
            wait = min(remaining, next_start - now) if pending else remaining
            ready, woken = _poll(flying, attempt, max(wait, 0.0))
            if woken:
                attempt.wakeup.clear()
            for current in ready:
                assert current.sock is not None
                code = current.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if code == 0:
                    winner, current.sock = current.sock, None
                    current.outcome = "connected"
                    break
                current.outcome = os.strerror(code)
                _close(current)
                flying.remove(current)
                next_start = time.monotonic()  # RFC 8305 section 5: the next one starts now
            if winner is not None:
                break
        winner.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return winner
    except BaseException:
        if winner is not None:
            winner.close()
        raise
    finally:
        for current in tried:
            _close(current)


def _start(current: _Try, new_socket: Callable[[int, int, int], socket.socket]) -> bool:
    """Start a non-blocking connect; ``True`` while it is in flight or done (see
    ``current.outcome``), ``False`` when it failed at once (``outcome`` says why)."""
    family, kind, proto, _name, sockaddr = current.info
    try:
        sock = new_socket(family, kind, proto)
    except OSError as exc:  # the family is not supported here, no descriptors left...
        current.outcome = exc.strerror or str(exc)
        return False
    current.sock = sock
    try:
        sock.setblocking(False)
        code = sock.connect_ex(sockaddr)
    except (OSError, ValueError, TypeError, OverflowError) as exc:
        current.outcome = (exc.strerror if isinstance(exc, OSError) else None) or str(exc)
        _close(current)
        return False
    if code == 0:
        current.outcome = "connected"
        return True
    if code in _IN_PROGRESS:
        return True
    current.outcome = os.strerror(code)
    _close(current)
    return False


def _poll(flying: list[_Try], attempt: Attempt, wait: float) -> tuple[list[_Try], bool]:
    """Wait up to ``wait`` seconds for connects to finish or the wakeup: ``(the tries
    whose connect finished, whether the wakeup fired)``."""
    by_fd = {current.sock.fileno(): current for current in flying if current.sock is not None}
    if _HAS_POLL:
        poller = select.poll()
        for fd in by_fd:
            poller.register(fd, select.POLLOUT)
        poller.register(attempt.wakeup.fd, select.POLLIN)
        fds = {fd for fd, events in poller.poll(poll_ms(wait)) if fd == attempt.wakeup.fd or events & _DONE}
    else:  # pragma: no cover - Windows: a failed connect shows in the exceptional set
        r, w, x = select.select([attempt.wakeup.fd], list(by_fd), list(by_fd), wait)
        fds = set(r) | set(w) | set(x)
    return [by_fd[fd] for fd in by_fd if fd in fds], attempt.wakeup.fd in fds


def _close(current: _Try) -> None:
    if current.sock is not None:
        try:
            current.sock.close()
        except OSError:
            pass
        current.sock = None


def _failed(attempt: Attempt, host: str, tried: list[_Try], untried: int, *, timed_out: bool) -> LeapConnectionError:
    """The one error for a race nobody won: every address tried and its outcome."""
    alone = len(tried) == 1 and not untried and tried[0].label == host
    parts = [f"{t.label}: {t.outcome}" for t in tried] + ([f"{untried} more not tried"] if untried else [])
    outcomes = "; ".join(parts)
    if timed_out:
        error = attempt.expired_error()
        return error if alone else error.with_message(f"{error} ({outcomes})")
    if len(tried) == 1:
        where = attempt.host if alone else f"{attempt.host} ({tried[0].label})"
        return LeapConnectionError(f"could not connect: TCP connect to {where} failed: {tried[0].outcome}", phase="tcp")
    return LeapConnectionError(
        f"could not connect: TCP connect to {attempt.host} failed at every address ({outcomes})", phase="tcp"
    )
