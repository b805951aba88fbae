"""The Leap token never leaks: not in a log line at any level, a ``repr``, an exception
message or a formatted traceback the library produces, whatever characters it holds.

Each test captures everything a client can show: the ``leap_sync`` logger at DEBUG
(``caplog``; ``StdlibLogger()`` is what ``logger=None`` builds), ``FmtLogger("debug")``
writing to a stream, a custom logger keeping every call's message, metadata and
``err``, the file descriptors 1 and 2 (``capfd``), every exception the library raised to
the test and every ``StateInfo`` a listener received (``repr``, ``str``, attributes and
``traceback.format_exception``, chained causes included), every event delivered, and
the ``repr`` of the client, its state, its INIT, its channels and its sessions, taken
all along. A leak is the token in any of the forms Python prints a string (as is,
``repr``-escaped, ``json``-escaped, ``ascii``-escaped).

The whole-life test goes through connect, subscribe, messages, a refused subscribe, a
reconnect after a server close whose reason echoes the token, a 4006 redirect whose
reason (the URL) holds the token, a 4001 rejection, and, on a raw server, HTTP refusals
whose reason phrase and ``Location`` echo the token on the first connect and on a
reconnect, and a 4001 whose reason echoes it. The redaction marker ``<redacted>`` must
show where the token would have been (the identify debug line, echoed reasons).

A token that is a substring of common words (``"nect"``, in "connection") cannot be
absent from every line; for it, a leak is an occurrence not inside a longer word.
"""

from __future__ import annotations

import io
import json
import logging
import random
import re
import string
import threading
import traceback
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest
from clientkit import PROJECT, TOKEN, StateRecorder, fast_backoff
from hostile import HostileServer, Peer, leap_session

from leap_sync import (
    ChannelUnavailableError,
    ConnectionState,
    FmtLogger,
    LeapAuthorizationError,
    LeapClient,
    LeapConnectionError,
    StdlibLogger,
)
from leap_sync.protocol.models import Identify
from leap_sync.testing import LeapEdgeServer

pytestmark = pytest.mark.timeout(60)

REDACTED = "<redacted>"
MAX_REASON = 123  # bytes a close frame's reason can hold
LONG_TOKEN = "leap_" + "".join(random.Random(10).choices(string.ascii_letters + string.digits, k=2000))
TOKENS = [
    pytest.param(TOKEN, id="plain"),
    pytest.param(r"leap.tok+en*[a-z]?(x|y)^$\d{2}", id="regex_metacharacters"),
    pytest.param("leap token  with spaces", id="spaces"),
    pytest.param("leap'tok\"en'\"", id="quotes"),
    pytest.param("leap\\tok\\\\en\\x41\\n", id="backslashes"),
    pytest.param("leap_tökén_密钥_🔑", id="non_ascii"),
    pytest.param(LONG_TOKEN, id="very_long"),
    pytest.param("nect", id="substring_of_common_words"),
]
CONNECTED = ConnectionState.CONNECTED


# -- what a leak is ------------------------------------------------------------------------------


class Secret:
    """A token and the ways it could show up in text."""

    def __init__(self, token: str, *extra_forms: str) -> None:
        self.token = token
        forms = {token, repr(token)[1:-1], json.dumps(token)[1:-1], ascii(token)[1:-1], *extra_forms}
        alternatives = "|".join(re.escape(form) for form in sorted(forms, key=len, reverse=True))
        if token.isalpha():  # a part of words: only a standalone occurrence is the token
            self.pattern = re.compile(rf"(?<![A-Za-z])(?:{alternatives})(?![A-Za-z])")
        else:
            self.pattern = re.compile(alternatives)

    def fits(self, text: str) -> bool:
        """Whether ``text`` (holding the token) fits in a close frame's reason."""
        return len(text.encode()) <= MAX_REASON

    def echo(self, template: str) -> str:
        """``template`` with the token in ``{}``, or without it when a close reason could
        not hold it (the very long token)."""
        text = template.format(self.token)
        return text if self.fits(text) else template.format("").strip()

    def leaks(self, texts: Iterable[tuple[str, str]]) -> list[str]:
        """``where: excerpt`` for every text the token shows in."""
        found = []
        for where, text in texts:
            match = self.pattern.search(text)
            if match:
                start = max(0, match.start() - 60)
                found.append(f"{where}: ...{text[start : match.end() + 60]!r}...")
        return found


