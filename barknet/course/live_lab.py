"""Notebook 07: echo experiments with sliders, throughput, and the benchmark."""

from __future__ import annotations

import hashlib
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..events import EventKind, IOCounters, IOEvent, IOStatus, Peer, ReadResult
from ..framed import FRAMES_PER_TURN, FramedTransport
from ..framing import DEFAULT_MAX_FRAME_SIZE
from ..reactor import EventWatcher
from ..tcp import TcpTransport
from ..testing.trace import Trace, TracingTransport, plot_timeline
from .common import (
    KiB,
    MiB,
    as_image,
    closing,
    echo_owner,
    human_size,
    size_slider,
    slider_app,
    yes,
)

__all__ = [
    "EchoResult",
    "SmallFrames",
    "benchmark_command",
    "benchmark_summary",
    "benchmark_widget",
    "echo_lab",
    "echo_lab_widget",
    "echo_throughput",
    "load_benchmark",
    "plot_benchmark",
    "plot_echo",
    "plot_throughput",
    "run_benchmark",
    "small_frames_lab",
    "take_in_batches",
    "take_one_by_one",
    "throughput_sweep",
]


@dataclass
class EchoResult:
    """An echo run: every client ping-pongs ``frames`` frames of ``size`` bytes."""

    size: int
    clients: int
    frames: int  # per client
    intact: int
    rtts: list[float]
    client: IOCounters
    server: IOCounters
    trace: Trace
    elapsed: float

    @property
    def total(self) -> int:
        return self.clients * self.frames

    def summary(self) -> str:
        """Only what is the same on every run."""
        c, s = self.client, self.server
        return "\n".join(
            [
                f"size={self.size} B clients={self.clients} frames={self.frames} each",
                f"frames intact: {self.intact}/{self.total}",
                f"frames counted by the transports: sent {c.frames_sent}, "
                f"echoed {s.frames_sent}, received back {c.frames_received}",
                f"short sends: {yes(c.short_sends + s.short_sends > 0)}",
                f"a frame took more than one read: {yes(self._split_reads())}",
            ]
        )

    def _split_reads(self) -> bool:
        # A read that moved something, but less than one whole frame (EAGAINs move nothing).
        return any(
            0 < r.returned < self.size + 4 for r in self.trace.records if r.direction == "in"
        )

    def details(self) -> str:
        c, s = self.client, self.server
        ms = sorted(x * 1e3 for x in self.rtts)
        return "\n".join(
            [
                f"size={self.size} B ({human_size(self.size)}) clients={self.clients} "
                f"frames={self.frames} each",
                f"frames intact: {self.intact}/{self.total}",
                f"clients: {c.send_calls} sends ({c.short_sends} short, {c.send_eagain} EAGAIN), "
                f"{c.recv_calls} reads ({c.short_recvs} short, {c.recv_eagain} EAGAIN)",
                f"server:  {s.send_calls} sends ({s.short_sends} short, {s.send_eagain} EAGAIN), "
                f"{s.recv_calls} reads ({s.short_recvs} short, {s.recv_eagain} EAGAIN)",
                f"round trip: median {statistics.median(ms):.3f} ms, "
                f"max {ms[-1]:.3f} ms; whole run {self.elapsed * 1e3:.0f} ms",
            ]
        )


