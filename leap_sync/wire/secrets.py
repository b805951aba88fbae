"""A token kept out of text that may be shown (a log line, a ``repr``, an exception):
:class:`TokenRedactor` replaces it in every form it can take on its way. The client
redacts its own token with it; the embedded servers redact every token registered
with them from their logs. Pure functions, no I/O.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import urllib.parse
from collections.abc import Iterable

from .urls import is_secret_param

__all__ = ["MIN_SECRET", "PIECE", "REDACTED", "Secrets", "TokenRedactor", "basic_credentials", "header_secrets"]

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


MIN_SECRET = 4
"""The shortest secret :class:`Secrets` looks for in free text: a shorter one (a
password ``"pw"``) would turn every such run of letters in a message into the mark.
Inside a URL it is redacted all the same (:mod:`leap_sync.wire.urls`)."""


def basic_credentials(user: str, password: str) -> str:
    """The value of HTTP Basic authentication for ``user`` and ``password``: the base64
    of ``user:password`` in UTF-8 (as ``Proxy-Authorization: Basic ...`` carries it)."""
    return base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


_CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})


def header_secrets(lines: Iterable[str]) -> list[str]:
    """The credentials in extra request headers (``"Name: value"`` lines): the value
    of ``Authorization``, ``Proxy-Authorization``, ``Cookie`` and of every header
    named like a credential (``X-Auth-Token``, ``X-Api-Key``: :func:`is_secret_param`),
    whole and its last word (``Bearer <credential>``)."""
    found = []
    for line in lines:
        name, _, value = line.partition(":")
        name, value = name.strip().lower(), value.strip()
        if value and (name in _CREDENTIAL_HEADERS or is_secret_param(name)):
            found += [value, value.split()[-1]]
    return list(dict.fromkeys(found))


class Secrets:
    """Every secret a client knows (its token, a proxy password and its Basic form, a
    URL's userinfo password, the values of a URL's credential-named parameters):
    ``secrets(text)`` is ``text`` with each replaced by :data:`REDACTED` in every form a
    :class:`TokenRedactor` knows, the longest secret first. Secrets are added at
    construction and when an environment proxy is chosen (:meth:`add` may be called
    from any thread; a call sees the secrets added before it). Secrets shorter than
    :data:`MIN_SECRET` characters are not looked for."""

    __slots__ = ("_lock", "_redactors")

    def __init__(self, *secrets: str | None) -> None:
        self._lock = threading.Lock()
        self._redactors: tuple[TokenRedactor, ...] = ()
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str | None) -> None:
        """Look for ``secret`` from now on (``None``, an empty or a short one, or one
        already held, changes nothing)."""
        if not isinstance(secret, str) or len(secret) < MIN_SECRET:
            return
        with self._lock:
            if any(redactor.token == secret for redactor in self._redactors):
                return
            redactors = [*self._redactors, TokenRedactor(secret)]
            self._redactors = tuple(sorted(redactors, key=lambda r: len(r.token), reverse=True))

    def add_credentials(self, auth: tuple[str, str] | None) -> None:
        """Look for a proxy's ``(user, password)``: the password and the Basic value
        of both (:func:`basic_credentials`); the user name is not a secret."""
        if auth is None:
            return
        user, password = auth
        self.add(password)
        if password:
            self.add(basic_credentials(user, password))

    def __bool__(self) -> bool:
        return bool(self._redactors)

    def __call__(self, text: str) -> str:
        for redactor in self._redactors:
            text = redactor(text)
        return text

    def __repr__(self) -> str:
        return f"<Secrets count={len(self._redactors)}>"
