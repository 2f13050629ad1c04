"""The test harness keeps the promises the tests rely on: it records, it echoes, and
an echoing endpoint obeys the water marks like every echo server the course shows."""

from __future__ import annotations

import contextlib
import socket

import pytest

from barknet import EventKind, encode_frame
from barknet.testing.harness import Stage

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
