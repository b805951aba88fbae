"""A small status board for an Elstat status page: the latest status and latency of
each service, redrawn as DATA arrives, with open incidents below.

    python examples/status_board.py https://status.example.com status:api latency:api status:web

``--demo`` runs it against the embedded ``ElstatServer`` (pushing a few updates and an
incident), prints the final board and exits.
"""

from __future__ import annotations

import argparse
import sys
import threading
from typing import Any

from leap_sync import ChannelClosed, ConnectionState, StateInfo
from leap_sync.elstat import DataEvent, ElstatClient, IncidentEvent


class Board:
    """Latest value per service and kind, open incidents; thread-safe."""

    def __init__(self) -> None:
        self.services: dict[str, dict[str, Any]] = {}
        self.incidents: dict[str, str] = {}
        self.state = "idle"
        self._lock = threading.Lock()

    def data(self, event: DataEvent) -> None:
        with self._lock:
            service = event.channel.partition(":")[2]
            self.services.setdefault(service, {})[event.kind] = event.value

    def incident(self, event: IncidentEvent) -> None:
        with self._lock:
            if event.kind == "close":
                self.incidents.pop(event.incident.id, None)
            else:
                self.incidents[event.incident.id] = event.incident.title or "(untitled)"

    def render(self) -> str:
        with self._lock:
            lines = [f"connection: {self.state}", f"{'service':<16} {'status':<8} latency"]
            for name, values in sorted(self.services.items()):
                status = {True: "up", False: "DOWN"}.get(values.get("status"), "?")
                latency = values.get("latency")
                lines.append(f"{name:<16} {status:<8} {'-' if latency is None else f'{latency} ms'}")
            lines += [f"incident #{ident}: {title}" for ident, title in sorted(self.incidents.items())]
            return "\n".join(lines)


def run(url: str, channels: list[str], updates: int = 0) -> Board:
    """Follow ``url`` until Ctrl-C (or ``updates`` DATA events, when given)."""
    board = Board()
    client = ElstatClient(url)

    def on_state(info: StateInfo) -> None:  # the callbacks thread
        board.state = info.connection_state.value
        if info.connection_state is ConnectionState.ERRORED and not info.will_reconnect:
            print(f"giving up: {info.error}", file=sys.stderr)

    client.add_state_update_listener(on_state)
    data = client.data_channel()
    incidents = client.incident_channel()

    def follow_incidents() -> None:
        for event in incidents:
            board.incident(event)

    follower = threading.Thread(target=follow_incidents, daemon=True)
    with client:
        client.connect()
        follower.start()
        confirmed = client.subscribe(channels, timeout=10)
        print(f"following {', '.join(confirmed) or 'nothing'}", flush=True)
        seen = 0
        try:
            for event in data:
                board.data(event)
                print("\033[2J\033[H" + board.render() if sys.stdout.isatty() else board.render(), flush=True)
                seen += 1
                if updates and seen >= updates:
                    break
        except ChannelClosed:
            pass
    follower.join(5)
    return board


def demo() -> int:
    from leap_sync.testing import ElstatServer

    channels = ["status:api", "latency:api", "status:web", "latency:web"]
    with ElstatServer(channels=channels) as server:
        result: list[Board] = []
        runner = threading.Thread(target=lambda: result.append(run(server.base_url, channels, updates=4)))
        runner.start()
        server.wait_for(lambda s: any(len(c.subscriptions) == 4 for c in s.connections))
        server.push_incident("new", {"id": "1", "title": "web is slow", "ongoing": True})
        for channel, value in (("status:api", True), ("latency:api", 41), ("status:web", False), ("latency:web", 980)):
            server.push_data(channel, value)
        runner.join(20)
    print("final board:\n" + result[0].render())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?", help="the status page")
    parser.add_argument("channels", nargs="*", help="<type>:<name> channels")
    parser.add_argument("--demo", action="store_true", help="run against the embedded ElstatServer")
    args = parser.parse_args(argv)
    if args.demo:
        return demo()
    if not args.url or not args.channels:
        parser.error("give a URL and at least one channel, or --demo")
    try:
        run(args.url, args.channels)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
