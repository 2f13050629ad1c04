"""What framing costs, counted rather than timed: system calls per batch of small
frames (queued frames leave together, coalescing), copies per byte in the decoder
(linear however the stream is chopped up), and large-frame buffers received into
once and reused only when handed back. These are the mechanisms behind the
benchmark's figures; the benchmark itself is tested in test_bench.py."""

from __future__ import annotations

import socket
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest

from barknet import EventKind, EventWatcher, FramedTransport, IOStatus, TcpTransport
from barknet.framing import DEFAULT_BUFFER_SIZE, FrameDecoder, encode_frame

pytestmark = pytest.mark.usefixtures("no_leaks")


# ------------------------------------------------------------------ mechanisms
@pytest.fixture
def pair(ew: EventWatcher) -> Iterator[tuple[Any, ...]]:
    """A framed sender and a framed receiver joined by a socketpair."""
    made: list[FramedTransport] = []
    received: list[Any] = []

    def make(**options: Any) -> tuple[FramedTransport, Any, FramedTransport, Any]:
        a, b = socket.socketpair()
        sender = FramedTransport(TcpTransport(), max_frame_size=64 << 20, **options)
        receiver = FramedTransport(TcpTransport(), max_frame_size=64 << 20)

        def on_receiver(ev: Any) -> None:
            if ev.kind is EventKind.READABLE:
                while (r := receiver.resume_read(ev.peer)).status is IOStatus.OK:
                    received.append(r.data)

        sender.attach(ew, lambda ev: None)
        receiver.attach(ew, on_receiver)
        made.extend((sender, receiver))
        return sender, sender.adopt(a), receiver, receiver.adopt(b)

    try:
        yield make, received
    finally:
        for transport in made:
            transport.close()
        ew.run_once(0)


def test_a_16_mib_frame_grows_as_it_arrives_then_reuses_the_buffer_handed_back(
    ew: EventWatcher, pair: tuple[Any, ...]
) -> None:
    make, received = pair
    sender, s_peer, receiver, r_peer = make()
    size = 16 << 20
    payload = bytes(size)
    decoder = receiver._recv[r_peer].decoder

    def one_frame() -> int:
        tracemalloc.start()
        try:
            sender.resume_write(payload, s_peer)
            ew.run_until(lambda: len(received) == 1, timeout=30)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    peak = one_frame()
    (frame,) = received
    assert isinstance(frame, bytearray) and len(frame) == size and frame == payload
    # A fresh frame's body grows with the bytes (doubling, in place): one buffer of
    # the frame's size in the end and small change, and no copy beyond what landed
    # in the scratch with the header.
    assert peak < size + (1 << 20)
    assert decoder.bytes_copied < DEFAULT_BUFFER_SIZE
    received.clear()
    receiver.recycle(frame, r_peer)  # done with it: the next 16 MiB frame lands in it
    del frame
    copied = decoder.bytes_copied
    peak = one_frame()
    (frame,) = received
    assert len(frame) == size and frame == payload
    # One buffer of the frame's size, already ours: no growing, no final copy.
    assert peak < 1 << 20
    # Nothing copied at all: after a large frame the next header is read alone, so
    # none of this payload lands in the scratch.
    assert decoder.bytes_copied == copied
    counters = receiver.counters(r_peer)
    assert counters.bytes_received == 2 * (size + 4)
    assert counters.recv_calls <= 2 * size // (16 * 1024)  # reads of at least 16 KiB on average
    sent = sender.counters(s_peer)
    assert sent.bytes_sent == 2 * (size + 4) and sent.send_calls <= 2 * size // (16 * 1024)


