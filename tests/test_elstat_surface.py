"""ElstatClient's public surface is exactly what docs/api.md describes."""

from __future__ import annotations

import re
from pathlib import Path

from leap_sync.elstat import ElstatClient

DOCUMENTED = {
    "add_state_update_listener",
    "close",
    "connect",
    "data_channel",
    "incident_channel",
    "state",
    "stats",
    "subscribe",
    "subscriptions",
    "unsubscribe",
    "url",
    "wait_connected",
}


def public_names(obj: object) -> set[str]:
    return {name for name in dir(obj) if not name.startswith("_")}


def test_the_public_names_are_the_documented_ones() -> None:
    client = ElstatClient("ws://127.0.0.1:9/api/streaming")
    try:
        assert public_names(client) == DOCUMENTED
        assert public_names(ElstatClient) == DOCUMENTED
    finally:
        client.close()


def test_the_documented_list_is_docs_api_md() -> None:
    text = (Path(__file__).parent.parent / "docs" / "api.md").read_text(encoding="utf-8")
    section = text.split("## `leap_sync.elstat.ElstatClient`", 1)[1].split("\n## ", 1)[0]
    members = " ".join(line.split("|")[1] for line in section.splitlines() if line.startswith("| `"))
    names = set(re.findall(r"`(\w+)", members))
    assert names == DOCUMENTED
