"""Experiments for the course notebooks: each one live on loopback, bounded, and tidy.

Theory of operation
-------------------
Every experiment here is a plain function that sets something up on
``127.0.0.1`` (port 0), runs it to completion on an :class:`~barknet.EventWatcher`
(or, for the blocking-socket lessons, on plain sockets), tears everything down,
and returns a small result object. The result has a ``summary()`` made only of
facts that come out the same on every run ("frames intact: 20/20", "short
sends: yes"), so a notebook can print it in a cell that nbval compares, and a
``details()`` with the exact counts and timings that vary, for widget cells.

The notebooks call each experiment once with fixed arguments, then again from
a widget (``*_widget()`` below): a row of sliders and an output area in which
every move of a slider reruns the experiment, prints a line naming the chosen
values (``size=4096 B``) and redraws a plot.

Nothing is left running: sockets and transports are closed and threads joined
before a function returns, even when it fails, and every wait has a timeout.

matplotlib, ipywidgets and IPython are imported inside the functions that need
them, so ``import barknet.lab`` works with the standard library alone.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import random
import selectors
import socket
import statistics
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import __version__
from .events import EventKind, IOCounters, IOEvent, IOStatus, Peer
from .framed import FramedTransport
from .framing import DEFAULT_MAX_FRAME_SIZE, FrameDecoder, encode_frame
from .reactor import EventWatcher
from .tcp import TcpTransport
from .trace import LoopTrace, Trace, TracingTransport, plot_timeline

__all__ = [
    "BlockingOutcome",
    "EchoResult",
    "NagleResult",
    "PartialIOResult",
    "ThreadCost",
    "benchmark_summary",
    "blocking_recv",
    "check_environment",
    "connected_pair",
    "delimiter_escape",
    "delimiter_split",
    "delimiter_unescape",
    "echo_lab",
    "echo_lab_widget",
    "echo_throughput",
    "fixed_size_split",
    "human_size",
    "late_timer",
    "load_benchmark",
    "nagle_trap",
    "nonblocking_recv",
    "one_send_many_reads",
    "partial_io",
    "partial_io_widget",
    "plot_benchmark",
    "plot_echo",
    "plot_partial_io",
    "plot_thread_cost",
    "plot_throughput",
    "powers_of_two",
    "reactor_tour",
    "thread_cost_summary",
    "thread_per_connection",
    "throughput_sweep",
    "two_sends_one_read",
    "wire_capture",
]

LOOPBACK = "127.0.0.1"
KiB = 1024
MiB = 1024 * KiB


def human_size(n: int) -> str:
    """``4096`` -> ``"4 KiB"``; exact powers of two print without decimals."""
    for unit, scale in (("MiB", MiB), ("KiB", KiB)):
        if n >= scale:
            value = n / scale
            return f"{value:g} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{n} B"


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def powers_of_two(lo: int, hi: int) -> list[int]:
    """``lo, 2*lo, ... hi`` (both powers of two): the stops of a log-scale slider."""
    out, n = [], lo
    while n <= hi:
        out.append(n)
        n *= 2
    return out


# ----------------------------------------------------------------- plumbing
@contextlib.contextmanager
def connected_pair(
    *, rcvbuf: int | None = None, sndbuf: int | None = None, timeout: float = 5.0
) -> Iterator[tuple[socket.socket, socket.socket]]:
    """A real TCP connection over loopback: ``(client, server_side)``, both blocking.

    ``rcvbuf``/``sndbuf`` are set on the listener and the client before the
    handshake (when TCP picks its window), so they hold for the whole connection.
    Both sockets are closed on the way out.
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server: socket.socket | None = None
    try:
        for s in (listener, client):
            if rcvbuf is not None:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            if sndbuf is not None:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        listener.bind((LOOPBACK, 0))
        listener.listen(1)
        listener.settimeout(timeout)
        client.settimeout(timeout)
        client.connect(listener.getsockname())
        server, _ = listener.accept()
        server.settimeout(None)
        client.settimeout(None)
        yield client, server
    finally:
        for s in (client, server, listener):
            if s is not None:
                s.close()


@contextlib.contextmanager
def _closing(*transports: Any) -> Iterator[None]:
    try:
        yield
    finally:
        for t in transports:
            t.close()


