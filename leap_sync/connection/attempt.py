"""One connection attempt's target and budget: :class:`Endpoint` (where a ws(s) URL
points) and :class:`Attempt` (the deadline every phase shares, the event that abandons
it, the wakeup that interrupts a wait, the phase running now)."""

from __future__ import annotations

import threading
import time
import urllib.parse
from collections.abc import Callable

import attrs

from ..errors import LeapConnectionError
from ..wire.secrets import Secrets
from ..wire.urls import redact_url
from .wakeup import Wakeup

__all__ = ["PHASES", "Abandoned", "Attempt", "Endpoint"]

PHASES = ("dns", "tcp", "proxy", "tls", "upgrade")
"""The phases of an attempt before the websocket is open, in order."""


class Abandoned(Exception):
    """Raised inside an attempt's phases when ``Attempt.stop`` is set (``close()``);
    :func:`~leap_sync.connection.opening.open_socket` turns it into its error."""


@attrs.frozen
class Endpoint:
    """Where a ``ws://`` or ``wss://`` URL points: ``resource`` is path and query."""

    secure: bool
    host: str
    port: int
    resource: str

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        """Raises ``TypeError`` for a URL that is not a ``str`` and ``ValueError`` for
        one that is not ``ws(s)://host[:port]/...`` (a port out of range included, and
        port 0, which no connection can go to: it never means the default port),
        naming the URL with its secrets redacted (:func:`~leap_sync.wire.urls.redact_url`)."""
        if not isinstance(url, str):
            raise TypeError(f"a URL is a str, not {type(url).__name__}")
        try:
            parts = urllib.parse.urlsplit(url)
        except ValueError:  # "Invalid IPv6 URL"
            raise ValueError(f"not a ws:// or wss:// URL with a host: {redact_url(url)!r}") from None
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise ValueError(f"not a ws:// or wss:// URL with a host: {redact_url(url)!r}")
        if not parts.hostname.isprintable() or " " in parts.hostname:
            raise ValueError(f"URL host holds a space or control character: {redact_url(url)!r}")
        secure = parts.scheme == "wss"
        try:
            port = parts.port  # raises ValueError when out of range
        except ValueError:  # urllib's text may quote the password: never shown
            raise ValueError(f"URL port is not a number 1-65535: {redact_url(url)!r}") from None
        if port == 0:
            raise ValueError(f"URL port 0 is not a port a connection can go to: {redact_url(url)!r}")
        if port is None:
            port = 443 if secure else 80
        resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if any(c in resource for c in " \r\n\0"):
            raise ValueError(f"URL path holds a space or control character: {redact_url(url)!r}")
        return cls(secure, parts.hostname, port, resource)

    @property
    def hostport(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


class Attempt:
    """The budget of one connection attempt: a monotonic ``deadline`` for every phase
    together, the ``stop`` event that abandons it, and the ``wakeup`` that interrupts a
    wait. :attr:`phase` is the phase running now (read by other threads for error
    messages)."""

    def __init__(
        self, timeout: float, stop: threading.Event, wakeup: Wakeup, redact: Callable[[str], str] = str
    ) -> None:
        self.timeout = timeout
        self._redact = redact
        self.secrets = Secrets()
        """Secrets this attempt learnt (an environment proxy's credentials, when the
        attempt chooses it): :meth:`redact` removes them too."""
        self.deadline = time.monotonic() + timeout
        self.stop = stop
        self.wakeup = wakeup
        self.phase = "dns"
        self.host = ""
        self.resolving = False
        """Whether the thread is inside ``getaddrinfo()`` right now (uninterruptible)."""

    def redact(self, text: str) -> str:
        """Applied to the server's text (HTTP status, headers) before an error quotes
        and shortens it: the attempt's :attr:`secrets`, then the client's ``redact``."""
        return self._redact(self.secrets(text))

    def expired_error(self) -> LeapConnectionError:
        """The error for an attempt past its deadline, naming the phase it was in."""
        message = _TIMEOUTS[self.phase].format(host=self.host, t=self.timeout)
        return LeapConnectionError(f"could not connect: {message}", phase=self.phase)


_TIMEOUTS = {
    "dns": "DNS lookup of {host!r} did not finish within {t:g} s",
    "tcp": "TCP connect to {host} did not complete within {t:g} s",
    "proxy": "proxy did not open a tunnel to {host} within {t:g} s",
    "tls": "TLS handshake with {host} did not complete within {t:g} s",
    "upgrade": "no websocket upgrade within {t:g} s from {host}",
}
