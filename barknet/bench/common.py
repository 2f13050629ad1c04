"""What every benchmark process shares: the plan, the wire format, CPU pinning,
memory readings and the per-connection command session."""

from __future__ import annotations

import contextlib
import os
import struct
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

IMPLS = ("raw", "selectors", "barknet", "asyncio-streams", "asyncio-protocol", "uvloop", "twisted")
HOST = "127.0.0.1"
HEADER = struct.Struct("!I")
MAX_FRAME = 64 * 1024 * 1024
CHILD_TIMEOUT = 300.0
WARM_BLOCK = 1024 * 1024
#: barknet's write coalescing (see FramedTransport) is on where a user would turn
#: it on: in the bulk clients, which write bursts (the frames written in one loop
#: turn leave together). The servers and the round-trip clients write one frame per
#: turn and keep the default, off, which saves a round trip two calls and about 40
#: opcodes. BARKNET_BENCH_COALESCE=0 turns it off for the bulk clients too.
COALESCE = os.environ.get("BARKNET_BENCH_COALESCE", "1") == "1"
#: The bulk clients that write in batches (barknet with write_frames, the asyncio
#: Protocol and uvloop with writelines) put at most this many frames, or bytes, in
#: one call (a batch may overshoot high_water by that much before the pause).
BATCH, BATCH_BYTES = 256, 16 * 1024


def batch_for(size: int) -> int:
    """Frames per write call for a bulk client sending ``size``-byte payloads."""
    return max(1, min(BATCH, BATCH_BYTES // (size + HEADER.size)))


@dataclass
class Plan:
    """What one run measures: ``(size, count, warm-up count)`` per workload."""

    reps: int
    pingpong: list[tuple[int, int, int]]
    bulk: list[tuple[int, int, int]]
    rss_size: int = 16 * 1024 * 1024
    name: str = "custom"
    #: Repetitions that also measure peak RSS (it hardly varies; each costs a
    #: fresh server per implementation).
    rss_reps: int = 1


QUICK = Plan(
    reps=3,
    pingpong=[(16, 2000, 300), (1024, 2000, 300), (65536, 400, 50)],
    bulk=[(64, 100_000, 10_000), (1 << 20, 48, 8), (16 << 20, 3, 1)],
    name="quick",
)
FULL = Plan(
    reps=5,
    pingpong=[(16, 20_000, 2000), (1024, 10_000, 1000), (65536, 2000, 200)],
    bulk=[(64, 1_000_000, 50_000), (1 << 20, 256, 16), (16 << 20, 16, 2)],
    name="full",
    rss_reps=3,
)

#: (metric, unit, lower is better) in table order.
METRICS = {
    "pingpong_p50_us": ("µs", True),
    "pingpong_p99_us": ("µs", True),
    "bulk_MBps": ("MB/s", False),
    "frames_per_s": ("frames/s", False),
    "peak_rss_ratio": ("× frame", True),
    # Counted, not timed (in one process, both sides, see bench.layers): the same
    # on every machine, so a regression shows up as a number.
    "python_calls": ("per round trip", True),
}


# ---------------------------------------------------------------- plumbing
def _warm_allocator() -> None:
    """Put this process's allocator in the same state as every other child."""
    block = bytearray(WARM_BLOCK)
    block[::4096] = b"\1" * len(block[::4096])
    del block


def _pin(pid: int, cpus: Sequence[int] | None) -> None:
    if cpus and hasattr(os, "sched_setaffinity"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(pid, set(cpus))


def _proc_status(field_name: str) -> int:
    """A ``kB`` field of /proc/self/status, in bytes (0 where there is no /proc)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    if field_name == "VmHWM":  # elsewhere: ru_maxrss (kB on Linux, bytes on macOS)
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024
    return 0


def _rss_baseline() -> int:
    # Reset the peak (Linux >= 4.0); without it the later peak still dominates,
    # because a fresh child never held anywhere near a frame's size before.
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _proc_status("VmRSS")


class Session:
    """The server side of one connection: ``echo``, ``sink N`` and ``rss``.

    ``send(payload)`` frames and sends one reply. Every implementation's
    server feeds its frames to one of these, so they all do the same work.
    """

    __slots__ = ("base", "left", "mode", "send")

    def __init__(self, send: Callable[[Any], object]) -> None:
        self.send = send
        self.mode = ""
        self.left = 0
        self.base = 0

    def frame(self, data: Any) -> bool:
        """Handle one frame; True if a reply was sent."""
        mode = self.mode
        if mode == "echo":
            self.send(data)
            return True
        if mode == "sink":
            self.left -= 1
            if self.left:
                return False
            self.mode = ""
            self.send(b"ok")
            return True
        if mode == "rss":
            grown = _proc_status("VmHWM") - self.base
            self.mode = ""
            self.send(str(grown).encode())
            return True
        command = bytes(data)
        if command == b"echo":
            self.mode = "echo"
            return False
        if command.startswith(b"sink "):
            self.mode, self.left = "sink", int(command[5:])
            if self.left == 0:
                self.mode = ""
                self.send(b"ok")
                return True
            return False
        if command == b"rss":
            self.mode, self.base = "rss", _rss_baseline()
            self.send(b"ready")
            return True
        raise ValueError(f"unknown command {command[:40]!r}")


def _now() -> int:
    return time.perf_counter_ns()
