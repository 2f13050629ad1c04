"""How the two processes of a round trip share one CPU, repetition by repetition.

Run it from the repository root (Linux: it reads ``/proc``):

    .venv/bin/python benchmarks/sharing.py [--impls LIST] [--repetitions N] [--round-trips N]

The bench pins a ping-pong's client and server to the same CPU, so every round
trip is two hand-overs of that CPU: the client sends and, sooner or later, the
server runs; the server answers and, sooner or later, the client runs. *When*
is the scheduler's choice. The woken process may take the CPU at once, and the
sender finishes its turn later (it is switched out while still runnable: an
*involuntary* switch); or the sender runs on until it waits in ``epoll`` (a
*voluntary* switch), and only then the other one runs. A pair of processes
tends to keep to one way for a whole run, and the two ways do not cost the same.

For each implementation (its own server and client), this runs a 16-byte
ping-pong per repetition, implementations interleaved, and prints per round
trip: the p50, the CPU time both processes used (the server's from
``/proc/PID/schedstat``, the client's own from its CPU clock), what
share of the wall time that was (``busy``; under 100% means the CPU was idle
part of the time), and each side's switches, voluntary ("waited") and
involuntary ("preempted") (``/proc/PID/status``). The client reads the counters
once both processes are pinned, just before its connection opens, and again
once it has closed it, so they include the warm-up (a tenth of the round trips),
the connect and the close, not the start of the processes (which may run on the
other CPU before they are pinned). Each line is one repetition: compare the
lines of one implementation with each other to see whether it ran one way or two.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .pairs import SIDES, SIZE, _cpu, checked_arguments


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def snapshot(server_pid: int) -> dict[str, int]:
    """CPU nanoseconds and context switches of this process (the client) and of
    ``server_pid``, and the monotonic clock, all in one moment."""

    def of(pid: str) -> dict[str, int]:
        return cpu_and_switches(_read(f"/proc/{pid}/schedstat"), _read(f"/proc/{pid}/status"))

    client, server = of("self"), of(str(server_pid))
    # schedstat's figure for a task that is running is as of its last tick or
    # switch (up to a few ms behind); the server is waiting while we read, so its
    # figure is current, and ours comes from the clock that is.
    client["cpu_ns"] = time.process_time_ns()
    now = time.monotonic_ns()
    return {
        **{f"client_{k}": v for k, v in client.items()},
        **{f"server_{k}": v for k, v in server.items()},
        "wall_ns": now,
    }


def cpu_and_switches(schedstat: str, status: str) -> dict[str, int]:
    """From ``/proc/PID/schedstat`` (nanoseconds on the CPU come first) and
    ``/proc/PID/status`` (the two ``ctxt_switches`` lines)."""
    fields = {}
    for line in status.splitlines():
        name, _, value = line.partition(":")
        if name in ("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"):
            fields[name] = int(value)
    return {
        "cpu_ns": int(schedstat.split()[0]),
        "waited": int(fields["voluntary_ctxt_switches"]),
        "preempted": int(fields["nonvoluntary_ctxt_switches"]),
    }


@dataclass(frozen=True)
class Sharing:
    """One repetition of one implementation, per round trip."""

    impl: str
    p50_us: float
    cpu_us: float  # both processes
    client_cpu_us: float
    server_cpu_us: float
    busy: float  # both processes' CPU time / wall time (1.0: the CPU never idled)
    client_waited: float
    client_preempted: float
    server_waited: float
    server_preempted: float

    def line(self) -> str:
        return (
            f"{self.impl:<17} p50 {self.p50_us:5.1f} µs   CPU {self.cpu_us:5.1f} µs "
            f"(client {self.client_cpu_us:4.1f}, server {self.server_cpu_us:4.1f}), "
            f"busy {self.busy:.0%}   client waited {self.client_waited:.2f} "
            f"preempted {self.client_preempted:.2f}, server waited {self.server_waited:.2f} "
            f"preempted {self.server_preempted:.2f}"
        )


def per_round_trip(
    impl: str, p50_us: float, round_trips: int, before: dict[str, int], after: dict[str, int]
) -> Sharing:
    """What the counters moved by, divided by the round trips made in between."""

    def moved(key: str) -> float:
        return (after[key] - before[key]) / round_trips

    client_ns, server_ns = moved("client_cpu_ns"), moved("server_cpu_ns")
    wall_ns = moved("wall_ns")
    return Sharing(
        impl=impl,
        p50_us=p50_us,
        cpu_us=(client_ns + server_ns) / 1000,
        client_cpu_us=client_ns / 1000,
        server_cpu_us=server_ns / 1000,
        busy=(client_ns + server_ns) / wall_ns if wall_ns > 0 else 0.0,
        client_waited=moved("client_waited"),
        client_preempted=moved("client_preempted"),
        server_waited=moved("server_waited"),
        server_preempted=moved("server_preempted"),
    )


def measure_one(impl: str, round_trips: int) -> Sharing:
    """One ping-pong of ``impl``'s server and client, both on one CPU."""
    from .runner import _percentile, _run_client, _Server

    cpu = _cpu()
    warm = max(1, round_trips // 10)
    server = _Server(impl, [cpu])
    try:
        with tempfile.TemporaryDirectory(prefix="barknet-sharing-") as tmp:
            probe_path = os.path.join(tmp, "probe.json")
            spec: dict[str, Any] = {
                "port": server.port,
                "server_pid": server.proc.pid,
                "tasks": [["pingpong", SIZE, round_trips, warm]],
                "placement": {"pingpong": [[cpu], [cpu]], "bulk": [[cpu], [cpu]]},
                "probe_path": probe_path,
            }
            samples = _run_client(impl, spec)[0]
            with open(probe_path) as f:
                probe = json.load(f)
    finally:
        server.close()
    p50 = _percentile(samples, 0.50)
    return per_round_trip(impl, p50, round_trips + warm, probe["before"], probe["after"])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/sharing.py", description=__doc__)
    parser.add_argument("--impls", default=",".join(SIDES), help="comma-separated")
    parser.add_argument("--repetitions", type=int, default=4)
    parser.add_argument("--round-trips", type=int, default=40000)
    args = parser.parse_args(argv)
    impls = checked_arguments(parser, "--impls", args.impls, args.round_trips, args.repetitions)
    if not os.path.exists("/proc/self/schedstat"):
        parser.error("this needs Linux's /proc/PID/schedstat")
    print(
        f"16-byte ping-pong, server and client on CPU {_cpu()}, {args.round_trips} round trips "
        f"(+{max(1, args.round_trips // 10)} warm-up) per line; per round trip: p50, CPU time "
        "of both processes, busy = CPU time / wall time, context switches of each side "
        "(waited: voluntary; preempted: involuntary)"
    )
    from .runner import machine_info

    machine = machine_info("")
    print(
        f"machine: {machine['cpus']} CPUs, {machine['cpu_model']}, "
        f"{machine['system']}, Python {machine['python']}, {time.strftime('%Y-%m-%d')}"
    )
    for repetition in range(args.repetitions):
        for impl in impls[repetition % len(impls) :] + impls[: repetition % len(impls)]:
            print(measure_one(impl, args.round_trips).line(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
