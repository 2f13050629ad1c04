"""FramedTransport over real loopback sockets: whole frames in order however TCP
chops them, many clients, large frames through tiny buffers, and every way a
peer can break the framing (each closing that peer alone)."""

from __future__ import annotations

import contextlib
import random
import socket
import struct
from collections.abc import Iterator

import pytest
from fakes import WrappedSocket

from barknet import (
    ConnectFailedError,
    ConnectionBrokenError,
    EventKind,
    FramedTransport,
    FrameTimeoutError,
    FrameTooLargeError,
    IOEvent,
    IOStatus,
    Peer,
    TcpTransport,
    TransportClosedError,
    TruncatedFrameError,
    WriteResult,
)
from barknet.framed import PeerSnapshot
from barknet.framing import HEADER_SIZE, encode_frame, encode_header
from barknet.layer import TransportLayer
from barknet.testing.trace import TracingTransport

pytestmark = pytest.mark.usefixtures("no_leaks")

KiB = 1024
MiB = 1024 * KiB


def turns(ew, n: int = 5) -> None:
    for _ in range(n):
        ew.run_once(0.01)


@pytest.fixture
def raw_conns() -> Iterator[list[socket.socket]]:
    """Plain blocking sockets a test opens to misbehave with; closed afterwards."""
    socks: list[socket.socket] = []
    try:
        yield socks
    finally:
        for sock in socks:
            sock.close()


def raw_peer(ew, server, raw_conns: list[socket.socket]) -> tuple[socket.socket, Peer]:
    """Connect a plain socket to ``server``; return it and the server's peer for it."""
    sock = socket.create_connection(server.address, timeout=5)
    raw_conns.append(sock)
    local = sock.getsockname()[:2]

    def found() -> Peer | None:
        return next((p for p in server.accepted() if p.remote == local), None)

    ew.run_until(found, timeout=5)
    return sock, found()  # type: ignore[return-value]


# ------------------------------------------------------------------ traffic
def test_single_message_is_echoed_whole(stage):
    server, client, _peer = stage.link()
    client.round_trip(b"hello, frames")
    assert server.frames[server.accepted()[0]] == [b"hello, frames"]


def test_zero_length_frames_are_delivered(ew, stage):
    _server, client, peer = stage.link()
    frames = [b"", b"a", b"", b"", b"bc", b""]
    for frame in frames:
        client.transport.resume_write(frame, peer)
    ew.run_until(lambda: len(client.frames[peer]) == len(frames), timeout=5)
    assert client.frames[peer] == frames


def test_a_list_of_buffers_is_one_frame(ew, stage):
    _server, client, peer = stage.link()
    client.transport.resume_write([b"head|", memoryview(b"body"), b"", bytearray(b"|tail")], peer)
    ew.run_until(lambda: client.frames[peer], timeout=5)
    assert client.frames[peer] == [b"head|body|tail"]


def test_fifty_clients_at_once_each_get_their_own_frames_back_in_order(
    ew, framed_server, framed_client
):
    server = framed_server()
    client = framed_client(server.address)
    peers = [client.transport.connect() for _ in range(50)]
    rng = random.Random(7)
    sent: dict[Peer, list[bytes]] = {}
    for i, peer in enumerate(peers):
        # Frames name their client, so a frame delivered to the wrong peer shows.
        sent[peer] = [
            b"client %d frame %d " % (i, j) + rng.randbytes(rng.randint(0, 3000))
            for j in range(10)
        ]
        for frame in sent[peer]:
            client.transport.resume_write(frame, peer)  # queued until CONNECTED
    ew.run_until(lambda: all(len(client.frames[p]) == 10 for p in peers), timeout=20)
    for peer in peers:
        assert client.frames[peer] == sent[peer]
    assert len(server.accepted()) == 50
    assert client.closed() == server.closed() == []


