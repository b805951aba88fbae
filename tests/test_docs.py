"""The documents that point at tests point at tests that exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_test_the_reliability_table_names_exists() -> None:
    table = (ROOT / "docs" / "reliability.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith(("| fault", "| ---"))]
    assert len(rows) >= 25
    references = re.findall(r"`(test_[a-z_0-9]+\.py)::(test_[A-Za-z_0-9]+)`", table)
    assert references
    missing = [
        f"{name}::{test}" for name, test in references if f"def {test}(" not in (ROOT / "tests" / name).read_text()
    ]
    assert missing == []
    for row in rows:  # every row names its proof
        assert "test_" in row, row
