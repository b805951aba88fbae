"""A small HTTP control endpoint for a :class:`LeapEdgeServer`, so a developer can
drive ``leap-sync serve`` from curl:

- ``POST /channels/{id}/messages`` with ``{"event": ..., "data": ...}``: publish (a
  channel that does not exist is created, ``private``, in the server's project);
- ``PUT /channels/{id}/state`` with a JSON object: replace the channel state (a
  channel that does not exist is created);
- ``POST /tokens/{token}/messages`` with ``{"event": ..., "data": ...}``: direct message;
- ``GET /connections``: the live connections;
- ``POST /disconnect`` with an optional ``{"code": 4000, "reason": "", "cid": null}``:
  close every live connection (or the one with ``cid``) with that close code (4000 by
  default), as :meth:`LeapEdgeServer.disconnect`; answers ``{"closed": n}``;
- ``POST /drop`` with an optional ``{"cid": null}``: cut every live connection (or
  one) without a close frame, as :meth:`LeapEdgeServer.drop`; answers ``{"dropped": n}``;
- ``GET /``: what this endpoint offers (:data:`ROUTES`, each ``"METHOD /path"`` with
  what it does).

So ``curl -X POST localhost:PORT/drop`` shows what a client does when its network goes,
and ``curl -X POST -d '{"code": 4006, "reason": "ws://127.0.0.1:PORT/ws"}'
localhost:PORT/disconnect`` a route change. A ``cid`` that is not live answers 404.

Answers are JSON: ``201 {"delivered": n}`` when the request created the channel,
``200 {"delivered": n}`` otherwise (``n`` connections written to), ``400
{"error": ...}`` for a bad body (not strict JSON in UTF-8, nested too deeply, wrong
shape, a value the clients' encodings cannot carry) and for a body whose size is not
given as ASCII digits in one ``Content-Length`` (``Transfer-Encoding`` is not taken),
is over 1 MiB (:data:`MAX_BODY`) or is cut short; ``404`` for any other path. A 400
for a body left unread closes the connection. A request that fails in the server
answers ``500 {"error": "internal error"}``; none goes unanswered.

Threads: ``leap-sync-control-<n>`` accepts, and each HTTP connection is served by a
daemon thread named ``leap-sync-control-<n>-conn``, which gives up on a client silent
for :data:`IDLE_TIMEOUT` seconds. :meth:`ControlServer.close` cuts every connection
and joins every thread (each join bounded), from any number of threads at once.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import logging
import socket
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ..websocket.listener import BACKOFF
from ..websocket.sockets import cut
from ..websocket.validation import check_host_port
from .server import LeapEdgeServer

__all__ = ["IDLE_TIMEOUT", "MAX_BODY", "ROUTES", "ControlServer"]

ROUTES = {
    "GET /": "this list",
    "GET /connections": "the live connections",
    "POST /channels/{id}/messages": 'publish {"event": ..., "data": ...} (creates the channel)',
    "PUT /channels/{id}/state": "replace the channel state with the JSON object sent (creates the channel)",
    "POST /tokens/{token}/messages": 'direct message {"event": ..., "data": ...} to a token',
    "POST /disconnect": 'close live connections: optional {"code": 4000, "reason": "", "cid": null}',
    "POST /drop": 'cut live connections without a close frame: optional {"cid": null}',
}
"""What ``GET /`` answers: each route and what it does."""

MAX_BODY = 1024 * 1024
"""The largest request body taken (bytes)."""
IDLE_TIMEOUT = 30.0
"""Seconds a connection's thread waits for a client's next bytes before it closes the
connection."""
_CLOSE_JOIN = 5.0
_log = logging.getLogger("leap_sync.testing")
_numbers = itertools.count(1)
_RESOURCE_ERRORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


class _BadBody(ValueError):
    """The body cannot be read or used (answered 400)."""


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    protocol_version = "HTTP/1.1"
    timeout = IDLE_TIMEOUT  # the connection's socket timeout (StreamRequestHandler)

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

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals (an unsupported method: 501, headers too many or
        too long: 431, a malformed request line: 400) answered as JSON like every other
        answer, with a status line even when the request line could not be read."""
        if self.request_version == "HTTP/0.9" or not getattr(self, "command", None):
            self.request_version = "HTTP/1.1"  # the request line was unreadable: answer HTTP/1.1
        self.close_connection = True
        with contextlib.suppress(OSError):
            self._reply(code, {"error": message or self.responses.get(code, ("error",))[0]})

    def _unread(self, problem: str) -> _BadBody:
        """A 400 for a body left unread: the connection closes after the answer."""
        self.close_connection = True  # where the next request starts is unknown
        return _BadBody(problem)

    def _body(self) -> Any:
        """The JSON body (``None`` when empty); :class:`_BadBody` for anything else."""
        if self.headers.get("Transfer-Encoding") is not None:
            raise self._unread("Transfer-Encoding is not supported: send a Content-Length")
        lengths = self.headers.get_all("Content-Length") or []
        if len(lengths) > 1:
            raise self._unread("more than one Content-Length")
        text = lengths[0].strip() if lengths else "0"
        if not (text.isascii() and text.isdigit()):  # int() takes "+1", "-1", non-ASCII digits...
            raise self._unread("invalid Content-Length: ASCII digits expected")
        length = int(text)
        if length > MAX_BODY:
            raise self._unread(f"request body too large (over {MAX_BODY} bytes)")
        raw = self.rfile.read(length) if length else b""
        if len(raw) < length:
            raise self._unread("request body shorter than its Content-Length")
        if not raw:
            return None
        try:
            return json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
        except UnicodeDecodeError:
            raise _BadBody("invalid JSON body: not UTF-8") from None
        except RecursionError:
            raise _BadBody("invalid JSON body: nested too deeply") from None
        except ValueError as exc:
            raise _BadBody(f"invalid JSON body: {exc}") from None

    def _route(self) -> list[str]:
        path = urllib.parse.urlsplit(self.path).path
        return [urllib.parse.unquote(p) for p in path.strip("/").split("/") if p]

    def do_GET(self) -> None:
        self._answer("GET")

    def _get(self) -> None:
        parts = self._route()
        if not parts:
            self._reply(200, {"routes": ROUTES})
        elif parts == ["connections"]:
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
        self._answer("POST")

    def do_PUT(self) -> None:
        self._answer("PUT")

    def _answer(self, method: str) -> None:
        """Answer one request, whatever happens: 400 for a bad body, 500 for a
        failure of ours; a connection that fails or stalls is closed unanswered."""
        try:
            if method == "GET":
                self._get()
            else:
                self._dispatch(method)
        except OSError:
            self.close_connection = True  # the client is gone or silent: no answer can go
        except Exception:
            _log.error("control request %s failed", method, exc_info=True)
            self.close_connection = True
            with contextlib.suppress(OSError):
                self._reply(500, {"error": "internal error"})

    def _dispatch(self, method: str) -> None:
        leap = self.server.leap
        parts = self._route()
        try:
            body = self._body()
        except _BadBody as exc:
            self._reply(400, {"error": str(exc)})
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
                leap._check_storable(body)  # refused before the channel is created
                created = _ensure_channel(self.server, parts[1])
                delivered = leap.set_channel_state(parts[1], body)
                self._reply(201 if created else 200, {"delivered": delivered})
            elif method == "POST" and len(parts) == 3 and parts[0] == "tokens" and parts[2] == "messages":
                event, data = _event(body)
                delivered = leap.send_direct_message(parts[1], event, data)
                self._reply(200, {"delivered": delivered})
            elif method == "POST" and parts in (["disconnect"], ["drop"]):
                self._fault(parts[0], body)
            else:
                self._reply(404, {"error": "not found"})
        except (ValueError, RecursionError) as exc:  # LeapEncodeError is a ValueError
            self._reply(400, {"error": str(exc) or type(exc).__name__})

    def _fault(self, kind: str, body: Any) -> None:
        """``POST /disconnect`` or ``POST /drop`` (``ValueError`` for a bad body)."""
        options = {} if body is None else body
        allowed = {"code", "reason", "cid"} if kind == "disconnect" else {"cid"}
        if not isinstance(options, dict) or not set(options) <= allowed:
            raise ValueError(f"the body must be a JSON object with only {sorted(allowed)} (or empty)")
        cid = options.get("cid")
        if cid is not None and not isinstance(cid, str):
            raise ValueError("cid must be a string")
        leap = self.server.leap
        try:
            if kind == "drop":
                self._reply(200, {"dropped": leap.drop(cid=cid)})
                return
            code, reason = options.get("code", 4000), options.get("reason", "")
            if isinstance(code, bool) or not isinstance(code, int) or not isinstance(reason, str):
                raise ValueError("code must be an integer and reason a string")
            closed = leap.disconnect(code, reason, cid=cid)  # ValueError for a code no frame carries
        except KeyError:
            self._reply(404, {"error": "no live connection with that cid"})
            return
        self._reply(200, {"closed": closed})


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
    """A threading HTTP server whose connection threads are named, tracked, and cut
    and joined on :meth:`close_connections` (not ``block_on_close``, which joins
    without a bound)."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], leap: LeapEdgeServer, name: str) -> None:
        self.leap = leap
        self.create_lock = threading.Lock()
        self._conn_name = f"{name}-conn"
        self._conns_lock = threading.Lock()
        self._conns: dict[socket.socket, threading.Thread] = {}
        self._closing = False
        self._stop = threading.Event()
        host, port = address
        # IPv4 or IPv6, whichever the host is ("::" listens dual-stack where it can).
        self.address_family = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM)[0][0]
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6 and self.server_address[0] == "::":
            with contextlib.suppress(OSError, AttributeError):
                self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()

    def get_request(self) -> tuple[socket.socket, Any]:
        try:
            return super().get_request()
        except OSError as exc:
            if exc.errno in _RESOURCE_ERRORS:  # out of descriptors: wait, not spin
                self._stop.wait(BACKOFF)
            raise  # socketserver skips this accept

    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve one connection on a daemon thread of its own (started under the
        lock, so :meth:`close_connections` never meets one not started)."""
        thread = threading.Thread(
            target=self.process_request_thread, args=(request, client_address), name=self._conn_name, daemon=True
        )
        with self._conns_lock:
            if not self._closing:
                self._conns[request] = thread
                try:
                    thread.start()
                    return
                except RuntimeError:  # no thread to be had: the connection is refused
                    del self._conns[request]
        self.shutdown_request(request)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._conns_lock:
                self._conns.pop(request, None)

    def handle_error(self, request: Any, client_address: Any) -> None:
        _log.error("control connection failed", exc_info=True)

    def close_connections(self, timeout: float) -> None:
        """Refuse new connections, cut the open ones (an idle keep-alive client, a
        request half sent) and join their threads, within about ``timeout`` seconds."""
        self._stop.set()
        with self._conns_lock:
            self._closing = True
            conns = list(self._conns.items())
        for sock, _thread in conns:
            cut(sock)
        deadline = time.monotonic() + timeout
        for _sock, thread in conns:
            thread.join(max(0.0, deadline - time.monotonic()))


