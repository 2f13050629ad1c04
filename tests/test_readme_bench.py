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


def _stored() -> dict[tuple[str, str, int], dict]:
    records = json.loads((ROOT / "benchmarks" / "results.json").read_text(encoding="utf-8"))
    return {(r["impl"], r["metric"], r["size_bytes"]): r for r in records}


def test_the_readme_calls_row_shows_the_stored_count() -> None:
    by_key = _stored()
    cells = ["–"] * len(IMPLS)
    for impl in ("selectors", "barknet"):
        cells[IMPLS.index(impl)] = f"{by_key[(impl, 'python_calls', 16)]['value']:g}"
    expected = (
        "| Python calls per 16 B round trip (both sides, layer model) | "
        + " | ".join(cells)
        + " |"
    )
    readme = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert [line for line in readme if line.startswith("| Python calls")] == [expected]


def test_the_prose_under_the_table_quotes_the_stored_run() -> None:
    """The ratios and ranges the paragraph under the table states, recomputed from
    the stored run: a new run with old prose fails here."""
    by_key = _stored()

    def value(impl: str, metric: str, size: int) -> float:
        return by_key[(impl, metric, size)]["value"]

    def gbs(impl: str, size: int) -> str:
        reps = by_key[(impl, "bulk_MBps", size)]["reps"]
        return f"{min(reps) / 1000:.1f}–{max(reps) / 1000:.1f}"

    p50 = "pingpong_p50_us"
    reps16 = by_key[("barknet", p50, 16)]["reps"]

    def ratio(metric: str, size: int, other: str) -> float:
        return value("barknet", metric, size) / value(other, metric, size)

    big, mid = gbs("barknet", 16 << 20), gbs("barknet", 1 << 20)
    machine = by_key[("raw", p50, 16)]["machine"]
    cpu = " ".join(w for w in machine["cpu_model"].replace("(R)", "").split() if w != "Processor")
    # A quiet run: no repetition of these three apart from the others (no jump of
    # over 25% between sorted repetitions, as for sharing.txt below).
    for impl in ("selectors", "barknet", "asyncio-protocol"):
        groups = _groups(by_key[(impl, p50, 16)]["reps"])
        assert len(groups) == 1, (impl, groups)
    reps_protocol = by_key[("asyncio-protocol", p50, 16)]["reps"]
    small_ratio = by_key[("barknet", "frames_per_s", 64)]["ratio_to_raw"]
    p99 = "pingpong_p99_us"

    def frames(impl: str) -> str:
        rate = value(impl, "frames_per_s", 64)
        return f"{rate / 1e6:.2f}M" if rate >= 1e6 else f"{rate / 1e3:.0f}k"

    phrases = [
        f"on a {machine['cpus']} vCPU {cpu} VM",
        f"CPython {machine['python']}, uvloop {machine['uvloop_version']}",
        f"the `Protocol`'s between {min(reps_protocol):.1f} and {max(reps_protocol):.1f}",
        f"its 16 B p99 {ratio(p99, 16, 'asyncio-protocol'):.2f}× "
        f"({value('barknet', p99, 16):.1f} µs against {value('asyncio-protocol', p99, 16):.1f})",
        f"get {frames('asyncio-protocol')} and {frames('uvloop')} frames a second",
        f"get {frames('raw')} and {frames('asyncio-streams')}",
        f"(one `sendall` per frame, so ×{small_ratio:.2f} raw is no floor)",
        f"gets {value('barknet', 'bulk_MBps', 1 << 20) / value('raw', 'bulk_MBps', 1 << 20):.2f}× "
        "raw at the median",
        f"{big} GB/s over the repetitions against raw's {gbs('raw', 16 << 20)}",
        f"{mid} GB/s against {gbs('raw', 1 << 20)}",
        f"gets {ratio('frames_per_s', 64, 'selectors'):.2f}× the careful `selectors` loop",
        f"round trip is {ratio(p50, 16, 'asyncio-protocol'):.1f}× an asyncio `Protocol`",
        f"and {ratio(p50, 16, 'selectors'):.1f}× the careful",
        f"at 64 KiB it is {ratio(p50, 65536, 'asyncio-protocol'):.2f}×",
        f"but {value('barknet', 'python_calls', 16):g} Python calls per echoed message",
        f"against the loop's {value('selectors', 'python_calls', 16):g}",
        f"between {min(reps16):.1f} and {max(reps16):.1f} µs",
    ]
    prose = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    missing = [phrase for phrase in phrases if phrase not in prose]
    assert not missing, f"README prose does not match the stored run: {missing}"


