"""A small HTTP control endpoint for a :class:`LeapEdgeServer`, so a developer can
drive ``leap-sync serve`` from curl:

- ``POST /channels/{id}/messages`` with ``{"event": ..., "data": ...}``: publish (a
  channel that does not exist is created, ``private``, in the server's project);
- ``PUT /channels/{id}/state`` with a JSON object: replace the channel state (a
  channel that does not exist is created);
- ``POST /tokens/{token}/messages`` with ``{"event": ..., "data": ...}``: direct message;
- ``GET /connections``: the live connections.

Answers are JSON: ``201 {"delivered": n}`` when the request created the channel,
``200 {"delivered": n}`` otherwise (``n`` connections written to), ``400
{"error": ...}`` for a bad body (not strict JSON, wrong shape, over 1 MiB, a value the
clients' encodings cannot carry), ``404`` for any other path.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import socket
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .server import LeapEdgeServer

__all__ = ["ControlServer"]

_MAX_BODY = 1024 * 1024
_numbers = itertools.count(1)


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: the CLI prints what matters

    def _reply(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode("utf-8") + b"\n"
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")  # a request body was left unread
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> Any:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.close_connection = True  # where the body ends is unknown
            raise ValueError("invalid Content-Length") from None
        if length < 0 or length > _MAX_BODY:
            self.close_connection = True  # the body is left unread
            raise ValueError("request body too large" if length > 0 else "invalid Content-Length")
        raw = self.rfile.read(length) if length else b""
        return json.loads(raw, parse_constant=_reject_constant) if raw else None

    def _route(self) -> list[str]:
        path = urllib.parse.urlsplit(self.path).path
        return [urllib.parse.unquote(p) for p in path.strip("/").split("/") if p]

    def do_GET(self) -> None:
        parts = self._route()
        if parts == ["connections"]:
            leap = self.server.leap
            self._reply(
                200,
                [
                    {
                        "cid": c.cid,
                        "project_id": c.project_id,
                        "encoding": c.encoding,
                        "compression": c.compression,
                        "subscriptions": sorted(c.subscriptions),
                    }
                    for c in leap.connections
                ],
            )
        else:
            self._reply(404, {"error": "not found"})

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def _dispatch(self, method: str) -> None:
        leap = self.server.leap
        parts = self._route()
        try:
            body = self._body()
        except (ValueError, UnicodeDecodeError) as exc:
            self._reply(400, {"error": f"invalid JSON body: {exc}"})
            return
        try:
            if method == "POST" and len(parts) == 3 and parts[0] == "channels" and parts[2] == "messages":
                event, data = _event(body)
                created = _ensure_channel(self.server, parts[1])
                delivered = leap.publish(parts[1], event, data)
                self._reply(201 if created else 200, {"delivered": delivered})
            elif method == "PUT" and len(parts) == 3 and parts[0] == "channels" and parts[2] == "state":
                if not isinstance(body, dict):
                    raise ValueError("the state must be a JSON object")
                created = _ensure_channel(self.server, parts[1])
                delivered = leap.set_channel_state(parts[1], body)
                self._reply(201 if created else 200, {"delivered": delivered})
            elif method == "POST" and len(parts) == 3 and parts[0] == "tokens" and parts[2] == "messages":
                event, data = _event(body)
                delivered = leap.send_direct_message(parts[1], event, data)
                self._reply(200, {"delivered": delivered})
            else:
                self._reply(404, {"error": "not found"})
        except ValueError as exc:
            self._reply(400, {"error": str(exc)})


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _ensure_channel(httpd: _HTTPServer, channel_id: str) -> bool:
    """Create the channel (``private``) unless it exists; whether it was created."""
    with httpd.create_lock:  # two requests must not both create (and reset) it
        try:
            httpd.leap.channel(channel_id)
        except KeyError:
            httpd.leap.create_channel(channel_id)
            return True
        return False


def _event(body: Any) -> tuple[str, Any]:
    if not isinstance(body, dict) or not isinstance(body.get("event"), str) or not body["event"]:
        raise ValueError('the body must be {"event": "<name>", "data": <any JSON>}')
    return body["event"], body.get("data")


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = True

    def __init__(self, address: tuple[str, int], leap: LeapEdgeServer) -> None:
        self.leap = leap
        self.create_lock = threading.Lock()
        host, port = address
        # IPv4 or IPv6, whichever the host is ("::" listens dual-stack where it can).
        self.address_family = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM)[0][0]
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6 and self.server_address[0] == "::":
            with contextlib.suppress(OSError, AttributeError):
                self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


class ControlServer:
    """The HTTP control endpoint of one :class:`LeapEdgeServer`, in a thread named
    ``leap-sync-control-<n>``, on ``host`` (IPv4 or IPv6; ``"::"`` dual-stack)."""

    def __init__(self, leap: LeapEdgeServer, host: str = "127.0.0.1", port: int = 0) -> None:
        self._httpd = _HTTPServer((host, port), leap)
        self.host = host
        self.port: int = self._httpd.server_address[1]
        self._thread: threading.Thread | None = None
        self._number = next(_numbers)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> ControlServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},  # close() waits up to one poll interval
            name=f"leap-sync-control-{self._number}",
            daemon=True,
        )
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(10)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> ControlServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()
