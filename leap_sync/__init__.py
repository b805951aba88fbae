"""leap-sync: a thread-based, synchronous client for Hop's Leap Edge realtime gateway.

Quick start::

    from leap_sync import LeapClient

    client = LeapClient("project_x", token="leap_token_x")
    messages = client.message_event_channel()
    client.connect(wait=True, timeout=10)
    client.subscribe("room")
    for event in messages:
        print(event.channel_id, event.event_name, event.data)

See ``LeapClient`` for options and ``leap_sync.testing`` for the embedded Leap Edge
server.
"""

from .backoff import Backoff
from .channels import EventChannel
from .client import DEFAULT_URL, LeapClient
from .connection.stats import ChannelStats, Stats
from .errors import (
    ChannelClosed,
    ChannelOverflowError,
    ChannelUnavailableError,
    LeapAuthorizationError,
    LeapClosedError,
    LeapConnectionError,
    LeapEncodeError,
    LeapError,
    LeapProtocolError,
    LeapTimeoutError,
)
from .log import FmtLogger, Logger, NopLogger, StdlibLogger
from .protocol.models import (
    AvailableEvent,
    Channel,
    InitEvent,
    MessageEvent,
    PipeRoom,
    PipeRoomAvailableEvent,
    PipeRoomUnavailableEvent,
    PipeRoomUpdateEvent,
    StateUpdateEvent,
    TokenStateUpdateEvent,
    UnavailableEvent,
    UnknownEvent,
)
from .protocol.opcodes import CloseCode, Opcode
from .state import ConnectionState, StateInfo

__version__ = "0.2.0"

__all__ = [
    "DEFAULT_URL",
    "AvailableEvent",
    "Backoff",
    "Channel",
    "ChannelClosed",
    "ChannelOverflowError",
    "ChannelStats",
    "ChannelUnavailableError",
    "CloseCode",
    "ConnectionState",
    "EventChannel",
    "FmtLogger",
    "InitEvent",
    "LeapAuthorizationError",
    "LeapClient",
    "LeapClosedError",
    "LeapConnectionError",
    "LeapEncodeError",
    "LeapError",
    "LeapProtocolError",
    "LeapTimeoutError",
    "Logger",
    "MessageEvent",
    "NopLogger",
    "Opcode",
    "PipeRoom",
    "PipeRoomAvailableEvent",
    "PipeRoomUnavailableEvent",
    "PipeRoomUpdateEvent",
    "StateInfo",
    "StateUpdateEvent",
    "Stats",
    "StdlibLogger",
    "TokenStateUpdateEvent",
    "UnavailableEvent",
    "UnknownEvent",
    "__version__",
]
