"""Fuzzing the frame decoder with hypothesis.

Whatever bytes arrive, chopped however the network likes, the decoder either
yields frames or raises one of its documented errors (a ``FramingError``);
never anything else, and it never holds more than one frame's worth of bytes.
A tiny reference parser, written for clarity rather than speed, says what the
right answer is.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Iterator

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from barknet import FrameTooLargeError, FramingError, TruncatedFrameError
from barknet.framing import HEADER_SIZE, FrameDecoder, encode_frame

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def reference(stream: bytes, limit: int) -> tuple[list[bytes], tuple[object, ...]]:
    """The frames in ``stream`` and how it ends: ``("clean",)``,
    ``("too large", size)`` or ``(part, received, expected)`` for a truncation."""
    frames, pos = [], 0
    while True:
        rest = len(stream) - pos
        if rest == 0:
            return frames, ("clean",)
        if rest < HEADER_SIZE:
            return frames, ("header", rest, HEADER_SIZE)
        (size,) = struct.unpack_from("!I", stream, pos)
        if size > limit:
            return frames, ("too large", size)
        if rest - HEADER_SIZE < size:
            return frames, ("payload", rest - HEADER_SIZE, size)
        frames.append(stream[pos + HEADER_SIZE : pos + HEADER_SIZE + size])
        pos += HEADER_SIZE + size


def chunks(stream: bytes, sizes: list[int]) -> Iterator[bytes]:
    """``stream`` cut into pieces of the given sizes, repeated as needed."""
    pos = 0
    for size in itertools.cycle(sizes or [len(stream) or 1]):
        if pos >= len(stream):
            return
        yield stream[pos : pos + size]
        pos += size


def deliver(
    decoder: FrameDecoder, piece: bytes, path: str, per_call: int | None = None
) -> list[bytes]:
    """Give ``piece`` to the decoder the way a transport would: ``"feed"``,
    ``"buffer"`` (recv_into ``get_buffer()``), or ``"advised"``, as
    FramedTransport does: plain bytes to ``receive`` while ``receive_size``
    asks for them, else into ``get_buffer()``, at most ``per_call`` frames a
    call (the rest taken with ``next_frames`` before the next read)."""
    if path == "feed":
        return [bytes(f) for f in decoder.feed(piece)]
    frames: list[bytes] = []
    try:
        while piece:
            while decoder.ready:
                frames += [bytes(f) for f in decoder.next_frames(per_call)]
            plain = decoder.receive_size if path == "advised" else 0
            if plain:
                n = min(plain, len(piece))
                got = decoder.receive(piece[:n], per_call)
            else:
                room = decoder.get_buffer()
                assert len(room) > 0
                n = min(len(room), len(piece))
                room[:n] = piece[:n]
                del room
                got = decoder.buffer_updated(n, per_call)
            frames += [bytes(f) for f in got]
            if decoder.error is not None:
                break  # like FramedTransport: take the good frames, then close the peer
            piece = piece[n:]
        while decoder.ready:
            frames += [bytes(f) for f in decoder.next_frames(per_call)]
    except FramingError:
        if frames:  # like FramedTransport, which keeps each batch as it comes
            return frames
        raise
    return frames


def bound(decoder: FrameDecoder, buffer_size: int) -> int:
    return decoder.max_frame_size + HEADER_SIZE + buffer_size


# Streams worth fuzzing: pure noise (almost always a huge length at once), and
# well-formed frames with noise, truncation or a bad length appended.
noise = st.binary(max_size=600)
framed_then_noise = st.builds(
    lambda payloads, tail, cut: (b"".join(encode_frame(p) for p in payloads) + tail)[
        : None if cut is None else -cut
    ],
    st.lists(st.binary(max_size=400), max_size=8),
    st.one_of(st.just(b""), st.binary(max_size=12), st.just(b"\xff\xff\xff\xff")),
    st.one_of(st.none(), st.integers(1, 50)),
)


@FUZZ
@given(
    stream=st.one_of(noise, framed_then_noise),
    limit=st.integers(0, 500),
    buffer_size=st.sampled_from([64, 100, 4096, 64 * 1024]),
    sizes=st.lists(st.integers(1, 300), max_size=12),
    path=st.sampled_from(["feed", "buffer", "advised"]),
    per_call=st.one_of(st.none(), st.integers(1, 3)),
)
@example(
    stream=b"\xff\xff\xff\xff", limit=0, buffer_size=64, sizes=[1], path="feed", per_call=None
)
@example(
    stream=b"\x00\x00\x01\xf4" + b"x" * 300,
    limit=500,
    buffer_size=64,
    sizes=[],
    path="buffer",
    per_call=None,
)
@example(
    stream=encode_frame(b"ok") * 3 + b"\xff\xff\xff\xff",
    limit=100,
    buffer_size=64,
    sizes=[],
    path="advised",
    per_call=2,
)
def test_decoder_yields_frames_or_a_framing_error_and_nothing_else(
    stream, limit, buffer_size, sizes, path, per_call
):
    decoder = FrameDecoder(limit, buffer_size=buffer_size, peer="fuzzer")
    want, ending = reference(stream, limit)
    got: list[bytes] = []
    error: FramingError | None = None
    try:
        for piece in chunks(stream, sizes):
            got += deliver(decoder, piece, path, per_call)
            assert decoder.buffered <= bound(decoder, buffer_size)
        decoder.eof()
    except FramingError as caught:  # anything else fails the test
        error = caught
    assert decoder.buffered <= bound(decoder, buffer_size)

    if ending == ("clean",):
        assert error is None
        assert got == want
        return
    assert error is not None and error.peer == "fuzzer"
    assert decoder.error is error
    if ending[0] == "too large":
        assert isinstance(error, FrameTooLargeError)
        assert (error.size, error.limit) == (ending[1], limit)
        # Every frame before the bad header comes out, however the bytes were cut.
        assert got == want
    else:
        assert isinstance(error, TruncatedFrameError)
        assert (error.part, error.received, error.expected) == ending
        assert got == want
    # A dead decoder stays dead, with the same error.
    for call in (lambda: decoder.feed(b"\x00"), decoder.eof, decoder.get_buffer):
        try:
            call()
        except FramingError as again:
            assert again is error
        else:
            raise AssertionError(f"{call} did not raise after {error!r}")


@FUZZ
@given(
    payloads=st.lists(st.binary(max_size=3000), max_size=12),
    buffer_size=st.sampled_from([64, 256, 64 * 1024]),
    sizes=st.lists(st.integers(1, 5000), max_size=10),
    path=st.sampled_from(["feed", "buffer", "advised"]),
    per_call=st.one_of(st.none(), st.integers(1, 3)),
)
# A frame of its own body, then its successor's header alone: an empty frame; then
# part of a small one, kept in the scratch (all of it, not a header's room).
@example(
    payloads=[b"x" * 100, b"", b"abc"],
    buffer_size=64,
    sizes=[104, 4, 5, 2],
    path="advised",
    per_call=None,
)
def test_whatever_encode_produced_decodes_back_under_any_chunking(
    payloads, buffer_size, sizes, path, per_call
):
    limit = max((len(p) for p in payloads), default=0)  # the tightest limit that fits
    stream = b"".join(encode_frame(p, limit) for p in payloads)
    decoder = FrameDecoder(limit, buffer_size=buffer_size)
    got: list[bytes] = []
    for piece in chunks(stream, sizes):
        got += deliver(decoder, piece, path, per_call)
        assert decoder.buffered <= bound(decoder, buffer_size)
    decoder.eof()  # ends between frames: no error
    assert got == payloads
    assert decoder.state.part == "idle" and decoder.buffered == 0