@pytest.mark.parametrize("size", [4 * MiB, 16 * MiB], ids=["4MiB", "16MiB"])
def test_large_frames_through_tiny_socket_buffers_survive_partial_io(ew, size, stage):
    server, client, peer = stage.link(
        server=dict(sndbuf=4096, rcvbuf=4096, max_frame_size=32 * MiB),
        sndbuf=4096,
        rcvbuf=4096,
        max_frame_size=32 * MiB,
    )
    payload = random.Random(size).randbytes(size)
    client.transport.resume_write([payload[:100], payload[100:]], peer)
    client.transport.resume_write(b"small one after", peer)
    ew.run_until(lambda: len(client.frames[peer]) == 2, timeout=60)
    assert client.frames[peer][0] == payload
    assert client.frames[peer][1] == b"small one after"
    speer = server.accepted()[0]
    c, s = client.transport.counters(peer), server.transport.counters(speer)
    # The point of the exercise: the kernel really did chop the frame up.
    assert c.short_sends > 0 and s.short_sends > 0
    assert s.short_recvs > 0 and c.short_recvs > 0
    assert c.bytes_sent == s.bytes_received == size + 15 + 8


def test_rapid_fire_of_ten_thousand_small_frames_keeps_order_and_content(ew, stage):
    server, client, peer = stage.link()
    frames = [b"%d:" % i + b"x" * (i % 50) for i in range(10_000)]
    for frame in frames:
        client.transport.resume_write(frame, peer)
    ew.run_until(lambda: len(client.frames[peer]) == len(frames), timeout=20)
    assert client.frames[peer] == frames
    assert server.transport.counters().frames_received == len(frames)


def test_counters_count_frames_sent_and_received(ew, stage):
    server, client, peer = stage.link()
    for i in range(7):
        client.transport.resume_write(b"n%d" % i, peer)
    ew.run_until(lambda: len(client.frames[peer]) == 7, timeout=5)
    c = client.transport.counters(peer)
    assert (c.frames_sent, c.frames_received) == (7, 7)
    s = server.transport.counters()
    assert (s.frames_sent, s.frames_received) == (7, 7)
    client.transport.close(peer)
    ew.run_until(lambda: client.closed(peer), timeout=5)
    total = client.transport.counters()  # closed peers still count in the totals
    assert (total.frames_sent, total.frames_received) == (7, 7)
    assert total.bytes_sent == 7 * (4 + 2)


def test_a_frame_too_large_for_the_socket_reports_what_left_at_once(ew):
    """resume_write's ``sent``: the bytes of this frame, header included, that left
    at once; the rest is queued (WOULD_BLOCK), and the two add up to the frame."""
    mine, theirs = socket.socketpair()
    transport = FramedTransport(TcpTransport())
    try:
        transport.attach(ew, lambda event: None)
        peer = transport.adopt(mine)
        result = transport.resume_write(bytes(4_000_000), peer)  # more than the pair holds
        assert result.status is IOStatus.WOULD_BLOCK
        assert 0 < result.sent == transport.counters(peer).bytes_sent
        assert result.sent + transport.write_buffer_size(peer) == HEADER_SIZE + 4_000_000
    finally:
        transport.close()
        theirs.close()


def test_pause_and_resume_writing_follow_the_water_marks(ew, stage):
    _server, client, peer = stage.link(server=dict(rcvbuf=4096), sndbuf=4096, high_water=64 * KiB)
    for _ in range(8):
        client.transport.resume_write(bytes(32 * KiB), peer)
    assert client.transport.write_buffer_size(peer) > 64 * KiB
    ew.run_until(lambda: len(client.frames[peer]) == 8, timeout=10)
    kinds = [
        e.kind
        for e in client.events
        if e.kind in (EventKind.PAUSE_WRITING, EventKind.RESUME_WRITING, EventKind.DRAINED)
    ]
    assert kinds[:2] == [EventKind.PAUSE_WRITING, EventKind.RESUME_WRITING]
    assert kinds.count(EventKind.PAUSE_WRITING) == kinds.count(EventKind.RESUME_WRITING)
    assert kinds[-1] is EventKind.DRAINED
    assert client.transport.write_buffer_size(peer) == 0


# ------------------------------------------------------------ errors: ours
def test_connect_refused_closes_with_connect_failed(ew, framed_client):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = s.getsockname()
    client = framed_client(address)
    peer = client.transport.connect()
    ew.run_until(lambda: client.closed(peer), timeout=5)
    turns(ew)
    (closed,) = client.events
    assert closed.kind is EventKind.CLOSED and closed.status is IOStatus.ERROR
    assert isinstance(closed.error, ConnectFailedError)
    with pytest.raises(TransportClosedError):
        client.transport.resume_write(b"x", peer)


