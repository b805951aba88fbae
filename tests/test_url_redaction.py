"""A URL is shown (a ``repr``, a log line, an exception) with its secrets redacted:
its userinfo and its credential-named query and fragment parameters, and the
client's token wherever it stands in it. ``client.url`` itself stays as configured."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from leap_sync import ConnectionState, LeapClient, LeapConnectionError, StateInfo
from leap_sync.elstat import ElstatClient
from leap_sync.testing import LeapEdgeServer
from leap_sync.wire.urls import is_secret_param, redact_url, redact_urls

TOKEN = "leap_token_Q7hiddenvalue42"
OTHER = "s3cr3t_not_the_token_77"
TIMEOUT = 10.0


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("ws://h/ws?token=abc&encoding=json", "ws://h/ws?token=<redacted>&encoding=json"),
        ("ws://u:pw@h:1/ws", "ws://<redacted>@h:1/ws"),
        ("ws://justtoken@h/", "ws://<redacted>@h/"),
        ("wss://h/p?a=1&access_token=x;api_key=y&apiKey=z&X-Auth-Token=w", None),
        ("https://h/cb#access_token=x&state=1", "https://h/cb#access_token=<redacted>&state=1"),
        ("ws://h/ws?password=&secret=q&keep=k", "ws://h/ws?password=&secret=<redacted>&keep=k"),
        ("ws://h/us@er?x=1", "ws://h/us@er?x=1"),
        ("not a url ?token=t", "not a url ?token=<redacted>"),
        ("ws://h/ws", "ws://h/ws"),
    ],
)
def test_redact_url(url: str, shown: str | None) -> None:
    expected = (
        shown or "wss://h/p?a=1&access_token=<redacted>;api_key=<redacted>&apiKey=<redacted>&X-Auth-Token=<redacted>"
    )
    assert redact_url(url) == expected


def test_secret_parameter_names() -> None:
    secret = ["token", "TOKEN", "access_token", "refresh-token", "api_key", "apikey", "client_secret", "password"]
    secret += ["passwd", "pwd", "auth", "authorization", "sig", "signature", "session", "jwt", "acc%65ss_token"]
    assert [n for n in secret if not is_secret_param(n)] == []
    assert [n for n in ["encoding", "compression", "channel", "state", "id"] if is_secret_param(n)] == []


def test_redact_urls_in_text() -> None:
    text = f"connecting to 'ws://u:{OTHER}@h/ws?token={OTHER}' and then http://h/?key={OTHER} done"
    assert redact_urls(text) == (
        "connecting to 'ws://<redacted>@h/ws?token=<redacted>' and then http://h/?key=<redacted> done"
    )


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"ws://127.0.0.1:1/ws?token={TOKEN}", "ws://127.0.0.1:1/ws?token=<redacted>&encoding=json&compression=none"),
        (f"ws://u:{TOKEN}@127.0.0.1:1/ws", "ws://<redacted>@127.0.0.1:1/ws?encoding=json&compression=none"),
        (f"ws://127.0.0.1:1/ws?x={TOKEN}", "ws://127.0.0.1:1/ws?x=<redacted>&encoding=json&compression=none"),
        (f"ws://127.0.0.1:1/ws?auth={OTHER}", "ws://127.0.0.1:1/ws?auth=<redacted>&encoding=json&compression=none"),
    ],
)
def test_leap_client_repr_shows_the_url_without_secrets(url: str, shown: str) -> None:
    client = LeapClient("p", TOKEN, url=url)
    try:
        assert repr(client) == f"<LeapClient project_id='p' state=idle url={shown!r} token=set>"
        assert TOKEN in client.url or OTHER in client.url  # the property: as configured
    finally:
        client.close()


def test_elstat_client_repr_shows_the_url_without_secrets() -> None:
    client = ElstatClient(f"https://viewer:{OTHER}@status.example/?key={OTHER}")
    try:
        assert repr(client) == (
            "<ElstatClient state=idle url='wss://<redacted>@status.example/api/streaming?key=<redacted>'>"
        )
    finally:
        client.close()


def test_errors_naming_the_url_show_no_secret() -> None:
    with pytest.raises(ValueError) as leap_error:
        LeapClient("p", TOKEN, url=f"http://u:{TOKEN}@h/ws?token={TOKEN}")
    assert str(leap_error.value) == (
        "Leap Edge URL must be ws:// or wss:// with a host, not 'http://<redacted>@h/ws?token=<redacted>'"
    )
    with pytest.raises(ValueError) as host_error:  # the token in no named place: the client's redaction
        LeapClient("p", TOKEN, url=f"ws://a b{TOKEN}/ws")
    assert str(host_error.value) == (
        "URL host holds a space or control character: 'ws://a b<redacted>/ws?encoding=json&compression=none'"
    )
    with pytest.raises(ValueError) as elstat_error:
        ElstatClient(f"ftp://viewer:{OTHER}@status.example/?key={OTHER}")
    assert str(elstat_error.value) == (
        "an Elstat URL is http(s):// or ws(s):// with a host, not 'ftp://<redacted>@status.example/?key=<redacted>'"
    )


class _Lines:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def debug(self, message: str, metadata: Any = None) -> None:
        self.lines.append(f"{message} {metadata}")

    info = warn = debug

    def error(self, message: str, err: BaseException | None = None, metadata: Any = None) -> None:
        self.lines.append(f"{message} {err} {metadata}")


def test_log_lines_show_the_url_without_secrets() -> None:
    logger = _Lines()
    with LeapEdgeServer() as server:
        server.add_token(TOKEN, project_id="p")
        url = server.url + f"?api_key={OTHER}"
        with LeapClient("p", TOKEN, logger, url=url) as client:
            client.connect(wait=True, timeout=TIMEOUT)
        shown = server.url + "?api_key=<redacted>&encoding=json&compression=none"
    urls = [line for line in logger.lines if line.startswith(("connecting", "websocket upgraded"))]
    assert urls == [f"connecting {{'url': {shown!r}}}", f"websocket upgraded {{'url': {shown!r}}}"]
    assert [line for line in logger.lines if OTHER in line or TOKEN in line] == []


def test_a_redirect_url_with_a_credential_shows_none_in_errors_logs_and_repr() -> None:
    # A 4006 redirect to a URL with another credential in it (not the token: the
    # client follows it): the ERRORED state's error, the log lines and repr redact it.
    logger = _Lines()
    states: list[StateInfo] = []
    connected = threading.Semaphore(0)

    def listen(info: StateInfo) -> None:
        states.append(info)
        if info.connection_state is ConnectionState.CONNECTED:
            connected.release()

    with LeapEdgeServer() as server:
        server.add_token(TOKEN, project_id="p")
        with LeapClient("p", TOKEN, logger, url=server.url) as client:
            client.add_state_update_listener(listen)
            client.connect(wait=True, timeout=TIMEOUT)
            assert connected.acquire(timeout=TIMEOUT)
            reason = f"{server.url}?auth={OTHER}"
            assert server.disconnect(4006, reason) == 1
            assert connected.acquire(timeout=TIMEOUT)  # connected to the redirect target
            assert OTHER in client.url  # where it connects: as the server said
            shown = f"{server.url}?auth=<redacted>&encoding=json&compression=none"
            assert repr(client) == f"<LeapClient project_id='p' state=connected url={shown!r} token=set>"
    [errored] = [s for s in states if s.connection_state is ConnectionState.ERRORED]
    assert errored.error is not None and isinstance(errored.error, LeapConnectionError)
    assert (errored.error.close_code, errored.error.close_reason) == (4006, f"{server.url}?auth=<redacted>")
    assert OTHER not in str(errored.error)
    assert [line for line in logger.lines if line.startswith("redirected")] == [
        f"redirected (4006) {{'url': {shown!r}, 'immediate': True}}"
    ]
    assert [line for line in logger.lines if OTHER in line or TOKEN in line] == []


def test_redact_urls_around_a_redacted_token() -> None:
    # The client redacts its token first, then the URLs: a URL holding the marker is
    # still one URL, and closing punctuation after it stays.
    assert redact_urls("(Location: https://h/login?token=<redacted>) from h") == (
        "(Location: https://h/login?token=<redacted>) from h"
    )
    assert redact_urls("at ws://u:<redacted>@h/ws?key=k.") == "at ws://<redacted>@h/ws?key=<redacted>."
