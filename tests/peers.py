"""Real peers between the client and the embedded server: nginx, HAProxy, squid and
dante, each started in the foreground with its own config on a free loopback port and
stopped by its pid.

A missing binary skips the test with the reason (and the Debian package that brings
it); in CI (``CI=true``) it fails instead, so the tier cannot silently vanish.
``.ci/run`` installs the packages and the user dante's username auth checks.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from clientkit import PROJECT, TOKEN, StateRecorder, fast_backoff

from leap_sync import ConnectionState, LeapClient, MessageEvent
from leap_sync.testing import LeapEdgeServer

CONNECTED = ConnectionState.CONNECTED
ERRORED = ConnectionState.ERRORED

SOCKS_USER = "leapsocks"
"""The system user dante's ``username`` method checks (made by ``.ci/run``)."""
SOCKS_PASSWORD = "leap-socks-pw"

SQUID_AUTH_HELPER = "/usr/lib/squid/basic_ncsa_auth"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def unavailable(reason: str) -> None:
    """Skip with ``reason``; in CI, fail with it (the tier must run there)."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: the real-peer tier must run; .ci/run installs it)")
    pytest.skip(reason)


def require(binary: str, package: str) -> str:
    """The path of ``binary`` (searched in PATH and the sbin folders), or skip."""
    path = shutil.which(binary, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))
    if path is None:
        unavailable(f"{binary} is not installed (Debian package {package})")
    assert path is not None
    return path


def require_socks_user() -> None:
    if os.geteuid() != 0:
        unavailable("dante's username method checks passwords in /etc/shadow: it needs root")
    try:
        pwd.getpwnam(SOCKS_USER)
    except KeyError:
        unavailable(f"system user {SOCKS_USER!r} is absent (dante's username method checks system users)")


def free_port() -> int:
    """A loopback port nothing listens on right now (bound to port 0, then closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Daemon:
    """One foreground daemon process: ``argv`` run in its own session (so stopping
    it reaches its children too) with output in ``workdir/<name>.out``.
    ``stop_signal``: what :meth:`stop` sends by default (squid takes 2 s to end on
    SIGTERM whatever ``shutdown_lifetime`` says, so its tests end it with SIGKILL)."""

    def __init__(self, name: str, argv: list[str], workdir: Path, port: int, stop_signal: int = signal.SIGTERM) -> None:
        self.name = name
        self.stop_signal = stop_signal
        self.argv = argv
        self.workdir = workdir
        self.port = port
        self.output = workdir / f"{name}.out"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout: float = 10.0) -> None:
        """Start and wait until the port accepts a connection; raise
        ``RuntimeError`` with the daemon's output if it exits or never listens."""
        with self.output.open("ab") as out:
            self.process = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1.0).close()
                return
            except OSError:
                pass
            try:
                code = self.process.wait(0.02)  # the pause between tries; notices an exit
            except subprocess.TimeoutExpired:
                code = None
            if code is not None:
                raise RuntimeError(f"{self.name} exited with {code}: {self.log()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} did not listen on port {self.port} in {timeout} s: {self.log()}")

    def send(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def freeze(self, frozen: bool = True) -> None:
        """Stop (SIGSTOP) or continue every process of the daemon: its sockets stay
        open, nothing is read or answered."""
        os.killpg(self.pid, signal.SIGSTOP if frozen else signal.SIGCONT)

    def wait(self, timeout: float) -> int:
        """Wait for the process to exit; its exit code."""
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self, signum: int | None = None, timeout: float = 5.0) -> None:
        """Stop by pid (``signum``, by default ``stop_signal``; SIGKILL after
        ``timeout``), then kill whatever of its session is left (workers, helpers)."""
        process = self.process
        if process is None:
            return
        if signum is None:
            signum = self.stop_signal
        if process.poll() is None:
            os.kill(process.pid, signum)
            os.killpg(process.pid, signal.SIGCONT)  # a test may have frozen it
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout)
        try:
            os.killpg(process.pid, signal.SIGKILL)  # the session it led: leftover children
        except (ProcessLookupError, PermissionError):
            pass
        self.process = None
        if "-n" in self.argv:  # squid's shared memory segments, left behind by SIGKILL
            for path in Path("/dev/shm").glob(f"{self.argv[self.argv.index('-n') + 1]}-*.shm"):
                path.unlink(missing_ok=True)

    def log(self) -> str:
        texts = [path.read_text(errors="replace")[-3000:] for path in sorted(self.workdir.glob("*.log"))]
        return "\n".join([self.output.read_text(errors="replace")[-3000:], *texts])


