"""Notebooks 00 and 01: is everything installed, and what blocking costs.

The blocking lessons run on plain sockets; the thread-per-connection experiment
measures memory and time for threads against one reactor on the same echo work."""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .. import __version__
from ..events import EventKind, IOEvent, IOStatus
from ..framed import FramedTransport
from ..reactor import EventWatcher
from ..tcp import TcpTransport
from .common import MiB, closing, connected_pair, echo_owner, yes

# ------------------------------------------------------- 00: start here
__all__ = [
    "BlockingOutcome",
    "ThreadCost",
    "blocking_recv",
    "check_environment",
    "nonblocking_recv",
    "plot_thread_cost",
    "thread_cost_summary",
    "thread_per_connection",
]


def check_environment(message: bytes = b"hello, barknet") -> str:
    """Import check plus one framed round trip over loopback; returns a report."""
    lines = [f"barknet {__version__} imported: yes"]
    got: list[bytes] = []
    with EventWatcher() as ew:
        server = FramedTransport(TcpTransport())
        client = FramedTransport(TcpTransport())
        with closing(client, server):
            on_server = echo_owner(server)  # echoes, and obeys the water marks

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
    lines.append(f"round trip intact: {yes(got[0] == message)}")
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
                f"the thread sat waiting for the whole timeout: {yes(waited)}"
            )
        return (
            f"non-blocking recv: raised {self.raised} ({self.errno_name})\n"
            f"returned at once, without waiting: {yes(self.elapsed < 0.01)}"
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
        f"each thread reserved megabytes of address space for its stack: {yes(megabytes)}",
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
