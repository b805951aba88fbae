"""One connection attempt, phase by phase: DNS, TCP, proxy, TLS, websocket upgrade.

:func:`open_socket` runs the phases on the calling thread (the client's I/O thread)
under one deadline for the whole attempt, and every wait is a ``poll()`` on the socket
*and* the client's :class:`~leap_sync.connection.wakeup.Wakeup`, so ``close()`` interrupts any
phase at once. Each failure is a :class:`LeapConnectionError` whose ``phase`` and
message name the step and its cause (host and port, the resolver's error, the HTTP
status and ``Location`` of a refused upgrade).

What cannot be interrupted, and how it is bounded: the DNS lookup is a blocking
``getaddrinfo()`` (the operating system offers no way to cancel it). The attempt still
fails at its deadline: whoever waits for the attempt stops waiting then (``connect()``
raises, ``close()`` returns), and the I/O thread, once the lookup returns (after the
system resolver's own timeout at worst), sees the attempt is over and ends without
opening anything. Proxies (HTTP CONNECT, SOCKS4/4a/5/5h) are spoken here, with the same
bounded, interruptible waits as every other phase.

The TCP phase tries a name's addresses by Happy Eyeballs (RFC 8305, see
:mod:`~leap_sync.connection.eyeballs`): the next address starts 250 ms after the last
while earlier ones stay in flight, so one dead address never spends the whole deadline.
A proxy's own addresses are tried the same way; with ``socks5h``/``socks4a`` the target
name goes to the proxy unresolved, with ``socks5``/``socks4`` the target's addresses are
asked for in turn (:func:`_through_socks`).
"""

from __future__ import annotations

import select
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import LeapConnectionError
from ..wire.handshake import (
    HandshakeError,
    Response,
    ResponseHead,
    check_upgrade,
    connect_request,
    new_key,
    retry_after,
)
from ..wire.handshake import upgrade_request as build_upgrade_request
from ..wire.socks import (
    SocksError,
    SocksUnreachable,
    socks4_reply,
    socks4_request,
    socks5_auth,
    socks5_auth_reply,
    socks5_connect,
    socks5_connect_reply,
    socks5_greeting,
    socks5_method,
)
from .attempt import PHASES, Abandoned, Attempt, Endpoint
from .eyeballs import MAX_ADDRESSES, connect_first, order, show, untried_note, usable
from .proxy import Proxy, choose_proxy
from .timeouts import poll_ms

__all__ = ["PHASES", "Attempt", "Endpoint", "open_socket"]  # Attempt and Endpoint live in .attempt

_READ_SIZE = 16 * 1024
_HAS_POLL = hasattr(select, "poll")


_Stop = Abandoned  # the attempt was abandoned (close())


def _error(attempt: Attempt, message: str, **extra: Any) -> LeapConnectionError:
    return LeapConnectionError(f"could not connect: {message}", phase=attempt.phase, **extra)


def _wait(sock: socket.socket, write: bool, attempt: Attempt) -> None:
    """Wait until ``sock`` is readable (or writable), the deadline passes (raise the
    phase's timeout) or the attempt is abandoned (raise :class:`_Stop`)."""
    while True:
        if attempt.stop.is_set():
            raise _Stop
        remaining = attempt.deadline - time.monotonic()
        if remaining <= 0:
            raise attempt.expired_error()
        flag_sock = select.POLLOUT if write else select.POLLIN
        if _HAS_POLL:
            poller = select.poll()
            poller.register(sock, flag_sock)
            poller.register(attempt.wakeup.fd, select.POLLIN)
            events = poller.poll(poll_ms(remaining))
            fds = {fd for fd, _ in events}
        else:  # pragma: no cover - Windows
            r, w, _ = select.select(
                [attempt.wakeup.fd] + ([] if write else [sock]), [sock] if write else [], [], remaining
            )
            fds = {getattr(s, "fileno", lambda s=s: s)() for s in r + w}
        if attempt.wakeup.fd in fds:
            attempt.wakeup.clear()
            continue  # re-check stop and the deadline
        if fds:
            return


def _send_all(sock: socket.socket, data: bytes, attempt: Attempt) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[sock.send(view) :]
        except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError):
            _wait(sock, True, attempt)
        except ssl.SSLWantReadError:
            _wait(sock, False, attempt)