# ------------------------------------------------------- 00: start here
def check_environment(message: bytes = b"hello, barknet") -> str:
    """Import check plus one framed round trip over loopback; returns a report."""
    lines = [f"barknet {__version__} imported: yes"]
    got: list[bytes] = []
    with EventWatcher() as ew:
        server = FramedTransport(TcpTransport())
        client = FramedTransport(TcpTransport())
        with _closing(client, server):

            def on_server(ev: IOEvent) -> None:
                if ev.kind is EventKind.READABLE:
                    while (r := server.resume_read(ev.peer)).status is IOStatus.OK:
                        server.resume_write(bytes(r.data), ev.peer)

            def on_client(ev: IOEvent) -> None:
                if ev.kind is EventKind.READABLE:
                    while (r := client.resume_read(ev.peer)).status is IOStatus.OK:
                        got.append(bytes(r.data))

            server.attach(ew, on_server)
            client.attach(ew, on_client)
            address = server.bind()
            peer = client.connect(address)
            client.resume_write(message, peer)
            ew.run_until(lambda: bool(got), timeout=5)
    lines.append(f"sent one frame to 127.0.0.1:{address[1]}: {message!r}")
    lines.append(f"the echo server sent back:        {got[0]!r}")
    lines.append(f"round trip intact: {_yes(got[0] == message)}")
    return "\n".join(lines)


# --------------------------------------------- 01: blocking vs non-blocking
@dataclass
class BlockingOutcome:
    """What one ``recv`` on an idle connection did, and how long it took."""

    mode: str
    raised: str
    errno_name: str
    elapsed: float
    timeout: float | None = None

    def summary(self) -> str:
        if self.mode == "blocking":
            waited = self.timeout is not None and self.elapsed >= self.timeout * 0.9
            return (
                f"blocking recv, settimeout({self.timeout}): raised {self.raised}\n"
                f"the thread sat waiting for the whole timeout: {_yes(waited)}"
            )
        return (
            f"non-blocking recv: raised {self.raised} ({self.errno_name})\n"
            f"returned at once, without waiting: {_yes(self.elapsed < 0.01)}"
        )


def blocking_recv(timeout: float = 0.2) -> BlockingOutcome:
    """``recv`` on a blocking socket with nothing to read: it waits (here, until
    ``timeout`` seconds pass; without a timeout it would wait for ever)."""
    with connected_pair() as (client, _server):
        client.settimeout(timeout)
        start = time.perf_counter()
        try:
            client.recv(1024)
        except TimeoutError as exc:
            return BlockingOutcome(
                "blocking", type(exc).__name__, "", time.perf_counter() - start, timeout
            )
    raise AssertionError("recv returned data nobody sent")


def nonblocking_recv() -> BlockingOutcome:
    """``recv`` on a non-blocking socket with nothing to read: EAGAIN, at once."""
    with connected_pair() as (client, _server):
        client.setblocking(False)
        start = time.perf_counter()
        try:
            client.recv(1024)
        except BlockingIOError as exc:
            elapsed = time.perf_counter() - start
            name = errno.errorcode.get(exc.errno or 0, "?")
            return BlockingOutcome("non-blocking", type(exc).__name__, name, elapsed)
    raise AssertionError("recv returned data nobody sent")


def _vm_size() -> int:
    """Address space of this process in bytes (Linux), 0 where unknown."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@dataclass
class ThreadCost:
    """One row of :func:`thread_per_connection`: ``n`` connections served two ways."""

    connections: int
    threads_started: int
    address_space_per_thread: int  # bytes of address space each thread reserved
    thread_round: float  # seconds to echo one byte on every connection, thread each
    reactor_round: float  # the same with one thread running a reactor


def _echo_thread(sock: socket.socket) -> None:
    while data := sock.recv(64):
        sock.sendall(data)


def _warm_malloc_arenas() -> None:
    """Make glibc create its per-thread malloc arenas now (up to 8 per core, 64 MiB
    of address space each), so they do not count as the threads' own cost later."""
    count = 8 * (os.cpu_count() or 1) + 1
    barrier = threading.Barrier(count + 1, timeout=10)

    def allocate() -> None:
        block = bytearray(4096)  # the first allocation in a thread picks its arena
        barrier.wait()  # all alive at once, so each needs an arena of its own
        del block

    threads = [threading.Thread(target=allocate, daemon=True) for _ in range(count)]
    for t in threads:
        t.start()
    barrier.wait()
    for t in threads:
        t.join(timeout=5)


def thread_per_connection(counts: Sequence[int] = (25, 50, 100, 200)) -> list[ThreadCost]:
    """Serve ``n`` idle loopback connections with one thread each, then with one
    reactor thread, and echo one byte on every connection in both setups.

    What it measures per ``n``: how much address space the threads reserve (each
    gets its own stack), and how long one round of ``n`` echoes takes. Every
    thread is joined and every socket closed before it returns.
    """
    rows = []
    _warm_malloc_arenas()
    for n in counts:
        with contextlib.ExitStack() as stack:
            pairs = [stack.enter_context(connected_pair()) for _ in range(n)]
            before = _vm_size()
            threads = [
                threading.Thread(target=_echo_thread, args=(s,), daemon=True) for _, s in pairs
            ]
            try:
                for t in threads:
                    t.start()
                per_thread = (_vm_size() - before) // n if before else 0
                thread_round = _echo_round([c for c, _ in pairs])
            finally:
                for client, _ in pairs:
                    client.shutdown(socket.SHUT_WR)  # EOF: every echo thread returns
                for t in threads:
                    t.join(timeout=5)
            alive = sum(t.is_alive() for t in threads)
            if alive:
                raise RuntimeError(f"{alive} echo threads did not stop")
        with contextlib.ExitStack() as stack:
            pairs = [stack.enter_context(connected_pair()) for _ in range(n)]
            reactor_round = _reactor_echo_round(pairs)
        rows.append(ThreadCost(n, len(threads), per_thread, thread_round, reactor_round))
    return rows