def test_small_frames_queued_behind_a_blocked_socket_leave_together(
    ew: EventWatcher, pair: tuple[Any, ...]
) -> None:
    make, received = pair
    sender, s_peer, _, _ = make()
    # A frame larger than both socket buffers blocks the socket until the
    # receiver drains; 2000 small frames queue behind it meanwhile.
    first = sender.resume_write(bytes(8 << 20), s_peer)
    assert first.status is IOStatus.WOULD_BLOCK
    before = sender.counters(s_peer).send_calls
    for i in range(2000):
        assert sender.resume_write(b"%064d" % i, s_peer).status is IOStatus.WOULD_BLOCK
    assert sender.counters(s_peer).send_calls == before  # queued, not sent
    ew.run_until(lambda: len(received) == 2001, timeout=30)
    assert [bytes(f) for f in received[1:]] == [b"%064d" % i for i in range(2000)]
    sends = sender.counters(s_peer).send_calls - before
    assert sends < 2000 / 20  # in practice a handful


def test_coalescing_sends_a_turns_worth_of_small_frames_in_one_call(
    ew: EventWatcher, pair: tuple[Any, ...]
) -> None:
    make, received = pair
    sender, s_peer, _, _ = make(coalesce=True, high_water=1 << 20)
    results = [sender.resume_write(b"%064d" % i, s_peer) for i in range(1000)]
    # The first frame leaves at once (no added latency); the rest wait for the turn's end.
    assert results[0].status is IOStatus.OK and results[0].sent == 68
    assert {r.status for r in results[1:]} == {IOStatus.WOULD_BLOCK}
    assert sender.counters(s_peer).send_calls == 1
    ew.run_until(lambda: len(received) == 1000, timeout=10)
    assert [bytes(f) for f in received] == [b"%064d" % i for i in range(1000)]
    counters = sender.counters(s_peer)
    assert counters.send_calls <= 3 and counters.frames_sent == 1000
    # The next turn starts afresh: its first frame leaves at once again.
    assert sender.resume_write(b"again", s_peer).status is IOStatus.OK


def test_without_coalescing_an_idle_socket_sends_each_frame_at_once(
    ew: EventWatcher, pair: tuple[Any, ...]
) -> None:
    make, received = pair
    sender, s_peer, _, _ = make()
    for i in range(10):
        result = sender.resume_write(b"%064d" % i, s_peer)
        assert result.status is IOStatus.OK and result.sent == 68
    assert sender.counters(s_peer).send_calls == 10
    ew.run_until(lambda: len(received) == 10, timeout=10)


@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_decoder_copying_grows_linearly_with_the_input(chunk: int) -> None:
    def copies(stream: bytes) -> int:
        decoder = FrameDecoder(buffer_size=4096)
        view, frames = memoryview(stream), 0
        for i in range(0, len(stream), chunk):
            frames += len(decoder.feed(view[i : i + chunk]))
        assert decoder.state.part == "idle"
        return decoder.bytes_copied

    unit = b"".join(encode_frame(bytes(n)) for n in (0, 1, 64, 1000, 3000, 20_000))
    small, large = unit * 4, unit * 16
    # Four times the input, about four times the copies (a buffer that re-copies
    # what it holds would give sixteen), and never more than twice the bytes fed.
    assert copies(large) <= 6 * copies(small)
    assert copies(large) <= 2 * len(large)


def test_a_large_frame_body_is_refilled_only_once_its_owner_handed_it_back() -> None:
    decoder = FrameDecoder(max_frame_size=4 << 20)
    stream = encode_frame(bytes(1 << 20))

    def allocated_while_decoding() -> tuple[Any, int]:
        tracemalloc.start()
        try:
            (frame,) = decoder.feed(stream)
            return frame, tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    (first,) = decoder.feed(stream)
    decoder.recycle(first)  # the owner is done with it: the next frame of that size refills it
    second, fresh = allocated_while_decoding()
    assert fresh < 256 * 1024 and len(second) == 1 << 20 and second is first
    third, fresh = allocated_while_decoding()  # `second` was not handed back: a new buffer
    assert fresh >= 1 << 20 and third is not second and len(third) == 1 << 20
    decoder.recycle(third)
    (other,) = decoder.feed(encode_frame(b"y" * (2 << 20)))  # another size: a new buffer
    assert len(other) == 2 << 20 and other[:1] == b"y" and other is not third
    # ... and `third` is still kept (recycle: "until a frame of its size arrives").
    (fourth,) = decoder.feed(stream)
    assert fourth is third
