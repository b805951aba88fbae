"""Real peers between the client and the embedded server: nginx, HAProxy, squid and
dante, each started in the foreground with its own config on a free loopback port and
stopped by its pid; the stream a client reads through them; and the fixtures the
``test_peers_*`` modules share (``daemons``, ``workdir``, ``edge``: import them from here).
Config writers are in :mod:`peers_configs`.

A missing binary skips the test with the reason (and the Debian package that brings
it); in CI (``CI=true``) it fails instead, so the tier cannot silently vanish.
``.ci/run`` installs the packages and the user dante's username auth checks.
"""

from __future__ import annotations

import contextlib
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
from clientkit import PROJECT, TOKEN, StateRecorder, fast_backoff

from leap_sync import ConnectionState, LeapClient, LeapConnectionError, MessageEvent
from leap_sync.testing import LeapEdgeServer

CONNECTED = ConnectionState.CONNECTED
ERRORED = ConnectionState.ERRORED
FIRST_CONNECT = [ConnectionState.CONNECTING, ConnectionState.AUTHENTICATING, CONNECTED]

SOCKS_USER = "leapsocks"
"""The system user dante's ``username`` method checks (made by ``.ci/run``)."""
SOCKS_PASSWORD = "leap-socks-pw"


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
        else:
            _wait_gone(process.pid, timeout)
        self.process = None
        if "-n" in self.argv:  # squid's shared memory segments, left behind by SIGKILL
            for path in Path("/dev/shm").glob(f"{self.argv[self.argv.index('-n') + 1]}-*.shm"):
                path.unlink(missing_ok=True)

    def log(self) -> str:
        texts = [path.read_text(errors="replace")[-3000:] for path in sorted(self.workdir.glob("*.log"))]
        return "\n".join([self.output.read_text(errors="replace")[-3000:], *texts])


def _wait_gone(group: int, timeout: float) -> None:
    """Wait until no process of ``group`` is left: a killed worker can hold the listening
    socket a moment longer, and a daemon started on the same port meanwhile would fail
    to bind while the old socket still answered its readiness check. (No event tells
    when another process's children are gone: a bounded check every 10 ms.)"""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
        except PermissionError:
            return
        time.sleep(0.01)
    # still there: zombies nobody reaps (a container's init may not); they hold no socket


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


def restart(daemon: Daemon) -> Daemon:
    """``daemon`` started again (after it stopped) with the same command line, port and
    stop signal."""
    return start_daemon(
        daemon.name, daemon.workdir, lambda port: daemon.argv, port=daemon.port, stop_signal=daemon.stop_signal
    )


# -- the stream ------------------------------------------------------------------------------


def prepare(server: LeapEdgeServer) -> None:
    """Token TOKEN and the sequenced channel ``seq``."""
    server.add_token(TOKEN, project_id=PROJECT)
    server.create_channel("seq", project_id=PROJECT, sequenced=True)


@contextlib.contextmanager
def prepared_edge(**options: Any) -> Iterator[LeapEdgeServer]:
    """A running ``LeapEdgeServer(**options)``, prepared (:func:`prepare`)."""
    with LeapEdgeServer(**options) as server:
        prepare(server)
        yield server


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

    def connect_error(self) -> LeapConnectionError:
        """The ``LeapConnectionError`` the client's first ``connect()`` raises (fails
        the test if it raises nothing or something else)."""
        with pytest.raises(LeapConnectionError) as failed:
            self.client.connect()
        return failed.value

    def lost_error(self) -> LeapConnectionError:
        """The error of the first ``ERRORED`` state update the client reported, which
        must be a lost connection the client reconnects after."""
        errored = next(i for i in self.recorder.infos if i.connection_state is ERRORED)
        assert isinstance(errored.error, LeapConnectionError) and errored.will_reconnect
        return errored.error

    def connections(self) -> int:
        return sum(i.connection_state is CONNECTED for i in self.recorder.infos)

    def close(self) -> None:
        self.client.close()


def restart_under(stream: Stream, daemon: Daemon, daemons: list[Daemon], signum: int | None = None) -> None:
    """Stop ``daemon`` (with ``signum``, by default its stop signal) under ``stream``'s
    open connection; once the client reports ``ERRORED``, start it again (put on
    ``daemons``), wait for the client's second ``CONNECTED`` and check the stream is
    whole (:meth:`Stream.slice`, :meth:`Stream.check`)."""
    daemon.stop(signum)
    stream.recorder.wait_count(ERRORED, 1)
    daemons.append(restart(daemon))
    stream.recorder.wait_count(CONNECTED, 2)
    stream.slice()
    stream.check()


def freeze_and_thaw(stream: Stream, proxy: Daemon, edge: LeapEdgeServer, kind: str) -> None:
    """With ``stream`` open through ``proxy`` (a ``kind`` proxy: ``http``, ``socks5``)
    and a short connect timeout: freeze the proxy until the client has presumed the
    connection dead and failed two attempts, thaw it, and check the client is back and
    nothing was lost; the dead connection and each failed attempt are the errors
    expected (each attempt connects to the frozen proxy's backlog, then waits for its
    answer)."""
    stream.open()
    stream.slice()
    proxy.freeze()
    infos = stream.recorder.wait_count(ERRORED, 3)
    proxy.freeze(False)
    stream.recorder.wait_count(CONNECTED, 2)
    stream.slice()
    stream.check()
    dead, *attempts = [i for i in infos if i.connection_state is ERRORED]
    assert isinstance(dead.error, LeapConnectionError) and dead.will_reconnect
    assert dead.error.phase is None and str(dead.error).endswith("connection presumed dead")
    for attempt in attempts:
        assert isinstance(attempt.error, LeapConnectionError) and attempt.will_reconnect
        assert attempt.error.phase == "proxy"
        assert str(attempt.error) == (
            f"could not connect: proxy did not open a tunnel to 127.0.0.1:{edge.port} "
            f"through the {kind} proxy 127.0.0.1:{proxy.port} within 1 s"
        )


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


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    """The test's daemons (:func:`stopping`)."""
    yield from stopping()


@pytest.fixture
def workdir(request: pytest.FixtureRequest) -> Iterator[Path]:
    """The test's folder (:func:`workdir_for`), named after the peer its module tests
    (``test_peers_nginx`` -> ``leap-sync-nginx-...``)."""
    yield from workdir_for(request.module.__name__.removeprefix("test_peers_"))


@pytest.fixture
def edge() -> Iterator[LeapEdgeServer]:
    """A prepared server (:func:`prepare`) with a 5 s heartbeat interval."""
    with prepared_edge(heartbeat_interval=5.0) as server:
        yield server