def start_daemon(
    name: str,
    workdir: Path,
    make_argv: Callable[[int], list[str]],
    attempts: int = 3,
    port: int | None = None,
    stop_signal: int = signal.SIGTERM,
) -> Daemon:
    """A started daemon on a free port (``make_argv(port)`` writes its config and
    returns its command line); a port taken meanwhile is retried with another."""
    error: RuntimeError | None = None
    for _ in range(attempts):
        chosen = port if port is not None else free_port()
        daemon = Daemon(name, make_argv(chosen), workdir, chosen, stop_signal)
        try:
            daemon.start()
            return daemon
        except RuntimeError as exc:
            daemon.stop()
            error = exc
            if port is not None or "in use" not in str(exc):
                raise
    assert error is not None
    raise error


# -- config writers ------------------------------------------------------------------------


def nginx_argv(
    nginx: str, workdir: Path, upstream: int, cert: Path, key: Path, read_timeout: str, main: str = ""
) -> Callable[[int], list[str]]:
    """nginx terminating TLS and proxying websockets to ``upstream`` (plain ws);
    ``main``: more directives for the main context."""

    def make(port: int) -> list[str]:
        user = "user root;" if os.geteuid() == 0 else ""
        kinds = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        temp = " ".join(f"{kind}_temp_path {workdir}/{kind};" for kind in kinds)
        conf = workdir / "nginx.conf"
        conf.write_text(
            f"""{user}
worker_processes 1;
{main}
pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log info;
events {{ worker_connections 64; }}
http {{
    access_log off;
    {temp}
    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location / {{
            proxy_pass http://127.0.0.1:{upstream};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_read_timeout {read_timeout};
            proxy_send_timeout {read_timeout};
        }}
    }}
}}
"""
        )
        return [nginx, "-p", str(workdir), "-c", str(conf), "-e", f"{workdir}/nginx-error.log", "-g", "daemon off;"]

    return make


def haproxy_argv(
    haproxy: str, workdir: Path, upstream: int, pem: Path, tunnel: str, client: str = "30s"
) -> Callable[[int], list[str]]:
    """HAProxy terminating TLS (``pem``: certificate and key) in front of ``upstream``,
    with ``timeout tunnel``/``timeout client`` and a 1 s ``hard-stop-after``."""

    def make(port: int) -> list[str]:
        conf = workdir / "haproxy.cfg"
        conf.write_text(
            f"""global
    hard-stop-after 1s
defaults
    mode http
    timeout connect 2s
    timeout client {client}
    timeout server 30s
    timeout tunnel {tunnel}
frontend leap
    bind 127.0.0.1:{port} ssl crt {pem}
    default_backend edge
backend edge
    server edge 127.0.0.1:{upstream}
"""
        )
        return [haproxy, "-f", str(conf), "-db"]

    return make


def squid_service(port: int) -> str:
    return f"leapsync{port}"


def squid_argv(
    squid: str, workdir: Path, passwords: Path | None, stock_ports: bool = False
) -> Callable[[int], list[str]]:
    """squid as an HTTP CONNECT proxy, no cache; with ``passwords`` (an htpasswd
    file) it requires basic auth; ``stock_ports``: the stock config's rule allowing
    CONNECT to port 443 only."""

    def make(port: int) -> list[str]:
        auth = "acl SSL_ports port 443\nhttp_access deny CONNECT !SSL_ports\n" if stock_ports else ""
        allow = "http_access allow CONNECT local"
        if passwords is not None:
            auth += f"auth_param basic program {SQUID_AUTH_HELPER} {passwords}\nauth_param basic children 1\n"
            auth += "acl authed proxy_auth REQUIRED\n"
            allow = "http_access allow CONNECT local authed"
        conf = workdir / "squid.conf"
        conf.write_text(
            f"""http_port 127.0.0.1:{port}
pid_filename {workdir}/squid.pid
cache_log {workdir}/squid-cache.log
access_log none
cache deny all
cache_mem 8 MB
coredump_dir {workdir}
netdb_filename none
pinger_enable off
shutdown_lifetime 0 seconds
acl local src 127.0.0.0/8
acl CONNECT method CONNECT
{auth}{allow}
http_access deny all
"""
        )
        # -n: a service name of its own names its shared memory segments (two squids
        # never share them); Daemon.stop removes them
        return [squid, "-N", "-n", squid_service(port), "-f", str(conf)]

    return make


