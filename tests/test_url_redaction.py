"""A URL is shown (a ``repr``, a log line, an exception) with its secrets redacted:
its userinfo and its credential-named query and fragment parameters, and the
client's token wherever it stands in it. ``client.url`` itself stays as configured."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import traceback
from typing import Any

import pytest

from leap_sync import ConnectionState, LeapClient, LeapConnectionError, StateInfo
from leap_sync.connection.attempt import Endpoint
from leap_sync.connection.proxy import parse_proxy_url
from leap_sync.elstat import ElstatClient
from leap_sync.testing import LeapEdgeServer
from leap_sync.wire.secrets import Secrets, basic_credentials
from leap_sync.wire.urls import is_secret_param, redact_url, redact_urls, url_secrets

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


# --- Every secret the client was given, wherever it shows (attack7) -----------------

SECRET = "S3CRETX"


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (f'url="ws://user:pa\'ss{SECRET}@h:1/ws" x', 'url="ws://<redacted>@h:1/ws" x'),
        (f"url='ws://user:pa<ss{SECRET}@h:1/ws' x", "url='ws://<redacted>@h:1/ws' x"),
        (f"wss://user:{SECRET}#1@h/ws", "wss://<redacted>@h/ws"),
        (f"wss://user:{SECRET}/1@h/ws", "wss://<redacted>@h/ws"),
        (f"https://user:{SECRET}?1@h", "https://<redacted>@h"),
        (f"ws://user:p@{SECRET}@h/ws?x=1", "ws://<redacted>@h/ws?x=1"),
        ("ws://h:80/a@b", "ws://<redacted>@b"),
        ("'ws://h/ws' from a@b", "'ws://h/ws' from a@b"),
    ],
)
def test_a_url_password_holding_any_character_is_redacted(text: str, shown: str) -> None:
    assert redact_urls(text) == shown


def test_url_secrets_are_the_password_and_credential_named_values() -> None:
    url = "wss://user:S3%41CRETX#1@h/ws?api_key=K3Y%20S&encoding=json&token=tkn1#sig=f"
    assert url_secrets(url) == ["S3%41CRETX#1", "S3ACRETX#1", "K3Y%20S", "K3Y S", "tkn1", "f"]
    assert url_secrets("ws://h/ws?encoding=json") == []
    assert url_secrets("ws://h/ws#access_token=frag") == ["frag"]


def test_secrets_redact_a_proxy_password_and_its_basic_form() -> None:
    secrets = Secrets()
    secrets.add_credentials(("user", SECRET))
    basic = basic_credentials("user", SECRET)
    assert basic == "dXNlcjpTM0NSRVRY"
    assert secrets(f"bad {basic} and {SECRET} and {SECRET.lower()}") == "bad <redacted> and <redacted> and s3cretx"
    secrets.add("pw")  # too short to look for in free text
    assert secrets("pw") == "pw"


@pytest.mark.parametrize(
    ("make", "url", "message"),
    [
        (lambda u: LeapClient("p", None, url=u), f"wss://user:{SECRET}#1@h/ws", "Leap Edge URL has a bad host or port"),
        (lambda u: LeapClient("p", None, url=u), f"wss://user:{SECRET}/1@h/ws", "Leap Edge URL has a bad host or port"),
        (ElstatClient, f"https://user:{SECRET}?1@h", "an Elstat URL has a bad host or port"),
        (Endpoint.parse, f"ws://user:{SECRET}#1@h/ws", "URL port is not a number 1-65535"),
        (Endpoint.parse, f"ws://user:{SECRET}@h:0/ws", "URL port 0 is not a port a connection can go to"),
        (parse_proxy_url, f"http://user:{SECRET}#1@h:1", "proxy URL has a bad host or port"),
    ],
)
def test_a_url_error_names_the_url_redacted_never_urllibs_text(make: Any, url: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        make(url)
    assert SECRET not in "".join(traceback.format_exception(caught.value))  # nor in a chained error
    assert str(caught.value).startswith(message) and "<redacted>@h" in str(caught.value)


def test_the_cli_shows_a_bad_url_redacted() -> None:
    url = f"wss://user:{SECRET}?1@leap.example/ws"
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower() and k != "LEAP_TOKEN"}
    done = subprocess.run(
        [sys.executable, "-m", "leap_sync", "listen", "--project", "p", "--tokenless", "--url", url],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 2
    assert (
        done.stderr.strip()
        == "leap-sync listen: Leap Edge URL has a bad host or port: 'wss://<redacted>@leap.example/ws'"
    )


class Refuser:
    """A raw HTTP peer on 127.0.0.1 answering every request with ``reply(request)``
    (a status line and reason): a proxy or a websocket endpoint that quotes what it got."""

    def __init__(self, reply: Any) -> None:
        self.reply = reply
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, name="refuser", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            with sock:
                request = b""
                while b"\r\n\r\n" not in request:
                    data = sock.recv(4096)
                    if not data:
                        break
                    request += data
                sock.sendall(f"HTTP/1.1 {self.reply(request.decode())}\r\nContent-Length: 0\r\n\r\n".encode())

    def close(self) -> None:
        self.listener.close()
        self.thread.join(TIMEOUT)


def _header(request: str, name: str) -> str:
    found = [line.split(":", 1)[1].strip() for line in request.split("\r\n") if line.lower().startswith(name + ":")]
    return found[0] if found else ""


def _shown_by_failed_connect(client: Any, caplog: pytest.LogCaptureFixture) -> list[str]:
    """Everything a failed connect shows: the error, the state's, the log and the repr."""
    shown = [repr(client)]
    with caplog.at_level(logging.DEBUG):
        try:
            with pytest.raises(LeapConnectionError) as caught:
                client.connect(timeout=TIMEOUT)
            shown += [str(caught.value), repr(client.state), str(client.state.error)]
        finally:
            client.close()
    return shown + [record.getMessage() for record in caplog.records]