def test_send_after_close_raises_transport_closed(ew, stage):
    _server, client, peer = stage.link()
    client.transport.close(peer)
    with pytest.raises(TransportClosedError) as info:
        client.transport.resume_write(b"too late", peer)
    assert info.value.peer == peer
    ew.run_until(lambda: client.closed(peer), timeout=5)
    with pytest.raises(TransportClosedError):
        client.transport.resume_write(b"too late", peer)
    with pytest.raises(TransportClosedError):
        client.transport.resume_read(peer)


def test_sending_an_oversized_frame_raises_and_queues_nothing(stage):
    _server, client, peer = stage.link(max_frame_size=1000)
    with pytest.raises(FrameTooLargeError) as info:
        client.transport.resume_write(bytes(1001), peer)
    assert (info.value.size, info.value.limit) == (1001, 1000)
    assert client.transport.write_buffer_size(peer) == 0
    client.round_trip(bytes(1000))  # the connection is fine


# --------------------------------------------------------- errors: the peer's
@pytest.mark.parametrize(
    ("wire", "part", "received", "expected"),
    [
        (encode_header(10)[:2], "header", 2, 4),
        (encode_header(100) + bytes(40), "payload", 40, 100),
        (encode_header(100_000) + bytes(50_000), "payload", 50_000, 100_000),
    ],
    ids=["mid-header", "mid-payload", "mid-large-payload"],
)
def test_peer_closing_mid_frame_is_a_truncated_frame_and_others_keep_working(
    ew, framed_server, framed_client, raw_conns, wire, part, received, expected
):
    server = framed_server()
    client = framed_client(server.address)
    good = client.connect()
    client.round_trip(b"before", good)
    sock, bad = raw_peer(ew, server, raw_conns)
    sock.sendall(wire)
    sock.close()
    ew.run_until(lambda: server.closed(bad), timeout=5)
    (closed,) = server.closed(bad)
    assert closed.status is IOStatus.ERROR
    error = closed.error
    assert isinstance(error, TruncatedFrameError)
    assert (error.part, error.received, error.expected) == (part, received, expected)
    assert error.peer == bad
    assert f"got {received} of {expected} {part} bytes" in str(error)
    client.round_trip(b"after", good)
    assert server.closed(server.accepted()[0]) == []


def test_oversized_length_prefix_closes_that_peer_only(
    ew, framed_server, framed_client, raw_conns
):
    server = framed_server(max_frame_size=1 * MiB)
    client = framed_client(server.address)
    good = client.connect()
    sock, bad = raw_peer(ew, server, raw_conns)
    sock.sendall(struct.pack("!I", 0xFFFFFFFF))  # and keep the connection open
    ew.run_until(lambda: server.closed(bad), timeout=5)
    (closed,) = server.closed(bad)
    assert closed.status is IOStatus.ERROR
    error = closed.error
    assert isinstance(error, FrameTooLargeError)
    assert (error.size, error.limit, error.peer) == (0xFFFFFFFF, 1 * MiB, bad)
    assert str(bad) in str(error)
    assert "4294967295-byte frame" in str(error) and f"{1 * MiB} bytes" in str(error)
    client.round_trip(b"still here", good)
    assert client.closed() == []


def test_a_stalled_frame_times_out(ew, framed_server, raw_conns):
    server = framed_server(frame_timeout=0.05)
    sock, bad = raw_peer(ew, server, raw_conns)
    sock.sendall(encode_header(10) + b"abc")
    ew.run_until(lambda: server.closed(bad), timeout=5)
    (closed,) = server.closed(bad)
    assert isinstance(closed.error, FrameTimeoutError)
    assert (closed.error.received, closed.error.expected) == (7, 14)


def test_reset_by_peer_gives_exactly_one_closed_with_connection_broken(ew, stage):
    server, client, peer = stage.link()
    ew.run_until(lambda: server.accepted(), timeout=5)
    speer = server.accepted()[0]
    sock = server.transport.inner.socket_of(speer)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    server.transport.abort(speer)  # abort closes now (close would linger): a RST
    ew.run_until(lambda: client.closed(peer), timeout=5)
    turns(ew)
    (closed,) = client.closed()
    assert closed.peer == peer and closed.status is IOStatus.ERROR
    assert isinstance(closed.error, ConnectionBrokenError)
    assert isinstance(closed.error.__cause__, OSError)


