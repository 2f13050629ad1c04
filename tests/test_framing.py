"""The sans-I/O framing codec: encoding, decoding under every chunking, limits,
truncation, the zero-copy path for large frames, and linear copying."""

from __future__ import annotations

import itertools
import random
import struct
import tracemalloc

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from barknet import FrameTooLargeError, TruncatedFrameError
from barknet.framing import (
    DEFAULT_BUFFER_SIZE,
    HEADER_SIZE,
    PLAIN_READ_SIZE,
    DecoderState,
    FrameDecoder,
    ScratchPool,
    encode,
    encode_frame,
    encode_header,
)

KiB = 1024
MiB = 1024 * KiB


def payloads(sizes: list[int], seed: int = 0) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(n) for n in sizes]


def stream_of(frames: list[bytes]) -> bytes:
    return b"".join(encode_frame(f) for f in frames)


def feed_via_buffer(decoder: FrameDecoder, data: bytes) -> list[bytes | bytearray]:
    """Give ``data`` to the decoder the way a transport does: recv_into get_buffer()."""
    frames: list[bytes | bytearray] = []
    view = memoryview(data)
    while view:
        room = decoder.get_buffer()
        assert len(room) > 0
        k = min(len(room), len(view))
        room[:k] = view[:k]
        frames += decoder.buffer_updated(k)
        view = view[k:]
    return frames


def read_as_framed_transport_does(decoder: FrameDecoder, data: bytes) -> list[bytes | bytearray]:
    """Give ``data`` to the decoder the way FramedTransport reads: plain bytes to
    ``receive`` while ``receive_size`` asks for them (at most that many a
    read), else recv_into ``get_buffer()``."""
    frames: list[bytes | bytearray] = []
    view = memoryview(data)
    while view:
        plain = decoder.receive_size
        if plain:
            k = min(plain, len(view))
            frames += decoder.receive(bytes(view[:k]))
        else:
            room = decoder.get_buffer()
            k = min(len(room), len(view))
            room[:k] = view[:k]
            del room
            frames += decoder.buffer_updated(k)
        view = view[k:]
    return frames


# -------------------------------------------------------------------- encoding
def test_encode_returns_big_endian_header_and_the_payload_itself():
    payload = b"hello"
    header, body = encode(payload)
    assert header == b"\x00\x00\x00\x05"
    assert body is payload  # not copied, not joined: ready for one sendmsg
    assert encode_header(0x01020304, max_frame_size=0xFFFFFFFF) == b"\x01\x02\x03\x04"
    assert encode_frame(b"abc") == b"\x00\x00\x00\x03abc"


def test_encode_accepts_memoryview_and_bytearray_payloads():
    data = bytearray(range(10))
    header, body = encode(memoryview(data)[2:8])
    assert header == struct.pack("!I", 6)
    assert bytes(body) == bytes(range(2, 8))
    assert encode(data)[0] == struct.pack("!I", 10)


def test_zero_length_frame_encodes_to_a_bare_header_and_decodes_to_empty():
    assert encode(b"") == (b"\x00\x00\x00\x00", b"")
    decoder = FrameDecoder()
    assert decoder.feed(encode_frame(b"") * 3) == [b"", b"", b""]
    assert decoder.state == DecoderState("idle", 0, 0)


def test_encode_refuses_a_payload_over_the_limit():
    with pytest.raises(FrameTooLargeError) as info:
        encode(b"x" * 11, max_frame_size=10)
    assert (info.value.size, info.value.limit) == (11, 10)
    assert "you tried to send a 11-byte frame" in str(info.value)
    assert "limit is 10 bytes" in str(info.value)
    encode(b"x" * 10, max_frame_size=10)  # the limit itself is allowed


def test_encode_header_refuses_what_four_bytes_cannot_say():
    with pytest.raises(FrameTooLargeError) as info:
        encode_header(2**32, max_frame_size=2**40)
    assert info.value.limit == 0xFFFFFFFF


