"""FramedTransport's batch calls, ``read_frames`` and ``write_frames``: the same
promises as ``resume_read`` and ``resume_write`` (order, level-triggered
READABLE, the end of the stream, water marks, all-or-nothing limits), with one
call per batch instead of one per frame."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest

from barknet import (
    EventKind,
    EventWatcher,
    FramedTransport,
    FrameTooLargeError,
    IOEvent,
    IOStatus,
    TcpTransport,
    TransportClosedError,
)
from barknet import framed as framed_module
from barknet.framing import FrameDecoder, encode_frame, encode_header

pytestmark = pytest.mark.usefixtures("no_leaks")

KiB = 1024


class BatchOwner:
    """Reads with ``read_frames`` only: ``limit`` frames per call, ``calls`` calls
    per READABLE (None: until a call returns nothing); never ``resume_read``."""

    def __init__(self, transport: FramedTransport, limit: int | None, calls: int | None) -> None:
        self.transport, self.limit, self.calls = transport, limit, calls
        self.frames: list[bytes] = []
        self.batches: list[int] = []  # frames per call that returned some
        self.events: list[IOEvent] = []

    def on_event(self, event: IOEvent) -> None:
        self.events.append(event)
        if event.kind is not EventKind.READABLE:
            return
        calls = 0
        while self.calls is None or calls < self.calls:
            calls += 1
            got = self.transport.read_frames(event.peer, self.limit)
            if not got:
                break
            self.batches.append(len(got))
            self.frames += [bytes(f) for f in got]

    def kinds(self, kind: EventKind) -> list[IOEvent]:
        return [e for e in self.events if e.kind is kind]


@pytest.fixture
def pair(ew: EventWatcher) -> Iterator[Any]:
    """``make(limit=None, calls=None, **options)``: a FramedTransport over one end of a
    socket pair, read by a :class:`BatchOwner`; returns ``(owner, peer, other)``,
    ``other`` being the raw end the test drives."""
    made: list[tuple[FramedTransport, socket.socket, socket.socket]] = []

    def make(limit: int | None = None, calls: int | None = None, **options: Any) -> Any:
        a, b = socket.socketpair()
        b.setblocking(False)
        transport = FramedTransport(TcpTransport(), **options)
        made.append((transport, a, b))
        owner = BatchOwner(transport, limit, calls)
        transport.attach(ew, owner.on_event)
        return owner, transport.adopt(a), b

    try:
        yield make
    finally:
        for transport, a, b in made:
            transport.close()
            for _ in range(3):
                ew.run_once(0)
            a.close()
            b.close()


def run_turns(ew: EventWatcher, n: int = 10) -> None:
    for _ in range(n):
        ew.run_once(0.01)


def received(sock: socket.socket, ew: EventWatcher, count: int) -> list[bytes]:
    """``count`` frames read from the raw end ``sock`` (while the loop runs)."""
    decoder, frames = FrameDecoder(), []
    for _ in range(500):
        ew.run_once(0.01)
        try:
            data = sock.recv(1 << 20)
        except BlockingIOError:
            continue
        frames += [bytes(f) for f in decoder.feed(data)]
        if len(frames) >= count:
            break
    return frames


# ------------------------------------------------------------------ read_frames
def test_read_frames_hands_over_every_frame_already_here_in_one_call(ew, pair) -> None:
    owner, _peer, other = pair()
    payloads = [b"frame %d" % i for i in range(50)]
    other.sendall(b"".join(encode_frame(p) for p in payloads))  # all there before a read
    run_turns(ew)
    assert owner.frames == payloads
    assert owner.batches[0] == 50  # one read decoded them, one call handed them over


def test_read_frames_with_nothing_here_returns_an_empty_list_and_resume_read_says_why(
    ew, pair
) -> None:
    owner, peer, other = pair(calls=0)  # takes nothing by itself
    transport = owner.transport
    assert transport.read_frames(peer) == []
    assert transport.resume_read(peer).status is IOStatus.WOULD_BLOCK
    other.sendall(encode_frame(b"partial")[:6])  # half a frame is not a frame
    run_turns(ew)
    assert transport.read_frames(peer) == []


def test_an_owner_taking_one_frame_per_readable_gets_all_of_them_level_triggered(ew, pair) -> None:
    owner, _peer, other = pair(limit=1, calls=1)
    other.sendall(b"".join(encode_frame(b"%d" % i) for i in range(3)))
    run_turns(ew, 20)
    assert owner.frames == [b"0", b"1", b"2"]
    assert owner.batches == [1, 1, 1]
    # READABLE came once per frame that waited, not once per turn (no busy loop).
    assert len(owner.kinds(EventKind.READABLE)) == 3


def test_read_frames_after_suspend_read_reads_again(ew, pair) -> None:
    owner, peer, other = pair(calls=0)
    transport = owner.transport
    transport.suspend_read(peer)
    other.sendall(encode_frame(b"one") + encode_frame(b"two"))
    run_turns(ew)
    assert owner.kinds(EventKind.READABLE) == []
    assert transport.read_frames(peer) == [b"one", b"two"]  # resuming read what waited
    other.sendall(encode_frame(b"three"))
    run_turns(ew)
    assert owner.kinds(EventKind.READABLE)  # and reading goes on: READABLE again
    assert transport.read_frames(peer) == [b"three"]


def test_the_peers_end_after_frames_read_in_batches_is_a_clean_closed(ew, pair) -> None:
    owner, peer, other = pair()
    other.sendall(encode_frame(b"a") + encode_frame(b"b"))
    other.shutdown(socket.SHUT_WR)
    run_turns(ew, 20)
    assert owner.frames == [b"a", b"b"]
    (closed,) = owner.kinds(EventKind.CLOSED)
    assert closed.peer == peer and closed.status is IOStatus.EOF


@pytest.mark.parametrize("limit", [None, 1], ids=["all-at-once", "one-per-readable"])
def test_frames_and_the_end_read_together_still_end_in_a_clean_closed(ew, pair, limit) -> None:
    # Exactly one scratch of frames, then the end: the read that takes the frames
    # is full (not short), so the same pump reads the EOF while the frames wait.
    owner, peer, other = pair(limit=limit, calls=1, buffer_size=4 * KiB)
    frame = encode_frame(bytes(60))
    other.sendall(frame * (4 * KiB // len(frame)))
    other.shutdown(socket.SHUT_WR)
    run_turns(ew, 100)
    assert len(owner.frames) == 4 * KiB // len(frame)
    (closed,) = owner.kinds(EventKind.CLOSED)
    assert closed.peer == peer and closed.status is IOStatus.EOF


def test_with_half_close_read_frames_leaves_the_eof_for_resume_read(ew, pair) -> None:
    owner, peer, other = pair(half_close=True)
    transport = owner.transport
    other.sendall(encode_frame(b"last"))
    other.shutdown(socket.SHUT_WR)
    run_turns(ew, 20)
    assert owner.frames == [b"last"]
    assert owner.kinds(EventKind.CLOSED) == []  # the EOF waits to be read
    assert transport.read_frames(peer) == []
    assert transport.resume_read(peer).status is IOStatus.EOF


def test_frames_before_a_bad_header_come_out_then_the_peer_is_closed_with_the_error(
    ew, pair
) -> None:
    owner, _peer, other = pair(max_frame_size=1 * KiB)
    other.sendall(encode_frame(b"good") + encode_header(1 << 20))
    run_turns(ew, 20)
    assert owner.frames == [b"good"]
    (closed,) = owner.kinds(EventKind.CLOSED)
    assert closed.status is IOStatus.ERROR and isinstance(closed.error, FrameTooLargeError)


@pytest.mark.parametrize("limit", [0, -1])
def test_a_limit_below_one_is_refused_and_takes_nothing(ew, pair, limit) -> None:
    owner, peer, other = pair(calls=0)
    transport = owner.transport
    other.sendall(encode_frame(b"a") + encode_frame(b"b"))
    run_turns(ew)
    with pytest.raises(ValueError, match="at least 1"):
        transport.read_frames(peer, limit)
    assert transport.read_frames(peer, 1) == [b"a"]
    assert transport.read_frames(peer) == [b"b"]


def test_read_frames_of_a_closed_peer_raises_transport_closed(ew, pair) -> None:
    owner, peer, _other = pair()
    owner.transport.abort(peer)
    run_turns(ew)
    assert owner.kinds(EventKind.CLOSED)
    with pytest.raises(TransportClosedError):
        owner.transport.read_frames(peer)


def test_a_flood_read_in_batches_still_gets_at_most_a_turns_worth_per_turn(ew, pair) -> None:
    owner, _peer, other = pair()
    per_turn = framed_module.FRAMES_PER_TURN
    count = 8 * per_turn
    other.sendall(encode_frame(b"") * count)  # 4 bytes each: the kernel holds them all
    served = []
    for _ in range(100):  # a bound on the test, not on the transport: 8 turns should do
        before = len(owner.frames)
        ew.run_once(0.1)
        served.append(len(owner.frames) - before)
        if len(owner.frames) >= count:
            break
    assert len(owner.frames) == count
    assert max(served) <= per_turn


# ------------------------------------------------------------------ write_frames
@pytest.mark.parametrize("coalesce", [False, True], ids=["plain", "coalesce"])
def test_write_frames_sends_each_buffer_as_one_frame_in_order(ew, pair, coalesce) -> None:
    owner, peer, other = pair(coalesce=coalesce)
    payloads = [b"x" * (i % 70) for i in range(300)] + [bytes(100 * KiB), memoryview(b"mv")]
    owner.transport.write_frames(payloads, peer)
    assert received(other, ew, len(payloads)) == [bytes(p) for p in payloads]


def test_with_coalesce_the_first_batch_of_a_turn_leaves_at_once_and_later_ones_at_its_end(
    ew, pair
) -> None:
    owner, peer, other = pair(coalesce=True)
    transport = owner.transport
    transport.write_frames([b"first", b"batch"], peer)
    first = encode_frame(b"first") + encode_frame(b"batch")
    assert other.recv(100) == first  # in the kernel already: no loop turn needed
    transport.write_frames([b"second"], peer)
    with pytest.raises(BlockingIOError):
        other.recv(100)  # waits for the end of the turn
    ew.run_once(0)
    assert other.recv(100) == encode_frame(b"second")


@pytest.mark.parametrize("given_as", ["bytes", "parts"])
def test_with_coalesce_the_first_frame_of_a_turn_leaves_at_once_however_it_is_given(
    ew, pair, given_as
) -> None:
    owner, peer, other = pair(coalesce=True)
    transport = owner.transport
    first = b"hello" if given_as == "bytes" else [b"hel", b"lo"]
    result = transport.resume_write(first, peer)
    assert result.status is IOStatus.OK and result.sent == 9
    assert other.recv(100) == encode_frame(b"hello")  # in the kernel already
    later = b"again" if given_as == "bytes" else [b"aga", b"in"]
    assert transport.resume_write(later, peer).status is IOStatus.WOULD_BLOCK
    with pytest.raises(BlockingIOError):
        other.recv(100)  # waits for the end of the turn
    ew.run_once(0)
    assert other.recv(100) == encode_frame(b"again")


def test_small_frames_written_as_a_batch_share_one_system_call(ew, pair) -> None:
    owner, peer, other = pair()
    transport = owner.transport
    before = transport.inner.counters(peer).send_calls
    transport.write_frames([b"y" * 64] * 500, peer)  # 34 KB in all
    got = received(other, ew, 500)
    assert len(got) == 500
    assert transport.inner.counters(peer).send_calls - before == 1


def test_a_batch_with_one_payload_over_the_limit_raises_and_queues_nothing(ew, pair) -> None:
    owner, peer, other = pair(max_frame_size=1 * KiB)
    transport = owner.transport
    with pytest.raises(FrameTooLargeError):
        transport.write_frames([b"ok", bytes(2 * KiB), b"ok too"], peer)
    assert transport.write_buffer_size(peer) == 0
    transport.write_frames([b"after"], peer)
    assert received(other, ew, 1) == [b"after"]  # nothing of the refused batch went out


@pytest.mark.parametrize(
    "bad",
    [
        [b"two", b"!"],
        "text",
        42,
        memoryview(b"0123456789")[::2],  # strided: no send or append takes it
        memoryview(bytes(10_000))[::2],  # (large: it would be queued as it is)
    ],
    ids=["multi-part", "str", "int", "small strided view", "large strided view"],
)
def test_a_batch_with_one_payload_that_is_not_a_buffer_raises_and_queues_nothing(
    ew, pair, bad
) -> None:
    owner, peer, other = pair()
    transport = owner.transport
    transport.write_frames([b"warm-up"], peer)  # leaves at once: the queue is empty
    with pytest.raises(TypeError, match="one bytes-like payload per frame"):
        transport.write_frames([b"one", bad, b"three"], peer)
    assert transport.write_buffer_size(peer) == 0
    transport.write_frames([b"after"], peer)
    # The stream is intact: no stray header of the refused batch between the two.
    assert received(other, ew, 2) == [b"warm-up", b"after"]


@pytest.mark.parametrize(
    "bad",
    [
        "text",
        "",
        ["ab", b"c"],
        [b"a", 42],
        memoryview(b"0123456789")[::2],
        memoryview(bytes(10_000))[::2],
        [b"a", memoryview(b"0123456789")[::2]],
        # Contiguous, but cut by items or rows where a short write cuts by bytes:
        memoryview(bytearray(400_000)).cast("i"),
        memoryview(bytearray(400_000)).cast("B", (400, 1000)),
    ],
    ids=[
        *("str", "empty str", "str part", "int part", "small strided", "large strided"),
        *("strided part", "int items", "rows"),
    ],
)
def test_a_write_of_what_is_not_bytes_raises_type_error_and_queues_nothing(ew, pair, bad) -> None:
    """resume_write takes one buffer or a sequence of them: anything else is a
    TypeError before a byte is queued, so the peer's queue and stream stay whole."""
    owner, peer, other = pair()
    transport = owner.transport
    with pytest.raises(TypeError, match="resume_write takes bytes-like data"):
        transport.resume_write(bad, peer)
    assert transport.write_buffer_size(peer) == 0
    transport.resume_write(b"after", peer)
    assert received(other, ew, 1) == [b"after"]


