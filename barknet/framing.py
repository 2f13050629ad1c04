"""Length-prefix framing, sans I/O: bytes in, frames out, no sockets anywhere.

Theory of operation
-------------------
On the wire a frame is a 4-byte big-endian unsigned length ``n`` followed by
``n`` payload bytes. Zero-length frames are legal. Because nothing here touches
a socket, a test or a notebook can drive the codec by hand, one byte at a time
if it likes, and every transport can reuse it.

Encoding returns the header and the payload *separately*, so a transport can
hand both to one ``sendmsg`` call without first gluing them into a new buffer.

Decoding is a small state machine over two kinds of buffer:

* A **scratch** ``bytearray`` (64 KiB by default) that receives whatever
  arrives. Complete small frames are copied out of it; a partial frame left at
  its end is moved to the front only when the tail runs out of room, and a
  partial frame is at most half the scratch, so every byte is copied a bounded
  number of times however the stream is chopped up. (The naive ``buf += chunk;
  buf = buf[n:]`` is quadratic: each chunk copies everything still buffered.)
* An **exact-size body** ``bytearray(n)`` for a frame too large for the
  scratch. Once its header is known, :meth:`FrameDecoder.get_buffer` hands out
  the unfilled rest of that body, so a transport can ``recv_into`` it
  directly: a 16 MiB frame is received into one buffer with no further copy.
  The last body handed out is kept: if the next large frame has the same size
  and nobody else holds that body any more (its reference count says so), it
  is filled again instead of a new one. Fresh memory is expensive: the kernel
  must find, zero and map every 4 KiB page on first touch, which costs about
  as much as receiving the bytes. The price is one idle frame's worth of
  memory per decoder between frames.

The length is checked against ``max_frame_size`` as soon as the 4 header bytes
are in, before a body buffer exists, so a peer that announces 4 GiB costs you
nothing. At end of stream, :meth:`FrameDecoder.eof` tells a clean end (between
frames) from a truncated header (k of 4 bytes) or payload (x of n bytes).
"""

from __future__ import annotations

import struct
import sys
from typing import Any, NamedTuple

from .errors import FrameTooLargeError, FramingError, TruncatedFrameError

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "HEADER",
    "HEADER_SIZE",
    "DecoderState",
    "FrameDecoder",
    "encode",
    "encode_frame",
    "encode_header",
]

HEADER = struct.Struct("!I")  # network byte order, unsigned 32-bit
HEADER_SIZE = HEADER.size
DEFAULT_MAX_FRAME_SIZE = 8 * 1024 * 1024
_MAX_ENCODABLE = 0xFFFF_FFFF
# Without reference counts (PyPy) a body can never be proved free: never reuse one.
_refcount = getattr(sys, "getrefcount", lambda obj: 0)


def _nbytes(data: Any) -> int:
    return data.nbytes if isinstance(data, memoryview) else len(data)