# ------------------------------------------------------- decoding, three ways
FRAMES = [b"one", b"", b"three!", bytes(range(256)) * 3, b"x"]


def test_decoder_whole_input_at_once_yields_every_frame():
    decoder = FrameDecoder()
    assert decoder.feed(stream_of(FRAMES)) == FRAMES
    assert decoder.state == DecoderState("idle", 0, 0)
    assert decoder.buffered == 0
    decoder.eof()  # ended between frames: no error


def test_decoder_one_byte_at_a_time_yields_each_frame_on_its_last_byte():
    decoder = FrameDecoder()
    for frame in FRAMES:
        wire = encode_frame(frame)
        for i, byte in enumerate(wire):
            got = decoder.feed(bytes([byte]))
            if i < len(wire) - 1:
                assert got == [], f"frame {frame[:8]!r} came out early at byte {i}"
                assert decoder.buffered == i + 1
            else:
                assert got == [frame]
    assert decoder.state.part == "idle"


def test_decoder_keeps_trailing_partial_payload_buffered():
    partial = encode_frame(b"0123456789")[:7]  # header + 3 of 10 payload bytes
    decoder = FrameDecoder()
    assert decoder.feed(stream_of(FRAMES) + partial) == FRAMES
    assert decoder.state == DecoderState("payload", 3, 10)
    assert decoder.buffered == 7
    assert decoder.feed(b"3456789") == [b"0123456789"]
    assert decoder.state == DecoderState("idle", 0, 0)


def test_decoder_keeps_trailing_partial_header_buffered():
    decoder = FrameDecoder()
    assert decoder.feed(stream_of(FRAMES) + b"\x00\x00") == FRAMES
    assert decoder.state == DecoderState("header", 2, 4)
    assert decoder.buffered == 2
    assert decoder.feed(b"\x00\x01z") == [b"z"]


# ----------------------------------------------------------------- the limit
def test_oversized_length_prefix_is_rejected_from_the_header_alone():
    decoder = FrameDecoder(max_frame_size=1 * MiB)
    tracemalloc.start()
    try:
        with pytest.raises(FrameTooLargeError) as info:
            decoder.feed(b"\xff\xff\xff\xff")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (info.value.size, info.value.limit) == (0xFFFFFFFF, 1 * MiB)
    assert "announced a 4294967295-byte frame" in str(info.value)
    assert decoder.buffered <= HEADER_SIZE
    # The scratch (taken when the first bytes come) and small change: nothing near
    # 4 GiB (or even 1 MiB) was allocated.
    assert peak < DEFAULT_BUFFER_SIZE + 8 * KiB < 1 * MiB


def test_oversized_length_prefix_fed_byte_by_byte_fails_on_the_fourth_byte():
    decoder = FrameDecoder(max_frame_size=100)
    header = struct.pack("!I", 101)
    for byte in header[:3]:
        assert decoder.feed(bytes([byte])) == []
    with pytest.raises(FrameTooLargeError) as info:
        decoder.feed(header[3:])
    assert (info.value.size, info.value.limit) == (101, 100)


def test_frame_exactly_at_the_limit_is_accepted():
    decoder = FrameDecoder(max_frame_size=100)
    assert decoder.feed(encode_frame(b"a" * 100)) == [b"a" * 100]


def test_frames_before_a_bad_header_come_out_and_the_error_follows():
    decoder = FrameDecoder(max_frame_size=10, peer="peer-7")
    assert decoder.feed(encode_frame(b"ok") + encode_frame(b"") + struct.pack("!I", 11)) == [
        b"ok",
        b"",
    ]
    assert isinstance(decoder.error, FrameTooLargeError)
    with pytest.raises(FrameTooLargeError) as info:
        decoder.feed(b"more")
    assert info.value is decoder.error


