"""TLS settings: an :class:`ssl.SSLContext` from websocket-client's ``sslopt`` format.

Verification is on unless ``sslopt`` turns it off explicitly (``cert_reqs`` set to
``ssl.CERT_NONE``): the default context is :func:`ssl.create_default_context`, which
checks the certificate chain against the system's trust store and the host name.

Accepted keys: ``context`` (a ready :class:`ssl.SSLContext`, used as is),
``ca_certs`` / ``ca_cert_path`` (trust these instead of the system store),
``cert_reqs``, ``check_hostname``, ``certfile`` / ``keyfile`` / ``password`` (a client
certificate), ``ciphers``, ``server_hostname`` (the name to verify and send as SNI).
``do_handshake_on_connect`` and ``suppress_ragged_eofs`` are accepted and ignored (the
handshake is always driven by leap-sync, bounded by ``connect_timeout``). Any other
key is a ``ValueError``, so a typo never silently weakens verification.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from typing import Any

__all__ = ["TLS_OPTIONS", "check_sslopt", "tls_context"]

TLS_OPTIONS = frozenset(
    {
        "context",
        "ca_certs",
        "ca_cert_path",
        "cert_reqs",
        "check_hostname",
        "certfile",
        "keyfile",
        "password",
        "ciphers",
        "server_hostname",
        "do_handshake_on_connect",
        "suppress_ragged_eofs",
    }
)


def check_sslopt(sslopt: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` (or ``TypeError``) for keys or values ``sslopt`` may not
    hold; cheap, without building a context."""
    unknown = set(sslopt) - TLS_OPTIONS
    if unknown:
        raise ValueError(f"unsupported sslopt keys: {', '.join(sorted(unknown))} (supported: {sorted(TLS_OPTIONS)})")
    context = sslopt.get("context")
    if context is not None and not isinstance(context, ssl.SSLContext):
        raise TypeError("sslopt['context'] must be an ssl.SSLContext")
    cert_reqs = sslopt.get("cert_reqs", ssl.CERT_REQUIRED)
    if (
        isinstance(cert_reqs, bool)
        or not isinstance(cert_reqs, int)
        or cert_reqs not in (ssl.CERT_NONE, ssl.CERT_OPTIONAL, ssl.CERT_REQUIRED)
    ):
        raise ValueError("sslopt['cert_reqs'] must be ssl.CERT_NONE, CERT_OPTIONAL or CERT_REQUIRED")
    if sslopt.get("check_hostname") not in (None, True, False):
        raise ValueError("sslopt['check_hostname'] must be True or False (None: the default, True)")
    for key in ("ca_certs", "ca_cert_path", "certfile", "keyfile"):
        value = sslopt.get(key)
        if value is not None and not isinstance(value, (str, bytes, os.PathLike)):
            raise TypeError(f"sslopt[{key!r}] must be a path (str, bytes or os.PathLike), not {type(value).__name__}")
    for key in ("ciphers", "server_hostname"):
        value = sslopt.get(key)
        if value is not None and not isinstance(value, str):
            raise TypeError(f"sslopt[{key!r}] must be a str, not {type(value).__name__}")
    name = sslopt.get("server_hostname")
    if name is not None and (not name or not name.isprintable() or " " in name or len(name) > 253):
        raise ValueError("sslopt['server_hostname'] must be a host name (printable, no spaces, 1-253 characters)")
    password = sslopt.get("password")
    if password is not None and not (isinstance(password, (str, bytes, bytearray)) or callable(password)):
        raise TypeError("sslopt['password'] must be str, bytes or a callable returning one")


def tls_context(sslopt: Mapping[str, Any]) -> ssl.SSLContext:
    """A client context for ``sslopt`` (see the module docstring). Raises
    ``ValueError`` for unknown keys and ``OSError``/``ssl.SSLError`` for unreadable
    certificate files."""
    check_sslopt(sslopt)
    context = sslopt.get("context")
    if context is not None:
        return context  # type: ignore[no-any-return]
    context = ssl.create_default_context(cafile=sslopt.get("ca_certs"), capath=sslopt.get("ca_cert_path"))
    cert_reqs = sslopt.get("cert_reqs", ssl.CERT_REQUIRED)
    if cert_reqs == ssl.CERT_NONE:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context.verify_mode = cert_reqs
        check_hostname = sslopt.get("check_hostname")
        context.check_hostname = True if check_hostname is None else check_hostname  # None: the default
    if sslopt.get("certfile"):
        context.load_cert_chain(sslopt["certfile"], sslopt.get("keyfile"), sslopt.get("password"))
    if sslopt.get("ciphers"):
        context.set_ciphers(sslopt["ciphers"])
    return context