def test_the_spread_in_benchmarks_readme_is_the_stored_runs() -> None:
    by_key = _stored()

    def spread(impl: str, metric: str, size: int, scale: float, unit: str) -> str:
        reps = [rep / scale for rep in by_key[(impl, metric, size)]["reps"]]
        low, high = (
            (f"{min(reps):.2f}M", f"{max(reps):.2f}M")
            if unit == "M"
            else (
                f"{min(reps):.1f}",
                f"{max(reps):.1f} {unit}",
            )
        )
        return f"between {low} and {high}"

    phrases = [
        spread("raw", "pingpong_p50_us", 16, 1, "µs"),
        "barknet's " + spread("barknet", "pingpong_p50_us", 16, 1, "µs"),
        "barknet's 64 B frames/s " + spread("barknet", "frames_per_s", 64, 1e6, "M"),
        "the careful loop's " + spread("selectors", "frames_per_s", 64, 1e6, "M"),
        "raw 16 MiB " + spread("raw", "bulk_MBps", 16 << 20, 1e3, "GB/s"),
    ]
    text = " ".join((ROOT / "benchmarks" / "README.md").read_text(encoding="utf-8").split())
    missing = [phrase for phrase in phrases if phrase not in text]
    assert not missing, f"benchmarks/README.md does not match the stored run: {missing}"


def _pairs_tables(name: str = "pairs.txt") -> list[dict[tuple[str, str], str]]:
    """A stored run of pairs.py as printed: one table per interpreter of the servers
    (or per run, for two runs in one file)."""
    tables: list[dict[tuple[str, str], str]] = []
    clients: list[str] = []
    for line in (ROOT / "benchmarks" / name).read_text(encoding="utf-8").splitlines():
        if line.startswith("server \\ client"):
            clients = line.split()[3:]
            tables.append({})
        elif tables and line.split() and line.split()[0] in clients:
            server, *cells = line.split()
            tables[-1].update({(server, c): cell for c, cell in zip(clients, cells, strict=True)})
    return tables