def test_frames_from_an_earlier_fill_of_the_scratch_survive_a_later_bad_header():
    # 64 bytes fill the 64-byte scratch with 16 empty frames; the bad header comes
    # in the second fill of the same feed() call.
    decoder = FrameDecoder(max_frame_size=1, buffer_size=64)
    assert decoder.feed(b"\0" * 64 + b"\1\0\0\0") == [b""] * 16
    assert isinstance(decoder.error, FrameTooLargeError)
    with pytest.raises(FrameTooLargeError):
        decoder.eof()


def test_after_an_error_every_call_raises_the_same_error():
    decoder = FrameDecoder(max_frame_size=10, peer="peer-7")
    with pytest.raises(FrameTooLargeError) as info:
        decoder.feed(struct.pack("!I", 11))
    error = info.value
    assert error.peer == "peer-7"
    assert "peer-7" in str(error)
    assert decoder.error is error
    for call in (
        lambda: decoder.feed(b"more"),
        decoder.get_buffer,
        lambda: decoder.buffer_updated(0),
        decoder.eof,
    ):
        with pytest.raises(FrameTooLargeError) as again:
            call()
        assert again.value is error


# ------------------------------------------------------------------------ eof
def test_eof_between_frames_is_clean():
    decoder = FrameDecoder()
    assert decoder.eof() is None  # nothing at all: a clean end, not an error
    assert decoder.feed(stream_of([b"a", b"bc"])) == [b"a", b"bc"]
    assert decoder.state == ("idle", 0, 0)
    assert decoder.eof() is None
    assert decoder.error is None


@pytest.mark.parametrize("k", [1, 2, 3])
def test_eof_mid_header_reports_how_many_header_bytes_arrived(k):
    decoder = FrameDecoder(peer="p1")
    decoder.feed(encode_frame(b"abc")[:k])
    with pytest.raises(TruncatedFrameError) as info:
        decoder.eof()
    error = info.value
    assert (error.part, error.received, error.expected) == ("header", k, 4)
    assert f"got {k} of 4 header bytes" in str(error)
    assert "p1" in str(error)
    with pytest.raises(TruncatedFrameError) as again:
        decoder.eof()
    assert again.value is error


@pytest.mark.parametrize(("size", "received"), [(1000, 0), (1000, 10), (100_000, 50_000)])
def test_eof_mid_payload_reports_how_many_payload_bytes_arrived(size, received):
    # With a 64 KiB scratch, 100_000 bytes is over half of it: it takes the body path.
    decoder = FrameDecoder(buffer_size=64 * KiB)
    decoder.feed(encode_frame(bytes(size))[: HEADER_SIZE + received])
    with pytest.raises(TruncatedFrameError) as info:
        decoder.eof()
    error = info.value
    assert (error.part, error.received, error.expected) == ("payload", received, size)
    assert f"got {received} of {size} payload bytes" in str(error)


# ------------------------------------------------ large frames: zero-copy body
def test_large_frame_body_grows_with_the_bytes_and_copies_less_than_its_size():
    payload = random.Random(1).randbytes(1 * MiB)
    wire = memoryview(encode_frame(payload))
    decoder = FrameDecoder()
    chunk = 8192
    # The first read lands in the scratch: the header and the start of the body.
    room = decoder.get_buffer()
    room[:chunk] = wire[:chunk]
    assert decoder.buffer_updated(chunk) == []
    early = chunk - HEADER_SIZE  # body bytes that arrived before the body existed
    assert decoder.bytes_copied == early
    assert decoder.state == DecoderState("payload", early, 1 * MiB)

    rooms = []
    frames: list[bytes | bytearray] = []
    pos = chunk
    while pos < len(wire):
        room = decoder.get_buffer()
        rooms.append(len(room.obj))
        k = min(chunk, len(room))
        room[:k] = wire[pos : pos + k]
        pos += k
        frames += decoder.buffer_updated(k)
    assert len(frames) == 1
    (frame,) = frames
    assert isinstance(frame, bytearray)
    assert len(frame) == 1 * MiB
    assert frame == payload
    # The body's size followed the bytes: it started small and at least doubled
    # each time it grew, so growing copied less than the frame's size in all.
    assert rooms[0] < 64 * KiB and rooms[-1] == 1 * MiB
    sizes = sorted(set(rooms))
    assert all(b >= 2 * a for a, b in itertools.pairwise(sizes))
    assert decoder.bytes_copied - early < 1 * MiB
    assert decoder.state == DecoderState("idle", 0, 0)