@pytest.mark.parametrize("echo", ["basic", "plain"])
@pytest.mark.parametrize("where", ["explicit", "environment"])
def test_a_proxy_refusal_quoting_the_proxy_password_shows_none(
    echo: str, where: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def reply(request: str) -> str:
        quoted = _header(request, "proxy-authorization") if echo == "basic" else f"password {SECRET} for user"
        return f"407 bad credentials {quoted}"

    proxy = Refuser(reply)
    try:
        if where == "explicit":
            options: dict[str, Any] = {"http_proxy_host": "127.0.0.1", "http_proxy_port": proxy.port}
            options["http_proxy_auth"] = ("user", SECRET)
        else:
            monkeypatch.setenv("http_proxy", f"http://user:{SECRET}@127.0.0.1:{proxy.port}")
            options = {}
        client = LeapClient("p", None, url="ws://leap.example.test/ws", backoff=None, **options)
        shown = _shown_by_failed_connect(client, caplog)
    finally:
        proxy.close()
    expected = "bad credentials Basic <redacted>" if echo == "basic" else "password <redacted> for user"
    assert expected in shown[1]
    basic = basic_credentials("user", SECRET)
    assert [line for line in shown if SECRET in line or basic in line] == []


def test_a_bad_environment_proxy_url_shows_no_password(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("http_proxy", f"http://user:{SECRET}#1@127.0.0.1:1")
    client = LeapClient("p", None, url="ws://leap.example.test/ws")
    shown = _shown_by_failed_connect(client, caplog)
    assert shown[1] == (
        "could not connect: bad proxy setting in the environment: "
        "proxy URL has a bad host or port: 'http://<redacted>@127.0.0.1:1'"
    )
    assert [line for line in shown if SECRET in line] == []


@pytest.mark.parametrize("url", ["ws://127.0.0.1:{port}/ws?api_key=K3YSECRET", "ws://u:K3YSECRET@127.0.0.1:{port}/ws"])
def test_a_server_refusal_quoting_a_url_secret_shows_none(url: str, caplog: pytest.LogCaptureFixture) -> None:
    server = Refuser(lambda request: "401 invalid key K3YSECRET")
    try:
        client = LeapClient("p", TOKEN, url=url.format(port=server.port))
        shown = _shown_by_failed_connect(client, caplog)
    finally:
        server.close()
    assert (
        shown[1]
        == f"could not connect: websocket upgrade refused: HTTP 401 invalid key <redacted> from 127.0.0.1:{server.port}"
    )
    assert [line for line in shown if "K3YSECRET" in line] == []


def test_an_elstat_refusal_quoting_a_url_or_proxy_secret_shows_none(caplog: pytest.LogCaptureFixture) -> None:
    server = Refuser(lambda request: f"401 invalid key K3YSECRET and {SECRET}")
    try:
        client = ElstatClient(
            f"http://127.0.0.1:{server.port}/?token=K3YSECRET",
            http_proxy_host="127.0.0.1",
            http_proxy_port=server.port,
            http_proxy_auth=("user", SECRET),
        )
        shown = _shown_by_failed_connect(client, caplog)
    finally:
        server.close()
    assert "407" not in shown[1] and "invalid key <redacted> and <redacted>" in shown[1]
    assert [line for line in shown if "K3YSECRET" in line or SECRET in line] == []


def test_a_quoted_url_password_shows_in_no_repr_or_record(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = LeapClient("p", None, url=f"ws://user:pa'ss{SECRET}@127.0.0.1:{port}/ws")
    shown = _shown_by_failed_connect(client, caplog)
    url = f"ws://<redacted>@127.0.0.1:{port}/ws?encoding=json&compression=none"
    assert shown[0] == f"<LeapClient project_id='p' state=idle url='{url}' token=none>"
    assert any("connecting" in line and "<redacted>@127.0.0.1" in line for line in shown)
    assert [line for line in shown if SECRET in line] == []


def test_a_refusal_quoting_a_credential_header_shows_none(caplog: pytest.LogCaptureFixture) -> None:
    server = Refuser(lambda request: f"401 bad {_header(request, 'authorization')} / {_header(request, 'x-api-key')}")
    try:
        header = {"Authorization": "Bearer B34RERSECRET", "X-Api-Key": "APIK3YSECRET", "X-Trace": "trace-1"}
        client = LeapClient("p", None, url=f"ws://127.0.0.1:{server.port}/ws", header=header)
        shown = _shown_by_failed_connect(client, caplog)
    finally:
        server.close()
    refused = "could not connect: websocket upgrade refused: HTTP 401 bad <redacted> / <redacted>"
    assert shown[1] == f"{refused} from 127.0.0.1:{server.port}"
    assert [line for line in shown if "B34RERSECRET" in line or "APIK3YSECRET" in line] == []


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("Authorization: Bearer B34RERSECRET\r\nX: 1", "malformed header line named 'Authorization'"),
        ("Bearer B34RERSECRET", "malformed header line named \"(no ':')\""),
    ],
)
def test_a_malformed_header_line_is_named_without_its_value(line: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        LeapClient("p", None, header=[line])
    assert str(caught.value) == message
