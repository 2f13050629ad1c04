"""The run: child processes per implementation, pinned, interleaved repetitions,
medians and ratios to raw sockets measured in the same run."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from . import layers
from .asyncio_side import _asyncio_client, _serve_asyncio
from .barknet_side import _barknet_client, _serve_barknet
from .common import (
    CHILD_TIMEOUT,
    COALESCE,
    HEADER,
    IMPLS,
    METRICS,
    WARM_BLOCK,
    Plan,
    _pin,
    _warm_allocator,
)
from .raw_sockets import _raw_client, _raw_connect, _RawReader, _serve_raw
from .selectors_side import selectors_client, serve_selectors
from .twisted_side import _serve_twisted, _twisted_client


# ------------------------------------------------------------ child processes
def _serve(impl: str, ready: Callable[[int], None]) -> None:
    if impl == "raw":
        _serve_raw(ready)
    elif impl == "selectors":
        serve_selectors(ready)
    elif impl == "barknet":
        _serve_barknet(ready)
    elif impl == "barknet-bare":  # benchmarks/pairs.py only: what the guarantees cost
        _serve_barknet(ready, bare=True)
    elif impl == "twisted":
        _serve_twisted(ready)
    else:
        _serve_asyncio(impl, ready)


def _client(
    impl: str, port: int, tasks: list[list[Any]], place: Callable[[str], None]
) -> list[Any]:
    if impl == "raw":
        return _raw_client(port, tasks, place)
    if impl == "selectors":
        return selectors_client(port, tasks, place)
    if impl == "barknet":
        return _barknet_client(port, tasks, place)
    if impl == "barknet-bare":
        return _barknet_client(port, tasks, place, bare=True)
    if impl == "twisted":
        return _twisted_client(port, tasks, place)
    return _asyncio_client(impl, port, tasks, place)


def _child_main(argv: Sequence[str]) -> int:
    """``python -m barknet.bench server IMPL CPUS`` or ``... client IMPL JSON``."""
    role, impl = argv[0], argv[1]
    _warm_allocator()
    if role == "server":
        _pin(0, [int(c) for c in argv[2].split(",") if c])

        def ready(port: int) -> None:
            print(port, flush=True)

        _serve(impl, ready)
        return 0
    spec = json.loads(argv[2])
    placement: dict[str, list[list[int]]] = spec["placement"]

    probe_path = spec.get("probe_path")  # how the two shared the CPU (sharing.py)
    probe: dict[str, Any] = {}
    from .sharing import snapshot

    def place(kind: str) -> None:
        client_cpus, server_cpus = placement[kind]
        _pin(0, client_cpus)
        _pin(spec["server_pid"], server_cpus)
        if probe_path:  # from here on both run where the task wants them
            probe["before"] = snapshot(spec["server_pid"])

    results = _client(impl, spec["port"], spec["tasks"], place)
    if probe_path:
        with open(probe_path, "w") as f:
            json.dump({**probe, "after": snapshot(spec["server_pid"])}, f)
    # Into a file, not stdout: once a uvloop loop has existed in this process, a
    # long write into a pipe arrives cut at 64 KiB (seen with uvloop 0.23).
    with open(spec["result_path"], "w") as f:
        json.dump(results, f)
    return 0


class _Server:
    """A server child: started pinned, its port read from its first line."""

    def __init__(self, impl: str, cpus: Sequence[int], python: str | None = None) -> None:
        # Another interpreter (``python``) finds this barknet through PYTHONPATH.
        env = None
        if python is not None:
            root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
            paths = [root, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
        where = ",".join(map(str, cpus))
        self.proc = subprocess.Popen(
            [python or sys.executable, "-m", "barknet.bench", "server", impl, where],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        if not line.strip().isdigit():  # it died, or printed something else first
            self.close()
            raise RuntimeError(f"the {impl} server did not start (it said {line[:80]!r})")
        self.port = int(line)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()  # type: ignore[union-attr]


def _run_client(impl: str, spec: dict[str, Any]) -> list[Any]:
    with tempfile.TemporaryDirectory(prefix="barknet-bench-") as tmp:
        spec = {**spec, "result_path": os.path.join(tmp, "results.json")}
        proc = subprocess.run(
            [sys.executable, "-m", "barknet.bench", "client", impl, json.dumps(spec)],
            capture_output=True,
            text=True,
            timeout=CHILD_TIMEOUT,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"the {impl} client failed:\n{proc.stderr}")
        with open(spec["result_path"]) as f:
            return json.load(f)


def _measure_rss(impl: str, size: int, cpus: Sequence[int]) -> float:
    """Peak RSS growth of a fresh ``impl`` server receiving one ``size``-byte frame."""
    server = _Server(impl, cpus)
    try:
        with _raw_connect(server.port) as sock:
            sock.settimeout(CHILD_TIMEOUT)
            reader = _RawReader(sock)
            sock.sendall(HEADER.pack(3) + b"rss")
            assert bytes(reader.frame() or b"") == b"ready"
            sock.sendall(HEADER.pack(size))
            sock.sendall(b"\0" * size)
            grown = int(bytes(reader.frame() or b"0"))
    finally:
        server.close()
    return grown / size


# ------------------------------------------------------------------ the run
def available_impls() -> list[str]:
    """The implementations this interpreter can run (uvloop and Twisted are optional)."""
    found = []
    for impl in IMPLS:
        module = {"uvloop": "uvloop", "twisted": "twisted"}.get(impl)
        if module is not None:
            try:
                __import__(module)
            except ImportError:
                continue
        found.append(impl)
    return found


def placement() -> tuple[dict[str, list[list[int]]], str]:
    """Which CPUs client and server use, for ping-pong and for bulk, and a sentence."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return {"pingpong": [[], []], "bulk": [[], []]}, "not pinned (no sched_setaffinity)"
    if len(cpus) >= 2:
        a, b = cpus[0], cpus[1]
        return (
            {"pingpong": [[a], [a]], "bulk": [[b], [a]]},
            f"ping-pong: client and server both on CPU {a}; bulk: server on CPU {a}, "
            f"client on CPU {b}",
        )
    return (
        {"pingpong": [cpus, cpus], "bulk": [cpus, cpus]},
        f"one CPU available ({cpus[0]}): client and server share it throughout",
    )