def test_large_frame_fed_whole_still_comes_out_right():
    payload = random.Random(2).randbytes(200 * KiB)
    decoder = FrameDecoder()
    assert decoder.feed(encode_frame(payload) + encode_frame(b"next")) == [payload, b"next"]


# ---------------------------------------------------------- linear copying
def test_byte_at_a_time_copying_stays_linear():
    frames = payloads([i % 97 for i in range(2000)], seed=3)
    wire = stream_of(frames)
    decoder = FrameDecoder()
    got = []
    for i in range(len(wire)):
        got += decoder.feed(wire[i : i + 1])
    assert got == frames
    assert decoder.bytes_copied <= 3 * len(wire)


@pytest.mark.parametrize(
    "sizes",
    [
        [i % 97 for i in range(5000)],  # many small frames
        [32_000, 17, 31_000, 5] * 20,  # just under half the 64 KiB scratch: the most moves
        [32_767] * 40,
    ],
    ids=["small", "near-threshold-mixed", "threshold-minus-one"],
)
@pytest.mark.parametrize("path", ["feed", "advised"])
def test_random_chunk_copying_stays_linear(sizes, path):
    frames = payloads(sizes, seed=4)
    wire = stream_of(frames)
    rng = random.Random(5)
    decoder = FrameDecoder(buffer_size=64 * KiB)  # the sizes above are tuned to its half
    got: list[bytes | bytearray] = []
    pos = 0
    while pos < len(wire):
        k = rng.randint(1, 40_000)
        chunk = wire[pos : pos + k]
        got += (
            decoder.feed(chunk)
            if path == "feed"
            else read_as_framed_transport_does(decoder, chunk)
        )
        pos += k
    assert got == frames
    assert decoder.bytes_copied <= 3 * len(wire)


# ------------------------------------------------------------ property test
frame_sizes = st.one_of(
    st.integers(0, 100),
    st.integers(0, 200 * KiB),
    st.sampled_from([31, 32, 32_767, 32_768, 65_535, 65_536, 65_537]),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes=st.lists(frame_sizes, min_size=0, max_size=8),
    seed=st.integers(0, 2**32 - 1),
    buffer_size=st.sampled_from([64, 4096, 64 * KiB]),
    cut_fractions=st.lists(st.floats(0, 1), max_size=40),
    path=st.sampled_from(["feed", "buffer", "advised"]),
)
# Always cover every path: a frame over the scratch, between smaller ones.
@example([5, 200 * KiB, 0, 70_000, 3], 7, 64 * KiB, [0.1, 0.2, 0.5, 0.9], "buffer")
@example([5, 200 * KiB, 0, 70_000, 3], 7, 64 * KiB, [0.001, 0.3, 0.31, 0.7], "feed")
@example([5, 200 * KiB, 0, 70_000, 3], 7, 64 * KiB, [0.1, 0.2, 0.5, 0.9], "advised")
@example([40_000, 1, 32_768], 8, 4096, [i / 50 for i in range(50)], "buffer")
@example([40_000, 1, 32_768, 60, 65_531, 65_532, 9], 8, 256 * KiB, [0.5], "advised")
def test_any_chunking_yields_the_same_frames_in_order(
    sizes, seed, buffer_size, cut_fractions, path
):
    frames = payloads(sizes, seed)
    wire = stream_of(frames)
    cuts = sorted(int(f * len(wire)) for f in cut_fractions)
    decoder = FrameDecoder(max_frame_size=1 * MiB, buffer_size=buffer_size)
    got: list[bytes | bytearray] = []
    for start, stop in zip([0, *cuts], [*cuts, len(wire)], strict=True):
        chunk = wire[start:stop]
        if path == "feed":
            got += decoder.feed(chunk)
        elif path == "buffer":
            got += feed_via_buffer(decoder, chunk)
        else:
            got += read_as_framed_transport_does(decoder, chunk)
    assert got == frames
    assert decoder.state == DecoderState("idle", 0, 0)
    assert decoder.buffered == 0
    assert decoder.bytes_copied <= 3 * len(wire)
    decoder.eof()