# ----------------------------------------------------------------- closing
def test_clean_close_between_frames_is_eof_and_every_frame_arrives(ew, stage):
    server, client, peer = stage.link(server=dict(echo=False))
    frames = [b"frame %d" % i for i in range(100)]
    for frame in frames:
        client.transport.resume_write(frame, peer)
    client.transport.close(peer)
    ew.run_until(lambda: server.closed(), timeout=5)
    (closed,) = server.closed()
    assert (closed.status, closed.error) == (IOStatus.EOF, None)
    assert server.frames[closed.peer] == frames
    ew.run_until(lambda: client.closed(peer), timeout=5)
    assert client.closed(peer)[0].status is IOStatus.OK


def test_frames_written_and_closed_before_the_connect_finishes_are_sent(
    ew, framed_server, framed_client
):
    server = framed_server(echo=False)
    client = framed_client(server.address)
    peer = client.transport.connect()
    frames = [b"early 0", b"", b"early 2"]
    for frame in frames:
        client.transport.resume_write(frame, peer)
    client.transport.close(peer)
    ew.run_until(lambda: server.closed() and client.closed(peer), timeout=5)
    (closed,) = server.closed()
    assert closed.status is IOStatus.EOF
    assert server.frames[closed.peer] == frames
    # Yours no more from close(peer) on: its CLOSED is the only event (interfaces.py),
    # as over TcpTransport, though the frames still went out once it connected.
    assert [e.kind for e in client.events] == [EventKind.CLOSED]


def test_graceful_close_sends_queued_frames_first(ew, stage):
    server, client, peer = stage.link(server=dict(echo=False, rcvbuf=4096), sndbuf=4096)
    big = random.Random(9).randbytes(2 * MiB)
    frames = [big, b"a", b"", b"b" * 1000]
    for frame in frames:
        client.transport.resume_write(frame, peer)
    assert client.transport.write_buffer_size(peer) > 1 * MiB  # still queued
    client.transport.close(peer)
    with pytest.raises(TransportClosedError):
        client.transport.resume_write(b"after close", peer)
    ew.run_until(lambda: server.closed(), timeout=10)
    (closed,) = server.closed()
    assert closed.status is IOStatus.EOF
    assert server.frames[closed.peer] == frames
    ew.run_until(lambda: client.closed(peer), timeout=5)
    assert client.closed(peer)[0].status is IOStatus.OK


def test_closing_the_transport_closes_every_peer_once(ew, framed_server, framed_client, fds):
    before = fds()
    server = framed_server()
    client = framed_client(server.address)
    peers = [client.transport.connect() for _ in range(3)]
    ew.run_until(lambda: len(server.accepted()) == 3, timeout=5)
    client.transport.close()
    client.transport.close()
    ew.run_until(lambda: len(client.closed()) == 3, timeout=5)
    turns(ew)
    assert sorted(e.peer.id for e in client.closed()) == sorted(p.id for p in peers)
    assert {e.status for e in client.closed()} == {IOStatus.OK}
    ew.run_until(lambda: len(server.closed()) == 3, timeout=5)
    assert {e.status for e in server.closed()} == {IOStatus.EOF}
    server.transport.close()
    assert fds() - before == set()


# ---------------------------------------------------------------- snapshots
@pytest.fixture(params=[True], ids=["auto-read"])
def adopted(ew, framed_endpoint, request) -> Iterator[tuple[object, Peer, socket.socket]]:
    """A FramedTransport over one end of a socket pair; the test drives the other
    end by hand with raw bytes. Parametrize indirectly with False to pull frames
    by hand."""
    a, b = socket.socketpair()
    b.setblocking(False)
    try:
        transport = FramedTransport(TcpTransport(), high_water=16 * KiB)
        endpoint = framed_endpoint(transport, take=request.param)
        peer = endpoint.transport.adopt(a)
        yield endpoint, peer, b
    finally:
        ew.unwatch(b.fileno())
        a.close()
        b.close()