def machine_info(where: str) -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = {}
    for name in ("uvloop", "twisted"):
        with contextlib.suppress(ImportError):
            versions[name] = __import__(name).__version__
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "system": f"{platform.system()} {platform.release()}",
        "libc": " ".join(platform.libc_ver()).strip(),
        "placement": where,
        "allocator": f"every child allocates and frees one {WARM_BLOCK // 1024} KiB block "
        "at start-up (same glibc state everywhere)",
        "barknet_config": "FramedTransport(TcpTransport()), with coalesce="
        f"{COALESCE} for the bulk clients only",
        **{f"{k}_version": str(v) for k, v in versions.items()},
    }


@dataclass
class _Figures:
    values: dict[tuple[str, str, int], list[float]] = field(default_factory=dict)

    def add(self, impl: str, metric: str, size: int, value: float) -> None:
        self.values.setdefault((impl, metric, size), []).append(value)


def _percentile(samples: list[int], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000.0  # ns -> µs


def _human(value: float) -> str:
    if value >= 1e6:
        return f"{value / 1e6:.2f}M"
    if value >= 1e4:
        return f"{value / 1e3:.0f}k"
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}" if value < 10 else f"{value:.1f}"


def _size_name(size: int) -> str:
    if size >= 1 << 20 and size % (1 << 20) == 0:
        return f"{size >> 20} MiB"
    if size >= 1024 and size % 1024 == 0:
        return f"{size >> 10} KiB"
    return f"{size} B"


