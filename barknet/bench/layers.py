"""What each layer of barknet costs per message: CPU time per 16-byte round trip.

Run it from the repository root:

    .venv/bin/python benchmarks/layer_costs.py [round_trips]

Client and server live in one process on one loop here, so the figure is the
CPU time of both sides of a round trip, with no scheduler in between. Four
programs do the same echo of a 16-byte frame, each adding one layer:

1. a careful hand-written ``selectors`` loop (the floor for a Python event loop);
2. the same callbacks on barknet's ``EventWatcher``;
3. ``TcpTransport`` under an owner that frames by hand;
4. ``FramedTransport(TcpTransport())``, the stack the course builds.

The difference between two rows is what the added layer costs. Each row is the
best of five runs, so other work on the machine inflates it as little as
possible; compare rows from the same run.

Last, the bench's bulk row in one process (the programs are in
:mod:`barknet.bench.bulk`): the CPU time, calls and opcodes per 64-byte frame
sent one way, both sides together.

Two more lines follow, to compare with, not layers: the same echo between two
asyncio ``Protocol`` objects, and the same echo over a *bare* stack: barknet's
classes with the per-message paths cut down to the system calls and the
framing (:class:`BareTcpTransport`, :class:`BareFramedTransport`). The bare
stack keeps none of the guarantees (level-triggered ``READABLE``, fairness
limits, queueing and flow control, counters, closing states, errors), so the
distance from it to the full stack is what those guarantees cost per message.

:func:`calls_per_round_trip` and :func:`opcodes_per_round_trip` count instead of
timing: the Python function calls, and the bytecode instructions, that one round
trip costs (both sides), seen through ``sys.setprofile`` and ``sys.settrace``
(``sys.monitoring`` from CPython 3.12).
A count does not depend on the machine or its load, only on the Python version,
so a regression shows up as a number (``python -m barknet bench`` prints the
calls, and a test pins both).
"""

from __future__ import annotations

import contextlib
import gc
import selectors
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from .. import (
    EventKind,
    EventWatcher,
    FramedTransport,
    IOEvent,
    IOStatus,
    Peer,
    ReadResult,
    TcpTransport,
    WriteResult,
)

HEADER = struct.Struct("!I")
PAYLOAD = b"x" * 16
#: The owners compare against these, looked up once, as the bench's owners do: on
#: CPython 3.10 and 3.11 ``EventKind.READABLE`` goes through the enum metaclass's
#: ``__getattr__`` hook each time (about 1.2k instructions under callgrind), and
#: the rows would charge the owner's lookups to the layers.
READABLE, OK = EventKind.READABLE, IOStatus.OK


