"""Application code to test with the ``leap_edge_server`` pytest fixture: it turns
Leap messages on a channel into notification strings."""

from __future__ import annotations

from leap_sync import LeapClient


def collect_notifications(client: LeapClient, channel: str, count: int, timeout: float = 5.0) -> list[str]:
    """Subscribe to ``channel`` and return the first ``count`` notifications."""
    messages = client.message_event_channel()
    client.subscribe(channel, timeout=timeout)
    notes = []
    for _ in range(count):
        event = messages.get(timeout=timeout)
        notes.append(
            f"{event.event_name}: {event.data.get('text', '') if isinstance(event.data, dict) else event.data}"
        )
    messages.close()
    return notes
