"""The ``leap-sync`` command line (also ``python -m leap_sync``).

- ``leap-sync demo``: the whole loop on the embedded server, printed step by step.
- ``leap-sync listen``: tail a real Leap Edge endpoint (human lines on a terminal, one
  JSON object per line when piped).
- ``leap-sync serve``: the embedded Leap Edge server, standalone, with an HTTP control
  endpoint. Before serving it prints ``leap edge: ws://HOST:PORT/ws`` and
  ``control: http://HOST:PORT2`` on their own lines; Ctrl-C stops it (exit 0).

Exit status: 0 on success or Ctrl-C, 2 for a usage or connection error, 3 when Leap
Edge rejected the credentials (close code 4001) or the client gave up.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any, TextIO

import attrs

from .errors import LeapAuthorizationError, LeapError
from .protocol.codec import COMPRESSIONS, ENCODINGS

__all__ = ["build_parser", "main"]

EXIT_OK = 0
EXIT_ERROR = 2
EXIT_FATAL = 3


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


# -- serve -------------------------------------------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    try:
        from .testing import ControlServer, LeapEdgeServer
    except ImportError as exc:
        print(f"leap-sync serve: {exc}", file=sys.stderr)
        return EXIT_ERROR
    server = LeapEdgeServer(
        args.host,
        args.port,
        heartbeat_interval=args.heartbeat_interval,
        identify_timeout=args.identify_timeout,
        heartbeat_ack_delay=args.heartbeat_ack_delay,
        project_id=args.project,
    )
    if args.token:
        server.add_token(args.token, project_id=args.project)
    for channel in args.channel or ():
        server.create_channel(channel, project_id=args.project)
    stop = threading.Event()
    try:
        with server, ControlServer(server, args.host, args.control_port) as control:
            print(f"leap edge: {server.url}", flush=True)
            print(f"control: {control.url}", flush=True)
            stop.wait()
    except KeyboardInterrupt:
        pass  # Ctrl-C, however early: the with-blocks closed both servers
    except OSError as exc:  # the address does not resolve or cannot be bound
        print(f"leap-sync serve: cannot listen on {args.host}: {exc}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


# -- demo --------------------------------------------------------------------------------------


class _DemoPrinter:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.start = time.perf_counter()
        self._lock = threading.Lock()

    def line(self, text: str) -> None:
        with self._lock:
            self.out.write(f"[{time.perf_counter() - self.start:6.3f}s] {text}\n")
            self.out.flush()


def _demo(args: argparse.Namespace) -> int:
    try:
        from .testing import LeapEdgeServer
    except ImportError as exc:
        print(f"leap-sync demo: {exc}", file=sys.stderr)
        return EXIT_ERROR
    from . import Backoff, LeapClient, NopLogger, StateInfo
    from .protocol.models import ClientFrame, ClientHeartbeat

    out = _DemoPrinter(sys.stdout)
    project, token, room = "project_demo", "leap_token_demo_do_not_print", "demo-room"
    answered = threading.Event()
    answers: list[float] = []
    asked: list[float] = []

    def on_frame(cid: str, frame: ClientFrame) -> None:
        if isinstance(frame, ClientHeartbeat) and frame.tag == "demo-tag":
            answers.append(time.perf_counter())
            answered.set()

    server = LeapEdgeServer(heartbeat_interval=0.2, project_id=project, on_frame=on_frame)
    server.add_token(token, project_id=project, metadata={"user": "demo"})
    server.create_channel(room, project_id=project, state={"topic": "welcome"})
    with server:
        out.line(f"embedded Leap Edge server at {server.url}")
        client = LeapClient(
            project,
            token,
            NopLogger(),
            url=server.url,
            encoding=args.encoding,
            compression=args.compression,
            backoff=Backoff(base=0.05, cap=0.2),
        )
        states: list[StateInfo] = []
        connected_again = threading.Event()

        def on_state(info: StateInfo) -> None:
            states.append(info)
            detail = ""
            if info.error is not None:
                detail = f" ({info.error}; will_reconnect={info.will_reconnect})"
            out.line(f"state: {info.connection_state.value}{detail}")
            if info.connection_state.value == "connected" and len(states) > 3:
                connected_again.set()

        client.add_state_update_listener(on_state)
        messages = client.message_event_channel()
        events = client.channel_event_channel()
        with client:
            out.line(f"connecting with encoding={args.encoding} compression={args.compression}")
            started = time.perf_counter()
            client.connect()
            init = client.wait_connected(10)
            took = (time.perf_counter() - started) * 1000
            out.line(f"INIT: cid={init.cid} scope={init.scope} metadata={_json(init.metadata)} ({took:.1f} ms)")

            channel = client.subscribe(room, timeout=5)
            out.line(f"subscribed to {channel.id!r}: type={channel.type} state={_json(channel.state)}")

            for n, text in enumerate(["hello", "from", "leap-sync"]):
                sent = time.perf_counter()
                server.publish(room, "chat", {"n": n, "text": text})
                event = messages.get(timeout=5)
                latency = (time.perf_counter() - sent) * 1000
                out.line(f"MESSAGE {event.channel_id} {event.event_name} {_json(event.data)} ({latency:.2f} ms)")

            server.set_channel_state(room, {"topic": "demo running"})
            update = events.get(timeout=5)
            out.line(f"{type(update).__name__}: {_json(getattr(update, 'state', None))}")

            server.send_direct_message(token, "notice", {"text": "just for you"})
            direct = messages.get(timeout=5)
            out.line(f"DIRECT_MESSAGE {direct.event_name} {_json(direct.data)} (direct={direct.is_direct_message})")

            asked.append(time.perf_counter())
            server.request_heartbeat("demo-tag")
            if answered.wait(5):
                out.line(f"tagged heartbeat 'demo-tag' answered in {(answers[0] - asked[0]) * 1000:.2f} ms")
            # the server re-checks this at every heartbeat it receives
            server.wait_for(lambda s: client.latency is not None, timeout=5)
            out.line(f"heartbeat round trip: {(client.latency or 0.0) * 1000:.2f} ms")

            out.line("server closes the connection with 4000 to show a reconnect")
            server.disconnect(4000, "demo: forced reconnect")
            if not connected_again.wait(10):
                out.line("did not reconnect in time")
                return EXIT_ERROR
            sent = time.perf_counter()
            server.publish(room, "chat", {"text": "still here after the reconnect"})
            event = messages.get(timeout=5)
            latency = (time.perf_counter() - sent) * 1000
            out.line(f"MESSAGE {event.channel_id} {event.event_name} {_json(event.data)} ({latency:.2f} ms)")
        out.line(f"closed: state={client.state.connection_state.value}")
    out.line("demo finished")
    return EXIT_OK


# -- listen ------------------------------------------------------------------------------------


def _read_token(args: argparse.Namespace) -> str | None:
    if args.tokenless:
        return None
    token = os.environ.get(args.token_env)
    if token:
        return token
    if sys.stdin.isatty():
        entered = getpass.getpass(f"Leap token ({args.token_env} is not set; empty for tokenless): ")
        return entered.strip() or None
    return None


def _listen(args: argparse.Namespace) -> int:
    from . import FmtLogger, LeapClient, StateInfo

    token = _read_token(args)
    human = sys.stdout.isatty() if args.format == "auto" else args.format == "text"
    lock = threading.Lock()

    def emit(kind: str, human_text: str, record: dict[str, Any]) -> None:
        with lock:
            if human:
                sys.stdout.write(f"{time.strftime('%H:%M:%S')} {kind:<8} {human_text}\n")
            else:
                sys.stdout.write(_json({"type": kind, **record}) + "\n")
            sys.stdout.flush()

    def on_state(info: StateInfo) -> None:
        state = info.connection_state.value
        record: dict[str, Any] = {"state": state}
        text = state
        if info.error is not None:
            record["error"] = str(info.error)
            record["will_reconnect"] = info.will_reconnect
            text += f" ({info.error}; will_reconnect={info.will_reconnect})"
        emit("state", text, record)

    try:
        client = LeapClient(
            args.project,
            token,
            FmtLogger(args.log_level) if args.log_level else None,
            url=args.url,
            encoding=args.encoding,
            compression=args.compression,
        )
    except (ValueError, LeapError) as exc:
        print(f"leap-sync listen: {exc}", file=sys.stderr)
        return EXIT_ERROR
    client.add_state_update_listener(on_state)
    messages = client.message_event_channel()
    events = client.channel_event_channel()

    def print_events() -> None:
        for event in events:
            name = type(event).__name__
            fields = attrs.asdict(event)
            emit("event", f"{name} {_json(fields)}", {"event": name, **fields})

    printer = threading.Thread(target=print_events, name="leap-sync-cli-events", daemon=True)
    try:
        try:
            client.connect()
        except LeapError as exc:
            print(f"leap-sync listen: {exc}", file=sys.stderr)
            return EXIT_ERROR
        printer.start()
        try:
            client.wait_connected(timeout=args.timeout)
            for channel in args.channel or ():
                subscribed = client.subscribe(channel, timeout=args.timeout)
                emit("subscribe", f"{subscribed.id} ({subscribed.type})", {"channel": subscribed.id})
        except LeapError as exc:
            print(f"leap-sync listen: {exc}", file=sys.stderr)
            return EXIT_FATAL if isinstance(exc, LeapAuthorizationError) else EXIT_ERROR
        for message in messages:
            record = {
                "channel": message.channel_id,
                "event": message.event_name,
                "data": message.data,
                "direct": message.is_direct_message,
                "unicast": message.unicast,
            }
            where = message.channel_id if message.channel_id is not None else "(direct)"
            emit("message", f"{where} {message.event_name} {_json(message.data)}", record)
        # the message channel ended: the client will not reconnect
        error = client.state.error
        print(f"leap-sync listen: stopped: {error}", file=sys.stderr)
        return EXIT_FATAL
    except KeyboardInterrupt:
        return EXIT_OK
    finally:
        client.close()
        if printer.is_alive():
            printer.join(5)


# -- parser ------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="leap-sync",
        description="Synchronous Leap Edge client: demo, listen, and an embedded test server.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    demo = commands.add_parser("demo", help="run the whole loop against the embedded server")
    demo.add_argument("--encoding", choices=ENCODINGS, default="json")
    demo.add_argument("--compression", choices=COMPRESSIONS, default="none")
    demo.set_defaults(func=_demo)

    listen = commands.add_parser("listen", help="tail a Leap Edge endpoint")
    listen.add_argument("--project", required=True, help="project id")
    listen.add_argument(
        "--token-env",
        default="LEAP_TOKEN",
        help="environment variable holding the Leap token (default LEAP_TOKEN); "
        "when unset, a terminal is prompted and a pipe connects tokenless",
    )
    listen.add_argument("--tokenless", action="store_true", help="connect without a token")
    listen.add_argument("--url", default="wss://leap.hop.io/ws", help="Leap Edge endpoint")
    listen.add_argument("--channel", action="append", help="subscribe to this channel (repeatable)")
    listen.add_argument("--encoding", choices=ENCODINGS, default="json")
    listen.add_argument("--compression", choices=COMPRESSIONS, default="none")
    listen.add_argument(
        "--format", choices=("auto", "text", "json"), default="auto", help="auto: text on a terminal, else JSON"
    )
    listen.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for connect and subscribe")
    listen.add_argument(
        "--log-level", choices=("debug", "info", "warn", "error"), help="log the connection's story to stderr"
    )
    listen.set_defaults(func=_listen)

    serve = commands.add_parser("serve", help="run the embedded Leap Edge server until Ctrl-C")
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind, IPv4 or IPv6 (default 127.0.0.1; ::1 for IPv6 loopback, :: for dual-stack)",
    )
    serve.add_argument("--port", type=int, default=0, help="websocket port (default: a free one)")
    serve.add_argument("--control-port", type=int, default=0, help="HTTP control port (default: a free one)")
    serve.add_argument(
        "--heartbeat-interval", type=float, default=30.0, help="seconds between client heartbeats (default 30)"
    )
    serve.add_argument("--identify-timeout", type=float, default=10.0, help="seconds to wait for Identify (10)")
    serve.add_argument(
        "--heartbeat-ack-delay",
        type=float,
        default=0.005,
        help="seconds each heartbeat ack is held back, like a network round trip (default 0.005: "
        "the official JS client takes an ack within the millisecond of its beat for a missing one)",
    )
    serve.add_argument("--project", default="project_x", help="project id (default project_x)")
    serve.add_argument("--token", help="register this Leap token, granted every channel of the project")
    serve.add_argument("--channel", action="append", help="create this private channel at start (repeatable)")
    serve.set_defaults(func=_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    status: int = args.func(args)
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