# ------------------------------------------------------- plain reads (receive)
def test_small_frames_from_a_plain_read_are_cut_out_of_it_with_no_scratch_lent():
    pool = ScratchPool(DEFAULT_BUFFER_SIZE, keep=0)  # (a scratch taken would be a new one)
    decoder = FrameDecoder(pool=pool)
    frames = payloads([16, 0, 700], seed=11)
    assert decoder.receive_size == PLAIN_READ_SIZE  # nothing held: ask for plain bytes
    assert decoder.receive(stream_of(frames)) == frames
    assert all(type(f) is bytes for f in decoder.receive(stream_of(frames)))
    assert decoder.scratch is None and len(pool.free) == 0
    # Each payload byte copied once (the slice that is the frame), nothing else.
    assert decoder.bytes_copied == 2 * (16 + 700)
    assert decoder.receive_size == PLAIN_READ_SIZE


def test_a_partial_frame_from_a_plain_read_sends_the_next_bytes_into_the_scratch():
    decoder = FrameDecoder()
    wire = stream_of([b"first", b"second"])
    assert decoder.receive(wire[:12]) == [b"first"]
    assert decoder.receive_size == 0 and decoder.scratch is not None
    with pytest.raises(RuntimeError, match="get_buffer"):
        decoder.receive(wire[12:])
    assert feed_via_buffer(decoder, wire[12:]) == [b"second"]
    assert decoder.receive_size == PLAIN_READ_SIZE and decoder.scratch is None


def test_frames_received_from_a_view_come_out_as_bytes_of_their_own():
    decoder = FrameDecoder()
    wire = bytearray(stream_of([b"one", b"two"]))
    frames = decoder.receive(memoryview(wire))
    wire[:] = bytes(len(wire))  # the caller reuses its buffer: the frames must not change
    assert frames == [b"one", b"two"] and all(type(f) is bytes for f in frames)
    assert decoder.bytes_copied == len(wire) + 6  # the view made bytes, then each payload


def test_receive_from_an_offset_cuts_the_frames_after_it_and_counts_every_copy():
    decoder = FrameDecoder()
    wire = bytearray(b"skip" + stream_of([b"one", b"two"]))
    assert decoder.receive(wire, offset=4) == [b"one", b"two"]
    assert decoder.bytes_copied == len(wire) + 6  # bytes(wire), then each payload
    assert decoder.receive(bytes(wire), offset=len(wire)) == []  # nothing after the offset


def test_receive_takes_no_more_than_receive_size():
    decoder = FrameDecoder(buffer_size=4096)  # a plain read never outgrows the scratch
    assert decoder.receive_size == 4096
    with pytest.raises(ValueError, match="at most receive_size=4096"):
        decoder.receive(bytes(4097))
    assert decoder.receive(b"") == []


def test_a_frame_one_plain_read_could_not_hold_sends_the_next_read_into_the_scratch():
    decoder = FrameDecoder()
    largest = PLAIN_READ_SIZE - HEADER_SIZE  # the largest frame a plain read holds whole
    frames = payloads([largest], seed=12)
    assert decoder.receive(stream_of(frames)) == frames
    assert decoder.receive_size == PLAIN_READ_SIZE
    frames = payloads([largest + 1, 5], seed=13)
    wire = stream_of(frames)
    assert decoder.receive(wire[:PLAIN_READ_SIZE]) == []
    assert feed_via_buffer(decoder, wire[PLAIN_READ_SIZE:-9]) == frames[:1]
    assert decoder.receive_size == 0  # a peer that sent one may send more: read into memory
    assert feed_via_buffer(decoder, wire[-9:]) == frames[1:]
    assert decoder.receive_size == PLAIN_READ_SIZE  # small again


