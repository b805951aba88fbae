"""``python -m benchmarks``: every benchmark in one run, one report.

Runs the throughput contenders (``contenders.py``) on the identical stream at 200 B,
2 KB and 20 KB per message, then one-way latency at 10k msg/s, heartbeat lateness
under a flat-out stream, connect and reconnect, 1,000 clients in one process and the
embedded server's fan-out; each ``--rounds`` times (default 5). Writes
``RESULTS.md``, ``results.png`` (with matplotlib) and ``results.json`` into ``--out``
(default: this directory). Ratios are taken within each round and their median is
reported, with the spread (min-max) across rounds.

``--smoke``: tiny sizes, one round, about ten seconds; checks that every contender
delivers exactly the stream it was sent and exits non-zero otherwise. It asserts no
time. Its report goes to a temporary directory unless ``--out`` is given.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from . import report, scenarios
from ._blaster import Blaster
from .contenders import Contender, WrongCount, clear_payloads, contenders, missing

HERE = Path(__file__).resolve().parent

FULL: dict[str, Any] = {
    "sizes": {200: 200_000, 2000: 40_000, 20000: 8_000},
    "rate": 10_000,
    "one_way_s": 5.0,
    "heartbeat_s": 5.0,
    "connects": 30,
    "reconnects": 20,
    "many": 1000,
    "fanout": (1000, 200, 200),
}
SMOKE: dict[str, Any] = {
    "sizes": {200: 300, 2000: 100, 20000: 30},
    "rate": 1000,
    "one_way_s": 0.3,
    "heartbeat_s": 0.5,
    "connects": 3,
    "reconnects": 2,
    "many": 10,
    "fanout": (10, 20, 200),
}
SCENARIOS = ("throughput", "latency", "heartbeat", "connect", "many", "fanout")


def _log(message: str) -> None:
    print(message, flush=True)


def run_throughput(
    blaster: Blaster, found: list[Contender], sizes: dict[int, int], rounds: int, failures: list[str]
) -> dict[str, Any]:
    """``{size: {"n": n, "rates": {key: [per round]}}}``; a failed run is ``nan``."""
    out: dict[str, Any] = {}
    for size, n in sizes.items():
        rates: dict[str, list[float]] = {c.key: [] for c in found}
        for r in range(rounds):
            shift = r % len(found)
            for contender in found[shift:] + found[:shift]:  # rotate who goes first
                gc.collect()
                try:
                    rate = contender.run(blaster, n, size)
                except WrongCount as exc:
                    failures.append(f"{size} B: {exc}")
                    rate = float("nan")
                except Exception as exc:
                    failures.append(f"{size} B: {contender.label}: {exc!r}")
                    traceback.print_exc()
                    rate = float("nan")
                rates[contender.key].append(rate)
            _log(
                f"  {size:>6} B round {r + 1}: "
                + "  ".join(f"{c.key}={rates[c.key][-1]:,.0f}" for c in found if c.kind != "ceiling")
            )
        out[str(size)] = {"n": n, "rates": rates}
        clear_payloads()
    return out


def _rounds(name: str, rounds: int, func: Any, failures: list[str]) -> list[dict[str, float]]:
    results = []
    for r in range(rounds):
        gc.collect()
        try:
            results.append(func())
        except Exception as exc:
            failures.append(f"{name}: {exc!r}")
            traceback.print_exc()
            continue
        _log(f"  {name} round {r + 1}: " + ", ".join(f"{k}={v:,.3f}" for k, v in results[-1].items()))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one round, correctness only")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 5; smoke 1)")
    parser.add_argument("--out", type=Path, default=None, help="where the report goes (default: benchmarks/)")
    parser.add_argument("--only", default=",".join(SCENARIOS), help=f"comma list of {', '.join(SCENARIOS)}")
    parser.add_argument("--no-node", dest="node", action="store_false", help="leave the JS client out")
    args = parser.parse_args(argv)
    params = SMOKE if args.smoke else FULL
    rounds = args.rounds if args.rounds is not None else (1 if args.smoke else 5)
    only = {name.strip() for name in args.only.split(",") if name.strip()}
    if rounds < 1 or not only <= set(SCENARIOS):
        parser.error(f"--rounds must be >= 1 and --only a subset of {SCENARIOS}")
    out_dir: Path = args.out or (Path(tempfile.mkdtemp(prefix="leap-bench-")) if args.smoke else HERE)
    out_dir.mkdir(parents=True, exist_ok=True)

    found = contenders(node=args.node)
    results: dict[str, Any] = {
        "smoke": args.smoke,
        "rounds": rounds,
        "params": {k: v for k, v in params.items() if k != "sizes"},
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "load_before": os.getloadavg(),
        "machine": report.machine(),
        "contenders": [{"key": c.key, "label": c.label, "kind": c.kind, "wire": c.wire} for c in found],
        "missing": missing(),
    }
    failures: list[str] = []
    _log(f"benchmarks: {rounds} round(s), {'smoke' if args.smoke else 'full'}; contenders: {len(found)}")
    for name, why in results["missing"].items():
        _log(f"  left out: {name} ({why})")
    prebuild: list[tuple[Any, ...]] = []
    wires = {c.wire for c in found}
    for size, n in params["sizes"].items():
        for wire in ("json", "json+zlib", "etf", "etf+zlib"):
            if wire in wires:
                encoding, _, compression = wire.partition("+")
                prebuild.append((n, encoding, compression or "none", size))
    started = time.perf_counter()
    with Blaster(prebuild) as blaster:
        if "throughput" in only:
            _log("throughput")
            results["throughput"] = run_throughput(blaster, found, params["sizes"], rounds, failures)
        if "latency" in only:
            _log("one-way latency")
            for fast in (False, True) if any(c.key == "ls_json_fast" for c in found) else (False,):
                key = "one_way_fast" if fast else "one_way"
                results[key] = _rounds(
                    key,
                    rounds,
                    lambda fast=fast: scenarios.one_way(blaster, params["rate"], params["one_way_s"], fast),
                    failures,
                )
        if "heartbeat" in only:
            _log("heartbeat lateness under a flat-out stream")
            results["heartbeat"] = _rounds(
                "heartbeat", rounds, lambda: scenarios.heartbeat(blaster, params["heartbeat_s"]), failures
            )
        if "connect" in only:
            _log("connect and reconnect")
            results["connect"] = _rounds(
                "connect", rounds, lambda: scenarios.connect(blaster, params["connects"]), failures
            )
            results["connect_embedded"] = _rounds(
                "connect_embedded", rounds, lambda: scenarios.connect_embedded(params["connects"]), failures
            )
            results["reconnect"] = _rounds(
                "reconnect", rounds, lambda: scenarios.reconnect(blaster, params["reconnects"]), failures
            )
        if "many" in only:
            _log(f"{params['many']} clients in one process")
            results["many"] = _rounds("many", 1, lambda: scenarios.many_clients(blaster, params["many"]), failures)
    if "fanout" in only:
        _log("embedded-server fan-out")
        clients, messages, size = params["fanout"]
        try:
            results["fanout"] = scenarios.fan_out(clients, messages, size, rounds)
            for r, run in enumerate(results["fanout"]):
                _log(f"  fanout round {r + 1}: " + ", ".join(f"{k}={v:,.3f}" for k, v in run.items()))
        except Exception as exc:
            failures.append(f"fanout: {exc!r}")
            traceback.print_exc()

    results["seconds"] = time.perf_counter() - started
    results["load_after"] = os.getloadavg()
    results["failures"] = failures
    (out_dir / "results.json").write_text(json.dumps(results, indent=1, default=str))
    chart = report.write_chart(results, out_dir / "results.png")
    report.write_markdown(results, out_dir / "RESULTS.md", chart)
    _log(f"report: {out_dir / 'RESULTS.md'} ({results['seconds']:.0f} s)")
    if failures:
        _log("FAILED:\n  " + "\n  ".join(failures))
        return 1
    if args.smoke:
        delivered = sum(
            1 for size in results.get("throughput", {}).values() for v in size["rates"].values() if v and v[0] == v[0]
        )
        _log(f"smoke: all contenders delivered ({delivered} runs); timings are not checked")
    return 0


if __name__ == "__main__":
    sys.exit(main())
