"""FrameQueue, the sending half of the codec: queue frames, write what the socket takes,
and the queue keeps the rest in order, counting the frames that left whole."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from barknet import FrameTooLargeError
from barknet.frame_queue import TAIL_SIZE, FrameQueue, frame_batch
from barknet.framing import HEADER, HEADER_SIZE, SMALL_FRAME, FrameDecoder, encode_frame
from barknet.interfaces import IOV_MAX, nbytes


def _wire(iov: list[object]) -> bytes:
    return b"".join(bytes(part) for part in iov)  # type: ignore[call-overload]


def _push(queue: FrameQueue, payload: bytes) -> None:
    queue.push(HEADER.pack(len(payload)), payload, len(payload))


def test_small_frames_share_one_buffer_and_large_ones_are_queued_uncopied() -> None:
    queue = FrameQueue()
    large = bytearray(SMALL_FRAME + 1)
    for payload in (b"a", b"bc"):
        _push(queue, payload)
    queue.push(HEADER.pack(len(large)), large, len(large))
    _push(queue, b"d")
    assert len(queue.buffers) == 4  # [tail of 2 frames], header, payload, [new tail]
    assert queue.buffers[2] is large  # the payload itself, not a copy
    assert queue.queued == 4 * HEADER_SIZE + 1 + 2 + len(large) + 1
    assert list(queue.frame_sizes) == [5, 6, HEADER_SIZE + len(large), 5]


def test_a_new_tail_starts_once_the_tail_is_full() -> None:
    queue = FrameQueue()
    payload = b"x" * SMALL_FRAME
    frames = TAIL_SIZE // (SMALL_FRAME + HEADER_SIZE) + 2
    for _ in range(frames):
        _push(queue, payload)
    assert len(queue.buffers) == 2
    assert all(len(buffer) <= TAIL_SIZE + SMALL_FRAME + HEADER_SIZE for buffer in queue.buffers)


def test_a_batch_copies_each_small_payload_once_next_to_its_header_and_queues_large_ones() -> None:
    large = bytearray(b"L" * (SMALL_FRAME + 1))
    payloads = [b"a", memoryview(b"bc"), large, b"", bytearray(b"d")]
    buffers, sizes = frame_batch(payloads)
    # [run of 2 frames], header, the payload itself, [run of 2 frames]
    assert len(buffers) == 4 and buffers[2] is large
    assert sizes == [HEADER_SIZE + nbytes(p) for p in payloads]
    queue = FrameQueue()
    queue.push_batch(buffers, sizes)
    assert _wire(queue.iov()) == b"".join(encode_frame(p) for p in payloads)
    assert queue.queued == sum(sizes) and list(queue.frame_sizes) == sizes


def test_a_small_frame_after_a_batch_joins_its_last_run_never_a_payload_of_yours() -> None:
    queue = FrameQueue()
    queue.push_batch(*frame_batch([b"a", b"b"]))
    _push(queue, b"c")
    assert len(queue.buffers) == 1  # one run: the batch's, and the frame after it
    large = bytearray(SMALL_FRAME + 1)
    queue.push_batch(*frame_batch([large]))
    _push(queue, b"d")
    assert large == bytearray(SMALL_FRAME + 1)  # your buffer is never appended to
    assert _wire(queue.iov()) == b"".join(encode_frame(p) for p in (b"a", b"b", b"c", large, b"d"))


def test_a_batch_of_many_small_frames_is_cut_into_runs_of_about_the_tail_size() -> None:
    payload = b"x" * SMALL_FRAME
    count = 3 * TAIL_SIZE // (SMALL_FRAME + HEADER_SIZE)
    buffers, sizes = frame_batch([payload] * count)
    assert sizes == [HEADER_SIZE + SMALL_FRAME] * count
    assert len(buffers) == 3
    assert all(len(buffer) <= TAIL_SIZE + SMALL_FRAME + HEADER_SIZE for buffer in buffers)
    assert b"".join(buffers) == encode_frame(payload) * count


def test_a_write_that_takes_the_whole_queue_counts_every_frame_and_leaves_it_clean() -> None:
    queue = FrameQueue()
    large = bytes(SMALL_FRAME + 1)
    for payload in (b"a", large, b"bc"):
        _push(queue, payload)
    total = queue.queued
    queue.iov()
    queue.advance(HEADER_SIZE + 2)  # the first frame and a byte of the next one's header
    assert (queue.frames_sent, queue.offset, queue.frame_sent) == (1, 1, 1)
    queue.iov()
    queue.advance(total - (HEADER_SIZE + 2))  # the rest, all of it
    assert queue.frames_sent == 3 and queue.queued == 0
    assert not queue.buffers and not queue.frame_sizes
    assert queue.offset == 0 and queue.frame_sent == 0
    _push(queue, b"next")  # and the next frame starts from a clean queue
    assert _wire(queue.iov()) == encode_frame(b"next")


def test_a_tail_handed_out_by_iov_is_never_appended_to() -> None:
    queue = FrameQueue()
    _push(queue, b"first")
    iov = queue.iov()
    before = bytes(iov[0])
    _push(queue, b"second")
    assert bytes(iov[0]) == before  # a buffer being written does not change under the write
    assert len(queue.buffers) == 2


def test_iov_resumes_inside_the_first_buffer_and_gives_at_most_iov_max() -> None:
    queue = FrameQueue()
    big = [bytes([i % 256]) * (SMALL_FRAME + 1) for i in range(IOV_MAX)]
    for payload in big:
        queue.push(HEADER.pack(len(payload)), payload, len(payload))
    queue.advance(2)
    iov = queue.iov()
    assert len(iov) == IOV_MAX
    assert bytes(iov[0]) == HEADER.pack(len(big[0]))[2:]


def test_advance_counts_only_frames_that_left_whole() -> None:
    queue = FrameQueue()
    for payload in (b"abc", b"", b"defg"):
        _push(queue, payload)
    queue.advance(HEADER_SIZE + 2)  # most of the first frame
    assert queue.frames_sent == 0
    queue.advance(1 + HEADER_SIZE)  # the rest of it, and all of the empty one
    assert queue.frames_sent == 2
    assert queue.frame_sent == 0
    queue.advance(HEADER_SIZE + 4)
    assert (queue.frames_sent, queue.queued, len(queue.buffers)) == (3, 0, 0)


def test_push_unsent_keeps_exactly_what_a_short_write_left() -> None:
    queue = FrameQueue()
    payload = b"0123456789"
    queue.push_unsent(HEADER.pack(len(payload)), payload, len(payload), sent=6)
    assert _wire(queue.iov()) == encode_frame(payload)[6:]
    assert queue.queued == HEADER_SIZE + len(payload) - 6
    assert queue.frames_sent == 0


@given(
    payloads=st.lists(
        st.one_of(st.binary(max_size=64), st.binary(min_size=SMALL_FRAME + 1, max_size=5000)),
        max_size=12,
    ),
    cuts=st.lists(st.integers(min_value=1, max_value=3000), max_size=60),
)
def test_any_sequence_of_short_writes_sends_the_frames_in_order_and_counts_them(
    payloads: list[bytes], cuts: list[int]
) -> None:
    """Whatever the kernel takes each time, the bytes that leave are the frames' encoding,
    in order, and frames_sent counts those that left whole."""
    queue = FrameQueue()
    for payload in payloads:
        _push(queue, payload)
    expected = b"".join(encode_frame(p) for p in payloads)
    sent = bytearray()
    for cut in [*cuts, len(expected)]:  # the last write takes everything left
        if not queue.buffers:
            break
        wire = _wire(queue.iov())
        took = min(cut, len(wire))
        sent += wire[:took]
        queue.advance(took)
        whole = len(FrameDecoder(max(len(p) for p in payloads) + 1).feed(bytes(sent)))
        assert queue.frames_sent == whole
        assert queue.queued == len(expected) - len(sent)
    assert bytes(sent) == expected
    assert queue.frames_sent == len(payloads)
    assert sum(nbytes(b) for b in queue.buffers) == 0


def test_iov_offers_at_most_iov_max_buffers_however_many_wait() -> None:
    queue = FrameQueue()
    payload = bytes(4096)  # large enough to go as its own buffer
    for _ in range(IOV_MAX):
        queue.push(HEADER.pack(len(payload)), payload, len(payload))
    assert len(queue.iov()) == IOV_MAX
    queue.advance(1)
    assert len(queue.iov()) == IOV_MAX


def test_frame_batch_refuses_a_payload_one_byte_over_the_limit() -> None:
    with pytest.raises(FrameTooLargeError):
        frame_batch([b"ok", b"x" * 11], max_frame_size=10)
    assert frame_batch([b"x" * 10], max_frame_size=10)  # the limit itself is fine