def test_a_large_frame_begun_in_a_plain_read_grows_a_body_and_its_next_header_comes_alone():
    decoder = FrameDecoder()
    size = DEFAULT_BUFFER_SIZE  # over half the scratch: a body of its own
    frame = payloads([size], seed=14)[0]
    wire = encode_frame(frame)
    assert decoder.receive(wire[:1000]) == []
    assert decoder.scratch is None and decoder.receive_size == 0
    got = read_as_framed_transport_does(decoder, wire[1000:])
    assert got == [frame] and type(got[0]) is bytearray
    assert decoder.bytes_copied == 1000 - HEADER_SIZE  # only what the plain read brought
    assert decoder.receive_size == HEADER_SIZE


def test_receive_with_a_limit_holds_whole_frames_back_for_next_frames():
    decoder = FrameDecoder()
    frames = payloads([3, 4, 5, 6], seed=15)
    assert decoder.receive(stream_of(frames), limit=1) == frames[:1]
    assert decoder.ready and decoder.receive_size == 0
    assert decoder.next_frames(2) == frames[1:3]
    assert decoder.next_frames() == frames[3:]
    assert not decoder.ready and decoder.receive_size == PLAIN_READ_SIZE


def test_frames_past_the_limit_stay_in_the_plain_read_and_are_cut_from_it_uncopied():
    pool = ScratchPool(DEFAULT_BUFFER_SIZE, keep=0)  # (a scratch taken would be a new one)
    decoder = FrameDecoder(pool=pool)
    frames = payloads([3, 4, 5, 6, 7], seed=21)
    wire = stream_of(frames)
    assert decoder.receive(wire, limit=2) == frames[:2]
    # Nothing moved into the decoder's memory: the rest waits in the read's bytes.
    assert decoder.scratch is None and len(pool.free) == 0
    assert decoder.buffered == len(wire) - sum(HEADER_SIZE + len(f) for f in frames[:2])
    assert decoder.state == DecoderState("idle", 0, 0)  # (whole frames are not the state)
    with pytest.raises(RuntimeError, match="get_buffer"):
        decoder.receive(b"more")  # the held frames come first
    with pytest.raises(RuntimeError, match="next_frames"):
        decoder.get_buffer()
    assert decoder.next_frames(2) == frames[2:4]
    assert decoder.next_frames(2) == frames[4:]
    assert decoder.scratch is None and not decoder.ready
    # Each payload byte copied once, by the slice that is its frame.
    assert decoder.bytes_copied == sum(len(f) for f in frames)
    assert decoder.receive_size == PLAIN_READ_SIZE


def test_a_partial_frame_behind_held_frames_goes_to_the_scratch_when_they_are_taken():
    decoder = FrameDecoder()
    frames = payloads([10, 20, 30], seed=22)
    wire = stream_of(frames)
    assert decoder.receive(wire[:-7], limit=1) == frames[:1]
    assert decoder.state == DecoderState("payload", 30 - 7, 30)  # past the whole frames
    assert decoder.buffered == len(wire) - 7 - HEADER_SIZE - 10
    assert decoder.next_frames() == frames[1:2]
    assert decoder.scratch is not None and decoder.receive_size == 0
    assert feed_via_buffer(decoder, wire[-7:]) == frames[2:]


