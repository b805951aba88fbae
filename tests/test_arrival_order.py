"""One batch's events of every kind, in the order they arrived (sans-I/O): what
``leap-sync listen`` and ``elstat`` print from."""

from __future__ import annotations

import json

from test_session import MESSAGE, connected, wire

from leap_sync.connection.handler import in_arrival_order
from leap_sync.elstat.protocol import DataEvent, IncidentEvent
from leap_sync.elstat.session import ElstatSession
from leap_sync.protocol import frames
from leap_sync.protocol.models import StateUpdateEvent


def test_in_arrival_order_merges_by_position() -> None:
    assert in_arrival_order([], []) == []
    assert in_arrival_order(["m0", "m1"], []) == ["m0", "m1"]
    assert in_arrival_order([], [(0, "e0"), (0, "e1")]) == ["e0", "e1"]
    assert in_arrival_order(["m0", "m1", "m2"], [(0, "e0"), (2, "e1"), (2, "e2"), (3, "e3")]) == [
        "e0",
        "m0",
        "m1",
        "e1",
        "e2",
        "m2",
        "e3",
    ]


def test_a_leap_batch_records_where_each_event_arrived() -> None:
    s = connected()
    update = StateUpdateEvent("room", {"n": 1})
    batch = [
        wire(frames.server_frame(update)),
        wire(frames.server_frame(MESSAGE)),
        wire(frames.server_frame(MESSAGE)),
        wire(frames.server_frame(update)),
        wire(frames.server_frame(MESSAGE)),
    ]
    result = s.receive(batch, 1.0)
    assert result.error is None
    assert result.after == [0, 2]
    merged = in_arrival_order(result.messages, list(zip(result.after, result.events, strict=True)))
    assert merged == [update, MESSAGE, MESSAGE, update, MESSAGE]


def test_an_elstat_batch_records_where_each_incident_arrived() -> None:
    s = ElstatSession(20.0, 20.0)
    incident = json.dumps({"op": 4, "d": {"id": "i1", "title": "down"}})
    data = json.dumps({"op": 3, "c": "status:api", "d": [1531339962000, True]})
    result = s.receive([(data, False), (incident, False), (data, False), (data, False), (incident, False)], 1.0)
    assert result.error is None
    assert result.incidents_after == [1, 3]
    merged = in_arrival_order(result.data, list(zip(result.incidents_after, result.incidents, strict=True)))
    assert [type(event) for event in merged] == [DataEvent, IncidentEvent, DataEvent, DataEvent, IncidentEvent]
