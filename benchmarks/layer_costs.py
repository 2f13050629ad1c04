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
"""

from __future__ import annotations

import selectors
import socket
import struct
import sys
import time
from collections.abc import Callable

from barknet import EventKind, EventWatcher, FramedTransport, IOEvent, IOStatus, TcpTransport

HEADER = struct.Struct("!I")
PAYLOAD = b"x" * 16


def _socket_pair() -> tuple[socket.socket, socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    for sock in (client, server):
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return client, server


def _echo_by_hand(
    sock: socket.socket, buffer: bytearray, echo: bool, count: list[int], n: int
) -> None:
    """Read one whole small frame (they arrive whole on loopback) and answer it."""
    sock.recv_into(buffer)
    (size,) = HEADER.unpack_from(buffer, 0)
    frame = bytes(buffer[4 : 4 + size])
    if not echo:
        count[0] += 1
        if count[0] >= n:
            return
    sock.send(HEADER.pack(size) + frame)


def _cpu_until(count: list[int], n: int, turn: Callable[[], None]) -> float:
    """CPU seconds spent turning the loop until ``n`` echoes came back."""
    started = time.process_time()
    while count[0] < n:
        turn()
    return time.process_time() - started


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
            _echo_by_hand(sock, buffer, echo, count, n)

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
                lambda s=sock, b=buffer, e=echo: _echo_by_hand(s, b, e, count, n),
            )
        client.send(HEADER.pack(len(PAYLOAD)) + PAYLOAD)
        spent = _cpu_until(count, n, ew.run_once)
    client.close()
    server.close()
    return spent


def tcp_transport(n: int) -> float:
    count = [0]

    def owner(transport: TcpTransport, echo: bool) -> Callable[[IOEvent], None]:
        buffer = bytearray(65536)

        def on_event(event: IOEvent) -> None:
            if event.kind is not EventKind.READABLE:
                return
            if transport.resume_read(event.peer, buffer).status is not IOStatus.OK:
                return
            (size,) = HEADER.unpack_from(buffer, 0)
            frame = bytes(buffer[4 : 4 + size])
            if not echo:
                count[0] += 1
                if count[0] >= n:
                    return
            transport.resume_write(HEADER.pack(size) + frame, event.peer)

        return on_event

    with EventWatcher() as ew:
        server = TcpTransport()
        server.attach(ew, owner(server, True))
        client = TcpTransport(*server.bind())
        client.attach(ew, owner(client, False))
        peer = client.connect()
        ew.run_until(lambda: bool(server.peers), timeout=5)
        client.resume_write(HEADER.pack(len(PAYLOAD)) + PAYLOAD, peer)
        spent = _cpu_until(count, n, ew.run_once)
        client.close()
        server.close()
    return spent


def framed_transport(n: int) -> float:
    count = [0]

    def owner(transport: FramedTransport, echo: bool) -> Callable[[IOEvent], None]:
        def on_event(event: IOEvent) -> None:
            if event.kind is not EventKind.READABLE:
                return
            while (result := transport.resume_read(event.peer)).status is IOStatus.OK:
                if not echo:
                    count[0] += 1
                    if count[0] >= n:
                        return
                transport.resume_write(result.data, event.peer)

        return on_event

    with EventWatcher() as ew:
        server = FramedTransport(TcpTransport())
        server.attach(ew, owner(server, True))
        client = FramedTransport(TcpTransport(*server.bind()))
        client.attach(ew, owner(client, False))
        peer = client.connect()
        client.resume_write(PAYLOAD, peer)
        spent = _cpu_until(count, n, ew.run_once)
        client.close()
        server.close()
    return spent


def main(argv: list[str]) -> int:
    n = int(argv[1]) if len(argv) > 1 else 20000
    rows = [
        ("careful selectors loop", selectors_loop),
        ("+ EventWatcher (reactor)", reactor_callbacks),
        ("+ TcpTransport", tcp_transport),
        ("+ FramedTransport", framed_transport),
    ]
    print(f"CPU time per 16-byte round trip, both sides in one process, best of 5 x {n}")
    previous = None
    for name, program in rows:
        micros = min(program(n) for _ in range(5)) / n * 1e6
        added = "" if previous is None else f"  (+{micros - previous:.1f})"
        print(f"  {name:<26} {micros:6.1f} µs{added}")
        previous = micros
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