def test_the_scratch_only_finishes_the_small_frame_a_plain_read_cut_in_two():
    """Cutting small frames out of the scratch costs a view and a copy each, out
    of a plain read one slice: so the read after a cut small frame asks for
    the rest of that frame (of its header, if the header was cut), and the one
    after that is plain again. A frame too large for one plain read still has
    the whole scratch."""
    decoder = FrameDecoder()
    frames = payloads([100, 50, 60], seed=23)
    wire = stream_of(frames)
    assert decoder.receive(wire[:106]) == frames[:1]  # and 2 header bytes of the next
    room = decoder.get_buffer()
    assert len(room) == HEADER_SIZE - 2  # the rest of the header
    room[:2] = wire[106:108]
    del room
    assert decoder.buffer_updated(2) == []
    room = decoder.get_buffer()
    assert len(room) == 50  # the rest of the frame, and no more
    room[:50] = wire[108:158]
    del room
    assert decoder.buffer_updated(50) == frames[1:2]
    assert decoder.scratch is None and decoder.receive_size == PLAIN_READ_SIZE
    assert decoder.receive(wire[158:]) == frames[2:]

    big = payloads([PLAIN_READ_SIZE], seed=24)  # its header and it do not fit one plain read
    wire = stream_of(big)
    assert decoder.receive(wire[:1000]) == []
    assert len(decoder.get_buffer()) == DEFAULT_BUFFER_SIZE - 1000


def test_receive_hands_out_the_frames_before_a_bad_header_then_the_error():
    decoder = FrameDecoder(max_frame_size=100)
    wire = stream_of([b"good", b"also"]) + encode_header(101, 1000) + b"x" * 20
    assert decoder.receive(wire) == [b"good", b"also"]
    assert isinstance(decoder.error, FrameTooLargeError)
    with pytest.raises(FrameTooLargeError) as caught:
        decoder.receive(b"more")
    assert caught.value is decoder.error and caught.value.size == 101


def test_buffer_size_below_64_is_refused():
    with pytest.raises(ValueError, match="at least 64"):
        FrameDecoder(buffer_size=63)


def test_a_shared_pool_keeps_at_most_keep_free_scratches_however_many_come_back() -> None:
    pool = ScratchPool(1024, keep=2)
    decoders = [FrameDecoder(buffer_size=1024, pool=pool) for _ in range(6)]
    wire = encode_frame(b"hello")

    for decoder in decoders:  # each holds a scratch: its frame is half here
        assert decoder.feed(wire[:3]) == []
        assert decoder.scratch is not None
    assert len(pool.free) == 0
    for decoder in decoders[:3]:  # nothing more for now: set the 3 header bytes aside
        decoder.release()
        assert decoder.scratch is None
    assert len(pool.free) == 2  # given back by release(); the third one goes
    for decoder in decoders[3:]:  # these finish their frames and give their scratch back
        assert decoder.feed(wire[3:]) == [b"hello"]
        assert decoder.scratch is None
    assert len(pool.free) == 2  # still 2: the others (4 KiB here, 1 MiB at the default) go
    for decoder in decoders[:3]:  # the released ones pick up where they were
        assert decoder.feed(wire[3:]) == [b"hello"]
    assert len(pool.free) == 2
    reused = {id(view) for view in pool.free}
    assert id(FrameDecoder(buffer_size=1024, pool=pool).get_buffer()) in reused
    assert pool.keep == 2
    with pytest.raises(ValueError, match="keep"):
        ScratchPool(1024, keep=-1)


def test_next_frames_with_nothing_held_back_is_an_empty_list() -> None:
    decoder = FrameDecoder()
    assert decoder.next_frames() == []
    decoder.feed(encode_frame(b"a") + encode_frame(b"b"))
    assert decoder.next_frames() == []  # feed returned both: nothing held back


