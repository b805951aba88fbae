"""Which proxy, if any, a connection goes through: a pure decision, tested without
sockets.

The rules (:func:`choose_proxy`):

1. An explicit proxy (``http_proxy_host``...) is used for every host except those its
   own ``http_no_proxy`` list names. The environment is not read at all: an explicit
   setting is never overridden by ``no_proxy`` or ``https_proxy`` variables.
2. Otherwise, with ``trust_env=True`` (the default), the environment decides:
   ``https_proxy`` for ``wss://`` and ``http_proxy`` for ``ws://`` (lower case first;
   ``all_proxy`` when neither is set; ``HTTP_PROXY`` is ignored inside a CGI request,
   as :func:`urllib.request.getproxies_environment` does), bypassed for the hosts that
   ``no_proxy`` or ``http_no_proxy`` name.
3. Otherwise (``trust_env=False`` and no explicit proxy) the connection is direct.

A ``no_proxy`` entry is ``*`` (every host), a host name (which also matches its
subdomains; a leading dot is allowed), an IP address, or a CIDR network, each with an
optional ``:port``.
"""

from __future__ import annotations

import ipaddress
import urllib.parse
import urllib.request
from collections.abc import Iterable

import attrs

from ..wire.urls import redact_url

__all__ = ["PROXY_TYPES", "Proxy", "bypassed", "choose_proxy", "parse_proxy_url"]

PROXY_TYPES = ("http", "socks4", "socks4a", "socks5", "socks5h")


@attrs.frozen
class Proxy:
    """A proxy: ``type`` is one of :data:`PROXY_TYPES`; ``auth`` is
    ``(user, password)`` or ``None`` (never shown in ``repr``)."""

    type: str
    host: str
    port: int
    auth: tuple[str, str] | None = attrs.field(default=None, repr=False)

    def describe(self) -> str:
        """``http proxy proxy.local:3128``, for error messages (no credentials)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.type} proxy {host}:{self.port}"


_DEFAULT_PORTS = {"http": 8080, "socks4": 1080, "socks4a": 1080, "socks5": 1080, "socks5h": 1080}


def parse_proxy_url(url: str) -> Proxy:
    """A proxy from an environment-style URL (``http://user:pw@host:3128``,
    ``socks5h://host:1080``; a bare ``host:port`` means ``http``). Raises
    ``ValueError`` for a scheme other than :data:`PROXY_TYPES`, a URL without a host,
    or a port out of range or 0 (never taken to mean the default port)."""
    if "://" not in url:
        url = "http://" + url
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError when not a number or out of range
    except ValueError:  # urllib's text may quote the password: never shown
        raise ValueError(f"proxy URL has a bad host or port: {redact_url(url)!r}") from None
    scheme = parts.scheme.lower()
    if scheme not in PROXY_TYPES:
        raise ValueError(f"unsupported proxy scheme {scheme!r} (supported: {', '.join(PROXY_TYPES)})")
    host = parts.hostname
    if not host:
        raise ValueError("proxy URL has no host")
    port = parts.port  # raises ValueError when out of range
    if port == 0:
        raise ValueError("proxy URL port 0 is not a port a connection can go to")
    if port is None:
        port = _DEFAULT_PORTS[scheme]
    auth = None
    if parts.username is not None:
        auth = (urllib.parse.unquote(parts.username), urllib.parse.unquote(parts.password or ""))
    return Proxy(scheme, host, port, auth)


def _split_entries(value: str | Iterable[str] | None) -> list[str]:
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    return [item.strip().lower() for item in items if item and item.strip()]


def bypassed(host: str, port: int, entries: Iterable[str]) -> bool:
    """Whether ``no_proxy`` ``entries`` exempt ``host:port`` from the proxy."""
    host = host.lower().strip("[]").rstrip(".")
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for entry in entries:
        if entry == "*":
            return True
        name, entry_port = entry, None
        if entry.startswith("["):  # [v6]:port
            name, _, tail = entry[1:].partition("]")
            entry_port = tail[1:] if tail.startswith(":") else None
        elif entry.count(":") == 1:
            name, entry_port = entry.split(":")
        if entry_port is not None and entry_port != str(port):
            continue
        if address is not None:
            try:
                if address in ipaddress.ip_network(name, strict=False):
                    return True
            except ValueError:
                pass
            continue
        name = name.lstrip(".").rstrip(".")
        if name and (host == name or host.endswith("." + name)):
            return True
    return False


def choose_proxy(
    host: str,
    port: int,
    secure: bool,
    *,
    explicit: Proxy | None,
    no_proxy: Iterable[str] | None,
    trust_env: bool,
) -> Proxy | None:
    """The proxy for a connection to ``host:port`` (``secure``: ``wss``), or ``None``
    for a direct connection, by the rules in this module's docstring. Raises
    ``ValueError`` for a malformed proxy URL in the environment."""
    explicit_no_proxy = _split_entries(no_proxy)
    if explicit is not None:
        return None if bypassed(host, port, explicit_no_proxy) else explicit
    if not trust_env:
        return None
    proxies = urllib.request.getproxies_environment()
    url = proxies.get("https" if secure else "http") or proxies.get("all")
    if not url:
        return None
    if bypassed(host, port, explicit_no_proxy + _split_entries(proxies.get("no"))):
        return None
    return parse_proxy_url(url)