def test_the_readme_quotes_the_stored_pairs_run() -> None:
    """The paragraph on which side costs what quotes benchmarks/pairs.txt, and its
    sums are the table's: a new run with old prose fails here."""
    text = (ROOT / "benchmarks" / "pairs.txt").read_text(encoding="utf-8")
    lines = text.splitlines()
    same, other = _pairs_tables()
    # How the run was made, as the README and benchmarks/README.md tell it.
    assert "median of 5 x" in lines[0]
    assert "Intel(R) Xeon(R)" in lines[1] and "Python 3.11.7, 2026-12-06" in lines[1]
    assert "(Python 3.11.7, the clients' interpreter)" in lines[2]
    assert any(line.endswith("(Python 3.12.1)") for line in lines)

    def cell(table: dict[tuple[str, str], str], server: str, client: str) -> float:
        return float(table[server, client])

    # What each table's last line printed: a pair's time beyond its sides' (from the
    # unrounded medians, so recomputing it from the rounded cells may differ by 0.1).
    printed = []
    for line in (ln for ln in lines if ln.startswith("more than its sides: ")):
        words = line.removeprefix("more than its sides: ").split(", ")
        printed.append({w.split()[0]: w.split()[1] for w in words})
    assert len(printed) == 2

    def excess(table: int, impl: str) -> str:
        return printed[table][impl].lstrip("+").replace("-", "−")

    for table, cells in enumerate((same, other)):
        for impl in ("selectors", "barknet", "asyncio-protocol"):
            sides = cell(cells, impl, "raw") + cell(cells, "raw", impl) - cell(cells, "raw", "raw")
            assert abs(float(printed[table][impl]) - (cell(cells, impl, impl) - sides)) < 0.15

    predicted = cell(same, "barknet", "raw") + cell(same, "raw", "barknet")
    predicted -= cell(same, "raw", "raw")
    phrases = [
        "(2026-12-06, the Intel Xeon VM of `sharing.txt`;",  # (sharing.txt says so too)
        "clients on CPython 3.11.7, servers on 3.11.7 and then 3.12.1, medians of 5)",
        f"a round trip takes {same['barknet', 'raw']} µs against barknet's server, "
        f"{same['asyncio-protocol', 'raw']} against the `Protocol`'s and "
        f"{same['selectors', 'raw']} against the careful loop's",
        f"{same['raw', 'barknet']} µs from barknet's client and "
        f"{same['raw', 'asyncio-protocol']} from the `Protocol`'s",
        f"about {same['barknet', 'raw']} + {same['raw', 'barknet']} − {same['raw', 'raw']} = "
        f"{predicted:.1f} µs; they take {same['barknet', 'barknet']}, "
        f"{excess(0, 'barknet')} more than their sides",
        f"(the `Protocol`'s pair {excess(0, 'asyncio-protocol')} more, "
        f"the careful loop's {excess(0, 'selectors')})",
        f"barknet's pair is {excess(1, 'barknet')} µs over its sides and the others' "
        f"{excess(1, 'asyncio-protocol')} and {excess(1, 'selectors')}",
    ]
    prose = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    missing = [phrase for phrase in phrases if phrase not in prose]
    assert not missing, f"README prose does not match benchmarks/pairs.txt: {missing}"
    # What the README and benchmarks/README.md conclude from them.
    for table in (0, 1):
        others = (printed[table]["asyncio-protocol"], printed[table]["selectors"])
        assert float(printed[table]["barknet"]) > max(map(float, others))
    assert 0 < float(printed[1]["barknet"]) < float(printed[0]["barknet"])


def test_notebook_07_quotes_the_stored_runs_small_message_ratio() -> None:
    ratio = _stored()[("barknet", "pingpong_p50_us", 16)]["ratio_to_raw"]
    notebook = json.loads((ROOT / "notebooks" / "07_live_lab.ipynb").read_text(encoding="utf-8"))
    prose = " ".join(
        " ".join("".join(cell["source"]).split())
        for cell in notebook["cells"]
        if cell["cell_type"] == "markdown"
    )
    assert f"(barknet at ×{ratio:.1f} raw in the stored run" in prose


def _sharing_lines() -> dict[str, list[tuple[float, float, str]]]:
    """benchmarks/sharing.txt: per implementation, (p50, CPU per round trip, busy) by line."""
    by_impl: dict[str, list[tuple[float, float, str]]] = {}
    for line in (ROOT / "benchmarks" / "sharing.txt").read_text(encoding="utf-8").splitlines():
        words = line.split()
        if len(words) > 8 and words[1] == "p50" and words[4] == "CPU":
            busy = line.split("busy ")[1].split()[0]
            by_impl.setdefault(words[0], []).append((float(words[2]), float(words[5]), busy))
    return by_impl


def _groups(values: list[float]) -> list[list[float]]:
    """Sorted values as one group, or two split at the largest jump if it is over 25%."""
    values = sorted(values)
    cut = max(range(len(values) - 1), key=lambda k: values[k + 1] / values[k]) + 1
    if values[cut] / values[cut - 1] < 1.25:
        return [values]
    return [values[:cut], values[cut:]]


