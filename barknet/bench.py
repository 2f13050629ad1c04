"""Benchmarks side by side: barknet against what you would otherwise use.

Theory of operation
-------------------
Every implementation speaks the same wire format (a 4-byte big-endian length,
then the payload) and plays both sides: the client and the server of one
measurement are the same implementation, in **two separate processes**, so the
GIL never serialises them and each side's costs are its own. Compared are
barknet's :class:`~barknet.framed.FramedTransport`; raw blocking sockets
(``sendall`` and ``recv_into`` with the 4-byte header, one reused buffer: the
practical floor for Python); asyncio streams (``readexactly``); a careful
asyncio ``Protocol``; and, when they are installed (``pip install
barknet[bench]``), uvloop running that same ``Protocol`` and Twisted's
``Int32StringReceiver``.

The server understands three commands, each sent as the first frame of a
conversation: ``echo`` (send every later frame back), ``sink N`` (swallow N
frames, then answer ``ok``) and ``rss`` (answer ``ready``, take the next frame,
answer with how much its peak resident memory grew meanwhile). From them:

* **ping-pong**: one frame out, the echo back, timed one by one after a
  warm-up; p50 and p99 of the round trips, for 16 B, 1 KiB and 64 KiB;
* **bulk**: ``sink N`` then N frames as fast as the sender can, timed from the
  first byte sent to the ``ok``: MB/s (1e6 bytes) for 1 MiB and 16 MiB frames,
  frames/s for 64 B frames;
* **peak memory**: a fresh server receives one 16 MiB frame; its peak RSS
  (``VmHWM``) minus its RSS before, as a multiple of the frame size.

Fairness, because two effects on a small VM move figures by several times and
must not decide the comparison:

* **Allocator state.** glibc hands large freed blocks back to the kernel until
  a freed ``mmap`` block raises its threshold; in a "cold" process every large
  read then costs an ``mmap``/``munmap`` pair and fresh page faults. Every
  child process therefore allocates and frees one 1 MiB block at start-up, so
  they all start in the same (warm) state.
* **CPU placement.** Client and server on one CPU hand the token back and forth
  without cross-CPU wake-ups (best for latency); on two CPUs they run in
  parallel (best for throughput). Where ``os.sched_setaffinity`` works, both
  are pinned to one CPU for ping-pong and to two for bulk; the placement is
  printed. Compare ratios from one run, never absolute figures across runs.

Implementations are interleaved within each repetition (the order rotates),
so a burst of load from elsewhere on the machine smears over all of them
rather than sinking one. Each figure is the median over repetitions, and each
is also given as a ratio to raw blocking sockets measured in the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

__all__ = [
    "FULL",
    "IMPLS",
    "QUICK",
    "Plan",
    "available_impls",
    "format_table",
    "machine_info",
    "main",
    "run",
]

IMPLS = ("raw", "barknet", "asyncio-streams", "asyncio-protocol", "uvloop", "twisted")
HOST = "127.0.0.1"
HEADER = struct.Struct("!I")
MAX_FRAME = 64 * 1024 * 1024
CHILD_TIMEOUT = 300.0
WARM_BLOCK = 1024 * 1024
#: barknet runs with write coalescing on (see FramedTransport): frames written in
#: one loop turn leave together.
COALESCE = os.environ.get("BARKNET_BENCH_COALESCE", "1") == "1"


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

    def __init__(self, send: Callable[[Any], None]) -> None:
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


# --------------------------------------------------------------------- raw
def _raw_recv_exact(sock: socket.socket, view: memoryview) -> None:
    got, want = 0, len(view)
    while got < want:
        n = sock.recv_into(view[got:])
        if not n:
            raise EOFError("connection closed mid-frame")
        got += n


class _RawReader:
    """Blocking frame reader: header, then the payload into one reused buffer."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.header = bytearray(4)
        self.header_view = memoryview(self.header)
        self.buf = bytearray(64 * 1024)
        self.view = memoryview(self.buf)

    def frame(self) -> memoryview | None:
        try:
            _raw_recv_exact(self.sock, self.header_view)
        except EOFError:
            return None
        (size,) = HEADER.unpack(self.header)
        if size > len(self.buf):
            self.view.release()
            self.buf = bytearray(size)
            self.view = memoryview(self.buf)
        view = self.view[:size]
        _raw_recv_exact(self.sock, view)
        return view


