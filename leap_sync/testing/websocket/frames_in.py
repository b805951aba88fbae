"""What websockets' sans-I/O protocol hands one server connection, sorted: client
frames put together into whole messages (:class:`MessageAssembler`, which bounds the
frames of one message), and the frames it has to send split into the latest pong and
the rest (:func:`split_output`). No I/O, no locks: the connection's thread only."""

from __future__ import annotations

from collections.abc import Iterable

from websockets.frames import Frame, Opcode

__all__ = ["MAX_FRAGMENTS", "MessageAssembler", "TooManyFragments", "split_output"]

MAX_FRAGMENTS = 65_536
"""The most frames one client message may come in (websockets bounds the bytes of a
message, not the count of its frames, which may be empty)."""


class TooManyFragments(Exception):
    """A message came in more than :data:`MAX_FRAGMENTS` frames."""


class MessageAssembler:
    """Whole client messages from data frames, in order. After
    :class:`TooManyFragments` the rest of that message is dropped."""

    def __init__(self, max_fragments: int = MAX_FRAGMENTS) -> None:
        self.max_fragments = max_fragments
        self._parts: list[bytes] = []
        self._binary = False
        self._dropping = False

    def feed(self, frame: Frame) -> tuple[bytes, bool] | None:
        """``(payload, binary)`` when ``frame`` completes a message, else ``None``
        (control frames included: websockets answers pings, and handles closes).
        Raises :class:`TooManyFragments` at the first frame over the bound."""
        if frame.opcode in (Opcode.TEXT, Opcode.BINARY):
            self._parts = [bytes(frame.data)]
            self._binary = frame.opcode is Opcode.BINARY
            self._dropping = False
        elif frame.opcode is Opcode.CONT:
            if self._dropping:
                self._dropping = not frame.fin
                return None
            if len(self._parts) >= self.max_fragments:
                self._parts = []
                self._dropping = not frame.fin
                raise TooManyFragments(f"a message of over {self.max_fragments} frames")
            self._parts.append(bytes(frame.data))
        else:
            return None
        if not frame.fin:
            return None
        data = b"".join(self._parts)
        self._parts = []
        return data, self._binary


def split_output(chunks: Iterable[bytes]) -> tuple[bytes | None, bytes]:
    """websockets' output (one serialised frame per chunk, ``b""`` for its EOF
    markers) as ``(latest pong or None, every other frame joined)``. Server frames are
    unmasked, so the opcode is in the first byte."""
    pong: bytes | None = None
    others: list[bytes] = []
    for chunk in chunks:
        if chunk and chunk[0] & 0x0F == Opcode.PONG.value:
            pong = chunk  # an older pong needs no answer: RFC 6455, 5.5.3
        elif chunk:
            others.append(chunk)
    return pong, b"".join(others)
