"""A small HTTP control endpoint for a :class:`LeapEdgeServer`, so a developer can
drive ``leap-sync serve`` from curl:

- ``POST /channels/{id}/messages`` with ``{"event": ..., "data": ...}``: publish (a
  channel that does not exist is created, ``private``, in the server's project);
- ``PUT /channels/{id}/state`` with a JSON object: replace the channel state;
- ``POST /tokens/{token}/messages`` with ``{"event": ..., "data": ...}``: direct message;
- ``GET /connections``: the live connections.

Answers are JSON. Request bodies are limited to 1 MiB.
"""

from __future__ import annotations

import itertools
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional

from .server import LeapEdgeServer

__all__ = ["ControlServer"]

_MAX_BODY = 1024 * 1024
_numbers = itertools.count(1)


class _Handler(BaseHTTPRequestHandler):
    server: "_HTTPServer"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # quiet: the CLI prints what matters

    def _reply(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode("utf-8") + b"\n"
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        if length < 0 or length > _MAX_BODY:
            raise ValueError("request body too large")
        raw = self.rfile.read(length) if length else b""
        return json.loads(raw) if raw else None

    def _route(self) -> list[str]:
        path = urllib.parse.urlsplit(self.path).path
        return [urllib.parse.unquote(p) for p in path.strip("/").split("/") if p]

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
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

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_PUT(self) -> None:  # noqa: N802
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
                try:
                    leap.channel(parts[1])
                except KeyError:
                    leap.create_channel(parts[1])
                delivered = leap.publish(parts[1], event, data)
                self._reply(200, {"delivered": delivered})
            elif method == "PUT" and len(parts) == 3 and parts[0] == "channels" and parts[2] == "state":
                if not isinstance(body, dict):
                    raise ValueError("the state must be a JSON object")
                try:
                    leap.channel(parts[1])
                except KeyError:
                    leap.create_channel(parts[1])
                delivered = leap.set_channel_state(parts[1], body)
                self._reply(200, {"delivered": delivered})
            elif method == "POST" and len(parts) == 3 and parts[0] == "tokens" and parts[2] == "messages":
                event, data = _event(body)
                delivered = leap.send_direct_message(parts[1], event, data)
                self._reply(200, {"delivered": delivered})
            else:
                self._reply(404, {"error": "not found"})
        except ValueError as exc:
            self._reply(400, {"error": str(exc)})


def _event(body: Any) -> tuple[str, Any]:
    if not isinstance(body, dict) or not isinstance(body.get("event"), str) or not body["event"]:
        raise ValueError('the body must be {"event": "<name>", "data": <any JSON>}')
    return body["event"], body.get("data")


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = True

    def __init__(self, address: tuple[str, int], leap: LeapEdgeServer) -> None:
        self.leap = leap
        super().__init__(address, _Handler)


class ControlServer:
    """The HTTP control endpoint of one :class:`LeapEdgeServer`, in a thread named
    ``leap-sync-control-<n>``."""

    def __init__(self, leap: LeapEdgeServer, host: str = "127.0.0.1", port: int = 0) -> None:
        self._httpd = _HTTPServer((host, port), leap)
        self.host = host
        self.port: int = self._httpd.server_address[1]
        self._thread: Optional[threading.Thread] = None
        self._number = next(_numbers)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> "ControlServer":
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name=f"leap-sync-control-{self._number}", daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(10)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> "ControlServer":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()
