"""A Flask app whose background Leap client feeds a server-sent-events endpoint.

One ``LeapClient`` per process; each ``/events`` request takes its own event channel
(``message_event_channel()`` returns a new queue every call) and detaches it when the
browser goes away, so no extra thread is needed for the fan-out.

The client is *constructed* at import, which starts nothing, and *connected* by
whoever runs the app: ``python examples/flask_sse.py`` connects in ``__main__``; under
gunicorn, ``gunicorn_conf.py`` connects in ``post_worker_init`` (threads do not survive a
fork, so never connect before forking).

Environment: ``LEAP_PROJECT``, ``LEAP_TOKEN``, ``LEAP_URL``, ``LEAP_CHANNEL`` (default
``room``).
"""

from __future__ import annotations

import json
import os
import queue
from collections.abc import Iterator

from flask import Flask, Response, jsonify, request

from leap_sync import DEFAULT_URL, LeapClient

KEEPALIVE_SECONDS = 15.0


def client_from_env() -> LeapClient:
    return LeapClient(
        os.environ.get("LEAP_PROJECT", "project_x"),
        os.environ.get("LEAP_TOKEN") or None,
        url=os.environ.get("LEAP_URL", DEFAULT_URL),
    )


def create_app(client: LeapClient) -> Flask:
    app = Flask(__name__)
    app.extensions["leap"] = client

    @app.get("/events")
    def events() -> Response:
        # ?limit=N ends the stream after N events (handy for curl and tests)
        limit = request.args.get("limit", default=0, type=int)
        channel = client.message_event_channel(maxsize=10_000)

        def stream() -> Iterator[str]:
            sent = 0
            try:
                yield ": connected\n\n"
                while not limit or sent < limit:
                    try:
                        event = channel.get(timeout=KEEPALIVE_SECONDS)
                    except queue.Empty:
                        yield ": keepalive\n\n"
                        continue
                    payload = {"channel": event.channel_id, "data": event.data}
                    yield f"event: {event.event_name}\ndata: {json.dumps(payload)}\n\n"
                    sent += 1
            finally:
                channel.close()  # the browser left: stop feeding this queue

        return Response(stream(), mimetype="text/event-stream", headers={"Cache-Control": "no-cache"})

    @app.get("/health")
    def health() -> Response:
        state = client.state
        return jsonify(
            state=state.connection_state.value,
            pid=os.getpid(),
            subscriptions=list(client.subscriptions),
        )

    return app


CHANNEL = os.environ.get("LEAP_CHANNEL", "room")
leap_client = client_from_env()
app = create_app(leap_client)


def start_leap(timeout: float = 10.0) -> None:
    """Connect this process's client and subscribe (call after any fork). The client
    remembers the subscription and restores it after reconnects."""
    leap_client.connect(wait=True, timeout=timeout)
    leap_client.subscribe(CHANNEL, timeout=timeout)


if __name__ == "__main__":
    start_leap()
    try:
        app.run(threaded=True, port=int(os.environ.get("PORT", "5000")))
    finally:
        leap_client.close()
