"""URLs as they may be shown (a ``repr``, a log line, an exception message): the
secrets a URL can carry redacted, everything else as written.

A URL carries a secret in two places: its userinfo (``ws://user:password@host``, the
user name included: it may be the token itself) and its query or fragment
parameters named like a credential (``?token=...``, ``access_token``, ``api_key``,
``secret``, ``password``, ``auth``...). Both become ``<redacted>``. Pure functions:
no parsing that could raise, so a URL too broken to use is still shown safely.
"""

from __future__ import annotations

import re
import urllib.parse

__all__ = ["REDACTED", "is_secret_param", "redact_url", "redact_urls"]

REDACTED = "<redacted>"

_SECRET_NAMES = frozenset(
    {
        "auth",
        "authorization",
        "bearer",
        "credential",
        "credentials",
        "jwt",
        "key",
        "pass",
        "passwd",
        "password",
        "pwd",
        "secret",
        "session",
        "sessionid",
        "sig",
        "signature",
        "token",
    }
)
_SECRET_SUFFIXES = ("token", "secret", "password", "passwd", "key", "auth", "signature", "credential", "credentials")

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://(?:<redacted>|[^\s'\"<>\\])*")
_TRAILING = ").,;:!?]}"


def is_secret_param(name: str) -> bool:
    """Whether a query parameter named ``name`` (as written: percent-decoded here,
    case and ``-``/``_`` ignored) holds a credential: ``token``, ``access_token``,
    ``api_key``, ``apiKey``, ``client_secret``, ``password``, ``auth``, ``sig``..."""
    lowered = urllib.parse.unquote_plus(name).strip().lower().replace("-", "_")
    return lowered in _SECRET_NAMES or lowered.endswith(_SECRET_SUFFIXES)


def _redact_params(params: str, mark: str) -> str:
    """``a=1&token=x`` as ``a=1&token=<redacted>`` (``&`` and ``;`` separate)."""
    pieces = re.split(r"([&;])", params)
    for i in range(0, len(pieces), 2):
        name, _, value = pieces[i].partition("=")
        if value and value != mark and is_secret_param(name):  # an empty value hides nothing
            pieces[i] = f"{name}={mark}"
    return "".join(pieces)


def redact_url(url: str, mark: str = REDACTED) -> str:
    """``url`` with its userinfo (everything before the host's ``@``) and the values of
    its credential-named query and fragment parameters (:func:`is_secret_param`)
    replaced by ``mark``; the rest as written. Never raises for a ``str``."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    netloc, tail = rest[:end], rest[end:]
    if "@" in netloc:
        netloc = mark + netloc[netloc.rindex("@") :]
    before, hash_, fragment = tail.partition("#")
    path, question, query = before.partition("?")
    tail = path + question + _redact_params(query, mark) + hash_ + _redact_params(fragment, mark)
    return f"{scheme}{sep}{netloc}{tail}"


def redact_urls(text: str) -> str:
    """``text`` with every URL in it (``scheme://...`` up to a space, a quote, ``<``,
    ``>`` or a backslash, a ``<redacted>`` already there included; closing punctuation
    at its end left out) shown by :func:`redact_url`."""
    if "://" not in text:
        return text
    return _URL.sub(_redact_match, text)


def _redact_match(match: re.Match[str]) -> str:
    found = match.group(0)
    url = found.rstrip(_TRAILING)
    return redact_url(url) + found[len(url) :]