def test_snapshot_shows_a_partial_frame_midway(ew, adopted):
    endpoint, peer, other = adopted
    t = endpoint.transport
    assert t.snapshot(peer) == PeerSnapshot("idle", 0, 0, 0, 0, 0, 0, 0)
    other.send(encode_header(100)[:2])
    ew.run_until(lambda: t.snapshot(peer).recv_part == "header", timeout=5)
    assert t.snapshot(peer)[:3] == ("header", 2, 4)
    other.send(encode_header(100)[2:] + bytes(50))
    ew.run_until(lambda: t.snapshot(peer).recv_received == 50, timeout=5)
    assert t.snapshot(peer) == PeerSnapshot("payload", 50, 100, 0, 0, 0, 0, 0)
    assert endpoint.frames[peer] == []
    other.send(b"\x01" * 50 + encode_frame(b"next"))
    ew.run_until(lambda: len(endpoint.frames[peer]) == 2, timeout=5)
    assert endpoint.frames[peer] == [b"\x00" * 50 + b"\x01" * 50, b"next"]
    assert t.snapshot(peer)[:4] == ("idle", 0, 0, 0)


def test_snapshot_shows_how_far_a_queued_frame_got(ew, adopted):
    endpoint, peer, other = adopted
    t = endpoint.transport
    size = 1 * MiB
    t.resume_write(bytes(size), peer)
    t.resume_write(b"tail", peer)
    snap = t.snapshot(peer)
    assert snap.send_queued_frames == 2
    assert snap.send_frame_size == 4 + size
    assert 0 < snap.send_frame_sent < 4 + size  # a socket pair holds far less than 1 MiB
    assert snap.send_queued_bytes == (4 + size) + (4 + 4) - snap.send_frame_sent
    assert t.write_buffer_size(peer) == snap.send_queued_bytes
    got = bytearray()
    ew.watch_read(other.fileno(), lambda: got.extend(other.recv(256 * KiB)))
    ew.run_until(lambda: len(got) == 4 + size + 8, timeout=10)
    assert got == encode_frame(bytes(size)) + encode_frame(b"tail")
    assert t.snapshot(peer)[4:] == (0, 0, 0, 0)


def test_snapshot_of_a_closed_peer_raises_transport_closed(ew, adopted):
    endpoint, peer, other = adopted
    endpoint.transport.close(peer)
    other.shutdown(socket.SHUT_WR)  # the peer ends its side: the close need not linger
    ew.run_until(lambda: endpoint.closed(peer), timeout=5)
    with pytest.raises(TransportClosedError, match="is closed"):
        endpoint.transport.snapshot(peer)


# ------------------------------------------------------------- pulling frames
@pytest.mark.parametrize("adopted", [False], indirect=True, ids=["by-hand"])
def test_resume_read_copies_a_frame_into_the_callers_buffer(ew, adopted):
    endpoint, peer, other = adopted
    t = endpoint.transport
    other.send(encode_frame(b"abcdef") + encode_frame(b"too long for the room"))
    ew.run_until(lambda: endpoint.of_kind(EventKind.READABLE, peer), timeout=5)
    buffer = bytearray(10)
    r = t.resume_read(peer, buffer, offset=2)
    assert r.status is IOStatus.OK
    assert bytes(r.data) == b"abcdef"
    assert buffer == b"\0\0abcdef\0\0"
    with pytest.raises(BufferError, match="does not fit"):
        t.resume_read(peer, buffer, offset=0, max_len=5)


@pytest.mark.parametrize("adopted", [False], indirect=True, ids=["by-hand"])
def test_a_frame_refused_for_a_small_buffer_is_still_the_next_to_read(ew, adopted):
    """BufferError refuses the read; it does not consume the frame: the owner
    can retry with room enough (or without a buffer) and loses nothing."""
    endpoint, peer, other = adopted
    t = endpoint.transport
    other.send(encode_frame(b"A" * 100) + encode_frame(b"B"))
    ew.run_until(lambda: endpoint.of_kind(EventKind.READABLE, peer), timeout=5)
    with pytest.raises(BufferError, match="a 100-byte message does not fit in 10 bytes"):
        t.resume_read(peer, bytearray(10))
    bigger = bytearray(100)
    assert bytes(t.resume_read(peer, bigger).data) == b"A" * 100
    assert t.resume_read(peer).data == b"B"
    assert t.resume_read(peer).status is IOStatus.WOULD_BLOCK


