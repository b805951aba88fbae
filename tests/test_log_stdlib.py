"""A standard logging.Logger (or LoggerAdapter) as ``logger=``: metadata as
``extra={"leap_sync": ...}``, the error as ``exc_info``, tokens redacted."""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Iterator

import pytest

from leap_sync import LeapClient, StateInfo, StdlibLogger
from leap_sync.log import EXTRA_KEY, as_logger
from leap_sync.testing import LeapEdgeServer

TOKEN = "leap_token_stdlib_secret_0123456789"


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.text = io.StringIO()
        self.changed = threading.Condition()
        self.setFormatter(logging.Formatter("%(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        line = self.format(record)  # raises (-> "--- Logging error ---") on a bad record
        with self.changed:
            self.records.append(record)
            self.text.write(line + "\n")
            self.changed.notify_all()

    def handleError(self, record: logging.LogRecord) -> None:
        raise AssertionError("--- Logging error ---")

    def wait_for(self, message: str) -> logging.LogRecord:
        with self.changed:
            assert self.changed.wait_for(
                lambda: any(r.msg == "%s" and message in r.getMessage() for r in self.records), 10
            )
            return next(r for r in self.records if message in r.getMessage())


@pytest.fixture
def records() -> Iterator[tuple[logging.Logger, Records]]:
    logger = logging.getLogger("test_log_stdlib")
    handler = Records()
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield logger, handler
    finally:
        logger.removeHandler(handler)


def test_as_logger_wraps_the_standard_library() -> None:
    logger = logging.getLogger("x")
    wrapped = as_logger(logger)
    assert isinstance(wrapped, StdlibLogger) and wrapped.logger is logger
    adapter = logging.LoggerAdapter(logger, {"a": 1})
    assert isinstance(as_logger(adapter), StdlibLogger)
    assert isinstance(as_logger(None), StdlibLogger)
    mine = StdlibLogger(logger)
    assert as_logger(mine) is mine


def test_metadata_is_extra_and_the_error_exc_info(records: tuple[logging.Logger, Records]) -> None:
    logger, handler = records
    StdlibLogger(logger).error("went wrong", ValueError("boom"), {"msg": "m", "args": 1, "name": "n"})
    (record,) = handler.records
    assert record.getMessage() == "went wrong error=boom msg='m' args=1 name='n'"
    assert getattr(record, EXTRA_KEY) == {"msg": "m", "args": 1, "name": "n"}  # LogRecord names: no collision
    assert record.exc_info is not None and isinstance(record.exc_info[1], ValueError)
    assert "ValueError: boom" in handler.text.getvalue()
    StdlibLogger(logger).info("plain")
    assert getattr(handler.records[-1], EXTRA_KEY) == {} and handler.records[-1].exc_info is None


def test_a_logger_adapter_keeps_its_extra_and_process(records: tuple[logging.Logger, Records]) -> None:
    logger, handler = records

    class Prefixed(logging.LoggerAdapter):  # type: ignore[type-arg]
        def process(self, msg: object, kwargs: dict[str, object]) -> tuple[object, dict[str, object]]:
            msg, kwargs = super().process(msg, kwargs)
            return f"[{self.extra['request']}] {msg}", kwargs  # type: ignore[index]

    StdlibLogger(Prefixed(logger, {"request": "r1"})).warn("slow", {"delay": 2})
    (record,) = handler.records
    assert record.getMessage() == "[r1] slow delay=2"
    assert getattr(record, EXTRA_KEY) == {"delay": 2}
    assert record.request == "r1"  # type: ignore[attr-defined]
    assert record.levelno == logging.WARNING


def test_a_client_takes_a_logging_logger(records: tuple[logging.Logger, Records]) -> None:
    """A state listener that raises is logged with error(): with a logging.Logger as
    logger= the record has the metadata, the exception, and never the token (not in a
    cause either)."""
    logger, handler = records
    with LeapEdgeServer() as server:
        server.add_token(TOKEN)

        def listener(info: StateInfo) -> None:
            if info.connection_state.value == "connected":
                try:
                    raise KeyError(f"inner {TOKEN}")
                except KeyError as exc:
                    raise RuntimeError("listener failed") from exc

        client = LeapClient("project_x", TOKEN, logger, url=server.url)
        client.add_state_update_listener(listener)
        with client:
            client.connect(wait=True, timeout=10)
            record = handler.wait_for("state listener raised")
    assert getattr(record, EXTRA_KEY) == {"state": "connected"}
    assert record.exc_info is not None and record.levelno == logging.ERROR
    assert "RuntimeError: listener failed" in handler.text.getvalue()
    assert TOKEN not in handler.text.getvalue()
    assert TOKEN[:12] not in handler.text.getvalue()
    assert any(getattr(r, EXTRA_KEY, None) for r in handler.records if r.levelno == logging.DEBUG)
