"""The TLS rows of the benchmark, run for real in a tiny configuration."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest

from barknet import bench, cli
from barknet.bench import tls_side as bench_tls

pytestmark = pytest.mark.usefixtures("no_leaks")

TINY = bench.Plan(reps=2, pingpong=[(16, 30, 5)], bulk=[(256 * 1024, 4, 1)], name="tiny")


def test_tls_rows_compare_both_implementations_with_same_run_ratios(tmp_path: Path) -> None:
    out = io.StringIO()
    records = bench_tls.run_tls(TINY, out=out)
    assert {(r["impl"], r["metric"], r["size_bytes"]) for r in records} == {
        (impl, metric, size)
        for impl in bench_tls.TLS_IMPLS
        for metric, size in (("pingpong_p50_us", 16), ("bulk_MBps", 256 * 1024))
    }
    for r in records:
        assert r["value"] > 0 and len(r["reps"]) == 2
        (theirs,) = [
            t
            for t in records
            if t["impl"] == "asyncio-tls"
            and (t["metric"], t["size_bytes"]) == (r["metric"], r["size_bytes"])
        ]
        assert r["ratio_to_asyncio"] == pytest.approx(r["value"] / theirs["value"])
    table = bench_tls.format_tls_table(records).splitlines()
    assert table[0].split() == ["TLS", "figure", "(unit)", "barknet-tls", "asyncio-tls"]
    assert table[1].startswith("round trip p50 16 B (µs)") and "×" in table[1]
    assert table[2].startswith("bulk 256 KiB (MB/s)")
    assert "[2/2] barknet-tls" in out.getvalue() and "[2/2] asyncio-tls" in out.getvalue()
    # It says where and when it ran, as the main run and pairs.py do.
    machine = out.getvalue().splitlines()[1]
    assert re.fullmatch(r"  machine: \d+ CPUs, .+, Python 3\.\d+\.\d+, \d{4}-\d\d-\d\d", machine)


def test_bench_accepts_tls() -> None:
    args = cli.build_parser().parse_args(["bench", "--quick", "--tls"])
    assert args.tls and args.quick


def test_tls_records_are_added_to_the_json_file(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "results.json"
    path.write_text(json.dumps([{"impl": "raw"}]))
    monkeypatch.setattr(bench_tls, "QUICK", TINY)
    assert bench_tls.main(quick=True, json_path=str(path), out=io.StringIO()) == 0
    records = json.loads(path.read_text())
    assert records[0] == {"impl": "raw"}
    assert {r["impl"] for r in records[1:]} == set(bench_tls.TLS_IMPLS)