@pytest.mark.parametrize("adopted", [False], indirect=True, ids=["by-hand"])
def test_suspend_read_stops_readable_until_the_owner_resumes(ew, adopted):
    endpoint, peer, other = adopted
    t = endpoint.transport
    t.suspend_read(peer)
    other.send(encode_frame(b"one") + encode_frame(b"two"))
    turns(ew)
    assert endpoint.of_kind(EventKind.READABLE) == []
    assert t.resume_read(peer).data == b"one"  # resuming reads what waited
    assert t.resume_read(peer).data == b"two"
    assert t.resume_read(peer).status is IOStatus.WOULD_BLOCK


@pytest.mark.parametrize("adopted", [False], indirect=True, ids=["by-hand"])
def test_an_owner_that_stops_pulling_stops_the_reading(ew, adopted):
    """A slow owner costs bounded memory: frames pile up in the kernel, then the
    sender is stuck, instead of piling up in this layer."""
    endpoint, peer, other = adopted
    t = endpoint.transport
    frame, total = encode_frame(bytes(1000)), 3000
    sent = 0  # whole frames written by the raw sender
    pending = memoryview(b"")

    def write_more() -> None:
        nonlocal sent, pending
        with contextlib.suppress(BlockingIOError):
            while sent < total or pending:
                if not pending:
                    pending, sent = memoryview(frame), sent + 1
                pending = pending[other.send(pending) :]
        if sent == total and not pending:
            ew.unwatch_write(other.fileno())

    ew.watch_write(other.fileno(), write_more)
    turns(ew, 20)
    waiting = t.snapshot(peer).frames_waiting
    stuck_at = sent
    turns(ew, 20)
    assert 0 < waiting == t.snapshot(peer).frames_waiting  # no more read meanwhile
    assert sent == stuck_at < total  # so the sender is stuck
    got = 0
    while got < total:
        while t.resume_read(peer).status is IOStatus.OK:
            got += 1
        ew.run_once(0.01)
    assert got == total


@pytest.mark.parametrize("size", [10, 256 * KiB], ids=["small", "256KiB"])
def test_peer_that_half_closes_still_gets_every_echo_before_eof(
    ew, framed_server, raw_conns, size
):
    server = framed_server(sndbuf=4096)
    sock, speer = raw_peer(ew, server, raw_conns)
    frames = [bytes([i]) * size for i in range(3)]
    sock.sendall(b"".join(encode_frame(f) for f in frames))
    sock.shutdown(socket.SHUT_WR)  # a clean end between frames
    sock.setblocking(False)
    echoed = bytearray()
    eof = []

    def read_echo() -> None:
        with contextlib.suppress(BlockingIOError):
            chunk = sock.recv(256 * KiB)
            if chunk:
                echoed.extend(chunk)
            else:
                eof.append(True)
                ew.unwatch_read(sock.fileno())

    ew.watch_read(sock.fileno(), read_echo)
    try:
        ew.run_until(lambda: eof, timeout=10)
    finally:
        ew.unwatch(sock.fileno())
    assert echoed == b"".join(encode_frame(f) for f in frames)
    ew.run_until(lambda: server.closed(speer), timeout=5)
    assert server.closed(speer)[0].status is IOStatus.EOF


# ------------------------------------------- flow control meets graceful close
class GatedSocket(WrappedSocket):
    """One end of a socket pair whose sends the test meters out: ``budget`` bytes
    may leave, then ``send`` says EAGAIN (``None``: no limit). Receives pass
    straight through."""

    def __init__(self, real: socket.socket) -> None:
        super().__init__(real)
        self.budget: int | None = 0

    def send(self, data: bytes, flags: int = 0) -> int:
        return self.sendmsg([data], (), flags)

    def sendmsg(self, buffers: list[bytes], ancdata: object = (), flags: int = 0) -> int:
        data = b"".join(bytes(b) for b in buffers)
        if self.budget is not None:
            if self.budget == 0:
                raise BlockingIOError(11, "gated")
            data = data[: self.budget]
        sent = self.real.send(data, flags)
        if self.budget is not None:
            self.budget -= sent
        return sent


