"""How a client opens connections: the options every client takes, validated once at
construction so a bad value is a clear ``ValueError``/``TypeError`` there, never a
failure deep inside a connection attempt."""

from __future__ import annotations

import ssl
from collections.abc import Iterable, Mapping
from typing import Any

from ..wire.handshake import validate_headers
from ..wire.jsontext import DEFAULT_MAX_ITEMS
from ..wire.wsframes import DEFAULT_MAX_SIZE
from .opening import Endpoint
from .proxy import PROXY_TYPES, Proxy
from .timeouts import check_seconds
from .tls import check_sslopt, tls_context

__all__ = ["MAX_MESSAGE_ITEMS", "MAX_MESSAGE_SIZE", "ConnectOptions", "check_message_items"]

MAX_MESSAGE_SIZE = 2**40
"""The largest ``max_message_size`` taken, in bytes (1 TiB: beyond what any buffer
or zlib's limits hold)."""


MAX_MESSAGE_ITEMS = 2**40
"""The largest ``max_message_items`` taken."""


def check_message_items(value: Any) -> int:
    """``max_message_items`` checked: an ``int`` from 1 to :data:`MAX_MESSAGE_ITEMS`
    (``TypeError``/``ValueError`` otherwise)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"max_message_items must be an int (values), not {type(value).__name__}")
    if not 0 < value <= MAX_MESSAGE_ITEMS:
        raise ValueError(f"max_message_items must be a number of values above 0, at most {MAX_MESSAGE_ITEMS}")
    return value


def _check_proxy_auth(auth: Any, proxy_type: str) -> None:
    """Raise ``ValueError`` unless ``auth`` is a ``(user, password)`` tuple of text
    the proxy's protocol can carry (UTF-8; SOCKS5: each at most 255 bytes; SOCKS4: a
    user id without NUL, no password)."""
    if not isinstance(auth, tuple) or len(auth) != 2 or not all(isinstance(part, str) for part in auth):
        raise ValueError("http_proxy_auth must be a (user, password) tuple of str")
    try:
        user, password = (part.encode() for part in auth)
    except UnicodeEncodeError:
        raise ValueError("http_proxy_auth must be text that UTF-8 can encode") from None
    if proxy_type.startswith("socks5") and (len(user) > 255 or len(password) > 255):
        raise ValueError("a SOCKS5 user name and password are at most 255 bytes each")
    if proxy_type.startswith("socks4") and b"\0" in user:
        raise ValueError("a SOCKS4 user id cannot hold a NUL character")
    if proxy_type == "http" and ":" in auth[0]:
        raise ValueError("an HTTP proxy user name cannot hold ':' (Basic authentication)")


class ConnectOptions:
    """Connection options shared by every client (see ``LeapClient`` for their
    meaning). The TLS context is built on first use and kept."""

    def __init__(
        self,
        *,
        connect_timeout: float = 10.0,
        send_timeout: float = 10.0,
        close_timeout: float = 5.0,
        max_message_size: int = DEFAULT_MAX_SIZE,
        max_message_items: int = DEFAULT_MAX_ITEMS,
        sslopt: Mapping[str, Any] | None = None,
        header: Mapping[str, str] | Iterable[str] | None = None,
        http_proxy_host: str | None = None,
        http_proxy_port: int | None = None,
        http_proxy_auth: tuple[str, str] | None = None,
        http_no_proxy: Iterable[str] | None = None,
        proxy_type: str = "http",
        trust_env: bool = True,
    ) -> None:
        self.connect_timeout = check_seconds(connect_timeout, "connect_timeout")
        self.send_timeout = check_seconds(send_timeout, "send_timeout")
        self.close_timeout = check_seconds(close_timeout, "close_timeout")
        if isinstance(max_message_size, bool) or not isinstance(max_message_size, int):
            raise TypeError(f"max_message_size must be an int (bytes), not {type(max_message_size).__name__}")
        if not 0 < max_message_size <= MAX_MESSAGE_SIZE:
            raise ValueError(f"max_message_size must be a number of bytes above 0, at most {MAX_MESSAGE_SIZE} (1 TiB)")
        self.max_message_size = max_message_size
        self.max_message_items = check_message_items(max_message_items)
        """The most values one message may decode to (see
        :func:`~leap_sync.wire.jsontext.check_items`)."""
        self.sslopt = dict(sslopt or {})
        check_sslopt(self.sslopt)
        self.server_name: str | None = self.sslopt.get("server_hostname")
        self.headers = validate_headers(header)
        self.proxy: Proxy | None = None
        if http_proxy_host is not None:
            if proxy_type not in PROXY_TYPES:
                raise ValueError(f"proxy_type must be one of {PROXY_TYPES}, not {proxy_type!r}")
            if not isinstance(http_proxy_host, str) or not http_proxy_host:
                raise ValueError("http_proxy_host must be a non-empty string")
            port = http_proxy_port if http_proxy_port is not None else (8080 if proxy_type == "http" else 1080)
            if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
                raise ValueError("http_proxy_port must be a port number (1-65535)")
            if http_proxy_auth is not None:
                _check_proxy_auth(http_proxy_auth, proxy_type)
            self.proxy = Proxy(proxy_type, http_proxy_host, port, http_proxy_auth)
        elif http_proxy_port is not None or http_proxy_auth is not None:
            raise ValueError("http_proxy_port and http_proxy_auth need http_proxy_host")
        if isinstance(http_no_proxy, str):
            http_no_proxy = http_no_proxy.split(",")
        self.no_proxy = [str(entry) for entry in http_no_proxy] if http_no_proxy is not None else None
        self.trust_env = bool(trust_env)
        self._tls: ssl.SSLContext | None = None

    def tls_context(self) -> ssl.SSLContext:
        """The TLS context (built once; raises ``OSError``/``ValueError`` for unusable
        settings)."""
        if self._tls is None:
            self._tls = tls_context(self.sslopt)
        return self._tls

    @staticmethod
    def endpoint(url: str) -> Endpoint:
        """Where ``url`` points; raises ``ValueError`` for a URL that is not ws(s)."""
        return Endpoint.parse(url)
