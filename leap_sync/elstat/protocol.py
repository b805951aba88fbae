"""Elstat's Streaming API, sans-I/O: opcodes, close codes, models, parsing and building.

The wire format (``../shared/seeds/elstat-streaming-api.txt`` and later revisions):
JSON text frames whose fields sit at the top level, not under ``d`` (except DATA and
incidents)::

    {"op": 0, "channels": ["status:api"]}            SUBSCRIBE    (client)
    {"op": -1, "channels": ["status:api"]}           UNSUBSCRIBE  (client)
    {"op": 1, "channels": ["status:api"]}            SUBSCRIBED   (the channels that succeeded)
    {"op": 2, "channels": ["status:api"]}            UNSUBSCRIBED (the channels that succeeded)
    {"op": 3, "c": "status:api", "d": [1531339962000, true]}   DATA: unix ms, then the value
    {"op": 4 | 5 | 6, "d": {...incident...}}         INCIDENT_NEW / _UPDATE / _CLOSE

A client payload may not exceed :data:`MAX_PAYLOAD` (256) bytes: :func:`split_request`
spreads a long channel list over several frames, and refuses a name that cannot fit
even alone. Channel names are ``<type>:<name>``; a DATA value is typed by its channel's
type (``status:`` a bool, ``latency:`` an int of milliseconds or null, anything else
as sent). Everything here raises :class:`~leap_sync.errors.LeapProtocolError` for what
a server sends wrong, and ``ValueError`` for what a caller asks wrong.
"""

from __future__ import annotations

import datetime
import enum
from collections.abc import Iterable, Sequence
from typing import Any

import attrs

from ..errors import LeapProtocolError
from ..wire.jsontext import decode_json, encode_json

__all__ = [
    "MAX_PAYLOAD",
    "TIMESTAMP_RANGE",
    "CloseCode",
    "DataEvent",
    "ElstatClose",
    "Incident",
    "IncidentEvent",
    "Op",
    "Reply",
    "Request",
    "UnknownFrame",
    "channel_type",
    "check_channel",
    "encode_request",
    "parse_client_payload",
    "parse_server_frame",
    "split_request",
]

MAX_PAYLOAD = 256
"""Largest client payload Elstat accepts, in bytes (beyond it: 4420 TOO_MUCH)."""
TIMESTAMP_RANGE = (0, 253_402_300_799_999)
"""A DATA timestamp, unix milliseconds: from 1970 to the end of year 9999."""
LATENCY_RANGE = (0, 2**31 - 1)
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


class Op(enum.IntEnum):
    """Elstat's opcodes."""

    UNSUBSCRIBE = -1
    SUBSCRIBE = 0
    SUBSCRIBED = 1
    UNSUBSCRIBED = 2
    DATA = 3
    INCIDENT_NEW = 4
    INCIDENT_UPDATE = 5
    INCIDENT_CLOSE = 6


class CloseCode(enum.IntEnum):
    """Elstat's close codes: both mean the client sent something wrong, so a client
    does not reconnect after them (it would only do it again)."""

    INVALID_PAYLOAD = 4200
    TOO_MUCH = 4420


class ElstatClose(Exception):
    """(Servers.) A client payload breaks the rules: close with ``code``."""

    def __init__(self, code: CloseCode, reason: str) -> None:
        super().__init__(f"{int(code)} {code.name}: {reason}")
        self.code = code
        self.reason = reason


# -- models --------------------------------------------------------------------------------


@attrs.frozen
class DataEvent:
    """DATA: ``value`` of ``channel`` at ``timestamp`` (an aware UTC datetime;
    ``timestamp_ms`` is the raw unix milliseconds). ``value`` is a bool on ``status:``
    channels, an int of milliseconds (or ``None``) on ``latency:`` channels, and as
    sent on any other; ``data`` is the whole ``d`` list."""

    #: The channel (``"<type>:<name>"``).
    channel: str
    #: When the value was measured: an aware UTC datetime.
    timestamp: datetime.datetime
    #: The same instant, as the raw unix milliseconds Elstat sent.
    timestamp_ms: int
    #: A bool on ``status:`` channels, an int of milliseconds (or ``None``) on
    #: ``latency:`` channels, as sent on any other.
    value: Any
    #: The whole ``d`` list of the frame.
    data: tuple[Any, ...] = ()

    @property
    def kind(self) -> str:
        """The channel's type (``"status"``, ``"latency"``...)."""
        return channel_type(self.channel)


@attrs.frozen
class Incident:
    """An incident as Elstat sends it. The fields leap-sync reads are typed (``None``
    when absent); ``raw`` is the whole object."""

    #: The incident's id.
    id: str
    #: Its title.
    title: str | None = None
    #: Its text.
    content: str | None = None
    #: Its type, as Elstat names it.
    type: str | None = None
    #: Whether it is still going on.
    ongoing: bool | None = None
    #: When it started (aware UTC).
    start: datetime.datetime | None = None
    #: When it ended (aware UTC), ``None`` while ongoing.
    end: datetime.datetime | None = None
    #: Its stages, as sent.
    stages: tuple[Any, ...] = ()
    #: The whole incident object, as sent (not compared by ``==``).
    raw: Any = attrs.field(factory=dict, eq=False, repr=False)