def test_the_readmes_quote_the_stored_sharing_run() -> None:
    runs = _sharing_lines()
    assert set(runs) == {"raw", "selectors", "barknet", "asyncio-protocol"}
    machine = (ROOT / "benchmarks" / "sharing.txt").read_text(encoding="utf-8").splitlines()[1]
    assert "Intel(R) Xeon(R)" in machine and "2026-12-06" in machine  # as the READMEs say
    assert all(len(lines) == 6 for lines in runs.values())
    # "busy 99-100% on every line": the CPU never waited, so a round trip is CPU time.
    assert {busy for lines in runs.values() for _, _, busy in lines} <= {"99%", "100%"}

    def groups(impl: str) -> list[tuple[str, int]]:
        """Each group of ``impl``'s CPU per round trip as quoted ("a–b µs"), and its size."""
        return [
            (f"{g[0]:.1f}–{g[-1]:.1f} µs" if len(g) > 1 else f"{g[0]:.1f} µs", len(g))
            for g in _groups([cpu for _, cpu, _ in runs[impl]])
        ]

    (fast, n_fast), (slow, n_slow) = groups("barknet")
    (loop_fast, n_loop_fast), (loop_slow, n_loop_slow) = groups("selectors")
    ((protocol, n_protocol),) = groups("asyncio-protocol")
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    for phrase in [
        "(2026-12-06, on a 2 vCPU Intel Xeon VM, the machine of the stored full run before "
        "this table's, 6 repetitions)",
        "busy 99–100% of the time on every line",
        f"barknet's pair needed {fast} of CPU per round trip in {n_fast} repetitions and "
        f"{slow} in {n_slow}, the careful loop's {loop_fast} in {n_loop_fast} and "
        f"{loop_slow} in {n_loop_slow}, the asyncio `Protocol`'s {protocol} in all {n_protocol}.",
    ]:
        assert phrase in readme, phrase
    notes = " ".join((ROOT / "benchmarks" / "README.md").read_text(encoding="utf-8").split())
    # barknet's client: the share of its round trips in which it was switched out,
    # in the slow repetitions and in the others.
    preempted = {
        float(line.split()[5]): float(line.split("preempted ")[1].split(",")[0])
        for line in (ROOT / "benchmarks" / "sharing.txt").read_text(encoding="utf-8").splitlines()
        if line.startswith("barknet ")
    }
    slow_cut = _groups(list(preempted))[1][0]
    in_slow = [p for cpu, p in preempted.items() if cpu >= slow_cut]
    in_fast = [p for cpu, p in preempted.items() if cpu < slow_cut]
    for phrase in [
        f"(barknet's client was switched out in {min(in_slow):.2f}–{max(in_slow):.2f} of its "
        f"round trips there, {min(in_fast):.2f}–{max(in_fast):.2f} in the others)",
        "`sharing.txt` is one run of `sharing.py --repetitions 6`",
        "Every line is busy 99–100%",
        f"barknet's pair needed {fast} of CPU per round trip in {n_fast} repetitions and "
        f"{slow} in the other {n_slow}, the careful loop's {loop_fast} in {n_loop_fast} and "
        f"{loop_slow} in {n_loop_slow}.",
    ]:
        assert phrase in notes, phrase


def test_the_readme_quotes_the_stored_tls_run() -> None:
    rows = {}
    for line in (ROOT / "benchmarks" / "tls.txt").read_text(encoding="utf-8").splitlines():
        if line.startswith(("round trip p50 16 B", "bulk 16 MiB")):
            words = line.split()
            rows[words[0]] = (float(words[-3]), words[-2], float(words[-1]))
    (ours, ratio, theirs), (bulk_ours, bulk_ratio, bulk_theirs) = rows["round"], rows["bulk"]
    prose = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    # "the machine of the table", on the date the README gives: tls.txt says where it ran.
    machine = (ROOT / "benchmarks" / "tls.txt").read_text(encoding="utf-8").splitlines()[1]
    table = next(iter(_stored().values()))["machine"]
    assert f"{table['cpus']} CPUs, {table['cpu_model']}, Python {table['python']}," in machine
    date = machine.rsplit(", ", 1)[1]
    assert f"stored as `benchmarks/tls.txt` ({date}, the table's VM," in prose
    for phrase in [
        "stored as `benchmarks/tls.txt`",
        f"round trip p50 for 16 B {ours:.1f} µs against {theirs:.1f} µs ({ratio}, slower)",
        f"bulk with 16 MiB frames {bulk_ours:.0f} MB/s against {bulk_theirs:.0f} MB/s "
        f"({bulk_ratio}, faster)",
    ]:
        assert phrase in prose, phrase