def exception_texts(where: str, exc: BaseException) -> list[tuple[str, str]]:
    """Everything an exception shows: message, repr, attributes, the formatted
    traceback with its chained causes, and the same for each cause and context."""
    texts = [
        (f"{where} str", str(exc)),
        (f"{where} repr", repr(exc)),
        (f"{where} attributes", repr(vars(exc))),
        (f"{where} traceback", "".join(traceback.format_exception(exc))),
    ]
    for n, linked in enumerate(link for link in (exc.__cause__, exc.__context__) if link is not None):
        texts += exception_texts(f"{where} chained[{n}]", linked)
    return texts


# -- capturing everything a client shows ----------------------------------------------------------


class Recorder:
    """A custom logger that keeps every call: level, message, metadata and err."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any, BaseException | None]] = []
        self._lock = threading.Lock()

    def _keep(self, level: str, message: str, metadata: Any, err: BaseException | None = None) -> None:
        with self._lock:
            self.calls.append((level, message, metadata, err))

    def debug(self, message: str, metadata: Any = None) -> None:
        self._keep("debug", message, metadata)

    def info(self, message: str, metadata: Any = None) -> None:
        self._keep("info", message, metadata)

    def warn(self, message: str, metadata: Any = None) -> None:
        self._keep("warn", message, metadata)

    def error(self, message: str, err: BaseException | None = None, metadata: Any = None) -> None:
        self._keep("error", message, metadata, err)


class Tee:
    """Every logger at once: ``StdlibLogger()`` (the ``leap_sync`` logger, what
    ``logger=None`` uses), ``FmtLogger("debug")`` on a stream, and a :class:`Recorder`."""

    def __init__(self) -> None:
        self.stream = io.StringIO()
        self.recorder = Recorder()
        self.loggers: list[Any] = [StdlibLogger(), FmtLogger("debug", self.stream), self.recorder]

    def debug(self, message: str, metadata: Any = None) -> None:
        for logger in self.loggers:
            logger.debug(message, metadata)

    def info(self, message: str, metadata: Any = None) -> None:
        for logger in self.loggers:
            logger.info(message, metadata)

    def warn(self, message: str, metadata: Any = None) -> None:
        for logger in self.loggers:
            logger.warn(message, metadata)

    def error(self, message: str, err: BaseException | None = None, metadata: Any = None) -> None:
        for logger in self.loggers:
            logger.error(message, err, metadata)


class Capture:
    """What one test saw; :meth:`texts` turns it all into text to search."""

    def __init__(self, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> None:
        self.caplog = caplog
        self.capfd = capfd
        caplog.set_level(logging.DEBUG, logger="leap_sync")
        self.tee = Tee()
        self.states = StateRecorder()
        self.snapshots: list[tuple[str, str]] = []
        self.exceptions: list[tuple[str, BaseException]] = []
        self.events: list[Any] = []

    def client(self, token: str, url: str) -> LeapClient:
        client = LeapClient(PROJECT, token, self.tee, url=url, backoff=fast_backoff())
        client.add_state_update_listener(self.states)
        self.snapshot("new client", client)
        return client

    def snapshot(self, where: str, client: LeapClient) -> None:
        """The repr of everything the client exposes, now."""
        items: list[tuple[str, Any]] = [
            ("client", client),
            ("url", client.url),
            ("state", client.state),
            ("init_event", client.init_event),
            ("subscriptions", client.subscriptions),
            ("logger", client.logger),
            ("a new session", client._handler.new_session()),
        ]
        live = client._core.live
        if live is not None:
            items.append(("live session", live.session))
        self.snapshots += [(f"{where}: repr({name})", repr(value)) for name, value in items]
        self.snapshots.append((f"{where}: str(client)", str(client)))

    def raised(self, where: str, call: Callable[[], Any], expected: type[BaseException]) -> Any:
        """Run ``call``, which must raise ``expected``; keep the exception."""
        with pytest.raises(expected) as info:
            call()
        self.exceptions.append((where, info.value))
        return info.value

    def drain(self, channel: Any, count: int) -> list[Any]:
        got = [channel.get(timeout=5) for _ in range(count)]
        self.events += got
        return got

    def records(self) -> list[logging.LogRecord]:
        return [r for r in self.caplog.records if r.name.startswith("leap_sync")]

    def texts(self) -> list[tuple[str, str]]:
        texts: list[tuple[str, str]] = []
        formatter = logging.Formatter("%(levelname)s %(name)s %(threadName)s %(message)s")
        for record in self.records():
            texts.append((f"log record {record.getMessage()[:40]!r}", formatter.format(record)))
            texts.append(("log record metadata", repr(getattr(record, "leap", None))))
            texts.append(("log record args", repr(record.args)))
        texts.append(("FmtLogger stream", self.tee.stream.getvalue()))
        for level, message, metadata, err in self.tee.recorder.calls:
            texts.append((f"logger.{level} message", message))
            texts.append((f"logger.{level}({message!r}) metadata", repr(metadata)))
            if err is not None:
                texts += exception_texts(f"logger.{level}({message!r}) err", err)
        out, err_text = self.capfd.readouterr()
        texts += [("stdout", out), ("stderr", err_text)]
        for where, exc in self.exceptions:
            texts += exception_texts(where, exc)
        for info in self.states.infos:
            texts.append(("StateInfo repr", repr(info)))
            if info.error is not None:
                texts += exception_texts(f"StateInfo({info.connection_state.value}).error", info.error)
        texts += [(f"event {type(e).__name__}", repr(e)) for e in self.events]
        texts += self.snapshots
        return texts

    def log_lines(self) -> list[str]:
        """Every logged line, in each logger's format."""
        return (
            [r.getMessage() for r in self.records()]
            + self.tee.stream.getvalue().splitlines()
            + [message + " " + repr(metadata) for _, message, metadata, _ in self.tee.recorder.calls]
        )