def echo_lab(
    size: int = 4 * KiB,
    clients: int = 2,
    frames: int | None = None,
    *,
    sndbuf: int | None = None,
    rcvbuf: int | None = None,
    budget: int = 48 * MiB,
    traced: bool = True,
    timeout: float = 60.0,
) -> EchoResult:
    """An echo server and ``clients`` clients on loopback, all framed and traced.

    Each client sends a frame, waits for it to come back, checks its SHA-256,
    and sends the next (ping-pong). ``frames`` per client defaults to as many
    as fit in ``budget`` bytes in all (at least 1, at most 20), so a 16 MiB run
    stays short. ``traced=False`` leaves the tracing layer out, for timing runs.
    """
    if frames is None:
        frames = max(1, min(20, budget // max(1, size * clients)))
    limit = max(DEFAULT_MAX_FRAME_SIZE, size)
    trace = Trace(capture=16)
    rtts: list[float] = []
    intact = [0]
    done = [0]
    start = time.perf_counter()
    with EventWatcher() as ew:

        def stack(side: str) -> FramedTransport:
            tcp: Any = TcpTransport(sndbuf=sndbuf, rcvbuf=rcvbuf)
            inner = TracingTransport(tcp, trace, side) if traced else tcp
            return FramedTransport(inner, max_frame_size=limit)

        server, client = stack("server"), stack("client")
        with closing(client, server):
            payloads: dict[Peer, bytes] = {}
            digests: dict[Peer, bytes] = {}
            sent_at: dict[Peer, float] = {}
            count: dict[Peer, int] = {}

            on_server = echo_owner(server)  # echoes, and obeys the water marks

            def send_next(peer: Peer) -> None:
                sent_at[peer] = time.perf_counter()
                client.resume_write(payloads[peer], peer)

            def on_client(ev: IOEvent) -> None:
                peer = ev.peer
                if ev.kind is EventKind.CONNECTED:
                    send_next(peer)
                elif ev.kind is EventKind.READABLE:
                    while (r := client.resume_read(peer)).status is IOStatus.OK:
                        rtts.append(time.perf_counter() - sent_at[peer])
                        intact[0] += hashlib.sha256(r.data).digest() == digests[peer]
                        count[peer] += 1
                        if count[peer] < frames:
                            send_next(peer)
                        else:
                            done[0] += 1

            server.attach(ew, on_server)
            client.attach(ew, on_client)
            address = server.bind()
            for i in range(clients):
                peer = client.connect(address)
                payloads[peer] = random.Random(i).randbytes(size)
                digests[peer] = hashlib.sha256(payloads[peer]).digest()
                count[peer] = 0
            ew.run_until(lambda: done[0] == clients, timeout=timeout)
            client_counters, server_counters = client.counters(), server.counters()
    return EchoResult(
        size,
        clients,
        frames,
        intact[0],
        rtts,
        client_counters,
        server_counters,
        trace,
        time.perf_counter() - start,
    )


def plot_echo(result: EchoResult) -> Any:
    """The syscall timeline of an echo run, and its round-trip histogram."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    # A row per connection and direction: give each row room for its label.
    rows = len({(r.peer, r.direction) for r in result.trace.records})
    timeline_height = max(3.0, 0.24 * rows)
    fig = Figure(figsize=(10, timeline_height + 2.6))
    top, bottom = fig.subplots(2, 1, gridspec_kw={"height_ratios": [timeline_height, 2.0]})
    plot_timeline(result.trace, top, title=f"system calls ({len(result.trace)} traced)")
    ms = [x * 1e3 for x in result.rtts]
    bottom.hist(ms, bins=min(30, max(5, len(ms))), color="#2e86c1")
    bottom.yaxis.set_major_locator(MaxNLocator(integer=True))  # 3 frames, never 2.5
    bottom.set_xlabel("round-trip time (ms)")
    bottom.set_ylabel("frames")
    bottom.set_title(f"round trips of {len(ms)} frames of {human_size(result.size)}")
    fig.tight_layout()
    return fig


def throughput_sweep(
    sizes: Sequence[int] = (64, 1 * KiB, 16 * KiB, 256 * KiB, 4 * MiB),
    *,
    budget: int = 16 * MiB,
) -> list[EchoResult]:
    """One untraced single-client echo run per frame size, each moving about
    ``budget`` bytes (at most 20 frames), for a throughput-vs-size plot."""
    return [echo_lab(n, 1, budget=budget, traced=False) for n in sizes]


def echo_throughput(result: EchoResult) -> float:
    """Payload bytes echoed per second of round-trip time (one client)."""
    return result.size * len(result.rtts) / sum(result.rtts)


def plot_throughput(results: Sequence[EchoResult]) -> Any:
    """Throughput and median round trip against frame size, both axes logarithmic."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.4))
    left, right = fig.subplots(1, 2)
    sizes = [r.size for r in results]
    left.loglog(sizes, [echo_throughput(r) / MiB for r in results], "o-")
    left.set_xlabel("frame size (bytes)")
    left.set_ylabel("MiB echoed per second")
    left.set_title("throughput against frame size")
    right.loglog(sizes, [statistics.median(r.rtts) * 1e6 for r in results], "s-", color="#e67e22")
    right.set_xlabel("frame size (bytes)")
    right.set_ylabel("median round trip (µs)")
    right.set_title("median round trip against frame size")
    for ax in (left, right):
        ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return fig


# ------------------------------------------- 07: many small frames, one call each?
def take_one_by_one(transport: FramedTransport, peer: Peer, handle: Callable[[Any], None]) -> int:
    """On READABLE: ask for each frame with its own ``resume_read`` call, until
    the status says there is none; return the calls made."""
    calls = 1
    while (result := transport.resume_read(peer)).status is IOStatus.OK:
        handle(result.data)
        calls += 1
    return calls


def take_in_batches(transport: FramedTransport, peer: Peer, handle: Callable[[Any], None]) -> int:
    """On READABLE: take every frame that is here with one ``read_frames`` call,
    until a call returns none; return the calls made."""
    calls = 1
    while frames := transport.read_frames(peer):
        for frame in frames:
            handle(frame)
        calls += 1
    return calls


@dataclass
class SmallFrames:
    """One run of :func:`small_frames_lab`: how the server took ``frames`` frames."""

    how: str  # the name of the reading loop
    frames: int
    intact: int  # frames of the right size and content
    calls: int  # read calls the server's loop made
    readables: int  # READABLE events it handled; each ends with one call that finds nothing
    elapsed: float  # seconds, from the connect to the last frame (client and server)
    largest: int = 0  # the most frames one read call handed over

    @property
    def fruitful(self) -> int:
        """Calls that handed over at least one frame."""
        return self.calls - self.readables

    def line(self) -> str:
        return (
            f"{self.how:<16} {self.intact}/{self.frames} frames intact; "
            f"{self.fruitful} calls found frames, {self.frames / self.fruitful:.1f} each; "
            f"{self.readables} found none; "
            f"never more than {FRAMES_PER_TURN} in one call: "
            f"{'yes' if self.largest <= FRAMES_PER_TURN else 'NO'}; "
            f"{self.elapsed / self.frames * 1e6:.2f} µs per frame"
        )


class _Counting(FramedTransport):
    """The lab's server: notes the most frames one read call handed over (for a
    line that checks the fairness budget, FRAMES_PER_TURN, rather than quote it)."""

    largest = 0

    def read_frames(self, peer: Peer, limit: int | None = None) -> list[bytes | bytearray]:
        frames = super().read_frames(peer, limit)
        self.largest = max(self.largest, len(frames))
        return frames

    def resume_read(self, peer: Peer, *args: Any, **kwargs: Any) -> ReadResult:
        result = super().resume_read(peer, *args, **kwargs)
        if result.status is IOStatus.OK:
            self.largest = max(self.largest, 1)
        return result


def small_frames_lab(count: int = 50_000, size: int = 64) -> list[SmallFrames]:
    """A client streams ``count`` frames of ``size`` bytes to a server on loopback,
    once for each reading loop (:func:`take_one_by_one`, :func:`take_in_batches`).

    The client queues its frames in batches (``write_frames``) and obeys the water
    marks, so what differs between the two runs is only how the server reads.
    Client and server share one loop (one thread): the time per frame is both
    sides' work, of which only the server's differs between the runs.
    """
    return [_stream(loop, count, size) for loop in (take_one_by_one, take_in_batches)]


def _stream(
    loop: Callable[[FramedTransport, Peer, Callable[[Any], None]], int], count: int, size: int
) -> SmallFrames:
    payload = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    got, intact, calls, readables = [0], [0], [0], [0]
    left, paused = [count], [False]

    def handle(frame: Any) -> None:
        got[0] += 1
        intact[0] += frame == payload

    with EventWatcher() as ew:
        server = _Counting(TcpTransport(), coalesce=True)
        client = FramedTransport(TcpTransport(), coalesce=True)
        with closing(client, server):

            def on_server(ev: IOEvent) -> None:
                if ev.kind is EventKind.READABLE:
                    readables[0] += 1
                    calls[0] += loop(server, ev.peer, handle)

            def pump(peer: Peer) -> None:
                while left[0] and not paused[0]:
                    batch = min(256, left[0])
                    left[0] -= batch
                    client.write_frames([payload] * batch, peer)

            def on_client(ev: IOEvent) -> None:
                if ev.kind is EventKind.CONNECTED:
                    pump(ev.peer)
                elif ev.kind is EventKind.PAUSE_WRITING:
                    paused[0] = True
                elif ev.kind is EventKind.RESUME_WRITING:
                    paused[0] = False
                    pump(ev.peer)

            server.attach(ew, on_server)
            client.attach(ew, on_client)
            address = server.bind()
            start = time.perf_counter()
            client.connect(address)
            ew.run_until(lambda: got[0] == count, timeout=60)
            elapsed = time.perf_counter() - start
    return SmallFrames(
        loop.__name__, count, intact[0], calls[0], readables[0], elapsed, server.largest
    )


# --------------------------------------------------- 07: the stored benchmark
def load_benchmark(path: str | None = None) -> list[dict[str, Any]]:
    """The records of a ``python -m barknet bench --json`` run (default: the
    repository's ``benchmarks/results.json``). Each has ``impl``, ``metric``,
    ``size_bytes``, ``value`` and ``ratio_to_raw``."""
    import json
    from pathlib import Path

    where = Path(path) if path else Path(__file__).resolve().parents[2] / "benchmarks"
    if where.is_dir():
        where = where / "results.json"
    data = json.loads(where.read_text(encoding="utf-8"))
    records = data["records"] if isinstance(data, dict) else data
    return [r for r in records if {"impl", "metric", "size_bytes", "value"} <= r.keys()]


def benchmark_summary(records: Sequence[dict[str, Any]]) -> str:
    """What a stored run compared: implementations, figures, sizes (no numbers)."""
    impls = list(dict.fromkeys(r["impl"] for r in records))
    lines = [f"implementations: {', '.join(impls)}"]
    for metric in dict.fromkeys(r["metric"] for r in records):
        sizes = sorted({r["size_bytes"] for r in records if r["metric"] == metric})
        lines.append(f"{metric}: at {', '.join(human_size(n) for n in sizes)}")
    return "\n".join(lines)


def benchmark_command(
    json_path: str, *, quick: bool = True, impls: str | None = None
) -> list[str]:
    """The command line that reruns the benchmark with this kernel's Python."""
    import sys

    command = [sys.executable, "-m", "barknet", "bench", "--json", str(json_path)]
    if quick:
        command.append("--quick")
    if impls:
        command += ["--impls", impls]
    return command


def run_benchmark(
    command: Sequence[str], json_path: str, on_line: Callable[[str], None] = print
) -> list[dict[str, Any]]:
    """Run ``command`` (see :func:`benchmark_command`) in a child process, hand each
    progress line to ``on_line`` as it comes, and return the records it wrote.

    The benchmark must run in processes of its own: client and server in this
    kernel would share one interpreter lock and measure each other.
    """
    import subprocess

    with subprocess.Popen(
        list(command),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    ) as child:
        assert child.stdout is not None
        for line in child.stdout:
            on_line(line.rstrip("\n"))
        code = child.wait()
    if code:
        raise RuntimeError(f"the benchmark exited with status {code}")
    return load_benchmark(json_path)


def benchmark_widget(
    runner: Callable[[Sequence[str], str, Callable[[str], None]], Any] = run_benchmark,
) -> Any:
    """A button that reruns the quick benchmark (seconds to a minute) on this machine,
    shows its progress as it goes, and plots the figures it measured."""
    import tempfile

    import ipywidgets as widgets
    from IPython.display import display

    button = widgets.Button(
        description="Run the quick benchmark",
        icon="play",
        layout=widgets.Layout(width="auto"),  # the default width cuts the label off
    )
    out = widgets.Output()

    def click(_button: Any) -> None:
        button.disabled = True
        try:
            with out, tempfile.TemporaryDirectory() as folder:
                out.clear_output()
                json_path = f"{folder}/results.json"
                records = runner(benchmark_command(json_path), json_path, print)
                display(as_image(plot_benchmark(records)))
        finally:
            button.disabled = False

    button.on_click(click)
    return widgets.VBox([button, out])


def plot_benchmark(records: Sequence[dict[str, Any]]) -> Any:
    """Round-trip latency (p50) and bulk throughput per implementation and size."""
    from matplotlib.figure import Figure

    panels = [
        ("pingpong_p50_us", "round trip, median (µs)", "latency: lower is better"),
        ("bulk_MBps", "bulk transfer (MB/s)", "throughput: higher is better"),
    ]
    panels = [p for p in panels if any(r["metric"] == p[0] for r in records)]
    fig = Figure(figsize=(10, 3.6))
    axes = fig.subplots(1, max(1, len(panels)), squeeze=False)[0]
    impls = list(dict.fromkeys(r["impl"] for r in records))
    markers = "os^Dvx*P"
    for ax, (metric, ylabel, title) in zip(axes, panels, strict=False):
        # Lines over categorical sizes on a log axis: values span orders of
        # magnitude, and bars on a log axis would exaggerate the differences.
        sizes = sorted({r["size_bytes"] for r in records if r["metric"] == metric})
        for i, impl in enumerate(impls):
            values = {
                r["size_bytes"]: r["value"]
                for r in records
                if (r["impl"], r["metric"]) == (impl, metric)
            }
            xs = [j for j, n in enumerate(sizes) if n in values]
            ys = [values[sizes[j]] for j in xs]
            ax.plot(xs, ys, marker=markers[i % len(markers)], label=impl)
        ax.set_xticks(range(len(sizes)))
        ax.set_xticklabels([human_size(n) for n in sizes])
        ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
        ax.set_xlabel("message size")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def echo_lab_widget(size: int = 4 * KiB, clients: int = 2) -> Any:
    """Sliders for frame size (16 B - 16 MiB, doubling) and number of clients (1-8)."""
    import ipywidgets as widgets

    return slider_app(
        {
            "size": size_slider("frame size", 16, 16 * MiB, size),
            "clients": widgets.IntSlider(
                value=clients, min=1, max=8, description="clients", continuous_update=False
            ),
        },
        echo_lab,
        plot_echo,
        EchoResult.details,
    )
