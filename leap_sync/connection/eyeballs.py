"""Happy Eyeballs (RFC 8305) for the TCP phase: several addresses, one deadline.

A name often resolves to several addresses (IPv6 and IPv4 of a dual-stack host, several
A records), and one of them may be dead: its SYNs dropped by a blackholed route or a
firewall, so a connect to it never completes. Trying the addresses one after another
spends the whole ``connect_timeout`` on the dead one. Instead:

- :func:`order` (pure, tested without sockets) sorts the resolver's answer as RFC 8305
  section 4 says: the families interleaved, starting with the family of the first
  address ``getaddrinfo()`` returned (it already sorted them by RFC 6724), duplicates
  dropped. An entry that is not a TCP address over IPv4 or IPv6 (:func:`usable`: a UDP
  entry, a truncated tuple, a host name where an address belongs...) is skipped, never
  tried: the resolver is not trusted to answer only what was asked.
- At most :data:`MAX_ADDRESSES` of the ordered addresses are tried, the cut made after
  duplicates are dropped and families interleaved, so a long answer of one family never
  hides the other; the error counts those not tried.
- :func:`connect_first` starts a non-blocking connect to the first address, and to the
  next one :data:`ATTEMPT_DELAY` later (or at once when an earlier one fails) while the
  earlier ones stay in flight; the first to connect wins and every other socket is
  closed. All of them are waited on in one ``poll()`` together with the attempt's
  wakeup descriptor, on the calling thread (no thread of its own), so ``close()``
  interrupts the race at once, and the attempt's single deadline bounds it as a whole.
- When no address connects, the one error names phase ``"tcp"`` and lists every
  address tried and what each did (refused, unreachable, no answer), how many were not
  tried and how many unusable entries were skipped.

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

__all__ = ["ATTEMPT_DELAY", "MAX_ADDRESSES", "AddrInfo", "connect_first", "order", "show", "untried_note", "usable"]

ATTEMPT_DELAY = 0.25
"""Seconds between starting one address and the next (RFC 8305 section 5's
recommended "Connection Attempt Delay")."""

MAX_ADDRESSES = 16
"""The most addresses one attempt tries, counted after duplicates are dropped and the
families interleaved."""

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


def _is_int(value: object, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def usable(info: object) -> bool:
    """Whether one resolver entry is a TCP address that can be connected to as it is:
    a 5-tuple ``(family, SOCK_STREAM, 0 or IPPROTO_TCP, canonname, sockaddr)`` with
    ``family`` ``AF_INET`` and ``sockaddr`` ``(IPv4 literal, port)``, or ``AF_INET6``
    and ``(IPv6 literal, port, flowinfo, scope_id)``, the port 1-65535. Pure; never
    raises (a host name where an address belongs is not usable: connecting to it would
    mean another, blocking, lookup)."""
    if not isinstance(info, tuple) or len(info) != 5:
        return False
    family, kind, proto, _name, sockaddr = info
    if not (_is_int(family, 0, 2**16) and _is_int(kind, 0, 2**16) and _is_int(proto, 0, 2**16)):
        return False
    if kind != socket.SOCK_STREAM or proto not in (0, socket.IPPROTO_TCP):
        return False
    if not isinstance(sockaddr, tuple) or len(sockaddr) < 2 or not isinstance(sockaddr[0], str):
        return False
    if not _is_int(sockaddr[1], 1, 65535):
        return False
    host = sockaddr[0]
    if family == socket.AF_INET and len(sockaddr) == 2:
        pass
    elif family == socket.AF_INET6 and len(sockaddr) == 4:
        if not (_is_int(sockaddr[2], 0, 2**20 - 1) and _is_int(sockaddr[3], 0, 2**32 - 1)):
            return False
        host = host.partition("%")[0]  # fe80::1%eth0
    else:
        return False
    try:
        socket.inet_pton(family, host)
    except (OSError, ValueError):
        return False
    return True


def order(infos: Sequence[object]) -> list[AddrInfo]:
    """The addresses in the order to try them (RFC 8305 section 4): one of the first
    address's family, then one of the other family, and so on, each family keeping the
    resolver's order; once a family runs out the rest follow. An address (family and
    ``sockaddr``) repeated in ``infos`` is kept once; an entry that is not
    :func:`usable` is left out. Pure; never raises."""
    seen: set[tuple[Any, Any]] = set()
    families: dict[Any, list[AddrInfo]] = {}
    for info in infos:
        if not usable(info):
            continue
        assert isinstance(info, tuple)
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


def untried_note(untried: int, beyond: int) -> list[str]:
    """The words an error adds for addresses not tried: ``untried`` left by the
    deadline, ``beyond`` cut by :data:`MAX_ADDRESSES` (``[]`` when both are 0)."""
    count = untried + beyond
    if not count:
        return []
    limit = f" (at most {MAX_ADDRESSES} addresses are tried)" if beyond else ""
    return [f"{count} more not tried{limit}"]


def _skipped_note(skipped: int) -> list[str]:
    if not skipped:
        return []
    return [f"{skipped} unusable resolver {'entry' if skipped == 1 else 'entries'} skipped"]


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
    infos: Sequence[object],
    host: str,
    port: int,
    attempt: Attempt,
    *,
    delay: float = ATTEMPT_DELAY,
    new_socket: Callable[[int, int, int], socket.socket] = socket.socket,
    label: str | None = None,
) -> socket.socket:
    """Race TCP connects to ``infos`` (the resolver's answer: :func:`order` sorts it,
    at most :data:`MAX_ADDRESSES` are tried) as the module docstring says; return the
    first connected socket (non-blocking, ``TCP_NODELAY`` set). ``host:port`` is what
    was resolved; messages name it as ``label`` where given (a proxy: ``http proxy
    host:port``); ``new_socket(family, type, proto)`` makes each socket.

    Runs on the calling thread and sets ``attempt.phase`` to ``"tcp"``. Raises
    :class:`LeapConnectionError` (phase ``"tcp"``) when every address failed, the
    attempt's deadline passed, or ``infos`` holds no :func:`usable` entry, listing each
    address tried and its outcome, and
    :class:`~leap_sync.connection.attempt.Abandoned` when ``attempt.stop`` is set.
    Every socket but the one returned is closed, whatever happens.
    """
    attempt.phase = "tcp"
    attempt.host = label or (f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    addresses = order(infos)
    notes = _skipped_note(sum(not usable(info) for info in infos))
    if not addresses:
        what = "entry is not a TCP address" if len(infos) == 1 else "entries are not TCP addresses"
        raise LeapConnectionError(
            f"could not connect: no usable address for {attempt.host} "
            f"(the resolver's {len(infos)} {what} over IPv4 or IPv6)",
            phase="tcp",
        )
    beyond = max(len(addresses) - MAX_ADDRESSES, 0)
    pending = [_Try(info, port) for info in addresses[:MAX_ADDRESSES]]
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
                raise _failed(attempt, host, tried, untried_note(len(pending), beyond) + notes, timed_out=True)
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
                raise _failed(attempt, host, tried, untried_note(len(pending), beyond) + notes, timed_out=False)
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


def _failed(
    attempt: Attempt, host: str, tried: list[_Try], notes: list[str], *, timed_out: bool
) -> LeapConnectionError:
    """The one error for a race nobody won: every address tried and its outcome, then
    ``notes`` (addresses not tried, entries skipped)."""
    alone = len(tried) == 1 and not notes and tried[0].label == host
    outcomes = "; ".join([f"{t.label}: {t.outcome}" for t in tried] + notes)
    if timed_out:
        error = attempt.expired_error()
        return error if alone else error.with_message(f"{error} ({outcomes})")
    if len(tried) == 1 and not notes:
        where = attempt.host if alone else f"{attempt.host} ({tried[0].label})"
        return LeapConnectionError(f"could not connect: TCP connect to {where} failed: {tried[0].outcome}", phase="tcp")
    return LeapConnectionError(
        f"could not connect: TCP connect to {attempt.host} failed at every address ({outcomes})", phase="tcp"
    )