@pytest.fixture
def capture(caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> Capture:
    return Capture(caplog, capfd)


def assert_redacted_identify(capture: Capture) -> None:
    """The identify debug line is there, in every logger, with the marker for the token."""
    line = f"identify project_id={PROJECT!r} token={REDACTED!r}"
    records = [r for r in capture.records() if r.getMessage() == line]
    assert records and all(r.levelno == logging.DEBUG for r in records)
    assert all(r.leap_sync == {"project_id": PROJECT, "token": REDACTED} for r in records)  # type: ignore[attr-defined]
    assert any(text.endswith(f" DEBUG leap: {line}") for text in capture.tee.stream.getvalue().splitlines())
    calls = [c for c in capture.tee.recorder.calls if c[1] == "identify"]
    assert calls and all(c[0] == "debug" and c[2] == {"project_id": PROJECT, "token": REDACTED} for c in calls)


# -- a whole life ---------------------------------------------------------------------------------


def leap_edge_life(secret: Secret, capture: Capture) -> None:
    """Connect, subscribe, messages, a refused subscribe, a close echoing the token, a
    4006 whose URL holds it, a 4001 rejection, close; on the embedded server."""
    token = secret.token
    with LeapEdgeServer(heartbeat_interval=5.0) as server:
        server.add_token(token, project_id=PROJECT, grants=["room"], metadata={"user": "alice"})
        server.create_channel("room", project_id=PROJECT, state={"topic": "start"})
        server.create_channel("secret", project_id=PROJECT)
        client = capture.client(token, server.url)
        messages = client.message_event_channel()
        channel_events = client.channel_event_channel()
        try:
            client.connect(wait=True, timeout=10)
            capture.snapshot("connected", client)
            capture.snapshots.append(("subscribe result", repr(client.subscribe("room", timeout=5))))
            assert server.publish_many("room", "chat", [{"text": "hi"}, [1, 2], "three"]) == 1
            assert server.send_direct_message(token, "dm", {"n": 1}) == 1
            client.send_message("room", "from-client", {"x": 1})
            client.set_channel_state("room", {"topic": "next"})
            assert [e.event_name for e in capture.drain(messages, 5)] == ["chat"] * 3 + ["dm", "from-client"]
            refused = capture.raised(
                "refused subscribe", lambda: client.subscribe("secret", timeout=5), ChannelUnavailableError
            )
            assert refused.error_code == "NOT_GRANTED"
            (state_update,) = capture.drain(channel_events, 1)
            assert type(state_update).__name__ == "StateUpdateEvent"
            # a reconnect after a close whose reason echoes the token
            assert server.disconnect(4000, secret.echo("bye {}")) == 1
            capture.states.wait_count(CONNECTED, 2)
            capture.snapshot("reconnected", client)
            # a redirect whose URL holds the token
            assert server.disconnect(4006, secret.echo(server.url + "?t={}")) == 1
            capture.states.wait_count(CONNECTED, 3)
            capture.snapshot("redirected", client)
            # the token is revoked: the next Identify is answered 4001, which is fatal
            server.remove_token(token)
            assert server.disconnect(4000, "") == 1
            capture.states.wait_for(lambda infos: not infos[-1].will_reconnect and infos[-1].error is not None)
            capture.raised("wait_connected after 4001", lambda: client.wait_connected(5), LeapAuthorizationError)
            capture.raised("send after 4001", lambda: client.send_message("room", "x"), LeapConnectionError)
            capture.snapshot("rejected", client)
        finally:
            client.close()
        capture.snapshot("closed", client)
        assert [info.connection_state for info in capture.states.infos].count(CONNECTED) == 3
        assert capture.states.infos[-1].connection_state is ConnectionState.CLOSED


def refuse(token: str, status: int, reason: str, *headers: str) -> Callable[[Peer], None]:
    def script(peer: Peer) -> None:
        peer.refuse(status, f"{reason} {token}", [f"Location: https://leap.example/login?token={token}", *headers])

    return script


def session_closed(code: int, reason: str) -> Callable[[Peer], None]:
    def script(peer: Peer) -> None:
        leap_session(peer)
        peer.close(code, reason)
        peer.drain(5)

    return script


def hostile_life(secret: Secret, capture: Capture) -> tuple[LeapConnectionError, LeapAuthorizationError, int]:
    """A raw server: HTTP 403 echoing the token (first connect), a session closed with a
    reason echoing it, a 503 echoing it (a reconnect), a session closed 4001 echoing it."""
    token = secret.token
    scripts = [
        refuse(token, 403, "Forbidden"),
        session_closed(4000, secret.echo("bye {}")),
        refuse(token, 503, "Service Unavailable", "Retry-After: 0"),
        session_closed(4001, secret.echo("invalid token {}")),
    ]
    with HostileServer(scripts) as server:
        client = capture.client(token, server.url)
        try:
            refused = capture.raised("HTTP 403 on connect()", client.connect, LeapConnectionError)
            assert (refused.phase, refused.status_code) == ("upgrade", 403)
            capture.snapshot("refused", client)
            client.connect()
            capture.states.wait_for(lambda infos: not infos[-1].will_reconnect and infos[-1].error is not None)
            rejected = capture.raised(
                "wait_connected after 4001", lambda: client.wait_connected(5), LeapAuthorizationError
            )
            capture.snapshot("rejected", client)
        finally:
            client.close()
        capture.snapshot("closed", client)
        assert server.accepted == 4
        assert server.errors == []
        return refused, rejected, server.port


@pytest.mark.parametrize("token", TOKENS)
def test_the_token_never_shows_over_a_whole_life(token: str, capture: Capture) -> None:
    secret = Secret(token)
    leap_edge_life(secret, capture)
    refused, rejected, port = hostile_life(secret, capture)

    assert secret.leaks(capture.texts()) == []

    # every level was exercised
    assert {r.levelno for r in capture.records()} == {logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR}
    assert {c[0] for c in capture.tee.recorder.calls} == {"debug", "info", "warn", "error"}
    # the marker shows where the token would have been
    assert_redacted_identify(capture)
    lines = capture.log_lines()
    if secret.fits(f"bye {token}"):
        assert any("connection closed code=4000 reason='bye <redacted>'" in line for line in lines)
        assert any(re.search(r"\(code 4006: ws://127\.0\.0\.1:\d+/ws\?t=<redacted>\)", line) for line in lines)
    if secret.fits(f"invalid token {token}"):
        assert rejected.close_reason == "invalid token <redacted>"
        assert str(rejected) == "Leap Edge rejected the credentials (close code 4001: invalid token <redacted>)"
    if token.isascii():  # a non-ASCII token comes back as latin-1 text: see the test below
        assert f"HTTP 403 Forbidden {REDACTED}" in str(refused)
        assert any(f"HTTP 503 Service Unavailable {REDACTED}" in line for line in lines)
        if len(token) < 150 and not token.isalpha():  # a longer Location is cut: see the test below; and
            # the scrub also replaces the part of words a token like "nect" is ("con<redacted>ion")
            assert str(refused) == (
                f"could not connect: websocket upgrade refused: HTTP 403 Forbidden {REDACTED} "
                f"(Location: https://leap.example/login?token={REDACTED}) from 127.0.0.1:{port}"
            )


def test_logger_none_logs_to_leap_sync_with_the_token_redacted(caplog: pytest.LogCaptureFixture) -> None:
    """``logger=None``: the ``leap_sync`` logger tells the story at DEBUG, token redacted."""
    caplog.set_level(logging.DEBUG, logger="leap_sync")
    secret = Secret(TOKEN)
    with LeapEdgeServer(heartbeat_interval=5.0) as server:
        server.add_token(TOKEN, project_id=PROJECT)
        client = LeapClient(PROJECT, TOKEN, url=server.url, backoff=fast_backoff())
        states = StateRecorder()
        client.add_state_update_listener(states)
        try:
            client.connect(wait=True, timeout=10)
            assert server.disconnect(4000, f"bye {TOKEN}") == 1
            states.wait_count(CONNECTED, 2)
        finally:
            client.close()
    messages = [r.getMessage() for r in caplog.records if r.name == "leap_sync"]
    assert messages.count(f"identify project_id={PROJECT!r} token={REDACTED!r}") == 2
    assert "connection closed code=4000 reason='bye <redacted>'" in messages
    assert secret.leaks([(f"record {n}", m) for n, m in enumerate(messages)]) == []


def test_identify_model_and_sessions_hide_the_token() -> None:
    secret = Secret(TOKEN)
    client = LeapClient(PROJECT, TOKEN, url="ws://127.0.0.1:9/ws")
    texts = [
        ("Identify", repr(Identify(PROJECT, TOKEN))),
        ("session", repr(client._handler.new_session())),
        ("client", repr(client)),
    ]
    assert secret.leaks(texts) == []
    assert repr(client).endswith(" token=set>")


# -- the token in other encodings -------------------------------------------------------------------


def every_byte_percent_encoded(text: str) -> str:
    """RFC 3986 lets a URL percent-encode any byte: ``%6C%65...`` is the same URL as ``le...``."""
    return "".join(f"%{byte:02X}" for byte in text.encode())


@pytest.mark.parametrize(
    "token",
    [pytest.param(p.values[0], id=p.id) for p in TOKENS if p.id != "very_long"],
)
def test_a_redirect_url_with_the_token_percent_encoded_shows_no_token(token: str, capture: Capture) -> None:
    """Encoded by the server, the token in a 4006 URL is what the server sent; decoded and
    encoded again by the client (its own ``urlencode``), it is the client showing it."""
    secret = Secret(token, urllib.parse.quote(token, safe=""), urllib.parse.quote_plus(token))
    with LeapEdgeServer(heartbeat_interval=5.0) as server:
        server.add_token(token, project_id=PROJECT)
        client = capture.client(token, server.url)
        try:
            client.connect(wait=True, timeout=10)
            reason = f"{server.url}?t={every_byte_percent_encoded(token)}"
            assert secret.fits(reason)
            assert server.disconnect(4006, reason) == 1
            capture.states.wait_count(CONNECTED, 2)
            capture.snapshot("redirected", client)
        finally:
            client.close()
    texts = [(where, text.replace(reason, "<the server's reason>")) for where, text in capture.texts()]
    texts += [("client.url", client.url)]
    assert secret.leaks(texts) == []


def test_an_http_refusal_echoing_a_non_ascii_token_shows_no_token(capture: Capture) -> None:
    """The server echoes the token in UTF-8 (how HTTP carries it); read as latin-1, it
    is the token in another costume, every byte of it there to decode."""
    token = "leap_tökén_kéy"  # every character latin-1 can show, so nothing is lost
    assert token.encode().decode("latin-1") == "leap_tÃ¶kÃ©n_kÃ©y"
    run_http_refusal(Secret(token, token.encode().decode("latin-1")), capture, location=False)


@pytest.mark.parametrize(
    "location",
    [
        pytest.param(False, id="reason_phrase"),
        pytest.param(True, id="location"),
    ],
)
def test_an_http_refusal_echoing_a_long_token_shows_no_part_of_it(location: bool, capture: Capture) -> None:
    """No 32-character piece of a 2,000-character token shows anywhere."""
    token = LONG_TOKEN
    pieces = [token[i : i + 32] for i in range(0, len(token) - 31, 16)]
    run_http_refusal(Secret(token, *pieces), capture, location=location)


def run_http_refusal(secret: Secret, capture: Capture, *, location: bool) -> None:
    token = secret.token
    headers = [f"Location: https://leap.example/login?token={token}"] if location else []

    def script(peer: Peer) -> None:
        peer.refuse(403, f"Forbidden {token}", headers)

    with HostileServer(script) as server:
        client = capture.client(token, server.url)
        try:
            error = capture.raised("HTTP 403 on connect()", client.connect, LeapConnectionError)
        finally:
            client.close()
        capture.snapshot("closed", client)
    assert error.status_code == 403
    assert secret.leaks(capture.texts()) == []


@pytest.fixture(autouse=True)
def _no_stray_threads() -> Iterator[None]:
    """The raw servers' threads end with each test too."""
    yield
    stray = [t.name for t in threading.enumerate() if t.name.startswith("hostile-") and t.is_alive()]
    assert stray == []