def encode_header(size: int, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> bytes:
    """The 4-byte prefix for a payload of ``size`` bytes; refuses oversized payloads."""
    if size > max_frame_size or size > _MAX_ENCODABLE:
        raise FrameTooLargeError(size, min(max_frame_size, _MAX_ENCODABLE), sending=True)
    return HEADER.pack(size)


def encode(payload: Any, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> tuple[bytes, Any]:
    """Return ``(header, payload)``, ready for one scatter/gather write."""
    return encode_header(_nbytes(payload), max_frame_size), payload


def encode_frame(payload: Any, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> bytes:
    """Header and payload joined into one ``bytes`` (handy for tests and hex views)."""
    header, body = encode(payload, max_frame_size)
    return header + bytes(body)


class DecoderState(NamedTuple):
    """Where the decoder is inside the current frame, for display and debugging.

    ``part`` is ``"idle"`` (between frames), ``"header"`` or ``"payload"``;
    ``received`` of ``expected`` bytes of that part are in.
    """

    part: str
    received: int
    expected: int


class FrameDecoder:
    """Turns any chunking of a byte stream back into the frames that were sent.

    Two ways to give it bytes:

    * ``feed(chunk)`` copies ``chunk`` in and returns the frames it completed;
    * ``get_buffer()`` / ``buffer_updated(n)`` let a transport ``recv_into`` the
      decoder's own memory (the zero-copy path for large frames).

    Frames come out as ``bytes``, except frames received into their own
    exact-size body, which come out as that ``bytearray`` (no final copy).
    After a :class:`~barknet.errors.FramingError` the decoder is dead: every
    later call raises the same error. Frames that were complete before a bad
    header are still returned first (with ``error`` already set), so a peer's
    good frames never depend on how TCP happened to split its bytes.
    """

    def __init__(
        self,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        *,
        buffer_size: int = 64 * 1024,
        peer: Any = None,
    ) -> None:
        if buffer_size < 64:
            raise ValueError("buffer_size must be at least 64 bytes")
        self.max_frame_size = max_frame_size
        self.peer = peer
        self._buf = bytearray(buffer_size)
        self._view = memoryview(self._buf)
        self._start = 0  # first byte not yet consumed
        self._end = 0  # one past the last byte received
        self._body_threshold = buffer_size // 2
        self._body: bytearray | None = None
        self._spare: bytearray | None = None  # the last body handed out (see above)
        self._got = 0  # bytes of the body received so far
        self._error: FramingError | None = None
        #: Bytes the decoder copied inside itself (frames out of the scratch,
        #: moves to the front, promotion to a body): the test of "no quadratic
        #: copying" reads this.
        self.bytes_copied = 0

    # ------------------------------------------------------------ receiving
    def get_buffer(self) -> memoryview:
        """Writable memory where the next bytes of the stream should go (never empty)."""
        if self._error is not None:
            raise self._error
        if self._body is not None:
            return memoryview(self._body)[self._got :]
        cap = len(self._buf)
        if self._start and cap - self._end < cap // 4:
            # Move the partial frame to the front. It is at most half the
            # scratch (bigger frames get a body), so this frees at least a
            # quarter of the scratch and each byte moves a bounded number of times.
            pending = self._end - self._start
            self._buf[:pending] = self._view[self._start : self._end]
            self.bytes_copied += pending
            self._start, self._end = 0, pending
        return self._view[self._end :]

    def buffer_updated(self, nbytes: int) -> list[bytes | bytearray]:
        """``nbytes`` were written at the start of the last :meth:`get_buffer`; return
        the frames this completed."""
        if self._error is not None:
            raise self._error
        if self._body is not None:
            self._got += nbytes
            if self._got < len(self._body):
                return []
            body, self._body, self._got = self._body, None, 0
            self._spare = body
            return [body]
        self._end += nbytes
        return self._parse()

    def feed(self, data: Any) -> list[bytes | bytearray]:
        """Copy ``data`` in; return every frame it completed, in order."""
        src = memoryview(data).cast("B")
        frames: list[bytes | bytearray] = []
        while src:
            dst = self.get_buffer()
            k = min(len(dst), len(src))
            dst[:k] = src[:k]
            try:
                frames += self.buffer_updated(k)
            except FramingError:
                if frames:  # completed by an earlier fill of the scratch: theirs first
                    return frames
                raise
            if self._error is not None:
                break  # frames before a bad header come out; the error comes next call
            src = src[k:]
        return frames

    def _parse(self) -> list[bytes | bytearray]:
        frames: list[bytes | bytearray] = []
        view, start, end = self._view, self._start, self._end
        unpack_from, limit = HEADER.unpack_from, self.max_frame_size
        while end - start >= HEADER_SIZE:
            (size,) = unpack_from(view, start)
            if size > limit:
                self._start, self._end = start, end
                self._error = FrameTooLargeError(size, limit, peer=self.peer)
                if frames:
                    # The good frames before the bad header are the peer's too:
                    # hand them over; the error waits for the next call.
                    return frames
                raise self._error
            stop = start + HEADER_SIZE + size
            if stop <= end:
                frames.append(bytes(view[start + HEADER_SIZE : stop]))
                self.bytes_copied += size
                start = stop
                continue
            if size >= self._body_threshold:
                # Too big for the scratch: give it a buffer of its exact size and
                # move the part that already arrived (less than the scratch) there.
                have = end - start - HEADER_SIZE
                spare, self._spare = self._spare, None
                # 2 = the local name + getrefcount's argument: the owner let go of it.
                if spare is not None and len(spare) == size and _refcount(spare) == 2:
                    body = spare
                else:
                    body = bytearray(size)
                body[:have] = view[start + HEADER_SIZE : end]
                self.bytes_copied += have
                self._body, self._got = body, have
                start = end = 0
            break
        if start == end:
            start = end = 0
        self._start, self._end = start, end
        return frames

    # ------------------------------------------------------------ the end
    def eof(self) -> None:
        """The stream ended: return if it ended between frames, else raise
        :class:`~barknet.errors.TruncatedFrameError` saying how far the frame got."""
        if self._error is not None:
            raise self._error
        state = self.state
        if state.part != "idle":
            self._error = TruncatedFrameError(
                state.part, state.received, state.expected, peer=self.peer
            )
            raise self._error

    # ---------------------------------------------------------- inspection
    @property
    def state(self) -> DecoderState:
        if self._body is not None:
            return DecoderState("payload", self._got, len(self._body))
        pending = self._end - self._start
        if pending == 0:
            return DecoderState("idle", 0, 0)
        if pending < HEADER_SIZE:
            return DecoderState("header", pending, HEADER_SIZE)
        (size,) = HEADER.unpack_from(self._view, self._start)
        return DecoderState("payload", pending - HEADER_SIZE, size)

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as frames (header bytes included)."""
        if self._body is not None:
            return HEADER_SIZE + self._got
        return self._end - self._start

    @property
    def error(self) -> FramingError | None:
        return self._error

    def __repr__(self) -> str:
        part, received, expected = self.state
        where = "between frames" if part == "idle" else f"{part} {received}/{expected}"
        return f"<FrameDecoder {where}, max_frame_size={self.max_frame_size}>"