def test_frames_written_and_closed_from_resume_writing_are_sent_before_the_close(
    ew, framed_endpoint
):
    """RESUME_WRITING can come from the very flush that emptied the queue. An
    owner that writes more there (and then closes gracefully) must not get a
    DRAINED for a queue that is not empty, nor lose what it queued."""
    a, b = socket.socketpair()
    b.setblocking(False)
    received = bytearray()
    eof: list[bool] = []
    try:
        gated = GatedSocket(a)
        transport = FramedTransport(TcpTransport(), high_water=64 * KiB)
        endpoint = framed_endpoint(transport)
        peer = transport.adopt(gated)
        drained_with_bytes_queued: list[int] = []
        acted: list[bool] = []

        def on_event(event) -> None:
            if event.kind is EventKind.RESUME_WRITING and not acted:
                acted.append(True)
                transport.resume_write(bytes(500 * KiB), peer)  # the gate is shut: queued
                transport.close(peer)  # graceful: after the queue
            elif event.kind is EventKind.DRAINED:
                drained_with_bytes_queued.append(transport.write_buffer_size(peer))

        endpoint.on_event = on_event

        def read_b() -> None:
            with contextlib.suppress(BlockingIOError):
                chunk = b.recv(256 * KiB)
                received.extend(chunk)
                if not chunk:
                    eof.append(True)
                    ew.unwatch_read(b.fileno())
                    b.shutdown(socket.SHUT_WR)  # end our side too: the close need not linger

        ew.watch_read(b.fileno(), read_b)

        gated.budget = 10 * KiB
        transport.resume_write(bytes(100 * KiB), peer)
        assert endpoint.of_kind(EventKind.PAUSE_WRITING)  # 90 KiB queued > 64 KiB
        # Let exactly the rest of the queue through: that flush empties it.
        gated.budget = transport.write_buffer_size(peer)
        ew.run_until(lambda: endpoint.of_kind(EventKind.RESUME_WRITING), timeout=5)
        assert transport.write_buffer_size(peer) == 4 + 500 * KiB
        turns(ew)
        assert drained_with_bytes_queued == []
        gated.budget = None  # open the gate
        ew.run_until(lambda: eof and endpoint.closed(peer), timeout=10)
    finally:
        ew.unwatch(b.fileno())
        a.close()
        b.close()
    assert received == encode_frame(bytes(100 * KiB)) + encode_frame(bytes(500 * KiB))
    assert drained_with_bytes_queued in ([], [0])
    ew.run_until(lambda: endpoint.closed(peer), timeout=5)
    assert endpoint.closed(peer)[0].status is IOStatus.OK


class _ShortButOk(TransportLayer):
    """A byte transport that takes at most 3 bytes per write and says OK, not
    WOULD_BLOCK: it never promises a WRITABLE, so the layer above must go on."""

    def resume_write(self, data, peer):  # type: ignore[no-untyped-def]
        view = memoryview(b"".join(bytes(b) for b in data) if isinstance(data, list) else data)
        result = self.inner.resume_write(view[:3], peer)
        return WriteResult(result.sent, result.status if result.sent == 0 else IOStatus.OK)


def test_a_short_write_reported_ok_is_finished_not_taken_as_complete(stage):
    server = stage.server(echo=False)
    assert server.address is not None
    client = stage.client(server.address, transport=FramedTransport(_ShortButOk(TcpTransport())))
    peer = client.connect(server.address)
    payloads = [bytes(range(100)), b"second"]
    for payload in payloads:
        client.transport.resume_write(payload, peer)
    stage.run_until(lambda: server.accepted() and len(server.frames[server.accepted()[0]]) == 2)
    assert server.frames[server.accepted()[0]] == payloads


class _Gate(TransportLayer):
    """A byte transport that takes exactly as many bytes as the test allows, and
    keeps them: the frame queue above it can be walked to any size, byte by byte."""

    def __init__(self, inner: TcpTransport) -> None:
        super().__init__(inner)
        self.budget = 0
        self.taken = bytearray()

    def resume_write(self, data, peer):  # type: ignore[no-untyped-def]
        parts = data if isinstance(data, list) else [data]
        wire = b"".join(bytes(p) for p in parts)
        n = min(len(wire), self.budget)
        self.budget -= n
        self.taken += wire[:n]
        return WriteResult(n, IOStatus.OK if n == len(wire) else IOStatus.WOULD_BLOCK)

    def suspend_write(self, peer):  # type: ignore[no-untyped-def]
        pass

    def allow(self, n: int, peer: Peer) -> None:
        self.budget += n
        self._emit(IOEvent(EventKind.WRITABLE, peer))


