"""Which side of a round trip costs what: every server against every client.

Run it from the repository root:

    .venv/bin/python benchmarks/pairs.py [--round-trips N] [--server-python PATH]

``python -m barknet bench`` measures each implementation against its own client,
so its 16-byte round trip is the sum of two sides. Here each server answers each
client (they all speak the benchmark's protocol), pinned to one CPU as the bench
pins ping-pong, and the table shows the p50 round trip of every pair: a row is one
server, a column one client. Down a column the client stays the same, so the
differences are the servers'; along a row, the clients'.

The diagonal is what the bench measures. It can be more than the two sides
measured apart: when both processes run the same interpreter binary on one CPU
they slow each other down (seen with asyncio as well as barknet; which hardware
resource they share was not pinned down). ``--server-python`` starts the servers
on another interpreter (say a different CPython version; the servers need only
the standard library) to show how much of a pair's time that costs.

Figures are medians over interleaved repetitions; compare cells of one run only.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Sequence

from .runner import _run_client, _Server, machine_info

#: The implementations paired here: all need only the standard library and barknet.
SIDES = ("raw", "selectors", "barknet", "asyncio-protocol")
SIZE = 16


def _cpu() -> int:
    try:
        return min(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return 0


def round_trip_p50(server: str, client: str, round_trips: int, python: str | None = None) -> float:
    """p50 of ``round_trips`` 16-byte round trips, in µs, of one server/client pair."""
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
    return statistics.median(samples) / 1000


def measure(
    sides: Sequence[str], round_trips: int, repetitions: int, python: str | None = None
) -> dict[tuple[str, str], float]:
    """The median over ``repetitions`` of every pair's p50; the pairs are
    interleaved, so a slow moment of the host spreads over all of them."""
    samples: dict[tuple[str, str], list[float]] = {}
    for _ in range(repetitions):
        for server in sides:
            for client in sides:
                p50 = round_trip_p50(server, client, round_trips, python)
                samples.setdefault((server, client), []).append(p50)
    return {pair: statistics.median(values) for pair, values in samples.items()}


def format_matrix(sides: Sequence[str], p50: dict[tuple[str, str], float]) -> str:
    width = max(len(side) for side in sides) + 2
    lines = ["server \\ client".ljust(width) + "".join(s.rjust(width) for s in sides)]
    for server in sides:
        cells = "".join(f"{p50[server, client]:.1f}".rjust(width) for client in sides)
        lines.append(server.ljust(width) + cells)
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/pairs.py", description=__doc__)
    parser.add_argument("--round-trips", type=int, default=20000)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--server-python", help="run the servers on this interpreter too")
    parser.add_argument("--sides", default=",".join(SIDES), help="comma-separated")
    args = parser.parse_args(argv)
    sides = [side for side in args.sides.split(",") if side]
    unknown = set(sides) - set(SIDES)
    if unknown:
        parser.error(f"unknown implementations: {', '.join(sorted(unknown))}")
    machine = machine_info("")
    print(
        f"16-byte round trip p50 (µs), server and client on CPU {_cpu()}, "
        f"median of {args.repetitions} x {args.round_trips} round trips"
    )
    print(
        f"machine: {machine['cpus']} CPUs, {machine['cpu_model']}, "
        f"Python {machine['python']}, {time.strftime('%Y-%m-%d')}"
    )
    print(f"servers on {sys.executable} (the clients' interpreter)")
    print(format_matrix(sides, measure(sides, args.round_trips, args.repetitions)))
    if args.server_python:
        print(f"servers on {args.server_python}")
        p50 = measure(sides, args.round_trips, args.repetitions, args.server_python)
        print(format_matrix(sides, p50))
    return 0


if __name__ == "__main__":
    sys.exit(main())
