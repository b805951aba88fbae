"""The report of ``python -m benchmarks``: RESULTS.md and a PNG chart.

Medians across rounds with their spread (min-max); ratios are computed within each
round (same machine state) and their median is shown. Nothing here measures.
"""

from __future__ import annotations

import importlib.metadata
import math
import os
import platform
import statistics
from pathlib import Path
from typing import Any

from .contenders import node_versions

PACKAGES = ("leap-sync", "websocket-client", "websockets", "picows", "orjson", "erlpack", "matplotlib")


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    memory = ""
    try:
        with open("/proc/meminfo") as info:
            memory = f"{int(info.readline().split()[1]) / 1024 / 1024:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "-"
    versions.update(node_versions())
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory": memory,
        "os": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "versions": versions,
    }


def _clean(values: list[float]) -> list[float]:
    return [v for v in values if isinstance(v, (int, float)) and not math.isnan(v)]


def _med(values: list[float]) -> float:
    values = _clean(values)
    return statistics.median(values) if values else float("nan")


def _spread(values: list[float], fmt: str = ",.0f") -> str:
    values = _clean(values)
    if not values:
        return "-"
    return f"{min(values):{fmt}}-{max(values):{fmt}}"


def ratios(results: dict[str, Any], size: str, a: str, b: str) -> list[float]:
    """Per-round ``a / b`` throughput ratios at ``size``."""
    rates = results.get("throughput", {}).get(size, {}).get("rates", {})
    if a not in rates or b not in rates:
        return []
    return [x / y for x, y in zip(rates[a], rates[b], strict=False) if x == x and y == y and y > 0]


def _labels(results: dict[str, Any]) -> dict[str, str]:
    return {c["key"]: c["label"] for c in results["contenders"]}


# (what, numerator, denominator, goal) for the throughput targets, at 200 B.
RATIO_TARGETS = [
    ("plain ≥ 1.2x picows + json.loads", "ls_json", "picows", 1.2),
    ("plain (get_many) ≥ 1.2x picows + json.loads", "ls_json_many", "picows", 1.2),
    ("plain ≥ 0.75 of the json.loads ceiling", "ls_json", "ceil_json", 0.75),
    ("plain (get_many) ≥ 0.75 of the json.loads ceiling", "ls_json_many", "ceil_json", 0.75),
    ("fast ≥ 1.0x the official JS client (Node)", "ls_json_fast", "node", 1.0),
    ("fast (get_many) ≥ 1.0x the official JS client (Node)", "ls_json_fast_many", "node", 1.0),
    ("ETF ≥ 0.75 of erlpack.unpack alone", "ls_etf", "ceil_erlpack", 0.75),
    ("plain ≥ 2x websockets.sync", "ls_json", "websockets", 2.0),
    ("plain ≥ 2.5x websocket-client", "ls_json", "websocket_client", 2.5),
]