def _recv_some(sock: socket.socket, attempt: Attempt) -> bytes:
    while True:
        try:
            data = sock.recv(_READ_SIZE)
        except (BlockingIOError, InterruptedError, ssl.SSLWantReadError):
            _wait(sock, False, attempt)
            continue
        except ssl.SSLWantWriteError:
            _wait(sock, True, attempt)
            continue
        if not data:
            raise ConnectionResetError("the peer closed the connection")
        return data


def _resolve(host: str, port: int, attempt: Attempt) -> list[tuple[Any, ...]]:
    attempt.phase, attempt.host = "dns", host
    attempt.resolving = True
    try:
        infos = list(socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM, socket.IPPROTO_TCP))
    except (OSError, UnicodeError, ValueError, TypeError) as exc:
        attempt.resolving = False
        cause = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise _error(attempt, f"DNS lookup of {host!r} failed: {cause}") from None
    attempt.resolving = False
    if attempt.stop.is_set():
        raise _Stop
    if time.monotonic() >= attempt.deadline:
        raise attempt.expired_error()  # the answer came, but too late
    if not infos:
        raise _error(attempt, f"DNS lookup of {host!r} found no address")
    if not any(usable(info) for info in infos):
        what = "entry is not a TCP address" if len(infos) == 1 else "entries are not TCP addresses"
        raise _error(attempt, f"DNS lookup of {host!r} found no usable address ({len(infos)} {what} over IPv4 or IPv6)")
    return infos


def _read_head(sock: socket.socket, attempt: Attempt, early: bytes = b"") -> tuple[ResponseHead, Response | str]:
    """Read one HTTP response head: ``(reader, response)``, or ``(reader, problem)``
    for a malformed one. Errors come back as text, not raised from here, so no
    exception the caller raises carries the server's response in its context."""
    head = ResponseHead(redact=attempt.redact)
    data = early
    while True:
        try:
            response = head.feed(data) if data else None
        except HandshakeError as exc:
            return head, str(exc)
        if response is not None:
            return head, response
        data = _recv_some(sock, attempt)


def _tunnel(sock: socket.socket, proxy: Proxy, endpoint: Endpoint, attempt: Attempt) -> bytes:
    """HTTP CONNECT through ``proxy``; returns bytes that followed the proxy's answer."""
    attempt.phase, attempt.host = "proxy", f"{endpoint.hostport} through the {proxy.describe()}"
    _send_all(sock, connect_request(endpoint.host, endpoint.port, proxy.auth), attempt)
    head, response = _read_head(sock, attempt)
    if isinstance(response, str):
        raise _error(attempt, f"{proxy.describe()} answered CONNECT badly: {response}")
    if not 200 <= response.status < 300:
        raise _error(
            attempt,
            f"{proxy.describe()} refused CONNECT to {endpoint.hostport}: {response.describe(attempt.redact)}",
            status_code=response.status,
        )
    return head.rest


def _exchange(
    sock: socket.socket, attempt: Attempt, request: bytes, reader: Callable[[bytes], Any]
) -> tuple[Any, bytes]:
    """Send ``request``, read until ``reader`` (a :mod:`~leap_sync.wire.socks`
    reader) says the reply is complete: ``(its result, the bytes received)``."""
    _send_all(sock, request, attempt)
    data = b""
    while True:
        result = reader(data)
        if result is not None:
            return result, data
        if len(data) > 1024:
            raise SocksError("the SOCKS proxy's answer is too long")
        data += _recv_some(sock, attempt)


def _socks(sock: socket.socket, proxy: Proxy, endpoint: Endpoint, attempt: Attempt, host: str | None = None) -> bytes:
    """SOCKS4(a)/5(h) CONNECT through ``proxy`` on the connected ``sock`` to
    ``host`` (an address the client resolved; ``None``: the endpoint's name, which
    ``socks5h``/``socks4a`` send as is), with the same waits as every phase (bounded,
    interrupted by ``close()``); returns bytes that followed the proxy's answer.
    Raises :class:`SocksError` (:class:`SocksUnreachable` when the proxy could not
    reach ``host``) for the proxy's refusal."""
    attempt.phase, attempt.host = "proxy", f"{endpoint.hostport} through the {proxy.describe()}"
    host = endpoint.host if host is None else host
    if proxy.type.startswith("socks5"):
        user, password = proxy.auth or ("", "")
        method, _ = _exchange(sock, attempt, socks5_greeting(proxy.auth is not None), socks5_method)
        if method == 2:
            _exchange(sock, attempt, socks5_auth(user, password), socks5_auth_reply)
        length, data = _exchange(sock, attempt, socks5_connect(host, endpoint.port), socks5_connect_reply)
        return bytes(data[length:])
    user = proxy.auth[0] if proxy.auth else ""
    remote = proxy.type == "socks4a"
    _, data = _exchange(sock, attempt, socks4_request(host, endpoint.port, user, remote_dns=remote), socks4_reply)
    return bytes(data[8:])