def test_the_water_marks_trip_exactly_past_high_and_at_low(ew):
    """PAUSE_WRITING once the queue goes *over* high_water (not at it);
    RESUME_WRITING once it falls *to* low_water (not just above it)."""
    mine, theirs = socket.socketpair()
    gate = _Gate(TcpTransport())
    framed = FramedTransport(gate, high_water=100, low_water=40)
    events: list = []
    framed.attach(ew, events.append)
    try:
        peer = framed.adopt(mine)

        def marks() -> list:
            return [
                e.kind
                for e in events
                if e.kind in (EventKind.PAUSE_WRITING, EventKind.RESUME_WRITING)
            ]

        framed.resume_write(bytes(96), peer)  # 4 + 96 = 100 queued: at high, not over
        assert framed.write_buffer_size(peer) == 100 and marks() == []
        framed.resume_write(b"x", peer)  # 105: over
        assert marks() == [EventKind.PAUSE_WRITING]
        gate.allow(64, peer)  # 41 left: just above low
        assert framed.write_buffer_size(peer) == 41 and marks() == [EventKind.PAUSE_WRITING]
        gate.allow(1, peer)  # 40: at low
        assert framed.write_buffer_size(peer) == 40
        assert marks() == [EventKind.PAUSE_WRITING, EventKind.RESUME_WRITING]
        gate.allow(40, peer)
        assert bytes(gate.taken) == encode_frame(bytes(96)) + encode_frame(b"x")
        assert events[-1].kind is EventKind.DRAINED
    finally:
        framed.close()
        theirs.close()


# -------------------------------------------------------- how it reads below
def test_small_frames_are_read_plain_and_a_large_ones_rest_into_its_own_buffer(ew) -> None:
    """Between small frames FramedTransport reads plain bytes (at most 64 KiB) and
    the decoder cuts the frames out of them; the rest of a large frame is read
    into the decoder's memory, and its successor's header alone."""
    below = TracingTransport(TcpTransport(), side="server")
    server = FramedTransport(below, max_frame_size=4 * MiB)
    got: list[bytes | bytearray] = []

    def reads() -> list[tuple[str, int]]:
        return [(r.call, r.asked) for r in below.trace.records if r.call.startswith("recv")]

    def on_event(event: IOEvent) -> None:
        if event.kind is EventKind.READABLE:
            got.extend(server.read_frames(event.peer))

    server.attach(ew, on_event)
    with socket.create_connection(server.bind(), timeout=5) as sock:
        for message in (b"small", b"x" * 1000):
            sock.sendall(encode_frame(message))
            ew.run_until(lambda m=message: got[-1:] == [m], timeout=5)
        assert set(reads()) == {("recv", 64 * KiB)}
        below.trace.records.clear()
        large = random.Random(1).randbytes(1 * MiB)
        sock.sendall(encode_frame(large) + encode_frame(b"after"))
        ew.run_until(lambda: got[-1:] == [b"after"], timeout=5)
        assert got[-2:] == [large, b"after"]
        calls = [call for call, _ in reads()]
        assert calls[0] == "recv" and "recv_into" in calls  # its start, then its body
        assert ("recv", 4) in reads()  # the header after it, alone
    server.close()
    turns(ew)


def test_a_flood_of_small_frames_is_read_plain_the_scratch_only_finishing_cut_frames(ew) -> None:
    """More small frames than a turn takes, in reads that cut frames in two: the
    frames past a turn's worth wait in the plain read's bytes, and a read into
    the decoder's memory only ever asks for the rest of a cut frame."""
    below = TracingTransport(TcpTransport(), side="server")
    server = FramedTransport(below)
    got: list[bytes | bytearray] = []

    def on_event(event: IOEvent) -> None:
        if event.kind is EventKind.READABLE:
            got.extend(server.read_frames(event.peer))

    server.attach(ew, on_event)
    frames = [i.to_bytes(4, "big") * 4 for i in range(5000)]  # 20-byte payloads, 120 KB
    with socket.create_connection(server.bind(), timeout=5) as sock:
        sock.sendall(b"".join(encode_frame(f) for f in frames))
        ew.run_until(lambda: len(got) == len(frames), timeout=5)
    assert got == frames
    reads = [(r.call, r.asked) for r in below.trace.records if r.call.startswith("recv")]
    assert ("recv", 64 * KiB) in reads
    assert all(asked <= HEADER_SIZE + 20 for call, asked in reads if call == "recv_into")
    server.close()
    turns(ew)