def _raw_send(sock: socket.socket, payload: Any) -> None:
    data = memoryview(payload).cast("B")
    buffers = [memoryview(HEADER.pack(len(data))), data]
    while buffers:
        sent = sock.sendmsg(buffers)
        while sent:
            if sent >= len(buffers[0]):
                sent -= len(buffers.pop(0))
            else:
                buffers[0] = buffers[0][sent:]
                sent = 0


def _serve_raw(ready: Callable[[int], None]) -> None:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((HOST, 0))
    listener.listen(8)
    ready(listener.getsockname()[1])
    while True:  # one connection at a time: the clients use them one after another
        sock, _ = listener.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with sock:
            reader, session = _RawReader(sock), Session(lambda p, s=sock: _raw_send(s, p))
            while (frame := reader.frame()) is not None:
                session.frame(frame)


def _raw_connect(port: int) -> socket.socket:
    sock = socket.create_connection((HOST, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _raw_client(port: int, tasks: list[list[Any]], place: Callable[[str], None]) -> list[Any]:
    results = []
    for kind, size, count, warm in tasks:
        place(kind)
        with _raw_connect(port) as sock:
            reader = _RawReader(sock)
            frame = HEADER.pack(size) + b"x" * size
            if kind == "pingpong":
                sock.sendall(HEADER.pack(4) + b"echo")
                samples = []
                for i in range(warm + count):
                    t0 = _now()
                    sock.sendall(frame)
                    reader.frame()
                    if i >= warm:
                        samples.append(_now() - t0)
                results.append(samples)
            else:
                elapsed = 0
                for n in (warm, count):
                    command = f"sink {n}".encode()
                    t0 = _now()
                    sock.sendall(HEADER.pack(len(command)) + command)
                    for _ in range(n):
                        sock.sendall(frame)
                    assert bytes(reader.frame() or b"") == b"ok"
                    elapsed = _now() - t0
                results.append(elapsed)
    return results


# ----------------------------------------------------------------- barknet
def _serve_barknet(ready: Callable[[int], None]) -> None:
    from . import EventKind, EventWatcher, FramedTransport, IOStatus, TcpTransport

    with EventWatcher() as ew:
        server = FramedTransport(
            TcpTransport(HOST, 0), max_frame_size=MAX_FRAME, coalesce=COALESCE
        )
        sessions: dict[Any, Session] = {}

        def on_event(ev: Any) -> None:
            peer = ev.peer
            if ev.kind is EventKind.READABLE:
                session = sessions[peer]
                resume_read, recycle = server.resume_read, server.recycle
                while (r := resume_read(peer)).status is IOStatus.OK:
                    if not session.frame(r.data):
                        recycle(r.data, peer)  # not echoed, so not kept: reuse its memory
            elif ev.kind is EventKind.ACCEPTED:
                sessions[peer] = Session(lambda p: server.resume_write(p, peer))
            elif ev.kind is EventKind.CLOSED:
                sessions.pop(peer, None)

        server.attach(ew, on_event)
        ready(server.bind()[1])
        ew.run()


class _BarknetClient:
    """One connection's client side over ``FramedTransport``: ping-pong or bulk."""

    def __init__(self, ew: Any, port: int, size: int) -> None:
        from . import EventKind, FramedTransport, IOStatus, TcpTransport

        self.kinds, self.ok = EventKind, IOStatus.OK
        self.ew = ew
        self.transport = FramedTransport(
            TcpTransport(HOST, port), max_frame_size=MAX_FRAME, coalesce=COALESCE
        )
        self.transport.attach(ew, self.on_event)
        self.peer = self.transport.connect()
        self.payload = b"x" * size
        self.paused = self.done = False
        self.on_frame: Callable[[Any], None] = self.finish
        self.left = 0
        self.samples: list[int] = []
        self.t0 = self.count = self.warm = self.round_trips = 0

    def on_event(self, ev: Any) -> None:
        kind, kinds = ev.kind, self.kinds
        if kind is kinds.READABLE:
            read, on_frame, ok = self.transport.resume_read, self.on_frame, self.ok
            while (r := read(ev.peer)).status is ok:
                on_frame(r.data)
        elif kind is kinds.PAUSE_WRITING:
            self.paused = True
        elif kind is kinds.RESUME_WRITING:
            self.paused = False
            self.pump()
        elif kind is kinds.CLOSED and ev.error is not None:
            raise ev.error

    def finish(self, data: Any) -> None:
        self.done = True

    def wait(self) -> None:
        self.ew.run_until(lambda: self.done, timeout=CHILD_TIMEOUT)
        self.done = False

    def pingpong(self, count: int, warm: int) -> list[int]:
        self.count, self.warm, self.on_frame = count, warm, self.on_echo
        self.transport.resume_write(b"echo", self.peer)
        self.t0 = _now()
        self.transport.resume_write(self.payload, self.peer)
        self.wait()
        return self.samples

    def on_echo(self, data: Any) -> None:
        t = _now()
        done = self.round_trips = self.round_trips + 1
        if done > self.warm:
            self.samples.append(t - self.t0)
        if done < self.warm + self.count:
            self.t0 = _now()
            self.transport.resume_write(self.payload, self.peer)
        else:
            self.done = True

    def bulk(self, count: int) -> int:
        self.on_frame, self.left = self.finish, count
        t0 = _now()
        self.transport.resume_write(f"sink {count}".encode(), self.peer)
        self.pump()
        self.wait()
        return _now() - t0

    def pump(self) -> None:
        write, payload, peer = self.transport.resume_write, self.payload, self.peer
        while self.left and not self.paused:
            self.left -= 1
            write(payload, peer)

    def close(self) -> None:
        self.transport.close()
        self.ew.run_once(0)


def _barknet_client(port: int, tasks: list[list[Any]], place: Callable[[str], None]) -> list[Any]:
    from . import EventWatcher

    results: list[Any] = []
    with EventWatcher() as ew:
        for kind, size, count, warm in tasks:
            place(kind)
            client = _BarknetClient(ew, port, size)
            try:
                if kind == "pingpong":
                    results.append(client.pingpong(count, warm))
                else:
                    client.bulk(warm)
                    results.append(client.bulk(count))
            finally:
                client.close()
    return results


# ----------------------------------------------------------------- asyncio
def _new_loop(impl: str) -> Any:
    import asyncio

    if impl == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def _make_protocol_class() -> Any:
    import asyncio

    class FramedProtocol(asyncio.Protocol):
        """A careful length-prefix Protocol: one growing buffer, one offset, no
        rescans; each frame is copied out once."""

        def __init__(self, on_frame: Callable[[Any], None] | None = None) -> None:
            self.buf = bytearray()
            self.on_frame = on_frame
            self.paused = False
            self.on_resume: Callable[[], None] | None = None
            self.transport: Any = None
            self.closed = asyncio.get_running_loop().create_future()

        def connection_made(self, transport: Any) -> None:
            self.transport = transport
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def data_received(self, data: bytes) -> None:
            buf = self.buf
            buf += data
            start, end = 0, len(buf)
            on_frame, unpack_from = self.on_frame, HEADER.unpack_from
            while end - start >= 4:
                (size,) = unpack_from(buf, start)
                stop = start + 4 + size
                if stop > end:
                    break
                with memoryview(buf) as view:
                    frame = bytes(view[start + 4 : stop])
                start = stop
                on_frame(frame)  # type: ignore[misc]
            if start:
                del buf[:start]

        def send(self, payload: Any) -> None:
            self.transport.write(HEADER.pack(len(payload)) + payload)

        def pause_writing(self) -> None:
            self.paused = True

        def resume_writing(self) -> None:
            self.paused = False
            if self.on_resume is not None:
                self.on_resume()

        def connection_lost(self, exc: Exception | None) -> None:
            if not self.closed.done():
                self.closed.set_result(exc)

    return FramedProtocol


def _serve_asyncio(impl: str, ready: Callable[[int], None]) -> None:
    import asyncio

    loop = _new_loop(impl)
    asyncio.set_event_loop(loop)

    async def handle_stream(reader: Any, writer: Any) -> None:
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        session = Session(lambda p: writer.write(HEADER.pack(len(p)) + p))
        try:
            while True:
                (size,) = HEADER.unpack(await reader.readexactly(4))
                data = await reader.readexactly(size)
                if session.frame(data):
                    await writer.drain()
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()

    async def start() -> Any:
        if impl == "asyncio-streams":
            return await asyncio.start_server(handle_stream, HOST, 0, limit=MAX_FRAME)
        protocol_class = _make_protocol_class()

        def factory() -> Any:
            proto = protocol_class()
            proto.on_frame = Session(proto.send).frame
            return proto

        return await loop.create_server(factory, HOST, 0)

    server = loop.run_until_complete(start())
    ready(server.sockets[0].getsockname()[1])
    loop.run_forever()


def _asyncio_client(
    impl: str, port: int, tasks: list[list[Any]], place: Callable[[str], None]
) -> list[Any]:
    import asyncio

    loop = _new_loop(impl)
    asyncio.set_event_loop(loop)

    async def streams_task(kind: str, size: int, count: int, warm: int) -> Any:
        reader, writer = await asyncio.open_connection(HOST, port, limit=MAX_FRAME)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        frame = HEADER.pack(size) + b"x" * size

        async def read_frame() -> bytes:
            (n,) = HEADER.unpack(await reader.readexactly(4))
            return await reader.readexactly(n)

        try:
            if kind == "pingpong":
                writer.write(HEADER.pack(4) + b"echo")
                samples = []
                for i in range(warm + count):
                    t0 = _now()
                    writer.write(frame)
                    await writer.drain()
                    await read_frame()
                    if i >= warm:
                        samples.append(_now() - t0)
                return samples
            elapsed = 0
            for n in (warm, count):
                command = f"sink {n}".encode()
                t0 = _now()
                writer.write(HEADER.pack(len(command)) + command)
                for _ in range(n):
                    writer.write(frame)
                    await writer.drain()
                assert await read_frame() == b"ok"
                elapsed = _now() - t0
            return elapsed
        finally:
            writer.close()
            await writer.wait_closed()

    async def protocol_task(kind: str, size: int, count: int, warm: int) -> Any:
        protocol_class = _make_protocol_class()
        _, proto = await loop.create_connection(protocol_class, HOST, port)
        payload = b"x" * size
        frame = HEADER.pack(size) + payload
        write = proto.transport.write
        try:
            if kind == "pingpong":
                samples: list[int] = []
                done = loop.create_future()
                t0 = [0, 0]

                def on_echo(data: bytes) -> None:
                    t = _now()
                    i = t0[1] = t0[1] + 1
                    if i > warm:
                        samples.append(t - t0[0])
                    if i < warm + count:
                        t0[0] = _now()
                        write(frame)
                    elif not done.done():
                        done.set_result(None)

                proto.on_frame = on_echo
                proto.send(b"echo")
                t0[0] = _now()
                write(frame)
                await done
                return samples
            elapsed = 0
            for n in (warm, count):
                finished = loop.create_future()
                left = [n]

                def pump(left: list[int] = left) -> None:
                    while left[0] and not proto.paused:
                        left[0] -= 1
                        write(frame)

                proto.on_frame = lambda data, f=finished: f.done() or f.set_result(data)
                proto.on_resume = pump
                t0_bulk = _now()
                proto.send(f"sink {n}".encode())
                pump()
                assert await finished == b"ok"
                elapsed = _now() - t0_bulk
            return elapsed
        finally:
            proto.transport.close()
            await proto.closed

    async def all_tasks() -> list[Any]:
        results = []
        for kind, size, count, warm in tasks:
            place(kind)
            task = streams_task if impl == "asyncio-streams" else protocol_task
            results.append(await task(kind, size, count, warm))
        return results

    try:
        return loop.run_until_complete(all_tasks())  # type: ignore[no-any-return]
    finally:
        loop.close()


# ----------------------------------------------------------------- twisted
def _twisted_protocol_class() -> Any:
    from twisted.protocols.basic import Int32StringReceiver

    class Framed(Int32StringReceiver):
        MAX_LENGTH = MAX_FRAME

        def __init__(self) -> None:
            self.on_frame: Callable[[bytes], None] | None = None
            self.paused = False
            self.on_resume: Callable[[], None] | None = None

        def connectionMade(self) -> None:
            self.transport.setTcpNoDelay(True)
            if self.factory_session is not None:
                self.on_frame = self.factory_session(self.sendString).frame

        factory_session: Any = None

        def stringReceived(self, string: bytes) -> None:
            self.on_frame(string)  # type: ignore[misc]

        # IPushProducer, so a bulk sender stops when the transport's buffer is full
        def pauseProducing(self) -> None:
            self.paused = True

        def resumeProducing(self) -> None:
            self.paused = False
            if self.on_resume is not None:
                self.on_resume()

        def stopProducing(self) -> None:
            self.paused = True

    return Framed


def _serve_twisted(ready: Callable[[int], None]) -> None:
    from twisted.internet import protocol, reactor

    framed = _twisted_protocol_class()
    framed.factory_session = Session
    factory = protocol.Factory.forProtocol(framed)
    port = reactor.listenTCP(0, factory, interface=HOST)
    ready(port.getHost().port)
    reactor.run(installSignalHandlers=False)


def _twisted_client(port: int, tasks: list[list[Any]], place: Callable[[str], None]) -> list[Any]:
    from twisted.internet import defer, reactor
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
    from twisted.python.failure import Failure

    framed = _twisted_protocol_class()
    results: list[Any] = []
    failure: list[Failure] = []

    def pingpong(proto: Any, payload: bytes, count: int, warm: int) -> Any:
        samples: list[int] = []
        done: defer.Deferred[list[int]] = defer.Deferred()
        t0 = [0, 0]  # [start of this round trip, round trips done]

        def on_echo(data: bytes) -> None:
            t = _now()
            i = t0[1] = t0[1] + 1
            if i > warm:
                samples.append(t - t0[0])
            if i < warm + count:
                t0[0] = _now()
                proto.sendString(payload)
            else:
                done.callback(samples)

        proto.on_frame = on_echo
        proto.sendString(b"echo")
        t0[0] = _now()
        proto.sendString(payload)
        return done

    @defer.inlineCallbacks
    def bulk(proto: Any, payload: bytes, count: int) -> Any:
        finished: defer.Deferred[bytes] = defer.Deferred()
        left = [count]

        def pump() -> None:
            while left[0] and not proto.paused:
                left[0] -= 1
                proto.sendString(payload)

        proto.on_frame, proto.on_resume = finished.callback, pump
        t0 = _now()
        proto.sendString(f"sink {count}".encode())
        pump()
        assert (yield finished) == b"ok"
        return _now() - t0

    @defer.inlineCallbacks
    def all_tasks() -> Any:
        for kind, size, count, warm in tasks:
            place(kind)
            proto = yield connectProtocol(TCP4ClientEndpoint(reactor, HOST, port), framed())
            payload = b"x" * size
            if kind == "pingpong":
                results.append((yield pingpong(proto, payload, count, warm)))
            else:
                proto.transport.registerProducer(proto, True)
                yield bulk(proto, payload, warm)
                results.append((yield bulk(proto, payload, count)))
                proto.transport.unregisterProducer()
            proto.transport.loseConnection()

    def stop(result: Any) -> None:
        if isinstance(result, Failure):
            failure.append(result)
        reactor.stop()

    reactor.callWhenRunning(lambda: all_tasks().addBoth(stop))
    reactor.run(installSignalHandlers=False)
    if failure:
        failure[0].raiseException()
    return results


# ------------------------------------------------------------ child processes
def _serve(impl: str, ready: Callable[[int], None]) -> None:
    if impl == "raw":
        _serve_raw(ready)
    elif impl == "barknet":
        _serve_barknet(ready)
    elif impl == "twisted":
        _serve_twisted(ready)
    else:
        _serve_asyncio(impl, ready)


def _client(
    impl: str, port: int, tasks: list[list[Any]], place: Callable[[str], None]
) -> list[Any]:
    if impl == "raw":
        return _raw_client(port, tasks, place)
    if impl == "barknet":
        return _barknet_client(port, tasks, place)
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

    def place(kind: str) -> None:
        client_cpus, server_cpus = placement[kind]
        _pin(0, client_cpus)
        _pin(spec["server_pid"], server_cpus)

    results = _client(impl, spec["port"], spec["tasks"], place)
    # Into a file, not stdout: once a uvloop loop has existed in this process, a
    # long write into a pipe arrives cut at 64 KiB (seen with uvloop 0.23).
    with open(spec["result_path"], "w") as f:
        json.dump(results, f)
    return 0


class _Server:
    """A server child: started pinned, its port read from its first line."""

    def __init__(self, impl: str, cpus: Sequence[int]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "barknet.bench", "server", impl, ",".join(map(str, cpus))],
            stdout=subprocess.PIPE,
            text=True,
        )
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        if not line.strip():
            self.close()
            raise RuntimeError(f"the {impl} server did not start")
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
            return json.load(f)  # type: ignore[no-any-return]


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
        "barknet_config": f"FramedTransport(TcpTransport(), coalesce={COALESCE})",
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
    tasks = [["pingpong", s, n, w] for s, n, w in plan.pingpong]
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


def format_table(records: list[dict[str, Any]]) -> str:
    """Rows are figures, columns implementations; each cell is the median and ×raw."""
    impls: list[str] = []
    rows: dict[tuple[str, int], dict[str, dict[str, Any]]] = {}
    for r in records:
        if r["impl"] not in impls:
            impls.append(r["impl"])
        rows.setdefault((r["metric"], r["size_bytes"]), {})[r["impl"]] = r
    labels = {
        "pingpong_p50_us": "round trip p50",
        "pingpong_p99_us": "round trip p99",
        "bulk_MBps": "bulk",
        "frames_per_s": "bulk",
        "peak_rss_ratio": "peak RSS",
    }
    width = max(17, *(len(i) + 2 for i in impls))
    lines = ["figure (unit)".ljust(31) + "".join(i.rjust(width) for i in impls)]
    for (metric, size), cells in rows.items():
        unit, _ = METRICS[metric]
        label = f"{labels[metric]} {_size_name(size)} ({unit})"
        line = label.ljust(31)
        for impl in impls:
            r = cells.get(impl)
            if r is None:
                line += "-".rjust(width)
                continue
            text = _human(r["value"])
            if impl != "raw" and r["ratio_to_raw"] is not None:
                text += f" ×{r['ratio_to_raw']:.2f}"
            line += text.rjust(width)
        lines.append(line)
    lines.append(
        "×N: ratio to raw blocking sockets in this run (latency and memory: lower is better; "
        "throughput: higher is better)"
    )
    return "\n".join(lines)


def main(
    *,
    quick: bool = False,
    json_path: str | None = None,
    impls: Sequence[str] | None = None,
    plan: Plan | None = None,
    out: TextIO | None = None,
) -> int:
    """``python -m barknet bench``: run, print the table, optionally write JSON."""
    out = sys.stdout if out is None else out
    if plan is None:
        plan = QUICK if quick else FULL
    records = run(plan, impls, out=out)
    print("\n" + format_table(records), file=out)
    if json_path:
        directory = os.path.dirname(json_path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        with open(json_path, "w") as f:
            json.dump(records, f, indent=1)
            f.write("\n")
        print(f"\nwrote {len(records)} records to {json_path}", file=out)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("server", "client"):
        sys.exit(_child_main(sys.argv[1:]))
    parser = argparse.ArgumentParser(prog="python -m barknet.bench")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json")
    args = parser.parse_args()
    sys.exit(main(quick=args.quick, json_path=args.json))