def dante_argv(danted: str, workdir: Path, username: bool) -> Callable[[int], list[str]]:
    """dante as a SOCKS5 proxy; ``username``: the RFC 1929 method, checked against
    system users."""

    def make(port: int) -> list[str]:
        method = "username" if username else "none"
        privileged, unprivileged = (
            ("root", "nobody") if os.geteuid() == 0 else (pwd.getpwuid(os.geteuid()).pw_name,) * 2
        )
        conf = workdir / "danted.conf"
        conf.write_text(
            f"""logoutput: {workdir}/danted.log
internal: 127.0.0.1 port = {port}
external: 127.0.0.1
clientmethod: none
socksmethod: {method}
user.privileged: {privileged}
user.unprivileged: {unprivileged}
client pass {{ from: 127.0.0.0/8 to: 0.0.0.0/0 }}
socks pass {{
    from: 127.0.0.0/8 to: 0.0.0.0/0
    command: connect
    log: connect
}}
"""
        )
        return [danted, "-f", str(conf), "-p", f"{workdir}/danted.pid", "-N", "1"]

    return make


# -- TLS -----------------------------------------------------------------------------------


class Certificates:
    """A trustme CA and a server certificate for 127.0.0.1 and localhost, as files."""

    def __init__(self, workdir: Path) -> None:
        ca = trustme.CA()
        server = ca.issue_cert("127.0.0.1", "localhost")
        self.ca = workdir / "ca.pem"
        self.cert = workdir / "server-cert.pem"
        self.key = workdir / "server-key.pem"
        self.combined = workdir / "server.pem"
        ca.cert_pem.write_to_path(str(self.ca))
        server.private_key_pem.write_to_path(str(self.key))
        chain = b"".join(blob.bytes() for blob in server.cert_chain_pems)
        self.cert.write_bytes(chain)
        self.combined.write_bytes(chain + server.private_key_pem.bytes())


# -- the stream ------------------------------------------------------------------------------


def prepare(server: LeapEdgeServer) -> None:
    """Token TOKEN and the sequenced channel ``seq``."""
    server.add_token(TOKEN, project_id=PROJECT)
    server.create_channel("seq", project_id=PROJECT, sequenced=True)


class Stream:
    """A client subscribed to ``seq`` through a peer: publishes numbered slices and
    checks each arrives whole, in order."""

    def __init__(self, server: LeapEdgeServer, url: str, **options: Any) -> None:
        options.setdefault("backoff", fast_backoff())
        self.server = server
        self.recorder = StateRecorder()
        self.client = LeapClient(PROJECT, TOKEN, url=url, **options)
        self.client.add_state_update_listener(self.recorder)
        self.messages = self.client.message_event_channel()
        self.received: list[MessageEvent] = []
        self.published = 0

    def open(self) -> None:
        self.client.connect(wait=True, timeout=10)
        self.client.subscribe("seq", timeout=5)

    def slice(self, count: int = 200) -> None:
        """Publish ``count`` numbered messages once the server has a subscriber and
        wait for every one of them."""
        self.server.wait_for(lambda s: len(s.subscribers("seq")) == 1, timeout=10)
        self.server.publish_many("seq", "n", range(self.published, self.published + count))
        self.published += count
        while len(self.received) < self.published:
            self.received.append(self.messages.get(timeout=10))

    def check(self) -> None:
        """Everything published arrived exactly once, in order (data i has seq i + 1)."""
        assert [m.seq for m in self.received] == list(range(1, self.published + 1))
        assert [m.data for m in self.received] == list(range(self.published))

    def connections(self) -> int:
        return sum(i.connection_state is CONNECTED for i in self.recorder.infos)

    def close(self) -> None:
        self.client.close()


def workdir_for(name: str) -> Iterator[Path]:
    """For a fixture: a fresh folder (removed afterwards) that a daemon dropping root
    privileges (squid runs as ``proxy``) can still reach and write to."""
    with tempfile.TemporaryDirectory(prefix=f"leap-sync-{name}-") as folder:
        path = Path(folder)
        path.chmod(0o777)
        yield path


def stopping() -> Iterator[list[Daemon]]:
    """For a fixture: a list tests put their daemons on; each is stopped by its pid
    at the end, even when the test failed."""
    started: list[Daemon] = []
    try:
        yield started
    finally:
        for daemon in started:
            daemon.stop()


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Wait for an outside process's state (a log line, an exit) that no event
    reports: checked every 20 ms until ``timeout``, then ``AssertionError``."""
    ticker = threading.Event()
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not in {timeout} s: {what}")
        ticker.wait(0.02)
