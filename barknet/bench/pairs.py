"""Which side of a round trip costs what: every client against every server.

Run it from the repository root:

    .venv/bin/python benchmarks/pairs.py [--round-trips N] [--server-python PATH]

``python -m barknet bench`` measures each implementation against its own client,
so its 16-byte round trip is the sum of two sides. Here every client talks to
every server (they all speak the benchmark's protocol), both pinned to one CPU
as the bench does for its round trips, and the table shows the p50 round trip of
each pair: a row is one server, a column one client. Down a column the client
stays the same, so the differences are the servers'; along a row, the clients'.

Under each table, "more than its sides" says how much a pair of one
implementation (its server with its own client, the bench's figure) takes beyond
what its two sides predict: its server with the raw client, plus its client with
the raw server, minus the raw pair.

``--sides`` picks the implementations; besides the four above it takes
``barknet-bare``, barknet's classes with every guarantee left out (the bare
stack of ``benchmarks/layer_costs.py``), so the table shows what the guarantees
cost in the two-process setting the bench measures.

``--server-python`` measures a second table with the servers on another
interpreter (say a different CPython version; the servers need only the standard
library), interleaved with the first, so the two tables can be compared cell by
cell. Figures are medians over interleaved repetitions.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence

from .runner import _percentile, _run_client, _Server, machine_info

#: The implementations paired here: all need only the standard library and barknet.
SIDES = ("raw", "selectors", "barknet", "asyncio-protocol")
#: Sides ``--sides`` also accepts: ``barknet-bare`` is barknet's stack with the
#: per-message paths cut down to the system calls and the framing (the bare stack
#: of ``benchmarks/layer_costs.py``), to measure what the guarantees cost here.
EXTRA_SIDES = ("barknet-bare",)
SIZE = 16
Pair = tuple[str, str]  # (server, client)


def _cpu() -> int:
    try:
        return min(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return 0


def round_trip_p50(server: str, client: str, round_trips: int, python: str | None = None) -> float:
    """p50 in µs of ``round_trips`` 16-byte round trips of one server/client pair,
    after a tenth as many to warm up (as the bench does)."""
    cpu = _cpu()
    process = _Server(server, [cpu], python)
    try:
        spec = {
            "port": process.port,
            "server_pid": process.proc.pid,
            "tasks": [["pingpong", SIZE, round_trips, max(1, round_trips // 10)]],
            "placement": {"pingpong": [[cpu], [cpu]], "bulk": [[cpu], [cpu]]},
        }
        samples = _run_client(client, spec)[0]
    finally:
        process.close()
    return _percentile(samples, 0.50)


def measure(
    sides: Sequence[str],
    round_trips: int,
    repetitions: int,
    pythons: Sequence[str | None] = (None,),
) -> list[dict[Pair, float]]:
    """One table per interpreter of the servers (None: this one): the median over
    ``repetitions`` of each pair's p50. Pairs and interpreters are interleaved,
    so a slow moment of the host spreads over all of them."""
    samples: list[dict[Pair, list[float]]] = [{} for _ in pythons]
    for _ in range(repetitions):
        for table, python in zip(samples, pythons, strict=True):
            for server in sides:
                for client in sides:
                    p50 = round_trip_p50(server, client, round_trips, python)
                    table.setdefault((server, client), []).append(p50)
    return [{pair: statistics.median(v) for pair, v in table.items()} for table in samples]


def excess(p50: dict[Pair, float], impl: str) -> float:
    """How much ``impl``'s own pair takes beyond what its two sides predict."""
    sides = p50[impl, "raw"] + p50["raw", impl] - p50["raw", "raw"]
    return p50[impl, impl] - sides


def format_matrix(sides: Sequence[str], p50: dict[Pair, float]) -> str:
    corner = "server \\ client"
    first = max(len(corner), *(len(side) for side in sides)) + 2
    width = max(len(side) for side in sides) + 2
    lines = [corner.ljust(first) + "".join(s.rjust(width) for s in sides)]
    for server in sides:
        cells = "".join(f"{p50[server, client]:.1f}".rjust(width) for client in sides)
        lines.append(server.ljust(first) + cells)
    if "raw" in sides:
        beyond = ", ".join(f"{side} {excess(p50, side):+.1f}" for side in sides)
        lines.append(f"more than its sides: {beyond}")
    return "\n".join(lines)


def _version_of(python: str) -> str:
    """The version of another interpreter; raises OSError or CalledProcessError if
    it does not run."""
    found = subprocess.run(
        [python, "-c", "import platform; print(platform.python_version())"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return found.stdout.strip()


def checked_arguments(
    parser: argparse.ArgumentParser, option: str, names: str, round_trips: int, repetitions: int
) -> list[str]:
    """The implementations named in ``names`` (comma-separated), once the counts
    and names are known to be good; otherwise the parser's usage error, before
    anything is measured."""
    sides = [side for side in names.split(",") if side]
    unknown = sorted(set(sides) - set(SIDES) - set(EXTRA_SIDES))
    if unknown:
        parser.error(f"unknown implementations: {', '.join(unknown)}")
    if not sides or len(set(sides)) != len(sides):
        parser.error(f"{option} needs at least one implementation, each named once")
    if round_trips < 1 or repetitions < 1:
        parser.error("--round-trips and --repetitions must be at least 1")
    return sides


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/pairs.py", description=__doc__)
    parser.add_argument("--round-trips", type=int, default=20000)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--server-python", help="also run the servers on this interpreter")
    parser.add_argument(
        "--sides",
        default=",".join(SIDES),
        help=f"comma-separated (default: all of these; also {', '.join(EXTRA_SIDES)})",
    )
    args = parser.parse_args(argv)
    sides = checked_arguments(parser, "--sides", args.sides, args.round_trips, args.repetitions)
    pythons: list[str | None] = [None]
    labels = [f"{sys.executable} (Python {platform.python_version()}, the clients' interpreter)"]
    if args.server_python:
        try:
            version = _version_of(args.server_python)
        except (OSError, subprocess.SubprocessError) as exc:
            parser.error(f"--server-python {args.server_python} does not run: {exc}")
        pythons.append(args.server_python)
        labels.append(f"{args.server_python} (Python {version})")
    machine = machine_info("")
    print(
        f"16-byte round trip p50 (µs), server and client on CPU {_cpu()}, "
        f"median of {args.repetitions} x {args.round_trips} round trips"
    )
    print(
        f"machine: {machine['cpus']} CPUs, {machine['cpu_model']}, "
        f"Python {machine['python']}, {time.strftime('%Y-%m-%d')}"
    )
    tables = measure(sides, args.round_trips, args.repetitions, pythons)
    for label, table in zip(labels, tables, strict=True):
        print(f"servers on {label}")
        print(format_matrix(sides, table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