def test_benchmarks_readme_quotes_the_stored_bare_pairs_runs() -> None:
    """The paragraph on the bare stack in two processes quotes benchmarks/pairs-bare.txt."""
    lines = (ROOT / "benchmarks" / "pairs-bare.txt").read_text(encoding="utf-8").splitlines()
    first, second = _pairs_tables("pairs-bare.txt")
    assert "--round-trips 5000 --repetitions 5 --sides raw,barknet,barknet-bare" in lines[0]
    assert sum("AMD EPYC, Python 3.11.7, 2026-12-06" in line for line in lines) == 2

    def both(server: str, client: str) -> str:
        return f"{first[server, client]} and {second[server, client]}"

    phrases = [
        "two runs in a row of `pairs.py --round-trips 5000 --repetitions 5 --sides "
        "raw,barknet,barknet-bare,asyncio-protocol` on 2026-12-06, on a 2 vCPU AMD EPYC VM",
        f"own pair took {both('asyncio-protocol', 'asyncio-protocol')} µs",
        f"barknet {both('barknet', 'barknet')} µs, the bare stack "
        f"{both('barknet-bare', 'barknet-bare')}, the `Protocol` "
        f"{both('asyncio-protocol', 'asyncio-protocol')}",
        f"the bare server took {both('barknet-bare', 'raw')} µs, the `Protocol`'s "
        f"{both('asyncio-protocol', 'raw')}, barknet's {both('barknet', 'raw')}",
        f"the bare client {both('raw', 'barknet-bare')} µs, the `Protocol`'s "
        f"{both('raw', 'asyncio-protocol')}, barknet's {both('raw', 'barknet')}",
    ]
    prose = " ".join((ROOT / "benchmarks" / "README.md").read_text(encoding="utf-8").split())
    missing = [phrase for phrase in phrases if phrase not in prose]
    assert not missing, f"benchmarks/README.md does not match pairs-bare.txt: {missing}"


def _summary_rows(lines: list[str]) -> dict[str, list[str]]:
    """A printed summary table's rows: the figure's name, then each column's value."""
    rows = {}
    for line in lines:
        name, _, rest = line.partition(")")
        if rest.strip() and "(" in name:
            rows[name + ")"] = [cell for cell in rest.split() if not cell.startswith("×")]
    return rows


def test_the_readme_quotes_the_stored_plain_reads_runs() -> None:
    """The paragraph on plain reads quotes benchmarks/plain-reads.txt: barknet
    before and after, and the asyncio Protocol of each run."""
    text = (ROOT / "benchmarks" / "plain-reads.txt").read_text(encoding="utf-8")
    after_part, before_part = text.split("## after")[1].split("## before")
    after, before = (_summary_rows(part.splitlines()) for part in (after_part, before_part))
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index("Earlier runs on a 2 vCPU AMD EPYC VM like the table's")
    prose = " ".join(readme[start : readme.index("\n\n", start)].split())
    columns = ["raw", "selectors", "barknet", "asyncio-protocol"]

    def figures(row: str, other: str) -> dict[str, str]:
        b, o = columns.index("barknet"), columns.index(other)
        return dict(b=before[row][b], a=after[row][b], ob=before[row][o], oa=after[row][o])

    for row, other, words in [
        (
            "round trip p50 16 B (µs)",
            "asyncio-protocol",
            "16 B round trip p50 went from {b} to {a} µs "
            "(the asyncio `Protocol` in the same runs: {ob} and {oa})",
        ),
        (
            "round trip p50 1 KiB (µs)",
            "asyncio-protocol",
            "1 KiB from {b} to {a} µs ({ob} and {oa})",
        ),
        (
            "round trip p99 16 B (µs)",
            "asyncio-protocol",
            "16 B p99 from {b} to {a} µs ({ob} and {oa})",
        ),
        (
            "round trip p50 64 KiB (µs)",
            "asyncio-protocol",
            "64 KiB p50 from {b} to {a} µs ({ob} and {oa})",
        ),
        (
            "bulk 64 B (frames/s)",
            "selectors",
            "64 B frames from {b} to {a} a second (the careful loop: {ob} and {oa})",
        ),
    ]:
        quoted = words.format(**figures(row, other))
        assert quoted in prose, quoted
    p50 = figures("round trip p50 16 B (µs)", "asyncio-protocol")
    assert f"the p50 still about {float(p50['a']) / float(p50['oa']):.2f}× it" in prose