@attrs.frozen
class IncidentEvent:
    """INCIDENT_NEW (``op`` 4), INCIDENT_UPDATE (5) or INCIDENT_CLOSE (6)."""

    #: ``INCIDENT_NEW``, ``INCIDENT_UPDATE`` or ``INCIDENT_CLOSE``.
    op: Op
    #: The incident.
    incident: Incident

    @property
    def kind(self) -> str:
        """``"new"``, ``"update"`` or ``"close"``."""
        return self.op.name.removeprefix("INCIDENT_").lower()


@attrs.frozen
class Reply:
    """SUBSCRIBED or UNSUBSCRIBED: the ``channels`` that succeeded."""

    op: Op
    channels: tuple[str, ...]


@attrs.frozen
class UnknownFrame:
    """A frame with an opcode this library does not know (a newer server's)."""

    op: int
    frame: Any = attrs.field(eq=False, repr=False)


@attrs.frozen
class Request:
    """(Servers.) SUBSCRIBE or UNSUBSCRIBE from a client."""

    op: Op
    channels: tuple[str, ...]


# -- channel names and payload size -------------------------------------------------------------


def channel_type(channel: str) -> str:
    """The ``<type>`` of a ``<type>:<name>`` channel name."""
    return channel.partition(":")[0]


def check_channel(channel: Any) -> str:
    """``channel`` if it is a ``<type>:<name>`` string; else ``ValueError``."""
    if not isinstance(channel, str):
        raise TypeError(f"channel names are strings, not {type(channel).__name__}")
    kind, sep, name = channel.partition(":")
    if not sep or not kind or not name:
        raise ValueError(f"channel names look like <type>:<name>, not {channel!r}")
    return channel


def encode_request(op: Op, channels: Sequence[str]) -> str:
    """The JSON text of one SUBSCRIBE or UNSUBSCRIBE."""
    return encode_json({"op": int(op), "channels": list(channels)})


def split_request(op: Op, channels: Iterable[str]) -> list[list[str]]:
    """Spread ``channels`` (checked, duplicates dropped, order kept) over as few
    SUBSCRIBE/UNSUBSCRIBE payloads as fit in :data:`MAX_PAYLOAD` bytes each.

    Raises ``ValueError`` naming a channel that cannot fit even alone, before
    anything is sent, and for an empty list.
    """
    names = list(dict.fromkeys(check_channel(c) for c in channels))
    if not names:
        raise ValueError("no channels given")
    groups: list[list[str]] = []
    current: list[str] = []
    for name in names:
        if _size(op, [name]) > MAX_PAYLOAD:
            shown = repr(name) if len(name) <= 40 else repr(name[:40]) + "..."
            raise ValueError(f"channel {shown} cannot fit in one {MAX_PAYLOAD}-byte Elstat payload")
        if current and _size(op, [*current, name]) > MAX_PAYLOAD:
            groups.append(current)
            current = []
        current.append(name)
    groups.append(current)
    return groups


def _size(op: Op, channels: Sequence[str]) -> int:
    return len(encode_request(op, channels).encode("utf-8"))


# -- server -> client ---------------------------------------------------------------------------


def _channels(frame: dict[str, Any], what: str) -> tuple[str, ...]:
    channels = frame.get("channels")
    if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
        raise LeapProtocolError(f"{what} needs a list of channel names", op=frame.get("op"))
    return tuple(channels)