def _echo_round(clients: list[socket.socket]) -> float:
    start = time.perf_counter()
    for c in clients:
        c.sendall(b"x")
    for c in clients:
        c.settimeout(5)
        if c.recv(1) != b"x":
            raise RuntimeError("echo lost a byte")
    return time.perf_counter() - start


def _reactor_echo_round(pairs: list[tuple[socket.socket, socket.socket]]) -> float:
    with EventWatcher() as ew:
        for _, s in pairs:
            s.setblocking(False)

            def echo(s: socket.socket = s) -> None:
                with contextlib.suppress(BlockingIOError):
                    s.send(s.recv(64))

            ew.watch_read(s.fileno(), echo)
        clients = [c for c, _ in pairs]
        done = threading.Event()
        elapsed: list[float] = []

        def drive() -> None:
            elapsed.append(_echo_round(clients))
            done.set()
            ew.stop()

        # The clients block, so they run in a helper thread while the reactor serves.
        helper = threading.Thread(target=drive, daemon=True)
        helper.start()
        try:
            ew.run_until(done.is_set, timeout=10)
        finally:
            helper.join(timeout=5)
        for _, s in pairs:
            ew.unwatch(s.fileno())
    return elapsed[0]


def thread_cost_summary(rows: list[ThreadCost]) -> str:
    """The parts of :func:`thread_per_connection` that do not vary from run to run."""
    big = rows[-1]
    # Megabytes, not an exact figure: the stack size follows `ulimit -s`, glibc
    # reuses a few cached stacks and may add a malloc arena for some threads.
    megabytes = big.address_space_per_thread >= MiB
    lines = [
        f"{big.connections} connections: {big.threads_started} threads, one per connection",
        f"each thread reserved megabytes of address space for its stack: {_yes(megabytes)}",
        f"the reactor served the same {big.connections} connections with 1 thread",
    ]
    return "\n".join(lines)