def _through_socks(
    proxy_infos: Sequence[tuple[Any, ...]], proxy: Proxy, endpoint: Endpoint, attempt: Attempt
) -> tuple[socket.socket, bytes]:
    """Connect to the endpoint through a SOCKS ``proxy`` whose own addresses are
    ``proxy_infos``: the connected socket and the bytes that followed the proxy's
    answer.

    With ``socks5h``/``socks4a`` the proxy resolves the target: one proxy connection.
    With ``socks5``/``socks4`` the client does, and tries the target's addresses in
    Happy Eyeballs order (:func:`~leap_sync.connection.eyeballs.order`; ``socks4``:
    the IPv4 ones), at most :data:`~leap_sync.connection.eyeballs.MAX_ADDRESSES`, one
    after another: each needs a proxy connection of its own, and the next is opened
    when the proxy answers that it could not reach one (refused, host or network
    unreachable, TTL expired); any other refusal ends the attempt. All under the
    attempt's one deadline, interrupted by ``close()``. The error names each target
    address asked for and the proxy's answer."""
    label = proxy.describe()
    targets: list[tuple[str | None, str]] = [(None, endpoint.host)]  # (host to send, its name in errors)
    beyond = 0
    if proxy.type in ("socks5", "socks4"):
        infos = _resolve(endpoint.host, endpoint.port, attempt)
        addresses = [info for info in order(infos) if proxy.type == "socks5" or info[0] == socket.AF_INET]
        if not addresses:
            attempt.phase, attempt.host = "proxy", f"{endpoint.hostport} through the {label}"
            problem = "the target has no IPv4 address (use socks4a)"
            raise _error(attempt, f"{label} could not connect to {endpoint.hostport}: {problem}")
        beyond = max(len(addresses) - MAX_ADDRESSES, 0)
        targets = [(str(info[4][0]), show(info[4], endpoint.port)) for info in addresses[:MAX_ADDRESSES]]
    tried: list[str] = []  # "target address: the proxy's answer"
    for index, (host, where) in enumerate(targets):
        left = untried_note(len(targets) - index - 1, beyond)
        sock = connect_first(proxy_infos, proxy.host, proxy.port, attempt, label=label)  # raises for a dead proxy
        try:
            return sock, _socks(sock, proxy, endpoint, attempt, host)
        except SocksError as exc:
            _close_quietly(sock)
            problem = str(exc)
            tried.append(f"{where}: {problem}")
            if isinstance(exc, SocksUnreachable) and index + 1 < len(targets):
                continue  # the next address, through a new proxy connection
        except LeapConnectionError as exc:  # the deadline, while the proxy had not answered
            _close_quietly(sock)
            if not tried:
                raise
            raise exc.with_message(f"{exc} ({'; '.join([*tried, f'{where}: no answer', *left])})") from None
        except BaseException:
            _close_quietly(sock)
            raise
        if len(tried) == 1 and not left:
            target = endpoint.hostport if where == endpoint.host else f"{endpoint.hostport} ({where})"
            raise _error(attempt, f"{label} could not connect to {target}: {problem}")
        raise _error(attempt, f"{label} could not connect to {endpoint.hostport} ({'; '.join(tried + left)})")
    raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover


def _start_tls(sock: socket.socket, context: ssl.SSLContext, server_name: str, attempt: Attempt) -> ssl.SSLSocket:
    attempt.phase = "tls"
    tls = context.wrap_socket(sock, server_hostname=server_name, do_handshake_on_connect=False)
    while True:
        try:
            tls.do_handshake()
            return tls
        except ssl.SSLWantReadError:
            _wait(tls, False, attempt)
        except ssl.SSLWantWriteError:
            _wait(tls, True, attempt)
        except ssl.SSLCertVerificationError as exc:
            raise _error(attempt, f"TLS handshake with {attempt.host} failed: {exc.verify_message or exc}") from None