def _ms(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise LeapProtocolError(f"{what} must be an integer of unix milliseconds")
    if not TIMESTAMP_RANGE[0] <= value <= TIMESTAMP_RANGE[1]:
        raise LeapProtocolError(f"{what} is out of range")
    return value


def _when(ms: int) -> datetime.datetime:
    return _EPOCH + datetime.timedelta(milliseconds=ms)


def _data(frame: dict[str, Any]) -> DataEvent:
    channel = frame.get("c")
    d = frame.get("d")
    if not isinstance(channel, str) or not isinstance(d, list) or len(d) < 2:
        raise LeapProtocolError("DATA needs a channel 'c' and 'd' = [timestamp, value]", op=3)
    ms = _ms(d[0], "DATA timestamp")
    value = d[1]
    kind = channel_type(channel)
    if kind == "status" and not isinstance(value, bool):
        raise LeapProtocolError(f"DATA on {channel[:60]!r} must carry a boolean", op=3)
    if kind == "latency" and value is not None and not _latency(value):
        raise LeapProtocolError(f"DATA on {channel[:60]!r} must carry a latency in milliseconds", op=3)
    return DataEvent(channel, _when(ms), ms, value, tuple(d))


def _latency(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and LATENCY_RANGE[0] <= value <= LATENCY_RANGE[1]


def _optional(obj: dict[str, Any], key: str, kind: type) -> Any:
    value = obj.get(key)
    if value is not None and (not isinstance(value, kind) or (kind is int and isinstance(value, bool))):
        raise LeapProtocolError(f"incident field {key!r} must be of type {kind.__name__}")
    return value


def _incident(frame: dict[str, Any]) -> IncidentEvent:
    obj = frame.get("d")
    if not isinstance(obj, dict):
        raise LeapProtocolError("an incident needs an object 'd'", op=frame.get("op"))
    ident = obj.get("id")
    if not isinstance(ident, (str, int)) or isinstance(ident, bool):
        raise LeapProtocolError("an incident needs an 'id'", op=frame.get("op"))
    start = _optional(obj, "start_date", int)
    end = _optional(obj, "end_date", int)
    stages = obj.get("stages") or []
    if not isinstance(stages, list):
        raise LeapProtocolError("incident field 'stages' must be a list")
    incident = Incident(
        id=str(ident),
        title=_optional(obj, "title", str),
        content=_optional(obj, "content", str),
        type=_optional(obj, "incident_type", str),
        ongoing=_optional(obj, "ongoing", bool),
        start=None if start is None else _when(_ms(start, "incident start_date")),
        end=None if end is None else _when(_ms(end, "incident end_date")),
        stages=tuple(stages),
        raw=obj,
    )
    return IncidentEvent(Op(frame["op"]), incident)


def parse_server_frame(
    payload: str | bytes, max_items: int | None = None
) -> DataEvent | IncidentEvent | Reply | UnknownFrame:
    """Parse one frame from an Elstat server: a :class:`DataEvent`,
    :class:`IncidentEvent` or :class:`Reply`; :class:`UnknownFrame` for an opcode this
    library does not know (newer servers add some). Raises :class:`LeapProtocolError`
    (for a payload holding more than ``max_items`` values too, before decoding it)."""
    frame = decode_json(payload, max_items)
    if not isinstance(frame, dict):
        raise LeapProtocolError("Elstat frames are JSON objects")
    op = frame.get("op")
    if not isinstance(op, int) or isinstance(op, bool):
        raise LeapProtocolError("frame has no integer 'op'")
    if op == Op.DATA:
        return _data(frame)
    if op in (Op.SUBSCRIBED, Op.UNSUBSCRIBED):
        return Reply(Op(op), _channels(frame, Op(op).name))
    if op in (Op.INCIDENT_NEW, Op.INCIDENT_UPDATE, Op.INCIDENT_CLOSE):
        return _incident(frame)
    if op in (Op.SUBSCRIBE, Op.UNSUBSCRIBE):
        raise LeapProtocolError(f"op {op} is sent by clients, not servers", op=op)
    return UnknownFrame(op, frame)


# -- client -> server (for servers) ---------------------------------------------------------------


def parse_client_payload(payload: str | bytes) -> Request:
    """(Servers.) Check and parse one client payload. Raises :class:`ElstatClose`
    with 4420 for a payload over :data:`MAX_PAYLOAD` bytes and 4200 for anything
    else invalid."""
    size = len(payload.encode("utf-8", errors="surrogatepass") if isinstance(payload, str) else payload)
    if size > MAX_PAYLOAD:
        raise ElstatClose(CloseCode.TOO_MUCH, f"payload of {size} bytes (limit {MAX_PAYLOAD})")
    try:
        frame = decode_json(payload)
    except LeapProtocolError as exc:
        raise ElstatClose(CloseCode.INVALID_PAYLOAD, str(exc)) from None
    if not isinstance(frame, dict):
        raise ElstatClose(CloseCode.INVALID_PAYLOAD, "payload must be a JSON object")
    op = frame.get("op")
    if type(op) is not int or op not in (Op.SUBSCRIBE, Op.UNSUBSCRIBE):  # not 0.0, not False
        raise ElstatClose(CloseCode.INVALID_PAYLOAD, f"unknown op {op!r}")
    channels = frame.get("channels")
    if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
        raise ElstatClose(CloseCode.INVALID_PAYLOAD, "'channels' must be a list of strings")
    return Request(Op(op), tuple(channels))


def data_frame(channel: str, timestamp_ms: int, value: Any) -> str:
    """(Servers.) A DATA frame's JSON text."""
    return encode_json({"op": int(Op.DATA), "c": channel, "d": [timestamp_ms, value]})


def reply_frame(op: Op, channels: Sequence[str]) -> str:
    """(Servers.) A SUBSCRIBED or UNSUBSCRIBED frame's JSON text."""
    return encode_json({"op": int(op), "channels": list(channels)})


def incident_frame(op: Op, incident: dict[str, Any]) -> str:
    """(Servers.) An INCIDENT_NEW/_UPDATE/_CLOSE frame's JSON text."""
    return encode_json({"op": int(op), "d": incident})