def test_the_readme_quotes_the_stored_batch_runs() -> None:
    """The paragraph on the two pairs of runs of benchmarks/batches.txt quotes their
    64 B rows, barknet's and the careful loop's, and the ratios it draws."""
    text = (ROOT / "benchmarks" / "batches.txt").read_text(encoding="utf-8")
    parts = text.split("\n## ")[1:]
    assert [part.splitlines()[0] for part in parts] == [
        "pair 1: after",
        "pair 1: before",
        "pair 2: after",
        "pair 2: before",
    ]
    columns = ["raw", "selectors", "barknet", "asyncio-protocol"]
    row = "bulk 64 B (frames/s)"
    figures = [_summary_rows(part.splitlines())[row] for part in parts]
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index("In the second step, frames past a turn's limit")
    prose = " ".join(readme[start : readme.index("\n\n", start)].split())
    bk, loop = columns.index("barknet"), columns.index("selectors")
    (a1, b1, a2, b2) = figures
    for quoted in [
        f"from {b1[bk]} to {a1[bk]} a second in the first pair "
        f"(the careful loop: {b1[loop]} and {a1[loop]})",
        f"from {b2[bk]} to {a2[bk]} in the second ({b2[loop]} and {a2[loop]})",
    ]:
        assert quoted in prose, quoted

    def ratio(run: list[str]) -> str:
        return f"{float(run[bk][:-1]) / float(run[loop][:-1]):.2f}×"

    assert f"from {ratio(b1)} and {ratio(b2)} the loop to {ratio(a1)} and {ratio(a2)} it" in prose
    raw_p50 = [float(_summary_rows(p.splitlines())["round trip p50 16 B (µs)"][0]) for p in parts]
    assert f"raw's 16 B p50 {min(raw_p50)}–{max(raw_p50)} µs" in prose
    # The round trips, in the file's order (before, before, after, after for barknet).
    aio = columns.index("asyncio-protocol")
    rows = [_summary_rows(part.splitlines()) for part in (parts[1], parts[3], parts[0], parts[2])]
    p50 = [r["round trip p50 16 B (µs)"] for r in rows]
    assert (
        f"16 B p50 was {p50[0][bk]} and {p50[1][bk]} µs before, {p50[2][bk]} and {p50[3][bk]} "
        f"after (the `Protocol`: {p50[0][aio]}, {p50[1][aio]}, {p50[2][aio]} and {p50[3][aio]})"
    ) in prose
    p99 = [r["round trip p99 16 B (µs)"] for r in rows]
    assert all(float(r[bk]) > float(r[aio]) for r in p99)  # "above ... in all four runs"
    assert (
        f"({p99[0][bk]}, {p99[1][bk]}, {p99[2][bk]} and {p99[3][bk]} µs against "
        f"{p99[0][aio]}, {p99[1][aio]}, {p99[2][aio]} and {p99[3][aio]})"
    ) in prose
