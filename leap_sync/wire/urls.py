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

__all__ = ["REDACTED", "is_secret_param", "redact_url", "redact_urls", "url_secrets"]

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

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://(?:[^\s@]*@)?(?:<redacted>|[^\s'\"<>\\])*")
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
    userinfo, rest = _userinfo(rest)
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    netloc, tail = rest[:end], rest[end:]
    if userinfo is not None:
        netloc = f"{mark}@{netloc}"
    before, hash_, fragment = tail.partition("#")
    path, question, query = before.partition("?")
    tail = path + question + _redact_params(query, mark) + hash_ + _redact_params(fragment, mark)
    return f"{scheme}{sep}{netloc}{tail}"


def _userinfo(rest: str) -> tuple[str | None, str]:
    """``rest`` (a URL after ``scheme://``) as its userinfo (``None`` without one) and
    what follows the ``@``. A password may hold an unencoded ``/``, ``?``, ``#`` or
    ``@``: the userinfo ends at the last ``@`` before the first ``/``, ``?`` or ``#``
    that follows the first ``@``. An ``@`` after a ``/``, ``?`` or ``#`` is a path's
    (``ws://host/a@b``) unless a ``:`` comes before that character (``user:pa/ss@host``:
    a port is never a password shown, so ``host:80/a@b`` is redacted too)."""
    first = rest.find("@")
    if first < 0:
        return None, rest
    cut = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    if cut < first and ":" not in rest[:cut]:
        return None, rest  # ws://host/a@b: an "@" in the path, no password before it
    end = min((i for i in (rest.find(c, first) for c in "/?#") if i >= 0), default=len(rest))
    last = rest.rindex("@", 0, end)
    return rest[:last], rest[last + 1 :]


def _params(params: str) -> list[str]:
    """The values (as written and percent-decoded) of the credential-named parameters
    in ``params``."""
    found = []
    for piece in re.split(r"[&;]", params):
        name, _, value = piece.partition("=")
        if value and is_secret_param(name):
            found += [value, urllib.parse.unquote_plus(value), urllib.parse.unquote(value)]
    return found


def url_secrets(url: str) -> list[str]:
    """The secrets ``url`` carries, for redaction where they show outside it (a
    server quoting them): its userinfo password and the values of its credential-named
    query and fragment parameters (:func:`is_secret_param`), each as written and
    percent-decoded; no duplicates. Never raises for a ``str``."""
    _, sep, rest = url.partition("://")
    if not sep:
        rest = url
    userinfo, rest = _userinfo(rest)
    found = []
    if userinfo is not None and ":" in userinfo:
        password = userinfo.partition(":")[2]
        found += [password, urllib.parse.unquote(password)]
    before, _, fragment = rest.partition("#")
    found += _params(before.partition("?")[2]) + _params(fragment)
    return list(dict.fromkeys(secret for secret in found if secret))


def redact_urls(text: str) -> str:
    """``text`` with every URL in it (``scheme://...`` up to a space, a quote, ``<``,
    ``>`` or a backslash, a ``<redacted>`` already there included; closing punctuation
    at its end left out) shown by :func:`redact_url`. A userinfo (anything but
    whitespace up to an ``@``) is taken whole, whatever it holds: a password with a
    quote, ``<`` or ``#`` in it never ends the URL early."""
    if "://" not in text:
        return text
    return _URL.sub(_redact_match, text)


def _redact_match(match: re.Match[str]) -> str:
    found = match.group(0)
    url = found.rstrip(_TRAILING)
    return redact_url(url) + found[len(url) :]
