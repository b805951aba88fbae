"""A token kept out of text that may be shown (a log line, a ``repr``, an exception):
:class:`TokenRedactor` replaces it in every form it can take on its way. The client
redacts its own token with it; the embedded servers redact every token registered
with them from their logs. Pure functions, no I/O.
"""

from __future__ import annotations

import json
import re
import urllib.parse

__all__ = ["PIECE", "REDACTED", "TokenRedactor"]

REDACTED = "<redacted>"


class TokenRedactor:
    """``redactor(text)``: ``text`` with ``token`` replaced by ``mark``, in every form
    it can take on its way: as is, escaped by ``repr`` or JSON, percent-encoded (any
    characters, hex digits in either case), UTF-8 read as Latin-1, or cut (any run of
    :data:`PIECE` of its characters). ``token`` is a non-empty ``str``."""

    __slots__ = ("_encoded", "_forms", "mark", "token")

    def __init__(self, token: str, mark: str = REDACTED) -> None:
        self.token = token
        self.mark = mark
        self._forms = _forms(token)
        self._encoded = _percent_encoded(token)

    def __call__(self, text: str) -> str:
        for form in self._forms:
            if form in text:
                text = text.replace(form, self.mark)
        if "%" in text:
            text = self._encoded.sub(self.mark, text)
        return _without_pieces(text, self.token, self.mark)

    def __repr__(self) -> str:
        return "<TokenRedactor>"


def _forms(token: str) -> tuple[str, ...]:
    """The token as it may appear in text: as is, escaped (``repr``, JSON),
    percent-encoded (``quote``, ``quote_plus``), or its UTF-8 read as Latin-1; the
    longest first."""
    forms = {
        token,
        repr(token)[1:-1],
        json.dumps(token)[1:-1],
        urllib.parse.quote(token, safe=""),
        urllib.parse.quote_plus(token),
        token.encode("utf-8").decode("latin-1"),
    }
    return tuple(sorted(forms, key=len, reverse=True))


def _percent_encoded(token: str) -> re.Pattern[str]:
    """Matches the token with any of its characters percent-encoded (hex digits in
    either case; a space also as ``+``): servers and proxies choose which to encode."""
    parts = []
    for char in token:
        encoded = "".join(f"%{byte:02x}" for byte in char.encode("utf-8", "surrogatepass"))
        alternatives = [
            re.escape(char),
            "".join(f"%[{h[1]}{h[1].upper()}][{h[2]}{h[2].upper()}]" for h in _hex(encoded)),
        ]
        if char == " ":
            alternatives.append(r"\+")
        parts.append(f"(?:{'|'.join(alternatives)})")
    return re.compile("".join(parts))


def _hex(encoded: str) -> list[str]:
    """``"%2f%41"`` as ``["%2f", "%41"]``."""
    return [encoded[i : i + 3] for i in range(0, len(encoded), 3)]


PIECE = 12
"""The shortest run of the token's characters redacted where it shows cut (a server
echoing it in a close reason, cut to 123 bytes): a piece of ``PIECE`` characters or
more becomes the mark."""


def _without_pieces(text: str, token: str, mark: str) -> str:
    """``text`` with every run of at least :data:`PIECE` characters taken from the
    token (as it stands in the token) replaced by ``mark``."""
    if len(token) < PIECE or len(text) < PIECE:
        return text
    for start in range(len(token) - PIECE + 1):
        window = token[start : start + PIECE]
        found = text.find(window)
        while found >= 0:
            left, right, t_left, t_right = found, found + PIECE, start, start + PIECE
            while left > 0 and t_left > 0 and text[left - 1] == token[t_left - 1]:
                left, t_left = left - 1, t_left - 1
            while right < len(text) and t_right < len(token) and text[right] == token[t_right]:
                right, t_right = right + 1, t_right + 1
            text = text[:left] + mark + text[right:]
            found = text.find(window)
    return text
