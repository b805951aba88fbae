"""The sans-I/O Leap Edge protocol: no sockets, no threads, no clocks of its own.
(What it shares with Elstat, websocket frames, the HTTP exchanges, SOCKS, JSON text and
ping keepalives, is in :mod:`leap_sync.wire`.)

- :mod:`.opcodes`: ``Opcode``, ``CloseCode`` and the close-code policy.
- :mod:`.codec`: JSON and ETF payloads, per-message zlib with a size bound.
- :mod:`.etf`: erlpack, made safe for untrusted input.
- :mod:`.models`: attrs models for every frame and event.
- :mod:`.parse`: decoded frames to models (server frames for clients, client frames
  for servers).
- :mod:`.frames`: models and arguments to frames (both directions).
- :mod:`.heartbeat`: the client's heartbeat schedule and the server's drift check.
- :mod:`.session`: the client's connection state machine; :mod:`.answers`: which
  request each AVAILABLE/UNAVAILABLE answers.
- :mod:`.server_session`: the server's connection rules.
"""

from ..wire.close import CloseAction
from .codec import Codec
from .opcodes import CloseCode, Opcode, close_action
from .parse import parse_client_frame, parse_server_frame
from .session import ClientSession, ReceiveResult, SessionState

__all__ = [
    "ClientSession",
    "CloseAction",
    "CloseCode",
    "Codec",
    "Opcode",
    "ReceiveResult",
    "SessionState",
    "close_action",
    "parse_client_frame",
    "parse_server_frame",
]
