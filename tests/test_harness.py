"""The test harness keeps the promises the tests rely on: it records, it echoes, and
an echoing endpoint obeys the water marks like every echo server the course shows."""

from __future__ import annotations

import contextlib
import socket

import pytest

from barknet import EventKind, TcpTransport, encode_frame
from barknet.events import IOEvent
from barknet.layer import TransportLayer
from barknet.testing.harness import Stage, framed_over_tcp

pytestmark = pytest.mark.usefixtures("no_leaks")

KiB = 1024


def test_link_connects_a_client_to_an_echoing_server_and_records_both(stage: Stage) -> None:
    server, client, peer = stage.link()
    client.round_trip(b"ping")
    assert client.peer == peer and client.frames[peer] == [b"ping"]
    assert server.frames[server.accepted()[0]] == [b"ping"]
    assert client.of_kind(EventKind.CONNECTED) and server.of_kind(EventKind.ACCEPTED)


def test_an_echo_stops_reading_a_peer_that_never_reads_its_echoes(stage: Stage) -> None:
    """A client that only sends: the server's queue for it stays near the high-water
    mark, because the echo stops reading (PAUSE_WRITING) instead of queueing more."""
    high_water = 16 * KiB
    server = stage.server(high_water=high_water, sndbuf=4096, rcvbuf=4096)
    assert server.address is not None
    sock = socket.socket()
    try:
        # Small buffers on both ends, set before the handshake: the kernel can then
        # hold little of what the server does not read, and TCP pushes back soon.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        sock.settimeout(5)
        sock.connect(server.address)
        sock.setblocking(False)
        stage.run_until(lambda: bool(server.accepted()))
        (peer,) = server.accepted()
        frame = encode_frame(bytes(1000))
        wire = memoryview(frame * 2048)  # 2 MiB of frames, never read back
        sent, worst = 0, 0
        for _ in range(4000):
            with contextlib.suppress(BlockingIOError):
                sent += sock.send(wire[sent : sent + 64 * KiB])
            stage.turns(1, timeout=0)
            worst = max(worst, server.transport.write_buffer_size(peer))  # type: ignore[attr-defined]
            if sent == len(wire):
                break
        assert server.of_kind(EventKind.PAUSE_WRITING, peer), "the echo never paused"
        assert peer in server.paused
        # Stopped reading, so TCP pushed back on the sender long before 2 MiB left.
        assert sent < len(wire) // 2
        assert worst <= high_water + len(frame), (
            f"queued {worst} bytes for a peer that never reads"
        )
    finally:
        sock.close()


class _ClosedTwice(TransportLayer):
    """A broken layer: it replays every CLOSED twice."""

    def _on_inner_event(self, event: IOEvent) -> None:
        self._emit(event)
        if event.kind is EventKind.CLOSED:
            self._emit(event)


def test_a_second_closed_for_one_peer_fails_at_once(stage: Stage) -> None:
    """One CLOSED per peer is the grammar; every owner on the harness holds a
    transport to it, so the tests and the checks need not each count."""
    server = stage.server(_ClosedTwice(framed_over_tcp()))
    assert server.address is not None
    client = stage.connected(server.address)
    stage.run_until(lambda: server.accepted())
    assert client.peer is not None
    client.transport.close(client.peer)
    with pytest.raises(AssertionError, match="CLOSED came twice"):
        stage.run_until(lambda: False, timeout=2)


def test_send_finishes_a_byte_stream_across_writable_then_suspends_writing(
    stage: Stage,
) -> None:
    """Over a raw byte transport a write may go out in part: send() finishes it on
    WRITABLE, calls back once, and a quiet owner then stops WRITABLE."""
    server = stage.endpoint(TcpTransport())
    address = server.bind()
    client = stage.endpoint(TcpTransport(*address, sndbuf=4096), quiet=True)
    peer = client.connect()
    data = bytes(range(256)) * 4096  # 1 MiB: far more than one send takes
    done: list[bool] = []
    client.send(peer, data, then=lambda: done.append(True))
    stage.run_until(lambda: server.opened and len(server.received(server.opened[0])) >= len(data))
    assert server.received(server.opened[0]) == data
    assert done == [True]
    assert client.of_kind(EventKind.WRITABLE, peer), "the 1 MiB went out in one call"
    writable = len(client.of_kind(EventKind.WRITABLE, peer))
    stage.turns(5)
    assert len(client.of_kind(EventKind.WRITABLE, peer)) == writable