class ControlServer:
    """The HTTP control endpoint of one :class:`LeapEdgeServer`, in a thread named
    ``leap-sync-control-<n>``, on ``host`` (IPv4 or IPv6; ``"::"`` dual-stack); each
    HTTP connection gets a thread named ``leap-sync-control-<n>-conn``. ``TypeError``
    for a ``leap`` that is not a :class:`LeapEdgeServer` or a ``host`` that is not a
    ``str``, ``ValueError`` for a port outside 0 to 65535; ``OSError`` when the address
    cannot be bound."""

    def __init__(self, leap: LeapEdgeServer, host: str = "127.0.0.1", port: int = 0) -> None:
        if not isinstance(leap, LeapEdgeServer):
            raise TypeError(f"leap must be a LeapEdgeServer, not {type(leap).__name__}")
        check_host_port(host, port)
        self._number = next(_numbers)
        self._name = f"leap-sync-control-{self._number}"
        self._httpd = _HTTPServer((host, port), leap, self._name)
        self.host = host
        self.port: int = self._httpd.server_address[1]
        self._thread: threading.Thread | None = None
        self._close_lock = threading.Lock()

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` (an IPv6 host in brackets), for ``curl`` and tests."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> ControlServer:
        """Serve in the ``leap-sync-control-<n>`` thread; returns at once, with the
        server (the socket is bound at construction). Routes: ``POST
        /channels/{id}/messages`` (``{"event": ..., "data": ...}``), ``PUT
        /channels/{id}/state``, ``POST /tokens/{token}/messages``, ``GET /connections``."""
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},  # close() waits up to one poll interval
            name=self._name,
            daemon=True,
        )
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving: stop accepting, cut every connection, join every thread (each
        join bounded), close the socket. Idempotent, from any number of threads at
        once: every call returns once all of it is done (the first does the work)."""
        with self._close_lock:
            if self._thread is not None:
                self._httpd.shutdown()
                self._thread.join(10)
                self._thread = None
            self._httpd.close_connections(_CLOSE_JOIN)
            self._httpd.server_close()

    def __enter__(self) -> ControlServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()