def test_a_write_to_a_closed_peer_is_refused_as_closed_before_any_payload_is_looked_at(
    ew, pair
) -> None:
    owner, peer, _other = pair(max_frame_size=1 * KiB)
    owner.transport.close(peer)
    # As resume_write: the peer's state is the first thing said, whatever the payload.
    with pytest.raises(TransportClosedError):
        owner.transport.resume_write(bytes(2 * KiB), peer)
    with pytest.raises(TransportClosedError):
        owner.transport.write_frames([bytes(2 * KiB)], peer)


def test_a_batch_past_high_water_pauses_then_resumes_the_writer(ew, pair) -> None:
    owner, peer, other = pair(high_water=16 * KiB, low_water=4 * KiB)
    transport = owner.transport
    other_buffer = other.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    # More than the kernel's buffers hold, so some of it must wait in the queue.
    batch = [bytes(1000)] * (4 * other_buffer // 1000 + 64)
    transport.write_frames(batch, peer)
    # Inside the call, as with resume_write: not a turn later.
    assert owner.kinds(EventKind.PAUSE_WRITING)
    assert transport.write_buffer_size(peer) > 16 * KiB
    assert len(received(other, ew, len(batch))) == len(batch)
    run_turns(ew)
    assert owner.kinds(EventKind.RESUME_WRITING)
    assert transport.write_buffer_size(peer) == 0


def test_write_frames_after_close_or_write_eof_raises_transport_closed(ew, pair) -> None:
    owner, peer, _other = pair()
    owner.transport.write_eof(peer)
    with pytest.raises(TransportClosedError, match="write_eof"):
        owner.transport.write_frames([b"late"], peer)
    owner2, peer2, _other2 = pair()
    owner2.transport.close(peer2)
    with pytest.raises(TransportClosedError):
        owner2.transport.write_frames([b"late"], peer2)


def test_an_empty_batch_sends_nothing(ew, pair) -> None:
    owner, peer, other = pair()
    result = owner.transport.write_frames([], peer)
    assert result.status is IOStatus.OK and result.sent == 0
    run_turns(ew)
    with pytest.raises(BlockingIOError):
        other.recv(100)
