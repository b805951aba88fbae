"""Elstat's Streaming API: :class:`ElstatClient`, on the connection core ``LeapClient``
uses, and the sans-I/O protocol (:mod:`.protocol`, :mod:`.session`).

Quick start::

    from leap_sync.elstat import ElstatClient

    with ElstatClient("https://status.example.com") as client:
        data = client.data_channel()
        client.connect()
        client.subscribe(["status:api", "latency:api"])
        for event in data:
            print(event.channel, event.timestamp, event.value)
"""

from .client import ElstatClient, streaming_url
from .protocol import CloseCode, DataEvent, Incident, IncidentEvent, Op

__all__ = ["CloseCode", "DataEvent", "ElstatClient", "Incident", "IncidentEvent", "Op", "streaming_url"]