def acceptance(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    """``(target, measured, verdict)`` rows."""
    rows: list[tuple[str, str, str]] = []
    for what, a, b, goal in RATIO_TARGETS:
        values = ratios(results, "200", a, b)
        if not values:
            continue
        med = statistics.median(values)
        rows.append((what, f"{med:.2f}x (rounds {_spread(values, '.2f')})", "met" if med >= goal else "not met"))
    beats = results.get("heartbeat") or []
    if beats:
        p99s = [run["p99"] for run in beats]
        under = sum(1 for v in p99s if v < 5.0)
        rows.append(
            (
                "heartbeat lateness p99 < 5 ms in every run",
                f"p99 per run: {', '.join(f'{v:.2f}' for v in p99s)} ms",
                "met" if under == len(p99s) and len(p99s) >= 5 else f"{under} of {len(p99s)} runs",
            )
        )
    one_way = results.get("one_way") or []
    if one_way:
        p99 = _med([run["p99"] for run in one_way])
        rows.append(("one-way p99 at 10k msg/s < 1 ms", f"{p99:.3f} ms (median of rounds)", _verdict(p99 < 1.0)))
    many = (results.get("many") or [{}])[0]
    if many:
        threads = many["threads_per_client"]
        rows.append(
            (
                f"{many['clients']:.0f} clients in one process, ≤ 2 threads each",
                f"{threads:.2f} threads and {many['rss_kib_per_client']:.0f} KiB RSS per client",
                _verdict(threads <= 2.0),
            )
        )
    for key, what, goal in (("connect", "connect → CONNECTED < 5 ms", 5.0), ("reconnect", "reconnect < 20 ms", 20.0)):
        runs = results.get(key) or []
        if runs:
            p50 = _med([run["p50"] for run in runs])
            rows.append((what, f"{p50:.2f} ms (median)", _verdict(p50 < goal)))
    return rows


def _verdict(ok: bool) -> str:
    return "met" if ok else "not met"


def write_markdown(results: dict[str, Any], path: Path, chart: Path | None) -> None:
    m = results["machine"]
    labels = _labels(results)
    lines = [
        "# Benchmark results",
        "",
        "Written by `python -m benchmarks`"
        + (" --smoke (correctness only: timings mean nothing)" if results["smoke"] else "")
        + f" on {results['started']}, {results['rounds']} round(s), {results['seconds']:.0f} s in all. "
        "Medians across rounds, with the spread (min-max); ratios are taken within each round "
        "and their median is shown. Load average before / after: "
        f"{', '.join(f'{x:.2f}' for x in results['load_before'])} / "
        f"{', '.join(f'{x:.2f}' for x in results['load_after'])}.",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory']}, {m['os']}, {m['python']}.  ",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()) + ".",
        "",
    ]
    if results["missing"]:
        lines += ["Left out: " + "; ".join(f"{k} ({v})" for k, v in results["missing"].items()) + ".", ""]
    if results["failures"]:
        lines += ["**Failures:**", "", *(f"- {f}" for f in results["failures"]), ""]
    rows = [] if results["smoke"] else acceptance(results)
    if rows:
        lines += ["## Targets (issue 19, DESIGN.md section 7)", "", "| target | measured | verdict |", "|---|---|---|"]
        lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
        lines.append("")
    if chart is not None:
        lines += [f"![throughput]({chart.name})", ""]
    for size, data in results.get("throughput", {}).items():
        n = data["n"]
        rates = data["rates"]
        lines += [
            f"## Throughput, {int(size):,} B messages ({n:,} per stream)",
            "",
            "| contender | msg/s (median) | spread | MB/s | x leap_sync json get() |",
            "|---|---:|---:|---:|---:|",
        ]
        for key, values in rates.items():
            med = _med(values)
            rel = ratios(results, size, key, "ls_json")
            lines.append(
                f"| {labels.get(key, key)} | {med:,.0f} | {_spread(values)} | {med * int(size) / 1e6:,.1f} | "
                f"{_med(rel):.2f} |"
            )
        lines.append("")
    lines += _latency_sections(results)
    path.write_text("\n".join(lines) + "\n")


def _latency_sections(results: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    table = [
        ("one_way", "one-way @ 10k msg/s, leap_sync json"),
        ("one_way_fast", "one-way @ 10k msg/s, leap_sync[fast] json"),
        ("heartbeat", "heartbeat lateness, flat-out stream"),
        ("connect", "connect → CONNECTED (blaster)"),
        ("connect_embedded", "connect → CONNECTED (embedded server)"),
        ("reconnect", "reconnect after a drop, Backoff(base=0)"),
    ]
    present = [(k, label) for k, label in table if results.get(k)]
    if present:
        lines += [
            "## Latency (ms; medians of the rounds' percentiles)",
            "",
            "| measurement | p50 | p99 | p99.9 | max | p99 per round |",
            "|---|---:|---:|---:|---:|---|",
        ]
        for key, label in present:
            runs = results[key]
            p999 = _med([r.get("p99.9", float("nan")) for r in runs])
            lines.append(
                f"| {label} | {_med([r['p50'] for r in runs]):.3f} | {_med([r['p99'] for r in runs]):.3f} | "
                f"{'-' if math.isnan(p999) else f'{p999:.3f}'} | {_med([r['max'] for r in runs]):.3f} | "
                f"{', '.join(format(r['p99'], '.2f') for r in runs)} |"
            )
        beats = results.get("heartbeat") or []
        if beats:
            lines += ["", f"The flat-out stream ran at {_med([r['rate'] for r in beats]):,.0f} msg/s (median)."]
        lines.append("")
    many = results.get("many") or []
    if many:
        r = many[0]
        lines += [
            f"## {r['clients']:.0f} clients in one process",
            "",
            f"{r['threads_per_client']:.2f} OS threads per client ({r['py_threads_per_client']:.2f} Python threads), "
            f"{r['rss_kib_per_client']:.0f} KiB RSS per client (RSS {r['rss_mib_before']:.0f} → "
            f"{r['rss_mib_after']:.0f} MiB); all connected in {r['connect_all_s']:.1f} s, closed in "
            f"{r['close_all_s']:.1f} s; threads left after close(): {r['threads_left']:.0f}.",
            "",
        ]
    fan = results.get("fanout") or []
    if fan:
        clients, messages, size = results["params"]["fanout"]
        lines += [
            "## Embedded-server fan-out",
            "",
            f"`LeapEdgeServer.publish_many` of {messages} messages (~{size} B) to {clients} subscribers: "
            f"{_med([r['rate'] for r in fan]):,.0f} messages delivered per second (rounds "
            f"{_spread([r['rate'] for r in fan])}); publish_many returned in "
            f"{_med([r['publish_ms'] for r in fan]):.0f} ms (median).",
            "",
        ]
    return lines


def write_chart(results: dict[str, Any], path: Path) -> Path | None:
    """Throughput per contender and message size, as horizontal bars with the spread;
    ``None`` without matplotlib or throughput results."""
    through = results.get("throughput")
    if not through:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    labels = _labels(results)
    kinds = {c["key"]: c["kind"] for c in results["contenders"]}
    colours = {"leap_sync": "#2b6cb0", "peer": "#dd6b20", "ceiling": "#a0aec0"}
    fig, axes = plt.subplots(1, len(through), figsize=(6 * len(through), 0.45 * len(labels) + 1.5), sharey=True)
    if len(through) == 1:
        axes = [axes]
    for ax, (size, data) in zip(axes, through.items(), strict=False):
        keys = list(data["rates"])
        meds = [_med(data["rates"][k]) for k in keys]
        lows = [m - min(_clean(data["rates"][k]) or [m]) for k, m in zip(keys, meds, strict=False)]
        highs = [max(_clean(data["rates"][k]) or [m]) - m for k, m in zip(keys, meds, strict=False)]
        ys = range(len(keys))
        bars = [0 if math.isnan(m) else m for m in meds]
        ax.barh(list(ys), bars, xerr=[lows, highs], color=[colours[kinds[k]] for k in keys])
        top = max(bars) if bars else 0
        for y, value in zip(ys, bars, strict=False):
            ax.text(value + top * 0.02, y, f"{value / 1000:,.0f}k", va="center", fontsize=8)
        ax.set_xlim(0, top * 1.3 or 1)
        ax.xaxis.set_major_formatter(lambda x, _pos: f"{x / 1000:,.0f}k")
        ax.set_yticks(list(ys), [labels[k] for k in keys])
        ax.invert_yaxis()
        ax.set_title(f"{int(size):,} B messages")
        ax.set_xlabel("messages / s (median; whiskers: min-max of the rounds)")
        ax.grid(axis="x", alpha=0.3)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in colours.values()]
    fig.legend(handles, ["leap_sync", "other clients", "decode only (ceiling)"], loc="lower center", ncol=3)
    fig.suptitle(
        f"leap_sync throughput on one stream, {results['rounds']} rounds — {results['machine']['cpu']}, "
        f"{results['machine']['python']}"
    )
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
