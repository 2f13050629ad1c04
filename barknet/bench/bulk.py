"""The bench's bulk row in one process, for ``benchmarks/layer_costs.py``'s last lines.

64-byte frames one way, as many as the sockets take, from a careful ``selectors``
loop (which sends a prebuilt batch of frames per ``send`` and hands each frame to
its owner as a view of its buffer) and from ``FramedTransport`` (``write_frames``
batches, ``read_frames`` each turn). :func:`~barknet.bench.layers.calls_per_round_trip`
and :func:`~barknet.bench.layers.opcodes_per_round_trip` count them per frame,
both sides together: a count that does not depend on the machine, so a change of
the per-frame work shows up as a number.
"""

from __future__ import annotations

import selectors
import time
from collections.abc import Callable
from typing import Any

from .. import EventKind, EventWatcher, FramedTransport, IOEvent, TcpTransport
from .layers import HEADER, READABLE, _socket_pair

#: The bench's bulk row: 64-byte frames, one way, as many as the sockets take.
BULK_PAYLOAD = b"x" * 64
#: Frames per write_frames call, as the bench's barknet client queues them.
BULK_BATCH = 240


def selectors_bulk(n: int) -> float:
    """``n`` 64-byte frames one way over a careful ``selectors`` loop: the client
    sends many frames per ``send`` (a prebuilt batch, as the bench's loop does),
    the server hands each frame to its owner as a view of its buffer."""
    client, server = _socket_pair()
    one = HEADER.pack(len(BULK_PAYLOAD)) + BULK_PAYLOAD
    batch = memoryview(one * (65536 // len(one)))
    buffer = bytearray(256 * 1024)
    view = memoryview(buffer)
    left, unsent, end, got = n, batch[:0], 0, 0

    def on_frame(_frame: Any) -> None:
        nonlocal got
        got += 1

    def send() -> None:
        nonlocal left, unsent
        while left or unsent:
            if not unsent:
                k = min(len(batch) // len(one), left)
                left -= k
                unsent = batch[: k * len(one)]
            try:
                unsent = unsent[client.send(unsent) :]
            except BlockingIOError:
                return

    def receive() -> None:
        nonlocal end
        try:
            end += server.recv_into(view[end:])
        except BlockingIOError:
            return
        start = 0
        while end - start >= 4:
            (size,) = HEADER.unpack_from(buffer, start)
            if end - start - 4 < size:
                break
            on_frame(view[start + 4 : start + 4 + size])
            start += 4 + size
        buffer[: end - start] = buffer[start:end]  # the partial frame to the front
        end -= start

    started = time.process_time()
    with selectors.DefaultSelector() as sel:
        sel.register(server, selectors.EVENT_READ)
        sel.register(client, selectors.EVENT_WRITE)
        while got < n:
            events = sel.select(timeout=10)
            if not events:
                raise TimeoutError(f"{got} of {n} frames arrived, then nothing for 10 s")
            for key, _ in events:
                if key.fileobj is server:
                    receive()
                else:
                    send()
                    if not (left or unsent):
                        sel.unregister(client)
    spent = time.process_time() - started
    client.close()
    server.close()
    return spent


def framed_bulk(n: int) -> float:
    """``n`` 64-byte frames one way between two ``FramedTransport`` stacks: the
    client queues them :data:`BULK_BATCH` at a time (``write_frames``) until
    ``PAUSE_WRITING``, the server takes each turn's frames with ``read_frames``."""
    got, left, paused = [0], [n], [False]

    def on_frame(_frame: Any) -> None:
        got[0] += 1

    with EventWatcher() as ew:

        def pump() -> None:
            while left[0] and not paused[0]:
                k = min(BULK_BATCH, left[0])
                left[0] -= k
                client.write_frames([BULK_PAYLOAD] * k, peer)

        def on_server(event: IOEvent) -> None:
            if event.kind is READABLE:
                for frame in server.read_frames(event.peer):
                    on_frame(frame)

        def on_client(event: IOEvent) -> None:
            if event.kind is EventKind.PAUSE_WRITING:
                paused[0] = True
            elif event.kind is EventKind.RESUME_WRITING:
                paused[0] = False
                pump()

        server = FramedTransport(TcpTransport(), coalesce=True)
        server.attach(ew, on_server)
        client = FramedTransport(TcpTransport(*server.bind()), coalesce=True)
        client.attach(ew, on_client)
        peer = client.connect()
        ew.run_until(lambda: bool(server.peers), timeout=5)
        started = time.process_time()
        pump()
        ew.run_until(lambda: got[0] >= n, timeout=60)  # (raises if frames went missing)
        spent = time.process_time() - started
        client.close()
        server.close()
    return spent


#: Printed last by layer_costs.py, per 64-byte frame sent one way.
BULK: dict[str, Callable[[int], float]] = {
    "careful selectors loop": selectors_bulk,
    "FramedTransport": framed_bulk,
}
#: Frames per run of the BULK programs, for each round trip a run of the stacks makes.
BULK_FRAMES_PER_ROUND_TRIP = 10
