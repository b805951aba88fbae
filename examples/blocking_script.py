"""A blocking script: connect, subscribe, print each message until Ctrl-C.

Configuration comes from the environment: ``LEAP_PROJECT``, ``LEAP_TOKEN`` (omit for a
tokenless connection), ``LEAP_URL`` (default: Hop's endpoint). Try it against the
embedded server::

    leap-sync serve --project project_x --token leap_token_x --channel room &
    LEAP_PROJECT=project_x LEAP_TOKEN=leap_token_x LEAP_URL=ws://127.0.0.1:<port>/ws \\
        python examples/blocking_script.py --channel room
    curl -X POST http://127.0.0.1:<control port>/channels/room/messages \\
        -d '{"event": "chat", "data": {"text": "hi"}}'
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from leap_sync import DEFAULT_URL, ChannelUnavailableError, LeapClient, LeapError, StateInfo


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channel", action="append", required=True, help="channel to subscribe to (repeatable)")
    parser.add_argument("--count", type=int, default=0, help="stop after this many messages (0: never)")
    args = parser.parse_args(argv)

    client = LeapClient(
        os.environ["LEAP_PROJECT"],
        os.environ.get("LEAP_TOKEN") or None,
        url=os.environ.get("LEAP_URL", DEFAULT_URL),
    )

    def show_state(info: StateInfo) -> None:
        # Runs on the client's callbacks thread, in order; it may raise or block without
        # harming the connection (later callbacks wait).
        extra = f" ({info.error})" if info.error else ""
        print(f"state: {info.connection_state.value}{extra}", file=sys.stderr, flush=True)

    client.add_state_update_listener(show_state)
    messages = client.message_event_channel()  # create channels before connecting
    with client:  # close() on the way out, whatever happens
        try:
            client.connect(wait=True, timeout=10)
            for channel in args.channel:
                client.subscribe(channel, timeout=10)
                print(f"subscribed to {channel}", flush=True)
        except ChannelUnavailableError as exc:
            print(f"cannot subscribe: {exc}", file=sys.stderr)
            return 1
        except LeapError as exc:
            print(f"cannot connect: {exc}", file=sys.stderr)
            return 1
        try:
            # Blocks; ends by itself if the client closes for good (e.g. 4001).
            for n, event in enumerate(messages, 1):
                print(f"{event.channel_id} {event.event_name} {json.dumps(event.data)}", flush=True)
                if args.count and n >= args.count:
                    break
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
