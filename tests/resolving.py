"""A resolver tests choose, for the connecting tests: the code's ``socket.getaddrinfo``
call patched so that a ``*.test`` name answers the entries a test sets (an unknown
``*.test`` name is ``EAI_NONAME``; every other name resolves as usual), plus
:func:`info` to build one entry and a plain ``leap`` server (on 127.0.0.1 only).

The test modules import the fixtures (``resolver``, ``leap``) from here.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
from clientkit import PROJECT, TOKEN

from leap_sync.testing import LeapEdgeServer

V4, V6, STREAM, TCP = socket.AF_INET, socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP
_real_getaddrinfo = socket.getaddrinfo


def info(host: str, port: int) -> tuple[Any, ...]:
    """One getaddrinfo() entry for ``host`` (an IPv4 or IPv6 literal) and ``port``."""
    if ":" in host:
        return (V6, STREAM, TCP, "", (host, port, 0, 0))
    return (V4, STREAM, TCP, "", (host, port))


@pytest.fixture
def resolver(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[Any]]:
    """``resolver[name] = [entry, ...]`` makes ``name`` (a ``*.test`` name) answer those
    entries; every other name resolves as usual. Lookups of ``*.test`` names are
    recorded under ``"<asked>"``."""
    names: dict[str, list[Any]] = {"<asked>": []}

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, str) and host.endswith(".test"):
            names["<asked>"].append((host,))
            if host not in names:
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
            return list(names[host])
        return _real_getaddrinfo(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return names


@pytest.fixture
def leap() -> Iterator[LeapEdgeServer]:
    """A running server (127.0.0.1 only) that knows token TOKEN."""
    with LeapEdgeServer() as server:
        server.add_token(TOKEN, project_id=PROJECT)
        yield server
