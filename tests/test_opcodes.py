"""Opcodes, close codes and the client's close-code policy."""

from __future__ import annotations

import pytest

from leap_sync.protocol import CloseAction, CloseCode, Opcode, close_action


def test_opcode_values() -> None:
    assert {op.name: op.value for op in Opcode} == {
        "DISPATCH": 0,
        "HELLO": 1,
        "IDENTIFY": 2,
        "HEARTBEAT": 3,
        "HEARTBEAT_ACK": 4,
    }


def test_opcodes_compare_equal_to_wire_ints() -> None:
    assert Opcode(0) is Opcode.DISPATCH
    assert Opcode(4) is Opcode.HEARTBEAT_ACK
    assert Opcode.HEARTBEAT == 3
    with pytest.raises(ValueError):
        Opcode(5)


def test_close_code_values() -> None:
    assert {code.name: code.value for code in CloseCode} == {
        "UNKNOWN": 4000,
        "INVALID_AUTH": 4001,
        "IDENTIFY_TIMEOUT": 4002,
        "NOT_AUTHENTICATED": 4003,
        "UNKNOWN_OPCODE": 4004,
        "INVALID_PAYLOAD": 4005,
        "BAD_ROUTE": 4006,
        "OUT_OF_SYNC": 4007,
    }


@pytest.mark.parametrize(
    ("code", "description"),
    [
        (4000, "unknown error"),
        (4001, "invalid auth"),
        (4002, "identify timeout"),
        (4003, "not authenticated"),
        (4004, "unknown opcode"),
        (4005, "invalid payload"),
        (4006, "bad route"),
        (4007, "out of sync"),
    ],
)
def test_close_code_descriptions(code: int, description: str) -> None:
    assert CloseCode(code).description == description


@pytest.mark.parametrize(
    ("code", "action"),
    [
        (4000, CloseAction.RECONNECT),
        (4001, CloseAction.FATAL),
        (4002, CloseAction.RECONNECT),
        (4003, CloseAction.RECONNECT),
        (4004, CloseAction.RECONNECT),
        (4005, CloseAction.RECONNECT),
        (4006, CloseAction.REDIRECT),
        (4007, CloseAction.RECONNECT),
    ],
)
def test_policy_of_every_leap_close_code(code: int, action: CloseAction) -> None:
    assert close_action(code) is action
    assert close_action(CloseCode(code)) is action
    assert CloseCode(code).action is action
    assert CloseCode(code).reconnects is (action is not CloseAction.FATAL)


def test_only_invalid_auth_is_fatal() -> None:
    assert [code for code in CloseCode if not code.reconnects] == [CloseCode.INVALID_AUTH]
    assert [code for code in CloseCode if code.action is CloseAction.REDIRECT] == [CloseCode.BAD_ROUTE]


@pytest.mark.parametrize("code", [None, 1000, 1001, 1002, 1006, 1008, 1009, 1011, 3000, 4008, 4999])
def test_other_codes_and_lost_connections_reconnect(code: int | None) -> None:
    assert close_action(code) is CloseAction.RECONNECT


def test_close_action_values() -> None:
    assert CloseAction.RECONNECT.value == "reconnect"
    assert CloseAction.REDIRECT.value == "redirect"
    assert CloseAction.FATAL.value == "fatal"
