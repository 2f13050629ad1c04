"""The README's benchmark table is the stored run, figure for figure.

The README says its table comes from ``benchmarks/results.json``; a new stored run
without a new table (or the reverse) would make that untrue without anyone noticing.
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMPLS = ["raw", "selectors", "barknet", "asyncio-streams", "asyncio-protocol", "uvloop", "twisted"]
ROWS = {
    "round trip p50, 16 B (µs)": ("pingpong_p50_us", 16),
    "round trip p50, 1 KiB (µs)": ("pingpong_p50_us", 1024),
    "round trip p50, 64 KiB (µs)": ("pingpong_p50_us", 65536),
    "round trip p99, 16 B (µs)": ("pingpong_p99_us", 16),
    "bulk, 1 MiB frames (MB/s)": ("bulk_MBps", 1 << 20),
    "bulk, 16 MiB frames (MB/s)": ("bulk_MBps", 16 << 20),
    "bulk, 64 B frames (frames/s)": ("frames_per_s", 64),
    "peak RSS, one 16 MiB frame (× frame)": ("peak_rss_ratio", 16 << 20),
}


def _cell(record: dict, metric: str) -> str:
    value = record["value"]
    if metric == "frames_per_s":
        text = f"{value / 1e6:.2f}M" if value >= 1e6 else f"{value / 1e3:.0f}k"
    elif metric == "bulk_MBps":
        text = f"{value:.0f}"
    elif metric == "peak_rss_ratio":
        return f"{value:.2f}"
    else:
        text = f"{value:.1f}" if value < 100 else f"{value:.0f}"
    if record["impl"] != "raw":
        text += f" ×{record['ratio_to_raw']:.2f}"
    return text


def test_the_readme_benchmark_table_shows_the_stored_run() -> None:
    records = json.loads((ROOT / "benchmarks" / "results.json").read_text(encoding="utf-8"))
    by_key = {(r["impl"], r["metric"], r["size_bytes"]): r for r in records}
    readme = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    for label, (metric, size) in ROWS.items():
        expected = (
            f"| {label} | "
            + " | ".join(_cell(by_key[(impl, metric, size)], metric) for impl in IMPLS)
            + " |"
        )
        found = [line for line in readme if line.startswith(f"| {label} |")]
        assert found == [expected], f"README row {label!r} is not the stored run"
