"""Helpers for client tests: a state recorder that waits on a condition, a call on a
thread of its own (:func:`in_thread`), and a client factory that always closes what it
made."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from leap_sync import Backoff, ConnectionState, StateInfo

TOKEN = "leap_token_secret_4f2a9c"
PROJECT = "project_x"
ENCODINGS = [("json", "none"), ("json", "zlib"), ("etf", "none"), ("etf", "zlib")]


class StateRecorder:
    """Records every StateInfo a client reports and lets a test wait for a condition."""

    def __init__(self) -> None:
        self.infos: list[StateInfo] = []
        self.threads: set[str] = set()
        self._cond = threading.Condition()

    def __call__(self, info: StateInfo) -> None:
        with self._cond:
            self.infos.append(info)
            self.threads.add(threading.current_thread().name)
            self._cond.notify_all()

    @property
    def states(self) -> list[ConnectionState]:
        with self._cond:
            return [i.connection_state for i in self.infos]

    def wait_for(self, predicate: Callable[[list[StateInfo]], bool], timeout: float = 10.0) -> list[StateInfo]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self.infos):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"state condition not met in {timeout} s; states: {self.states}")
                self._cond.wait(remaining)
            return list(self.infos)

    def wait_count(self, state: ConnectionState, count: int, timeout: float = 10.0) -> list[StateInfo]:
        return self.wait_for(lambda infos: sum(i.connection_state is state for i in infos) >= count, timeout)


def fast_backoff() -> Backoff:
    """Small, deterministic delays (the ceiling of each step)."""
    return Backoff(base=0.01, cap=0.05, uniform=lambda low, high: high)


def in_thread(call: Callable[[], object], **thread_options: Any) -> tuple[threading.Thread, list[BaseException]]:
    """``call()`` on a new thread (``threading.Thread(**thread_options)``), started at
    once; returns the thread and the list that receives whatever ``call`` raises."""
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, **thread_options)
    thread.start()
    return thread, outcome


class CountingTransport:
    """A stand-in transport for a protocol handler: takes frames until ``limit``, then
    sets ``closing`` (as close() would, in the middle of a long run of frames)."""

    def __init__(self, closing: threading.Event, limit: int) -> None:
        self.closing = closing
        self.limit = limit
        self.sent = 0

    def send(self, payload: object, binary: bool, urgent: bool = False) -> None:
        self.sent += 1
        if self.sent == self.limit:
            self.closing.set()
