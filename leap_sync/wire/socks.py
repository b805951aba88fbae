"""SOCKS4, SOCKS4a and SOCKS5 (RFC 1928, RFC 1929) client exchanges, sans-I/O.

Builders return the bytes to send; readers take the bytes received so far and return
``None`` until a reply is complete, then check it. Errors are :class:`SocksError`,
whose message names the proxy's answer. The caller does the I/O (bounded and
interruptible: :mod:`leap_sync.connection.opening`).
"""

from __future__ import annotations

import ipaddress
import struct

from ..errors import LeapError

__all__ = [
    "SocksError",
    "SocksUnreachable",
    "socks4_reply",
    "socks4_request",
    "socks5_auth",
    "socks5_auth_reply",
    "socks5_connect",
    "socks5_connect_reply",
    "socks5_greeting",
    "socks5_method",
]

_SOCKS5_REPLIES = {
    1: "general SOCKS server failure",
    2: "connection not allowed by ruleset",
    3: "network unreachable",
    4: "host unreachable",
    5: "connection refused",
    6: "TTL expired",
    7: "command not supported",
    8: "address type not supported",
}


class SocksError(LeapError):
    """The SOCKS proxy refused, or answered something that is not SOCKS."""


class SocksUnreachable(SocksError):
    """The proxy could not reach the address it was asked for (SOCKS5 replies 3
    network unreachable, 4 host unreachable, 5 connection refused, 6 TTL expired;
    SOCKS4's 0x5B, request rejected or failed): another address of the same target
    may still work."""


_UNREACHABLE = (3, 4, 5, 6)


def _address(host: str) -> bytes:
    """SOCKS5 DST.ADDR: an IPv4 or IPv6 literal, else a domain name."""
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        name = host.encode("idna")
        if not 0 < len(name) < 256:
            raise SocksError(f"host name of {len(name)} bytes cannot go through SOCKS5") from None
        return b"\x03" + bytes([len(name)]) + name
    return (b"\x01" if ip.version == 4 else b"\x04") + ip.packed


def socks5_greeting(with_password: bool) -> bytes:
    """The methods offered: no authentication, and username/password if given."""
    return b"\x05\x02\x00\x02" if with_password else b"\x05\x01\x00"


def socks5_method(data: bytes) -> int | None:
    """The method the proxy chose (0: none, 2: username/password)."""
    if len(data) < 2:
        return None
    if data[0] != 5:
        raise SocksError("not a SOCKS5 proxy (bad version in its answer)")
    if data[1] == 0xFF:
        raise SocksError("the SOCKS5 proxy accepts none of the offered authentication methods")
    if data[1] not in (0, 2):
        raise SocksError(f"the SOCKS5 proxy chose an unknown method {data[1]}")
    return data[1]


def socks5_auth(user: str, password: str) -> bytes:
    """RFC 1929 username/password request."""
    u, p = user.encode(), password.encode()
    if len(u) > 255 or len(p) > 255:
        raise SocksError("SOCKS5 user names and passwords are at most 255 bytes")
    return b"\x01" + bytes([len(u)]) + u + bytes([len(p)]) + p


def socks5_auth_reply(data: bytes) -> bool | None:
    """``True`` once the proxy accepted the credentials."""
    if len(data) < 2:
        return None
    if data[1] != 0:
        raise SocksError("the SOCKS5 proxy refused the user name and password")
    return True


def socks5_connect(host: str, port: int) -> bytes:
    """CONNECT to ``host:port`` (a name is resolved by the proxy)."""
    return b"\x05\x01\x00" + _address(host) + struct.pack("!H", port)


def socks5_connect_reply(data: bytes) -> int | None:
    """The length of the complete reply once it arrived (``None`` before); raises for
    a refusal."""
    if len(data) < 5:
        return None
    if data[0] != 5:
        raise SocksError("not a SOCKS5 proxy (bad version in its answer)")
    if data[1] != 0:
        error = SocksUnreachable if data[1] in _UNREACHABLE else SocksError
        raise error(f"the SOCKS5 proxy refused: {_SOCKS5_REPLIES.get(data[1], f'error {data[1]}')}")
    kind = data[3]
    if kind == 1:
        length = 4 + 4 + 2
    elif kind == 4:
        length = 4 + 16 + 2
    elif kind == 3:
        length = 4 + 1 + data[4] + 2
    else:
        raise SocksError(f"the SOCKS5 proxy answered an unknown address type {kind}")
    return length if len(data) >= length else None


def socks4_request(host: str, port: int, user: str = "", *, remote_dns: bool) -> bytes:
    """SOCKS4 CONNECT (``remote_dns``: SOCKS4a, the proxy resolves ``host``). Without
    ``remote_dns``, ``host`` must be an IPv4 address."""
    head = b"\x04\x01" + struct.pack("!H", port)
    if remote_dns:
        return head + b"\x00\x00\x00\x01" + user.encode() + b"\x00" + host.encode("idna") + b"\x00"
    try:
        ip = ipaddress.IPv4Address(host)
    except ValueError:
        raise SocksError(f"SOCKS4 takes IPv4 addresses only, not {host!r} (use socks4a)") from None
    return head + ip.packed + user.encode() + b"\x00"


def socks4_reply(data: bytes) -> bool | None:
    """``True`` once the proxy granted the connection (8-byte reply)."""
    if len(data) < 8:
        return None
    if data[0] != 0:
        raise SocksError("not a SOCKS4 proxy (bad version in its answer)")
    if data[1] != 0x5A:
        error = SocksUnreachable if data[1] == 0x5B else SocksError
        raise error(f"the SOCKS4 proxy refused (code {data[1]:#x})")
    return True
