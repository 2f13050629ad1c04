"""The benchmark's table and its command-line entry point."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from .common import FULL, METRICS, QUICK, Plan
from .runner import _human, _size_name, run


def format_table(records: list[dict[str, Any]]) -> str:
    """Rows are figures, columns implementations; each cell is the median and ×raw."""
    impls: list[str] = []
    rows: dict[tuple[str, int], dict[str, dict[str, Any]]] = {}
    for record in records:
        if record["impl"] not in impls:
            impls.append(record["impl"])
        rows.setdefault((record["metric"], record["size_bytes"]), {})[record["impl"]] = record
    labels = {
        "pingpong_p50_us": "round trip p50",
        "pingpong_p99_us": "round trip p99",
        "bulk_MBps": "bulk",
        "frames_per_s": "bulk",
        "peak_rss_ratio": "peak RSS",
        "python_calls": "Python calls (layer model)",
    }
    width = max(17, *(len(i) + 2 for i in impls))
    lines = ["figure (unit)".ljust(31) + "".join(i.rjust(width) for i in impls)]
    for (metric, size), cells in rows.items():
        unit, _ = METRICS[metric]
        label = f"{labels[metric]} {_size_name(size)} ({unit})"
        line = label.ljust(31)
        for impl in impls:
            r = cells.get(impl)
            if r is None:
                line += "-".rjust(width)
                continue
            text = _human(r["value"])
            if impl != "raw" and r["ratio_to_raw"] is not None:
                text += f" ×{r['ratio_to_raw']:.2f}"
            line += text.rjust(width)
        lines.append(line)
    lines.append(
        "×N: ratio to raw blocking sockets in this run (latency and memory: lower is better; "
        "throughput: higher is better)"
    )
    return "\n".join(lines)


def main(
    *,
    quick: bool = False,
    json_path: str | None = None,
    impls: Sequence[str] | None = None,
    plan: Plan | None = None,
    out: TextIO | None = None,
) -> int:
    """``python -m barknet bench``: run, print the table, optionally write JSON."""
    out = sys.stdout if out is None else out
    if plan is None:
        plan = QUICK if quick else FULL
    records = run(plan, impls, out=out)
    print("\n" + format_table(records), file=out)
    if json_path:
        directory = os.path.dirname(json_path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        with open(json_path, "w") as f:
            json.dump(records, f, indent=1)
            f.write("\n")
        print(f"\nwrote {len(records)} records to {json_path}", file=out)
    return 0