def _socket_pair() -> tuple[socket.socket, socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    for sock in (client, server):
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return client, server


def _echo_by_hand(
    sock: socket.socket,
    buffer: bytearray,
    echo: bool,
    count: list[int],
    n: int,
    stop: Callable[[], None],
) -> None:
    """Read one whole small frame (they arrive whole on loopback) and answer it."""
    sock.recv_into(buffer)
    (size,) = HEADER.unpack_from(buffer, 0)
    frame = bytes(buffer[4 : 4 + size])
    if not echo:
        count[0] += 1
        if count[0] >= n:
            stop()
            return
    sock.send(HEADER.pack(size) + frame)


def _cpu_until(count: list[int], n: int, turn: Callable[[], None]) -> float:
    """CPU seconds spent turning a hand-written loop until ``n`` echoes came back."""
    started = time.process_time()
    while count[0] < n:
        turn()
    return time.process_time() - started


def _cpu_running(ew: EventWatcher) -> float:
    """CPU seconds spent in ``ew.run()``, as a server runs it, until an owner stops it."""
    started = time.process_time()
    ew.run()
    return time.process_time() - started


def _nothing() -> None:
    pass


def selectors_loop(n: int) -> float:
    client, server = _socket_pair()
    count = [0]
    sel = selectors.DefaultSelector()
    for sock, echo in ((client, False), (server, True)):
        buffer = bytearray(65536)
        sel.register(sock, selectors.EVENT_READ, (sock, buffer, echo))
    client.send(HEADER.pack(len(PAYLOAD)) + PAYLOAD)

    def turn() -> None:
        for key, _ in sel.select():
            sock, buffer, echo = key.data
            _echo_by_hand(sock, buffer, echo, count, n, _nothing)

    spent = _cpu_until(count, n, turn)
    sel.close()
    client.close()
    server.close()
    return spent


def reactor_callbacks(n: int) -> float:
    client, server = _socket_pair()
    count = [0]
    with EventWatcher() as ew:
        for sock, echo in ((client, False), (server, True)):
            buffer = bytearray(65536)
            ew.watch_read(
                sock.fileno(),
                lambda s=sock, b=buffer, e=echo: _echo_by_hand(s, b, e, count, n, ew.stop),
            )
        client.send(HEADER.pack(len(PAYLOAD)) + PAYLOAD)
        spent = _cpu_running(ew)
    client.close()
    server.close()
    return spent


def tcp_transport(n: int) -> float:
    count = [0]

    def owner(
        transport: TcpTransport, echo: bool, stop: Callable[[], None]
    ) -> Callable[[IOEvent], None]:
        buffer = bytearray(65536)

        def on_event(event: IOEvent) -> None:
            if event.kind is not READABLE:
                return
            if transport.resume_read(event.peer, buffer).status is not OK:
                return
            (size,) = HEADER.unpack_from(buffer, 0)
            frame = bytes(buffer[4 : 4 + size])
            if not echo:
                count[0] += 1
                if count[0] >= n:
                    stop()
                    return
            transport.resume_write(HEADER.pack(size) + frame, event.peer)

        return on_event

    with EventWatcher() as ew:
        server = TcpTransport()
        server.attach(ew, owner(server, True, ew.stop))
        client = TcpTransport(*server.bind())
        client.attach(ew, owner(client, False, ew.stop))
        peer = client.connect()
        ew.run_until(lambda: bool(server.peers), timeout=5)
        client.resume_write(HEADER.pack(len(PAYLOAD)) + PAYLOAD, peer)
        spent = _cpu_running(ew)
        client.close()
        server.close()
    return spent


def framed_transport(n: int) -> float:
    return _framed_echo(n, lambda address: FramedTransport(TcpTransport(*address)))


def _framed_echo(n: int, make: Callable[[tuple[str, int]], FramedTransport]) -> float:
    """The 16-byte echo between two framed stacks that ``make(address)`` builds
    (client and server on one loop): CPU seconds until ``n`` echoes came back."""
    count = [0]

    def owner(
        transport: FramedTransport, echo: bool, stop: Callable[[], None]
    ) -> Callable[[IOEvent], None]:
        def on_event(event: IOEvent) -> None:
            if event.kind is not READABLE:
                return
            while (result := transport.resume_read(event.peer)).status is OK:
                if not echo:
                    count[0] += 1
                    if count[0] >= n:
                        stop()
                        return
                transport.resume_write(result.data, event.peer)

        return on_event

    with EventWatcher() as ew:
        server = make(("127.0.0.1", 0))
        server.attach(ew, owner(server, True, ew.stop))
        client = make(server.bind())
        client.attach(ew, owner(client, False, ew.stop))
        peer = client.connect()
        ew.run_until(lambda: bool(server.peers), timeout=5)  # connected (a bare write needs it)
        client.resume_write(PAYLOAD, peer)
        spent = _cpu_running(ew)
        client.close()
        server.close()
    return spent


#: As barknet builds its results on the per-message paths (see barknet.tcp), so that
#: the bare stack saves what the guarantees cost and nothing else.
_tuple_new = tuple.__new__
_NOTHING_YET = ReadResult(b"", IOStatus.WOULD_BLOCK)


class BareTcpTransport(TcpTransport):
    """``TcpTransport`` with reading and writing cut down to the system call: no
    state checks, no counters, no would-block, EOF or error handling. Not a
    transport to use (the first EAGAIN or short write breaks it): the distance
    from it to the real one is what those cost."""

    def resume_read(
        self,
        peer: Peer,
        buffer: bytearray | memoryview | None = None,
        offset: int = 0,
        max_len: int | None = None,
    ) -> ReadResult:
        sock = self._conns[peer].sock
        if buffer is None:  # a plain read, as FramedTransport makes between small frames
            return _tuple_new(ReadResult, (sock.recv(max_len or self.read_size), OK, None))
        got = sock.recv_into(buffer)
        return _tuple_new(ReadResult, (buffer[:got], OK, None))  # as TcpTransport builds it

    def resume_write(self, data: Any, peer: Peer) -> WriteResult:
        sent = self._conns[peer].sock.send(data)
        return _tuple_new(WriteResult, (sent, OK, None))


class BareFramedTransport(FramedTransport):
    """``FramedTransport`` with the per-message paths cut down to the framing:
    one read per event into the decoder (which still joins partial frames), all
    the frames for the owner at once, every write assumed to leave whole. No
    level-triggered ``READABLE``, no fairness limits, no queue or flow control,
    no counters, no closing states, no errors. Not a transport to use either:
    it is the floor under the guarantees, for :func:`bare_stack` to measure."""

    def _on_inner_event(self, event: IOEvent) -> None:
        kind, peer, _, _ = event
        if kind is not READABLE:
            super()._on_inner_event(event)
            return
        recv = self._recv[peer]
        decoder = recv.decoder
        plain = decoder.receive_size  # read as the decoder asks, as FramedTransport does
        if plain:
            data, _, _ = self.inner.resume_read(peer, None, 0, plain)
            recv.frames.extend(decoder.receive(data))
        else:
            buffer = decoder.get_buffer()
            data, _, _ = self.inner.resume_read(peer, buffer)
            got = len(data)
            del buffer, data  # no view of the decoder's memory left behind
            recv.frames.extend(decoder.buffer_updated(got))
        self._replay(recv.readable)  # type: ignore[misc]  # attached

    def resume_read(
        self,
        peer: Peer,
        buffer: bytearray | memoryview | None = None,
        offset: int = 0,
        max_len: int | None = None,
    ) -> ReadResult:
        frames = self._recv[peer].frames
        if frames:
            return _tuple_new(ReadResult, (frames.popleft(), OK, None))
        return _NOTHING_YET

    def resume_write(self, data: Any, peer: Peer) -> WriteResult:
        return self.inner.resume_write(HEADER.pack(len(data)) + data, peer)


def bare_stack(n: int) -> float:
    """For comparison, not a layer: the echo of :func:`framed_transport`, same
    owners, over :class:`BareFramedTransport` on :class:`BareTcpTransport`."""
    return _framed_echo(n, lambda address: BareFramedTransport(BareTcpTransport(*address)))


def asyncio_protocol(n: int) -> float:
    """For comparison, not a layer of barknet: the same echo between two of the
    bench's asyncio ``Protocol`` objects (framing done in ``data_received``), on
    one asyncio loop, timed the same way."""
    import asyncio

    from .asyncio_side import _make_protocol_class

    framed_protocol = _make_protocol_class()

    async def run() -> float:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        count = [0]

        def echo() -> Any:
            proto = framed_protocol()
            proto.on_frame = proto.send
            return proto

        def client() -> Any:
            proto = framed_protocol()

            def on_frame(frame: bytes) -> None:
                count[0] += 1
                if count[0] >= n:
                    done.set_result(None)
                else:
                    proto.send(frame)

            proto.on_frame = on_frame
            return proto

        server = await loop.create_server(echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        transport, _ = await loop.create_connection(client, "127.0.0.1", port)
        started = time.process_time()
        transport.write(HEADER.pack(len(PAYLOAD)) + PAYLOAD)
        await done
        spent = time.process_time() - started
        transport.close()
        server.close()
        await server.wait_closed()
        return spent

    return asyncio.run(run())


def calls_per_round_trip(program: Callable[[int], float], n: int = 400) -> float:
    """Python function calls per round trip of ``program`` (both sides together).

    Set-up and teardown are counted once per run, so two runs of different length
    are compared and only the difference is divided by the extra round trips.
    C functions (``socket.send``, ``epoll.poll``) are not counted: the figure is
    the Python work a layer adds, which is what a learner can read and change.
    """

    def count(rounds: int) -> int:
        calls = [0]

        def profiler(_frame: Any, event: str, _arg: Any) -> None:
            if event == "call":
                calls[0] += 1

        sys.setprofile(profiler)
        try:
            program(rounds)
        finally:
            sys.setprofile(None)
        return calls[0]

    # One run first, not counted: what a program does once per process (asyncio's
    # first loop, a selector's first use) would otherwise land in the first count
    # alone and not cancel out (cold, the selectors loop counted 8.9, asyncio 49).
    program(n)
    with _without_collector():
        return (count(2 * n) - count(n)) / n


def opcodes_per_round_trip(program: Callable[[int], float], n: int = 200) -> float:
    """Bytecode instructions per round trip of ``program`` (both sides together),
    counted as :func:`calls_per_round_trip` counts calls (two runs, the difference).

    The Python work without the C under it (system calls, copying, allocating):
    two programs whose counts differ by a third do about a third less of the
    interpreter's work, on any machine.
    """
    program(n)  # not counted: one-time work, as in calls_per_round_trip
    with _without_collector():
        return (_opcodes(program, 2 * n) - _opcodes(program, n)) / n


@contextlib.contextmanager
def _without_collector() -> Iterator[None]:
    """No garbage collection while counting: the collector would run, at moments
    that depend on what ran before, the finalizers of older garbage (a
    generator's ``finally``, a socket's ``__del__``), whose work is not the
    program's. (A 3.13 CI run once counted 1707.74 opcodes where the next
    count of the same program gave 1704.)"""
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _opcodes(program: Callable[[int], float], rounds: int) -> int:
    """Instructions executed by ``program(rounds)``: from CPython 3.12 through
    ``sys.monitoring`` (PEP 669: every instruction of every code object), before
    that through ``sys.settrace`` with opcode events. (On 3.12 an
    ``f_trace_opcodes`` set from the trace function takes effect only at the next
    ``sys.settrace``, so the first traced run counts nothing; on 3.13 it counts
    too little.)"""
    executed = [0]
    monitoring = getattr(sys, "monitoring", None)
    if monitoring is not None:
        # A tool id nobody uses: 3 and 4 have no owner (cProfile takes 2,
        # coverage 1, debuggers 0).
        free = [i for i in (3, 4, 5, 0, 1, 2) if monitoring.get_tool(i) is None]
        if not free:
            raise RuntimeError("every sys.monitoring tool id is taken: cannot count opcodes")
        tool, instruction = free[0], monitoring.events.INSTRUCTION
        me = threading.get_ident()

        def on_instruction(_code: Any, _offset: int) -> None:
            # (sys.monitoring sees every thread; settrace below, only this one.)
            if threading.get_ident() == me:
                executed[0] += 1

        monitoring.use_tool_id(tool, "barknet layer_costs")
        monitoring.register_callback(tool, instruction, on_instruction)
        monitoring.set_events(tool, instruction)
        try:
            program(rounds)
        finally:
            monitoring.set_events(tool, 0)
            monitoring.register_callback(tool, instruction, None)
            monitoring.free_tool_id(tool)
        return executed[0]

    def per_opcode(_frame: Any, event: str, _arg: Any) -> Any:
        if event == "opcode":
            executed[0] += 1
        return per_opcode

    def per_frame(frame: Any, _event: str, _arg: Any) -> Any:
        frame.f_trace_opcodes = True
        frame.f_trace_lines = False
        return per_opcode

    sys.settrace(per_frame)
    try:
        program(rounds)
    finally:
        sys.settrace(None)
    return executed[0]


STACKS: dict[str, Callable[[int], float]] = {
    "careful selectors loop": selectors_loop,
    "+ EventWatcher (reactor)": reactor_callbacks,
    "+ TcpTransport": tcp_transport,
    "+ FramedTransport": framed_transport,
}
#: Printed after the stacks, as the figure they are compared with.
COMPARED: dict[str, Callable[[int], float]] = {
    "asyncio Protocol (compare)": asyncio_protocol,
    "bare stack (compare)": bare_stack,
}


def main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="layer_costs.py",
        description="CPU time, Python calls and opcodes per 16-byte round trip, layer by layer, "
        "then per 64-byte frame sent one way in batches (client and server in one process).",
    )
    parser.add_argument(
        "round_trips", nargs="?", type=int, default=20000, help="per run (default: 20000)"
    )
    n = parser.parse_args(argv[1:]).round_trips
    if n < 1:
        parser.error("round_trips must be at least 1")
    print(f"per 16-byte round trip, both sides in one process, CPU time best of 5 x {n}")
    previous = None
    for name, program in [*STACKS.items(), *COMPARED.items()]:
        micros = min(program(n) for _ in range(5)) / n * 1e6
        added = ""
        if name in STACKS:
            added = "" if previous is None else f"  (+{micros - previous:.1f})"
            previous = micros
        calls = calls_per_round_trip(program)
        opcodes = opcodes_per_round_trip(program)
        print(
            f"  {name:<26} {micros:6.1f} µs{added:<9} {calls:5.1f} Python calls"
            f" {opcodes:7.0f} opcodes"
        )
    from .bulk import BULK, BULK_FRAMES_PER_ROUND_TRIP  # (bulk.py imports this module)

    frames = BULK_FRAMES_PER_ROUND_TRIP * n
    print(f"per 64-byte frame sent one way in batches, both sides, best of 5 x {frames}")
    for name, program in BULK.items():
        nanos = min(program(frames) for _ in range(5)) / frames * 1e9
        calls = calls_per_round_trip(program, 2000)
        opcodes = opcodes_per_round_trip(program, 2000)
        print(f"  {name:<26} {nanos:6.0f} ns {calls:14.2f} Python calls {opcodes:7.1f} opcodes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
