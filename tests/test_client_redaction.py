"""The token never reaches a log line or an exception, whatever text from the server
carries it: a malformed event's name, an UNAVAILABLE's error code, a close reason that
reaches a caller through a send, an internal error's text."""

from __future__ import annotations

import logging
import traceback
import urllib.parse
from collections.abc import Callable
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
)
from leap_sync.leap import PIECE

ERRORED = ConnectionState.ERRORED


class Collecting:
    """A logger keeping every call's text, metadata and error."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def _add(self, *parts: Any) -> None:
        self.lines.append(" ".join(repr(p) for p in parts))

    def debug(self, message: str, metadata: Any = None) -> None:
        self._add(message, metadata)

    def info(self, message: str, metadata: Any = None) -> None:
        self._add(message, metadata)

    def warn(self, message: str, metadata: Any = None) -> None:
        self._add(message, metadata)

    def error(self, message: str, err: BaseException | None = None, metadata: Any = None) -> None:
        self._add(message, metadata, err, str(err))


def test_a_malformed_event_named_after_the_token_is_logged_redacted(caplog: pytest.LogCaptureFixture) -> None:
    def bad(peer: Peer) -> None:
        leap_session(peer)
        peer.json({"op": 0, "d": {"c": "room", "e": TOKEN, "d": 1, "u": "not a bool"}})
        peer.drain(5)

    logger = Collecting()
    recorders = []
    with HostileServer(bad) as server, caplog.at_level(logging.DEBUG, logger="leap_sync"):
        for chosen in (logger, None):  # a custom logger, and the standard one
            recorder = StateRecorder()  # one per client: each waits for its own ERRORED
            recorders.append(recorder)
            client = LeapClient(PROJECT, TOKEN, chosen, url=server.url, backoff=fast_backoff())
            client.add_state_update_listener(recorder)
            client.connect()
            recorder.wait_for(lambda infos: any(i.connection_state is ERRORED for i in infos))
            client.close()
    assert any("<redacted>" in line for line in logger.lines)
    assert not any(TOKEN in line for line in logger.lines)
    assert "<redacted>" in caplog.text and TOKEN not in caplog.text
    for recorder in recorders:
        for info in recorder.infos:
            assert TOKEN not in str(info.error)


def test_an_error_code_carrying_the_token_is_redacted() -> None:
    def refuses(peer: Peer) -> None:
        leap_session(peer)
        frame = peer.read_json()
        peer.json(
            {"op": 0, "d": {"c": frame["d"]["c"], "e": "UNAVAILABLE", "d": {"graceful": False, "error_code": TOKEN}}}
        )
        peer.drain(5)

    with HostileServer(refuses) as server:
        client = LeapClient(PROJECT, TOKEN, url=server.url)
        client.connect(wait=True, timeout=10)
        with pytest.raises(ChannelUnavailableError) as refused:
            client.subscribe("room", timeout=5)
        text = "".join(traceback.format_exception(refused.value))
        assert TOKEN not in text and "<redacted>" in str(refused.value)
        client.close()


def test_a_close_reason_reaching_a_send_is_redacted() -> None:
    def closes(peer: Peer) -> None:
        leap_session(peer)
        peer.close(4000, f"bye {TOKEN}")
        peer.wait(5)

    with HostileServer(closes) as server:
        recorder = StateRecorder()
        client = LeapClient(PROJECT, TOKEN, url=server.url, backoff=fast_backoff())
        client.add_state_update_listener(recorder)
        client.connect(wait=True, timeout=10)
        errors: list[BaseException] = []
        for _ in range(200):  # until the close is seen: sends fail quoting it
            try:
                client.send_message("room", "x", "y" * 1000)
            except LeapConnectionError as exc:
                errors.append(exc)
                break
        recorder.wait_for(lambda infos: any(i.connection_state is ERRORED for i in infos))
        client.close()
        for error in errors:
            assert TOKEN not in "".join(traceback.format_exception(error))
        for info in recorder.infos:
            assert TOKEN not in str(info.error)
            if isinstance(info.error, LeapConnectionError):
                assert TOKEN not in (info.error.close_reason or "")


@pytest.mark.parametrize(
    "echo",
    [urllib.parse.quote, urllib.parse.quote_plus, lambda t: urllib.parse.quote(t, safe="")],
    ids=["quote", "plus", "all"],
)
def test_a_percent_encoded_token_in_a_4001_reason_is_redacted_everywhere(echo: Callable[[str], str]) -> None:
    token = "leap_token_ab/cd+ef=="
    reason = f"invalid token {echo(token)}"
    assert token not in reason

    def rejects(peer: Peer) -> None:
        leap_session(peer)
        peer.close(4001, reason)
        peer.wait(5)

    with HostileServer(rejects) as server:
        recorder = StateRecorder()
        client = LeapClient(PROJECT, token, url=server.url, backoff=fast_backoff())
        client.add_state_update_listener(recorder)
        client.connect()
        recorder.wait_for(lambda infos: infos[-1].connection_state is ERRORED and not infos[-1].will_reconnect)
        with pytest.raises(LeapAuthorizationError) as rejected:
            client.wait_connected(timeout=10)
        client.close()
    shown = "".join(traceback.format_exception(rejected.value)) + (rejected.value.close_reason or "")
    assert echo(token) not in shown and "<redacted>" in str(rejected.value)
    for info in recorder.infos:
        if isinstance(info.error, LeapConnectionError):
            assert echo(token) not in str(info.error) + (info.error.close_reason or "")


def test_a_token_cut_short_in_a_close_reason_is_redacted() -> None:
    """A close reason holds 123 bytes: a server echoing a long token sends it cut. No
    run of ``PIECE`` characters of it shows anywhere."""
    token = "leap_token_" + "Zq8xK2mW9vR4tY7pL3nB6cD1fG5hJ0sA" * 2
    reason = f"invalid authentication for project project_x with token {token}".encode()[:123].decode()
    assert token not in reason and token[:40] in reason

    def rejects(peer: Peer) -> None:
        leap_session(peer)
        peer.close(4001, reason)
        peer.wait(5)

    records: list[str] = []
    with HostileServer(rejects) as server:
        recorder = StateRecorder()
        client = LeapClient(PROJECT, token, FmtLogger("debug", _Lines(records)), url=server.url, backoff=fast_backoff())
        client.add_state_update_listener(recorder)
        client.connect()
        recorder.wait_for(lambda infos: infos[-1].connection_state is ERRORED and not infos[-1].will_reconnect)
        with pytest.raises(LeapAuthorizationError) as rejected:
            client.wait_connected(timeout=10)
        client.close()
    shown = [
        "".join(traceback.format_exception(rejected.value)),
        rejected.value.close_reason or "",
        *(str(info.error) for info in recorder.infos),
        *records,
    ]
    pieces = {token[i : i + PIECE] for i in range(len(token) - PIECE + 1)}
    assert not [text for text in shown for piece in pieces if piece in text]
    assert "<redacted>" in str(rejected.value)


class _Lines:
    """A text stream that keeps what is written."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines

    def write(self, text: str) -> int:
        self.lines.append(text)
        return len(text)

    def flush(self) -> None:
        pass