def _upgrade(sock: socket.socket, endpoint: Endpoint, headers: Sequence[str], early: bytes, attempt: Attempt) -> bytes:
    """Send the upgrade request and check the answer; returns the bytes that followed
    it (the first websocket frames)."""
    attempt.phase, attempt.host = "upgrade", endpoint.hostport
    key = new_key()
    _send_all(
        sock,
        build_upgrade_request(endpoint.resource, endpoint.host, endpoint.port, endpoint.secure, key, headers),
        attempt,
    )
    head, response = _read_head(sock, attempt, early)
    if isinstance(response, str):
        raise _error(attempt, f"bad websocket upgrade answer from {endpoint.hostport}: {response}")
    problem = None
    try:
        check_upgrade(response, key, attempt.redact)
    except HandshakeError as exc:
        problem = str(exc)
    if problem is not None:  # raised here, not in the except clause: no context to carry the response
        raise _error(
            attempt,
            f"{problem} from {endpoint.hostport}",
            status_code=response.status if response.status != 101 else None,
            retry_after=retry_after(response, time.time()),
        )
    return head.rest


def open_socket(
    endpoint: Endpoint,
    attempt: Attempt,
    *,
    headers: Sequence[str] = (),
    proxy: Proxy | None = None,
    no_proxy: Sequence[str] | None = None,
    trust_env: bool = True,
    tls_context: Callable[[], ssl.SSLContext] | None = None,
    server_name: str | None = None,
) -> tuple[socket.socket, bytes]:
    """Run every phase of one attempt; return the upgraded, non-blocking socket and the
    bytes already received after the upgrade answer.

    Raises :class:`LeapConnectionError` (``phase`` set) for any failure, the attempt's
    deadline and ``close()`` (``stop`` set) included.
    """
    sock: socket.socket | None = None
    try:
        try:
            chosen = choose_proxy(
                endpoint.host, endpoint.port, endpoint.secure, explicit=proxy, no_proxy=no_proxy, trust_env=trust_env
            )
        except ValueError as exc:
            attempt.phase = "proxy"
            raise _error(attempt, f"bad proxy setting in the environment: {exc}") from None
        if chosen is not None:  # an environment proxy's credentials become known here
            attempt.secrets.add_credentials(chosen.auth)
        target = chosen or Proxy("direct", endpoint.host, endpoint.port)
        infos = _resolve(target.host, target.port, attempt)
        early = b""
        if chosen is not None and chosen.type != "http":
            sock, early = _through_socks(infos, chosen, endpoint, attempt)
        else:
            sock = connect_first(infos, target.host, target.port, attempt, label=chosen.describe() if chosen else None)
            if chosen is not None:
                early = _tunnel(sock, chosen, endpoint, attempt)
        if endpoint.secure:
            if early:
                attempt.phase = "proxy"
                raise _error(attempt, "the proxy sent data before the TLS handshake")
            attempt.host = endpoint.hostport
            if tls_context is None:
                raise _error(attempt, "no TLS context for a wss:// URL")
            try:
                context = tls_context()
            except (OSError, ValueError, TypeError, ssl.SSLError) as exc:
                attempt.phase = "tls"
                raise _error(attempt, f"TLS settings are unusable: {exc}") from None
            sock = _start_tls(sock, context, server_name or endpoint.host, attempt)
        rest = _upgrade(sock, endpoint, headers, early, attempt)
        return sock, rest
    except _Stop:
        _close_quietly(sock)
        raise LeapConnectionError("connection attempt abandoned: the client was closed", phase=attempt.phase) from None
    except LeapConnectionError:
        _close_quietly(sock)
        raise
    except Exception as exc:  # ssl.SSLError is an OSError; anything else fails this attempt only
        _close_quietly(sock)
        if isinstance(exc, OSError) and exc.strerror and not isinstance(exc, ssl.SSLError):
            cause = exc.strerror
        elif isinstance(exc, (OSError, ValueError)):
            cause = str(exc)
        else:  # not a failure the network explains (a setting the OS refused): name its kind
            cause = f"{type(exc).__name__}: {exc}"
        what = {"tls": "TLS handshake with", "upgrade": "websocket upgrade with", "proxy": "proxy tunnel to"}.get(
            attempt.phase, "connection to"
        )
        raise _error(attempt, f"{what} {attempt.host} failed: {cause or type(exc).__name__}") from None
    except BaseException:
        _close_quietly(sock)
        raise


def _close_quietly(sock: socket.socket | None) -> None:
    if sock is not None:
        try:
            sock.close()
        except OSError:
            pass