def run(
    plan: Plan,
    impls: Iterable[str] | None = None,
    *,
    out: TextIO | None = None,
) -> list[dict[str, Any]]:
    """Run ``plan`` for ``impls`` (default: all available); return one record per figure.

    Progress goes to ``out`` (stdout) as it happens. ``raw`` is always run: it
    is what every ratio is taken against.
    """
    out = sys.stdout if out is None else out
    chosen = list(impls) if impls is not None else available_impls()
    missing = [i for i in chosen if i not in IMPLS]
    if missing:
        raise ValueError(f"unknown implementations {missing}; choose from {IMPLS}")
    if "raw" not in chosen:
        chosen.insert(0, "raw")
    where, sentence = placement()
    info = machine_info(sentence)

    def say(line: str) -> None:
        print(line, file=out, flush=True)

    say(f"barknet bench ({plan.name}): {', '.join(chosen)}; {plan.reps} repetitions")
    say(f"  machine: {info['cpus']} CPUs, {info['cpu_model']}, Python {info['python']}")
    say(f"  placement: {sentence}")
    say(f"  allocator: {info['allocator']}")
    say(f"  barknet: {info['barknet_config']}")
    tasks: list[list[Any]] = [["pingpong", s, n, w] for s, n, w in plan.pingpong]
    tasks += [["bulk", s, n, w] for s, n, w in plan.bulk]
    figures = _Figures()
    started = time.monotonic()
    for rep in range(plan.reps):
        shift = rep % len(chosen)
        order = chosen[shift:] + chosen[:shift]
        for impl in order:
            session_started = time.monotonic()
            server = _Server(impl, where["pingpong"][1])
            try:
                spec = {
                    "port": server.port,
                    "server_pid": server.proc.pid,
                    "tasks": tasks,
                    "placement": where,
                }
                results = _run_client(impl, spec)
            finally:
                server.close()
            parts = []
            for (kind, size, count, _), result in zip(tasks, results, strict=True):
                if kind == "pingpong":
                    p50, p99 = _percentile(result, 0.50), _percentile(result, 0.99)
                    figures.add(impl, "pingpong_p50_us", size, p50)
                    figures.add(impl, "pingpong_p99_us", size, p99)
                    parts.append(f"{_size_name(size)} p50 {p50:.1f} µs")
                elif size < 1024:
                    rate = count / (result / 1e9)
                    figures.add(impl, "frames_per_s", size, rate)
                    parts.append(f"{_size_name(size)} {_human(rate)} frames/s")
                else:
                    rate = count * size / (result / 1e9) / 1e6
                    figures.add(impl, "bulk_MBps", size, rate)
                    parts.append(f"{_size_name(size)} {rate:.0f} MB/s")
            took = time.monotonic() - session_started
            say(f"  [{rep + 1}/{plan.reps}] {impl:<16} " + ", ".join(parts) + f" ({took:.1f} s)")
        if rep >= plan.rss_reps:
            continue
        for impl in order:
            ratio = _measure_rss(impl, plan.rss_size, where["pingpong"][1])
            figures.add(impl, "peak_rss_ratio", plan.rss_size, ratio)
        say(
            f"  [{rep + 1}/{plan.reps}] peak RSS for one {_size_name(plan.rss_size)} frame: "
            + ", ".join(
                f"{impl} {figures.values[(impl, 'peak_rss_ratio', plan.rss_size)][-1]:.2f}×"
                for impl in order
            )
        )
    counted = {"selectors": layers.selectors_loop, "barknet": layers.framed_transport}
    for impl, program in counted.items():
        if impl in chosen:
            figures.add(impl, "python_calls", 16, layers.calls_per_round_trip(program))
    say(
        "  Python calls per 16 B round trip, both sides, in the one-process model of "
        "benchmarks/layer_costs.py (not the processes timed above): "
        + ", ".join(
            f"{impl} {figures.values[(impl, 'python_calls', 16)][0]:.1f}"
            for impl in counted
            if impl in chosen
        )
    )
    say(f"  done in {time.monotonic() - started:.0f} s")
    return _records(figures, chosen, plan, info)


def _records(
    figures: _Figures, impls: list[str], plan: Plan, info: dict[str, Any]
) -> list[dict[str, Any]]:
    records = []
    medians = {key: statistics.median(vals) for key, vals in figures.values.items()}
    for metric, (unit, _) in METRICS.items():
        sizes = sorted({size for (_, m, size) in medians if m == metric})
        for size in sizes:
            raw = medians.get(("raw", metric, size))
            for impl in impls:
                value = medians.get((impl, metric, size))
                if value is None:
                    continue
                records.append(
                    {
                        "impl": impl,
                        "metric": metric,
                        "size_bytes": size,
                        "value": value,
                        "unit": unit,
                        "ratio_to_raw": value / raw if raw else None,
                        "reps": figures.values[(impl, metric, size)],
                        "plan": plan.name,
                        "machine": info,
                    }
                )
    return records
