"""The sans-I/O Leap Edge protocol: no sockets, no threads, no clocks of its own.

- :mod:`.opcodes`: ``Opcode``, ``CloseCode`` and the close-code policy.
- :mod:`.codec`: JSON and ETF payloads, per-message zlib with a size bound.
- :mod:`.etf`: erlpack, made safe for untrusted input.
- :mod:`.models`: attrs models for every frame and event.
- :mod:`.parse`: decoded frames to models (server frames for clients, client frames
  for servers).
- :mod:`.frames`: models and arguments to frames (both directions).
- :mod:`.heartbeat`: the client's heartbeat schedule and the server's drift check.
- :mod:`.session`: the client's connection state machine.
- :mod:`.server_session`: the server's connection rules.
- :mod:`.wsframes`: the websocket frame reader for server frames.
"""

from .codec import Codec
from .opcodes import CloseAction, CloseCode, Opcode, close_action
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