def plot_thread_cost(rows: list[ThreadCost]) -> Any:
    """Address space and time per echo round, threads vs one reactor."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.2))
    left, right = fig.subplots(1, 2)
    ns = [r.connections for r in rows]
    left.plot(ns, [r.address_space_per_thread * r.connections / MiB for r in rows], "o-")
    left.set_xlabel("connections (one thread each)")
    left.set_ylabel("address space reserved (MiB)")
    left.set_title("stacks add up")
    right.plot(ns, [r.thread_round * 1e3 for r in rows], "o-", label="thread per connection")
    right.plot(ns, [r.reactor_round * 1e3 for r in rows], "s-", label="one reactor thread")
    right.set_xlabel("connections")
    right.set_ylabel("one echo on each (ms)")
    right.set_title("time for one round of echoes")
    right.legend(fontsize=8)
    fig.tight_layout()
    return fig


# --------------------------------------------------------- 02: the reactor
def reactor_tour() -> LoopTrace:
    """A short, scripted run of the reactor with every kind of callback in it.

    A ``call_soon`` at the start; timers at 10, 20 and 40 ms; a timer at 25 ms
    that writes into a socket pair, which makes the reader's readiness callback
    fire; one write-readiness callback that unwatches itself. The returned
    :class:`LoopTrace` lists what ran, in order.
    """
    trace = LoopTrace()
    a, b = socket.socketpair()
    try:
        a.setblocking(False)
        b.setblocking(False)
        with EventWatcher() as ew:
            received: list[bytes] = []
            finished: list[bool] = []

            def start() -> None:
                ew.watch_write(a.fileno(), socket_writable)

            def socket_writable() -> None:
                ew.unwatch_write(a.fileno())  # writable is almost always true: ask once

            def tick() -> None:
                pass

            def send_hello() -> None:
                a.send(b"hello")

            def socket_readable() -> None:
                received.append(b.recv(1024))

            def finish() -> None:
                finished.append(True)

            ew.watch_read(b.fileno(), socket_readable)
            ew.call_soon(start)
            for delay in (0.010, 0.020, 0.040):
                ew.call_later(delay, tick)
            ew.call_later(0.025, send_hello)
            ew.call_later(0.050, finish)
            with trace.watching(ew):
                ew.run_until(lambda: bool(finished), timeout=5)
            ew.unwatch(b.fileno())
            ew.unwatch(a.fileno())
    finally:
        a.close()
        b.close()
    return trace


def late_timer(block: float = 0.05, due: float = 0.01) -> tuple[float, float]:
    """A timer due after ``due`` s, behind a callback that hogs the loop for
    ``block`` s. Returns ``(due, actually_ran_after)``: timers mean "not before"."""
    ran: list[float] = []
    with EventWatcher() as ew:
        start = time.perf_counter()
        ew.call_soon(time.sleep, block)
        ew.call_later(due, lambda: ran.append(time.perf_counter() - start))
        ew.run_until(lambda: bool(ran), timeout=5)
    return due, ran[0]


# ------------------------------------------------------- 03: partial I/O
@dataclass
class PartialIOResult:
    """One big message pushed through a small socket buffer, call by call."""

    size: int
    sndbuf: int | None
    rcvbuf: int | None
    intact: bool
    sender: IOCounters
    receiver: IOCounters
    trace: Trace
    elapsed: float

    @property
    def first_send(self) -> tuple[int, int]:
        r = next(r for r in self.trace.records if r.direction == "out")
        return r.asked, r.returned

    def summary(self) -> str:
        """Only what is the same on every run."""
        asked, took = self.first_send
        reads = self.receiver.recv_calls - self.receiver.recv_eagain
        return "\n".join(
            [
                f"size={self.size} B sndbuf={self.sndbuf} B",
                f"arrived intact: {_yes(self.intact)}",
                f"first send asked for {asked} B; the kernel took fewer: {_yes(took < asked)}",
                f"short sends: {_yes(self.sender.short_sends > 0)}",
                f"the message came in more than one read: {_yes(reads > 1)}",
            ]
        )

    def details(self) -> str:
        """Exact counts: these vary a little from run to run."""
        s, r = self.sender, self.receiver
        return "\n".join(
            [
                f"size={self.size} B sndbuf={self.sndbuf} B  intact: {_yes(self.intact)}",
                f"sender:   {s.send_calls} send calls, {s.short_sends} short, "
                f"{s.send_eagain} EAGAIN",
                f"receiver: {r.recv_calls} recv calls, {r.short_recvs} short, "
                f"{r.recv_eagain} EAGAIN",
                f"took {self.elapsed * 1e3:.1f} ms",
            ]
        )


def partial_io(
    size: int = 256 * KiB,
    sndbuf: int | None = 4 * KiB,
    rcvbuf: int | None = None,
    read_size: int = 64 * KiB,
    timeout: float = 30.0,
) -> PartialIOResult:
    """Send ``size`` bytes as one message over raw TCP, offering the unsent rest
    each time the socket says WRITABLE, and read them back in ``read_size`` reads.

    ``sndbuf`` is the sender's ``SO_SNDBUF`` and ``rcvbuf`` the receiver's
    ``SO_RCVBUF`` (None: the kernel's default). Both ends are traced.
    """
    message = random.Random(size).randbytes(size)
    digest = hashlib.sha256()
    trace = Trace(frames=False)
    received = [0]
    sent = [0]
    start = time.perf_counter()
    with EventWatcher() as ew:
        rx = TracingTransport(TcpTransport(rcvbuf=rcvbuf, read_size=read_size), trace, "receiver")
        tx = TracingTransport(TcpTransport(sndbuf=sndbuf), trace, "sender")
        with _closing(tx, rx):

            def on_rx(ev: IOEvent) -> None:
                if ev.kind is EventKind.READABLE:
                    while (r := rx.resume_read(ev.peer)).status is IOStatus.OK:
                        digest.update(r.data)
                        received[0] += len(r.data)

            def push(peer: Peer) -> None:
                view = memoryview(message)
                while sent[0] < size:
                    result = tx.resume_write(view[sent[0] :], peer)
                    sent[0] += result.sent
                    if result.status is not IOStatus.OK:
                        return  # WRITABLE will call us again
                tx.suspend_write(peer)

            def on_tx(ev: IOEvent) -> None:
                if ev.kind in (EventKind.CONNECTED, EventKind.WRITABLE):
                    push(ev.peer)

            rx.attach(ew, on_rx)
            tx.attach(ew, on_tx)
            tx.connect(rx.bind())
            ew.run_until(lambda: received[0] >= size, timeout=timeout)
            sender, receiver = tx.counters(), rx.counters()
    intact = received[0] == size and digest.digest() == hashlib.sha256(message).digest()
    return PartialIOResult(
        size, sndbuf, rcvbuf, intact, sender, receiver, trace, time.perf_counter() - start
    )


def plot_partial_io(result: PartialIOResult) -> Any:
    """Bytes moved by each send and each recv, in call order. EAGAINs in red."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(9, 3.4))
    axes = fig.subplots(1, 2)
    for ax, side, verb in zip(axes, ("sender", "receiver"), ("send", "recv"), strict=True):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # call 3, never call 2.5
        recs = result.trace.select(side)
        xs = range(len(recs))
        ax.bar(
            xs,
            [r.returned for r in recs],
            width=1.0,
            color=["#e67e22" if r.short else "#2e86c1" for r in recs],
            edgecolor="white",
            linewidth=0.5 if len(recs) < 200 else 0,
        )
        eagain = [i for i, r in enumerate(recs) if r.would_block]
        if eagain:
            ax.scatter(eagain, [0] * len(eagain), marker="x", color="#c0392b", label="EAGAIN")
            ax.legend(fontsize=8)
        ax.set_xlabel(f"{verb} call number")
        ax.set_ylabel("bytes moved")
        ax.set_title(f"{side}: {len(recs)} {verb} calls")
    fig.suptitle(
        f"one {human_size(result.size)} message, SO_SNDBUF "
        f"{human_size(result.sndbuf) if result.sndbuf else 'default'} (orange: short)"
    )
    fig.tight_layout()
    return fig


@dataclass
class NagleResult:
    """Median round trips of a small request sent in different ways."""

    rounds: int
    payload: int
    medians: dict[str, float] = field(default_factory=dict)
    samples: dict[str, list[float]] = field(default_factory=dict)

    SLOW = 0.010  # a delayed ACK costs tens of milliseconds; a round trip on loopback, µs

    def summary(self) -> str:
        lines = []
        width = max(len(k) for k in self.medians)
        for name, median in self.medians.items():
            verdict = "slow: over 10 ms" if median >= self.SLOW else "fast: well under 10 ms"
            lines.append(f"{name:<{width}}  {verdict}")
        return "\n".join(lines)

    def details(self) -> str:
        return "\n".join(f"{k}: median {_duration(v)}" for k, v in self.medians.items())


def _duration(seconds: float) -> str:
    """Milliseconds with one decimal from 1 ms up, whole microseconds below: a
    delayed ACK reads as "43.9 ms", not as a five-digit count of microseconds."""
    if seconds >= 1e-3:
        return f"{seconds * 1e3:,.1f} ms"
    return f"{seconds * 1e6:.0f} µs"


NAGLE_VARIANTS = {
    "two writes, Nagle on": (False, True),
    "one sendmsg, Nagle on": (False, False),
    "two writes, TCP_NODELAY": (True, True),
}


def nagle_trap(rounds: int = 12, payload: int = 100, warmup: int = 4) -> NagleResult:
    """Ping-pong a framed request ``rounds`` times in each way of
    :data:`NAGLE_VARIANTS`: header and payload as two ``send`` calls or as one
    ``sendmsg``, with Nagle's algorithm on or off (``TCP_NODELAY``).

    The first ``warmup`` round trips are not counted: Linux acknowledges at once
    while a connection is new ("quick ACK"), which hides the trap at first.
    """
    result = NagleResult(rounds, payload)
    body = bytes(payload)
    header = encode_frame(body)[:4]
    for name, (nodelay, split) in NAGLE_VARIANTS.items():
        samples = _ping_pong(header, body, nodelay=nodelay, split=split, count=rounds + warmup)
        result.samples[name] = samples[warmup:]
        result.medians[name] = statistics.median(samples[warmup:])
    return result


def _ping_pong(
    header: bytes, body: bytes, *, nodelay: bool, split: bool, count: int
) -> list[float]:
    """``count`` round trips of one frame to an echo server; the time of each."""
    samples: list[float] = []
    with EventWatcher() as ew:
        server = TcpTransport(nodelay=nodelay)
        client = TcpTransport(nodelay=nodelay)
        with _closing(client, server):
            decoders: dict[Peer, FrameDecoder] = {}
            client_decoder = FrameDecoder(DEFAULT_MAX_FRAME_SIZE)
            sent_at = [0.0]

            def on_server(ev: IOEvent) -> None:
                if ev.kind is EventKind.READABLE:
                    dec = decoders.setdefault(ev.peer, FrameDecoder(DEFAULT_MAX_FRAME_SIZE))
                    while (r := server.resume_read(ev.peer)).status is IOStatus.OK:
                        for frame in dec.feed(r.data):
                            server.resume_write(encode_frame(frame), ev.peer)  # one write

            def request(peer: Peer) -> None:
                sent_at[0] = time.perf_counter()
                if split:
                    client.resume_write(header, peer)
                    client.resume_write(body, peer)
                else:
                    client.resume_write([header, body], peer)

            def on_client(ev: IOEvent) -> None:
                if ev.kind is EventKind.CONNECTED:
                    request(ev.peer)
                elif ev.kind is EventKind.READABLE:
                    while (r := client.resume_read(ev.peer)).status is IOStatus.OK:
                        for _ in client_decoder.feed(r.data):
                            samples.append(time.perf_counter() - sent_at[0])
                            if len(samples) < count:
                                request(ev.peer)

            server.attach(ew, on_server)
            client.attach(ew, on_client)
            client.connect(server.bind())
            ew.run_until(lambda: len(samples) >= count, timeout=20)
    return samples


# -------------------------------------------------- 04: framing strategies
def _wait_readable_bytes(sock: socket.socket, n: int, timeout: float = 5.0) -> None:
    """Wait until ``n`` bytes sit in ``sock``'s receive queue (without reading)."""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(sock, selectors.EVENT_READ)
        while True:
            peeked = sock.recv(n, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            if len(peeked) >= n:
                return
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"only {len(peeked)} of {n} bytes arrived")
            sel.select(min(left, 0.01))


def two_sends_one_read(messages: Sequence[bytes] = (b"hello", b"world")) -> list[bytes]:
    """Send each message with its own ``send``, let them all arrive, then read
    once: the reader gets them glued together. Returns what each read returned."""
    with connected_pair() as (client, server):
        for m in messages:
            client.sendall(m)
        total = sum(len(m) for m in messages)
        with contextlib.suppress(BlockingIOError):
            _wait_readable_bytes(server, total)
        return [server.recv(65536)]


def one_send_many_reads(size: int = 64 * KiB, rcvbuf: int = 4 * KiB) -> tuple[int, list[int]]:
    """One blocking ``send`` of ``size`` bytes into a connection whose receiver
    has a small ``SO_RCVBUF``, read with ``recv(size)`` calls until all is in.

    Returns ``(what the one send returned, bytes returned by each read)``. The
    sender runs in a helper thread (a blocking send waits for room), joined
    before the function returns.
    """
    message = bytes(size)
    sent: list[int] = []
    reads: list[int] = []
    with connected_pair(rcvbuf=rcvbuf) as (client, server):
        sender = threading.Thread(target=lambda: sent.append(client.send(message)), daemon=True)
        sender.start()
        try:
            server.settimeout(5)
            while sum(reads) < size:
                reads.append(len(server.recv(size)))
        finally:
            sender.join(timeout=5)
    return sent[0], reads


def delimiter_split(messages: Sequence[bytes], delimiter: bytes = b"\n") -> list[bytes]:
    """Join messages with ``delimiter`` as a sender would, then split the stream
    as the receiver must. A message that contains the delimiter comes out in pieces."""
    stream = b"".join(m + delimiter for m in messages)
    return stream.split(delimiter)[:-1]


def delimiter_escape(message: bytes, delimiter: bytes = b"\n", escape: bytes = b"\\") -> bytes:
    """Byte stuffing: put ``escape`` before every escape byte and every delimiter
    byte, so the delimiter never appears bare inside a message."""
    if len(delimiter) != 1 or len(escape) != 1:
        raise ValueError("one-byte delimiter and escape, please")
    return message.replace(escape, escape + escape).replace(delimiter, escape + delimiter)


def delimiter_unescape(
    stream: bytes, delimiter: bytes = b"\n", escape: bytes = b"\\"
) -> list[bytes]:
    """Split an escaped stream into messages. Note that it has to look at every
    byte: a length prefix lets the reader skip straight to the end instead."""
    out: list[bytes] = []
    current = bytearray()
    it = iter(stream)
    for byte in it:
        if byte == escape[0]:
            current.append(next(it))
        elif byte == delimiter[0]:
            out.append(bytes(current))
            current.clear()
        else:
            current.append(byte)
    return out


def fixed_size_split(messages: Sequence[bytes], size: int) -> tuple[list[bytes], int]:
    """Pad each message to ``size`` bytes (refusing longer ones); return the
    records as the receiver cuts them and how many bytes were padding."""
    for m in messages:
        if len(m) > size:
            raise ValueError(f"a {len(m)}-byte message does not fit in a {size}-byte record")
    stream = b"".join(m.ljust(size, b"\0") for m in messages)
    records = [stream[i : i + size] for i in range(0, len(stream), size)]
    return records, len(stream) - sum(len(m) for m in messages)


def wire_capture(payloads: Sequence[bytes], *, capture: int = 4096) -> tuple[Trace, list[bytes]]:
    """Send ``payloads`` as frames from a client to a server over real TCP, with
    a :class:`TracingTransport` under each ``FramedTransport``.

    All frames are written before the loop turns, so the server sees them in
    as few reads as the kernel likes. Returns the trace and the frames received.
    """
    trace = Trace(capture=capture)
    got: list[bytes] = []
    with EventWatcher() as ew:
        tcp_server = TcpTransport()
        server = FramedTransport(TracingTransport(tcp_server, trace, "server"))
        client = FramedTransport(TracingTransport(TcpTransport(), trace, "client"))
        with _closing(client, server):
            ready: list[Peer] = []
            accepted: list[Peer] = []

            def on_server(ev: IOEvent) -> None:
                if ev.kind is EventKind.ACCEPTED:
                    ready.append(ev.peer)
                    accepted.append(ev.peer)
                elif ev.kind is EventKind.READABLE:
                    while (r := server.resume_read(ev.peer)).status is IOStatus.OK:
                        got.append(bytes(r.data))

            def on_client(ev: IOEvent) -> None:
                if ev.kind is EventKind.CONNECTED:
                    ready.append(ev.peer)

            server.attach(ew, on_server)
            client.attach(ew, on_client)
            peer = client.connect(server.bind())
            ew.run_until(lambda: len(ready) == 2, timeout=5)
            for p in payloads:
                client.resume_write(p, peer)
            # Let every byte reach the server's socket before its first read.
            total = sum(len(p) + 4 for p in payloads)
            _wait_readable_bytes(tcp_server.socket_of(accepted[0]), total)
            ew.run_until(lambda: len(got) == len(payloads), timeout=5)
    return trace, got


# -------------------------------------------------- 05: transports and layering
@dataclass
class BigFrame:
    """One large frame sent over loopback through FramedTransport, as the
    receiving owner got it."""

    size: int
    frame_type: str
    frame_len: int
    intact: bool
    recv_calls: int
    bytes_copied: int
    scratch: int  # the decoder's scratch buffer: frames smaller than half of it go there

    def summary(self) -> str:
        """Only facts that hold on every run (the number of reads varies)."""
        one = self.frame_type == "bytearray" and self.frame_len == self.size
        return "\n".join(
            [
                f"sent one frame with a {self.size}-byte payload",
                f"the owner got: {self.frame_type} of {self.frame_len} bytes",
                f"same bytes as sent: {_yes(self.intact)}",
                f"received into one bytearray of exactly {self.size} bytes: {one}",
                f"it took more than one recv: {_yes(self.recv_calls > 1)}",
                "bytes the decoder copied inside itself: under "
                f"{self.scratch // KiB} KiB (only what came in with the header): "
                f"{_yes(self.bytes_copied < self.scratch)}",
            ]
        )


def big_frame(size: int = 16 * MiB, timeout: float = 10.0) -> BigFrame:
    """Send one ``size``-byte frame from a client to a server, both
    ``FramedTransport`` over TCP on loopback, and report how it arrived.

    A frame larger than half the decoder's scratch buffer gets a buffer of its
    exact size as soon as its header is in; the socket reads the rest straight
    into it, so the payload is not copied again inside the framing layer.
    """
    payload = random.Random(size).randbytes(size)
    got: list[Any] = []
    with EventWatcher() as ew:
        server = FramedTransport(TcpTransport(), max_frame_size=max(size, DEFAULT_MAX_FRAME_SIZE))
        client = FramedTransport(TcpTransport(), max_frame_size=max(size, DEFAULT_MAX_FRAME_SIZE))
        with _closing(client, server):
            peers: list[Peer] = []

            def on_server(ev: IOEvent) -> None:
                if ev.kind is EventKind.ACCEPTED:
                    peers.append(ev.peer)
                elif ev.kind is EventKind.READABLE:
                    while (r := server.resume_read(ev.peer)).status is IOStatus.OK:
                        got.append(r.data)

            server.attach(ew, on_server)
            client.attach(ew, lambda ev: None)
            peer = client.connect(server.bind())
            client.resume_write(payload, peer)
            ew.run_until(lambda: bool(got), timeout=timeout)
            decoder = server._recv[peers[0]].decoder  # a look inside, for the course
            counters = server.counters(peers[0])
            frame = got[0]
            return BigFrame(
                size=size,
                frame_type=type(frame).__name__,
                frame_len=len(frame),
                intact=frame == payload,
                recv_calls=counters.recv_calls,
                bytes_copied=decoder.bytes_copied,
                scratch=server.buffer_size,
            )


# ------------------------------------------------------ 07: the live lab
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
                f"short sends: {_yes(c.short_sends + s.short_sends > 0)}",
                f"a frame took more than one read: {_yes(self._split_reads())}",
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
        with _closing(client, server):
            payloads: dict[Peer, bytes] = {}
            digests: dict[Peer, bytes] = {}
            sent_at: dict[Peer, float] = {}
            count: dict[Peer, int] = {}

            def on_server(ev: IOEvent) -> None:
                if ev.kind is EventKind.READABLE:
                    while (r := server.resume_read(ev.peer)).status is IOStatus.OK:
                        server.resume_write(r.data, ev.peer)

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

    fig = Figure(figsize=(10, 6))
    top, bottom = fig.subplots(2, 1, gridspec_kw={"height_ratios": [3, 2]})
    plot_timeline(result.trace, top, title=f"system calls ({len(result.trace)} traced)")
    us = [x * 1e6 for x in result.rtts]
    bottom.hist(us, bins=min(30, max(5, len(us))), color="#2e86c1")
    bottom.set_xlabel("round-trip time (µs)")
    bottom.set_ylabel("frames")
    bottom.set_title(f"round trips of {len(us)} frames of {human_size(result.size)}")
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
    left.set_title("throughput grows with frame size, up to a point")
    right.loglog(sizes, [statistics.median(r.rtts) * 1e6 for r in results], "s-", color="#e67e22")
    right.set_xlabel("frame size (bytes)")
    right.set_ylabel("median round trip (µs)")
    right.set_title("the wait for each frame grows all the way")
    for ax in (left, right):
        ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return fig


# --------------------------------------------------- 07: the stored benchmark
def load_benchmark(path: str | None = None) -> list[dict[str, Any]]:
    """The records of a ``python -m barknet bench --json`` run (default: the
    repository's ``benchmarks/results.json``). Each has ``impl``, ``metric``,
    ``size_bytes``, ``value`` and ``ratio_to_raw``."""
    import json
    from pathlib import Path

    where = Path(path) if path else Path(__file__).resolve().parent.parent / "benchmarks"
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
    """A button that reruns the quick benchmark (about a minute) on this machine,
    shows its progress as it goes, and plots the figures it measured."""
    import tempfile

    import ipywidgets as widgets
    from IPython.display import display

    button = widgets.Button(description="Run the quick benchmark", icon="play")
    out = widgets.Output()

    def click(_button: Any) -> None:
        button.disabled = True
        try:
            with out, tempfile.TemporaryDirectory() as folder:
                out.clear_output()
                json_path = f"{folder}/results.json"
                records = runner(benchmark_command(json_path), json_path, print)
                display(_as_image(plot_benchmark(records)))
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


# ------------------------------------------------------------ widgets
def _slider_app(
    controls: dict[str, Any],
    run: Callable[..., Any],
    render: Callable[[Any], Any],
    describe: Callable[[Any], str],
) -> Any:
    """Sliders over an Output: every change reruns ``run(**values)``, prints
    ``describe(result)`` and draws ``render(result)`` inside the Output."""
    import ipywidgets as widgets
    from IPython.display import display

    out = widgets.Output()

    def update(_change: Any = None) -> None:
        values = {name: w.value for name, w in controls.items()}
        with out:
            out.clear_output(wait=True)
            result = run(**values)
            print(describe(result))
            display(_as_image(render(result)))

    for w in controls.values():
        w.observe(update, names="value")
    update()
    return widgets.VBox([*controls.values(), out])


def _as_image(fig: Any) -> Any:
    """A matplotlib Figure as a PNG image, so it shows inside a widget's Output
    whatever matplotlib backend the kernel has (or has not) set up."""
    import io

    from IPython.display import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return Image(data=buf.getvalue(), format="png")


def _size_slider(description: str, lo: int, hi: int, value: int) -> Any:
    import ipywidgets as widgets

    return widgets.SelectionSlider(
        options=[(human_size(n), n) for n in powers_of_two(lo, hi)],
        value=value,
        description=description,
        continuous_update=False,
        style={"description_width": "initial"},
        layout=widgets.Layout(width="520px"),
    )


def partial_io_widget(size: int = 256 * KiB, sndbuf: int = 4 * KiB) -> Any:
    """Sliders for message size (1 KiB - 4 MiB) and SO_SNDBUF (2 KiB - 1 MiB).

    The size stops at 4 MiB: through a few-KiB buffer every send waits for the
    receiver's (delayed) acknowledgements, and 16 MiB would take seconds.
    """
    return _slider_app(
        {
            "size": _size_slider("message size", KiB, 4 * MiB, size),
            "sndbuf": _size_slider("SO_SNDBUF", 2 * KiB, MiB, sndbuf),
        },
        partial_io,
        plot_partial_io,
        PartialIOResult.details,
    )


def echo_lab_widget(size: int = 4 * KiB, clients: int = 2) -> Any:
    """Sliders for frame size (16 B - 16 MiB, doubling) and number of clients (1-8)."""
    import ipywidgets as widgets

    return _slider_app(
        {
            "size": _size_slider("frame size", 16, 16 * MiB, size),
            "clients": widgets.IntSlider(
                value=clients, min=1, max=8, description="clients", continuous_update=False
            ),
        },
        echo_lab,
        plot_echo,
        EchoResult.details,
    )