# ------------------------------------------------ frames held back by a limit
def test_state_while_whole_frames_are_held_back_describes_the_frame_after_them() -> None:
    """With ``limit``, whole frames may wait (``ready``): they are not part of the
    state, which is about the frame not yet whole; and ``eof`` is refused until
    they were taken (they come before the end), leaving the decoder alive."""
    decoder = FrameDecoder()
    wire = encode_frame(b"a") + encode_frame(b"bcdef") + encode_frame(b"") + b"\x00\x00"
    room = decoder.get_buffer()
    room[: len(wire)] = wire
    assert decoder.buffer_updated(len(wire), limit=1) == [b"a"]
    assert decoder.ready
    assert decoder.state == DecoderState("header", 2, HEADER_SIZE)
    with pytest.raises(RuntimeError, match="next_frames"):
        decoder.eof()
    assert decoder.next_frames() == [b"bcdef", b""]
    assert decoder.state == DecoderState("header", 2, HEADER_SIZE)
    with pytest.raises(TruncatedFrameError):
        decoder.eof()


def test_state_while_frames_are_held_back_and_nothing_follows_them_is_idle() -> None:
    decoder = FrameDecoder()
    wire = encode_frame(b"a") + encode_frame(b"bc")
    room = decoder.get_buffer()
    room[: len(wire)] = wire
    assert decoder.buffer_updated(len(wire), limit=1) == [b"a"]
    assert decoder.state == DecoderState("idle", 0, 0)
    assert decoder.next_frames() == [b"bc"]
    decoder.eof()  # ended between frames


def test_every_call_after_a_framing_error_raises_it_even_with_nothing_to_do() -> None:
    """ "After a FramingError the decoder is dead: every later call raises the same
    error", also a feed of no bytes and a release."""
    decoder = FrameDecoder(max_frame_size=10)
    with pytest.raises(FrameTooLargeError) as first:
        decoder.feed(encode_header(11, 1 << 20))
    for call in (lambda: decoder.feed(b""), decoder.release, decoder.get_buffer, decoder.eof):
        with pytest.raises(FrameTooLargeError) as again:
            call()
        assert again.value is first.value


# ------------------------------------------- promises a mutation audit found unpinned
def test_a_dead_decoder_raises_its_error_from_every_later_call() -> None:
    decoder = FrameDecoder(max_frame_size=10)
    with pytest.raises(FrameTooLargeError):
        decoder.feed(struct.pack("!I", 11))
    with pytest.raises(FrameTooLargeError):
        decoder.next_frames()
    with pytest.raises(FrameTooLargeError):
        decoder.feed(b"more")


def test_a_recycled_body_is_reused_only_for_a_frame_of_its_own_size() -> None:
    # A spare one byte too long would swallow the start of the next frame.
    decoder = FrameDecoder()
    (big,) = decoder.feed(encode_frame(b"z" * 300_000))
    decoder.recycle(big)
    frames = decoder.feed(encode_frame(b"a" * 299_999) + encode_frame(b"b"))
    assert [bytes(f) for f in frames] == [b"a" * 299_999, b"b"]


def test_buffered_counts_the_header_of_a_frame_whose_body_is_arriving() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(struct.pack("!I", 1 << 20) + b"x" * 10) == []
    assert decoder.buffered == HEADER_SIZE + 10


def test_a_growing_body_counts_the_bytes_it_moves_into_its_new_buffer() -> None:
    decoder = FrameDecoder()
    decoder.feed(struct.pack("!I", 1 << 20) + b"x" * 10)
    view = decoder.get_buffer()
    room = len(view)
    view[:] = b"y" * room
    decoder.buffer_updated(room)
    before = decoder.bytes_copied
    decoder.get_buffer()  # the body is full: it grows into a new buffer, copying what it had
    assert decoder.bytes_copied - before == 10 + room


def test_a_partial_frame_stays_where_it_is_while_the_scratch_has_room_after_it() -> None:
    decoder = FrameDecoder()
    data = encode_frame(b"a" * 100) + encode_frame(b"b" * 100)[:50]
    buffer = decoder.get_buffer()
    buffer[: len(data)] = data
    del buffer
    assert decoder.buffer_updated(len(data)) == [b"a" * 100]
    before = decoder.bytes_copied
    decoder.get_buffer()
    assert decoder.bytes_copied == before  # nothing moved to the front
