"""``python -m benchmarks --smoke`` runs, and every contender delivers exactly the
stream it was sent.

The smoke mode uses tiny sizes and one round, and checks counts and order only: it
asserts no time (speed belongs to the full benchmark run). Contenders whose packages
are missing (picows, orjson, erlpack, Node) are left out and named in the report;
leap_sync itself always runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_benchmark_smoke_run_delivers_every_stream(tmp_path: Path) -> None:
    env = {**os.environ, "LEAP_BENCH_CACHE": os.environ.get("LEAP_BENCH_CACHE", str(tmp_path / "cache"))}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--smoke", "--out", str(tmp_path)],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=400,
        env=env,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "smoke: all contenders delivered" in result.stdout
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["failures"] == []
    keys = {c["key"] for c in results["contenders"]}
    assert {"ls_json", "ls_json_many", "ls_json_zlib", "ceil_json"} <= keys
    for size, n in (("200", 300), ("2000", 100), ("20000", 30)):
        rates = results["throughput"][size]["rates"]
        assert results["throughput"][size]["n"] == n
        assert set(rates) == keys
        assert all(len(values) == 1 and values[0] > 0 for values in rates.values())  # nan fails too
    for scenario in ("one_way", "heartbeat", "connect", "connect_embedded", "reconnect", "many", "fanout"):
        assert len(results[scenario]) == 1, scenario
    assert results["one_way"][0]["n"] == 300
    assert results["many"][0]["clients"] == 10
    assert results["many"][0]["threads_left"] == 0
    report = (tmp_path / "RESULTS.md").read_text()
    assert "leap_sync json, get()" in report
    assert "--smoke" in report
