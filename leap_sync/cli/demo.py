"""``leap-sync demo``: the whole loop on the embedded server, printed step by step."""

from __future__ import annotations

import argparse
import sys
import threading
import time
from typing import Any, TextIO

from ..protocol.codec import COMPRESSIONS, ENCODINGS
from ..protocol.etf import erlpack_available
from .common import EXIT_CODES, EXIT_CONNECT, EXIT_OK, EXIT_USAGE, missing_extra, stop_of
from .common import to_json as _json
from .stopping import Stop

__all__ = ["add_parser", "run"]


class _DemoPrinter:
    """Prints the demo's lines from any thread; once the command is stopping, or its
    output is gone (which stops it), lines are dropped."""

    def __init__(self, out: TextIO, stop: Stop) -> None:
        self.out = out
        self.stop = stop
        self.start = time.perf_counter()
        self._lock = threading.Lock()

    def line(self, text: str) -> None:
        with self._lock:
            if self.stop.requested:
                return
            try:
                self.out.write(f"[{time.perf_counter() - self.start:6.3f}s] {text}\n")
                self.out.flush()
                return
            except (OSError, ValueError):  # the reader went away (EPIPE)
                pass
        self.stop.output_gone()  # outside the lock: closing the client prints a state


def run(args: argparse.Namespace) -> int:
    """The demo; a stop (Ctrl-C, SIGTERM, the output gone) at any step closes the
    client (a close frame) and the server, and exits 0 quietly."""
    stop = stop_of(args)
    try:
        return _run(args, stop)
    except Exception:
        if stop.requested:  # a wait the stop's close ended
            return EXIT_OK
        raise


def _run(args: argparse.Namespace, stop: Stop) -> int:
    try:
        from ..testing import LeapEdgeServer
    except ImportError as exc:
        return missing_extra("demo", "server", exc)
    from .. import Backoff, LeapClient, NopLogger, StateInfo
    from ..protocol.models import ClientFrame, ClientHeartbeat

    if args.encoding == "etf" and not erlpack_available():
        print("leap-sync demo: the etf encoding needs the 'etf' extra: pip install 'leap-sync[etf]'", file=sys.stderr)
        return EXIT_USAGE
    out = _DemoPrinter(sys.stdout, stop)
    project, token, room = "project_demo", "leap_token_demo_do_not_print", "demo-room"
    answered = threading.Event()
    stop.on_stop(answered.set)  # from here on, a signal is a stop request: every wait ends
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
        stop.on_stop(connected_again.set)
        stop.on_stop(client.close)  # a close frame; the waits on the client end

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
            if answered.wait(5) and not stop.requested:
                out.line(f"tagged heartbeat 'demo-tag' answered in {(answers[0] - asked[0]) * 1000:.2f} ms")
            # the server re-checks this at every heartbeat it receives
            server.wait_for(lambda s: client.latency is not None or stop.requested, timeout=5)
            out.line(f"heartbeat round trip: {(client.latency or 0.0) * 1000:.2f} ms")

            out.line("server closes the connection with 4000 to show a reconnect")
            server.disconnect(4000, "demo: forced reconnect")
            reconnected = connected_again.wait(10)
            if stop.requested:
                return EXIT_OK
            if not reconnected:
                out.line("did not reconnect in time")
                return EXIT_CONNECT
            sent = time.perf_counter()
            server.publish(room, "chat", {"text": "still here after the reconnect"})
            event = messages.get(timeout=5)
            latency = (time.perf_counter() - sent) * 1000
            out.line(f"MESSAGE {event.channel_id} {event.event_name} {_json(event.data)} ({latency:.2f} ms)")
        out.line(f"closed: state={client.state.connection_state.value}")
    out.line("demo finished")
    return EXIT_OK


def add_parser(commands: Any) -> None:
    """Add the ``demo`` command to the ``leap-sync`` parser."""
    demo = commands.add_parser(
        "demo",
        help="run the whole loop against the embedded server, printed step by step",
        description="Start the embedded Leap Edge server (needs the 'server' extra), connect, subscribe, "
        "receive messages and channel events, answer a tagged heartbeat, survive a forced reconnect, "
        "and close, printing each step with its timing.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument("--encoding", choices=ENCODINGS, default="json", help="etf needs the 'etf' extra")
    demo.add_argument("--compression", choices=COMPRESSIONS, default="none")
    demo.set_defaults(func=run)
