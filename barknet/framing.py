"""Length-prefix framing, sans I/O: bytes in, frames out, no sockets anywhere.

Theory of operation
-------------------
On the wire a frame is a 4-byte big-endian unsigned length ``n`` followed by
``n`` payload bytes. Zero-length frames are legal. Because nothing here touches
a socket, a test or a notebook can drive the codec by hand, one byte at a time
if it likes, and every transport can reuse it.

Encoding returns the header and the payload *separately*, so a transport can
hand both to one ``sendmsg`` call without first gluing them into a new buffer.
The queue of frames waiting to be sent, the other half of the codec, is in
:mod:`barknet.frame_queue`; this module is the header, the limits, and decoding.

Decoding is a small state machine over two kinds of buffer:

* A **scratch** ``bytearray`` (256 KiB by default) that receives whatever
  arrives. Complete small frames are copied out of it; a partial frame left at
  its end is moved to the front only when the tail runs out of room, and a
  partial frame is at most half the scratch, so every byte is copied a bounded
  number of times however the stream is chopped up. (The naive ``buf += chunk;
  buf = buf[n:]`` is quadratic: each chunk copies everything still buffered.)
  The scratch is taken from a :class:`ScratchPool` when bytes are about to
  arrive and given back as soon as nothing is left in it, or when the
  transport says no more bytes are coming for now (:meth:`FrameDecoder.release`:
  a partial header is set aside, a partial payload moves to a body, below).
  So a decoder that waits, between frames or in the middle of one, holds no
  scratch: a server's quiet connections cost about the bytes they sent, and
  its busy ones share a few scratches.
* A **body** ``bytearray`` for a frame too large for the scratch. Once its
  header is known, :meth:`FrameDecoder.get_buffer` hands out the unfilled rest
  of that body, so a transport can ``recv_into`` it directly. The body grows
  with the bytes that actually arrived (it starts at 4 KiB or what is already
  in, and doubles, never past the announced size): a peer that announces
  8 MiB and sends one byte costs you a few KiB, not 8 MiB. It doubles in
  place (``body *= 2``: the C library extends or moves its pages, no second
  buffer alongside), so a 16 MiB frame still ends in one 16 MiB buffer. Not
  free: each doubling also writes the bytes already in into the new half
  (``*=`` repeats them; the next reads overwrite them): as many bytes as the
  body holds, each time, about the whole frame in all (the last doubling alone
  writes half of it), and the C library may move the pages; only if someone still holds a
  view of the body is it copied to a separate, bigger one. Either way
  each page is fresh memory, which is expensive (the kernel must find, zero
  and map every 4 KiB page), so the owner of a large frame may hand it back
  when done with it, with
  :meth:`FrameDecoder.recycle`: the next frame of that size is then received
  straight into it, with no growing and no fresh pages. Only a buffer you
  handed back is ever reused, so a frame you keep is never overwritten.

Between small frames neither is needed: the transport reads plain bytes (at
most :attr:`FrameDecoder.receive_size`) and :meth:`FrameDecoder.receive` cuts
the frames straight out of them, one slice each. Only a small frame that the
read cut in two goes to the scratch, which then takes just the rest of it, and
the read after that is plain again.

The length is checked against ``max_frame_size`` as soon as the 4 header bytes
are in, before a body buffer exists, so a peer that announces 4 GiB costs you
nothing. At end of stream, :meth:`FrameDecoder.eof` tells a clean end (between
frames) from a truncated header (k of 4 bytes) or payload (x of n bytes).

``limit`` (on :meth:`~FrameDecoder.buffer_updated` and
:meth:`~FrameDecoder.next_frames`) caps how many frames one call returns, so a
transport can bound the work it does for one peer per turn of the loop; whole
frames beyond the cap stay where they arrived (in the scratch, or in the bytes
of a plain read: ``ready`` says so) until you ask again, and you must ask
before you read more.
"""

from __future__ import annotations

import struct
from collections import deque
from typing import Any, NamedTuple

from .errors import FrameTooLargeError, FramingError, TruncatedFrameError
from .interfaces import nbytes

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "HEADER",
    "HEADER_SIZE",
    "DecoderState",
    "FrameDecoder",
    "ScratchPool",
    "encode",
    "encode_frame",
    "encode_header",
]

HEADER = struct.Struct("!I")  # network byte order, unsigned 32-bit
HEADER_SIZE = HEADER.size
_unpack_header = HEADER.unpack_from  # (size,) of the header at an offset, read in place
DEFAULT_MAX_FRAME_SIZE = 8 * 1024 * 1024
#: The largest size a 4-byte header can announce.
MAX_ENCODABLE = 0xFFFF_FFFF
_NO_LIMIT = 1 << 62  # "no limit" on frames per call, as a number the loop can compare
#: The scratch that bytes are read into: as much as asyncio reads in one call, so
#: that a 64 KiB frame arrives in one read and is cut out of it with one copy.
DEFAULT_BUFFER_SIZE = 256 * 1024
#: A body starts this large (or as large as what already arrived) and doubles.
FIRST_BODY_SIZE = 4096
#: The most bytes one plain read asks for (see ``FrameDecoder.receive_size``). Not
#: more: glibc hands out a larger request with ``mmap`` (above 128 KiB, until a
#: large block was once freed), and CPython's ``recv(n)`` makes an ``n``-byte
#: object before it shrinks it to what arrived, so ``recv(256 KiB)`` costs an
#: ``mmap``, an ``mremap``, a ``munmap`` and a page fault per read: 14.5 µs
#: against 2.4 µs for ``recv(64 KiB)`` of 20 bytes here (benchmarks/README.md).
PLAIN_READ_SIZE = 64 * 1024
#: Payloads up to this size are copied next to their header (cheaper than one
#: more buffer for the kernel to walk); larger ones are queued and sent as they are.
SMALL_FRAME = 2048


def encode_header(size: int, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> bytes:
    """The 4-byte prefix for a payload of ``size`` bytes; refuses oversized payloads."""
    if size > max_frame_size or size > MAX_ENCODABLE:
        raise FrameTooLargeError(size, min(max_frame_size, MAX_ENCODABLE), sending=True)
    return HEADER.pack(size)


def buffer_size(data: Any, what: str, hint: str = "") -> int:
    """The size of ``data``, one buffer the kernel can send as it is: ``bytes``,
    ``bytearray`` or a ``memoryview`` of contiguous bytes. Anything else is a
    ``TypeError`` here, before a byte of it is queued: a ``str`` has no bytes
    until you choose an encoding; a view with gaps cannot be handed to ``send``;
    and a view of larger items, or of rows, is cut by items where a short write
    cut it by bytes (``view.cast("B")`` makes it a view of bytes).
    ``what`` names the call in the message, ``hint`` ends it."""
    if type(data) is memoryview:
        if not (data.c_contiguous and data.itemsize == 1 and data.ndim == 1):
            shape = "with gaps" if not data.c_contiguous else f"of shape {data.shape}"
            raise TypeError(
                f"{what}, not a memoryview {shape} and format {data.format!r} "
                "(bytes(view) copies it into one run of bytes)"
            )
        return data.nbytes
    if not isinstance(data, (bytes, bytearray)):
        raise TypeError(f"{what}, not {type(data).__name__}{hint}")
    return len(data)


def encode(payload: Any, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> tuple[bytes, Any]:
    """Return ``(header, payload)``, ready for one scatter/gather write."""
    return encode_header(nbytes(payload), max_frame_size), payload


def encode_frame(payload: Any, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> bytes:
    """Header and payload joined into one ``bytes`` (handy for tests and hex views)."""
    header, body = encode(payload, max_frame_size)
    return header + bytes(body)


class ScratchPool:
    """Scratch buffers of one size, lent to decoders while bytes are in them.

    One pool per server: a decoder takes a scratch only while it holds part of
    a frame and gives it back as soon as it is empty again, so a thousand idle
    connections cost no scratch at all and a hundred busy ones share the few
    that are in use at any moment (the loop serves one peer at a time). The
    pool keeps at most ``keep`` free scratches and lets the rest go.
    """

    __slots__ = ("free", "size")

    def __init__(self, size: int = DEFAULT_BUFFER_SIZE, keep: int = 4) -> None:
        if size < 64:
            raise ValueError("buffer_size must be at least 64 bytes")
        if keep < 0:
            raise ValueError("keep must be 0 or more")
        self.size = size
        #: The scratches no decoder holds. A deque with ``maxlen`` keeps at most
        #: ``keep`` of them by itself (one appended to a full deque pushes the
        #: oldest out), so giving one back is a single ``append``: decoders pop
        #: and append here directly, on every read.
        self.free: deque[memoryview] = deque(maxlen=keep)

    @property
    def keep(self) -> int:
        """How many free scratches the pool keeps at most (fixed when it is made)."""
        return self.free.maxlen or 0

    def take(self) -> memoryview:
        """A scratch (a view of a ``bytearray`` of ``size`` bytes) whose bytes are yours."""
        free = self.free
        return free.pop() if free else memoryview(bytearray(self.size))

    def give(self, scratch: memoryview) -> None:
        """You are done with ``scratch``: another decoder may fill it from now on."""
        self.free.append(scratch)


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

    Three ways to give it bytes:

    * ``feed(chunk)`` copies ``chunk`` in and returns the frames it completed;
    * ``get_buffer()`` / ``buffer_updated(n)`` let a transport ``recv_into`` the
      decoder's own memory (the zero-copy path for large frames);
    * ``receive(data)`` takes the bytes a plain read returned, while no frame is
      partly held, and cuts the frames straight out of them (the short path for
      small messages: no memory lent, one slice per frame).

    ``receive_size`` says which of the last two the next read should take.

    Frames come out as ``bytes``, except frames received into a body of their
    own (large ones, and any frame still incomplete when you called
    :meth:`release`), which come out as that ``bytearray`` (no final copy).

    ``pool`` lends the scratch: pass one :class:`ScratchPool` to all the
    decoders of a server so that only the ones receiving hold a scratch.
    Without it the decoder keeps a private scratch, as a standalone decoder
    in a notebook or a test would want.

    After a :class:`~barknet.errors.FramingError` the decoder is dead: every
    later call raises the same error (but ``recycle``, which only takes memory
    back: an owner may still hand back a frame it got before). Frames that were
    complete before a bad header are still returned first (with ``error``
    already set), so a peer's good frames never depend on how TCP happened to
    split its bytes.
    """

    def __init__(
        self,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        *,
        buffer_size: int = DEFAULT_BUFFER_SIZE,
        peer: Any = None,
        pool: ScratchPool | None = None,
    ) -> None:
        if pool is None:
            pool = ScratchPool(buffer_size, keep=1)  # a decoder of its own: keep its scratch
        elif pool.size != buffer_size:
            raise ValueError("the pool's scratches must be buffer_size bytes")
        self.max_frame_size = max_frame_size
        self.peer = peer
        self._pool = pool
        #: The scratch this decoder holds (a view of the pool's ``bytearray``), only
        #: while bytes of an unfinished frame are in it; None otherwise.
        self.scratch: memoryview | None = None
        self._head = b""  # (no scratch) a partial header release() set aside
        self._start = 0  # first byte not yet consumed
        self._end = 0  # one past the last byte received
        self._body_threshold = buffer_size // 2
        self._plain_size = min(PLAIN_READ_SIZE, buffer_size)
        self._body: bytearray | None = None  # grows towards self._size as bytes arrive
        self._size = 0  # the announced size of the frame in the body
        self._halvings = 0  # the body is the frame's size halved this often (see _grow)
        self._spare: bytearray | None = None  # a body the owner handed back (recycle)
        self._got = 0  # bytes of the body received so far
        #: The last frame had a body of its own: read the next header alone (see get_buffer).
        self._header_alone = False
        #: The framing error that stopped this stream, if any: every later call
        #: raises it again. (A plain attribute: it is read once per read.)
        self.error: FramingError | None = None
        #: Whole frames may wait, past the ``limit`` of the last call: take them
        #: with :meth:`next_frames` before you read more.
        self.ready = False
        #: (While ``ready``, after :meth:`receive`.) The plain read's bytes and where
        #: the frames still to cut out of them start.
        self._held: bytes | None = None
        self._held_start = 0
        #: Bytes the decoder copied inside itself (frames out of the scratch,
        #: moves to the front, promotion to a body, growing a body into a new
        #: buffer): the test of "no quadratic copying" reads this. Not counted:
        #: the repeat that an in-place doubling writes (``body *= 2``, see
        #: _grow), which the next reads overwrite, about the whole frame in all.
        self.bytes_copied = 0
        #: How the next read should bring bytes. More than 0: at most this many
        #: bytes, read as plain bytes and given to :meth:`receive` (no frame is
        #: partly held, and the last frames were small: they are cut straight out
        #: of what the read returned). 0: into :meth:`get_buffer` (a frame is
        #: partly held, or the last frame was too large for one plain read: its
        #: successor had better land in the decoder's memory at once). A frame
        #: that a large body just completed asks for its successor's header alone.
        self.receive_size = self._plain_size

    # ------------------------------------------------------------ receiving
    def get_buffer(self) -> memoryview:
        """Writable memory where the next bytes of the stream should go (never empty).

        Not while ``ready`` is true: take the frames already here first.
        """
        if self.error is not None:
            raise self.error
        if self.ready:
            raise RuntimeError("whole frames are waiting: call next_frames() first")
        body = self._body
        if body is not None:
            got = self._got
            if got == len(body):
                body = self._grow(body, got)
            return memoryview(body)[got:]
        view = self.scratch
        if view is None:
            # (With no scratch held, _start and _end are 0: whoever gave the
            # last one back set them so.)
            free = self._pool.free
            view = self.scratch = free.pop() if free else self._pool.take()
            self.receive_size = 0  # bytes are in the decoder's memory from now on
            head = self._head  # a partial header set aside by release()
            if head:
                view[: len(head)] = head
                self.bytes_copied += len(head)
                self._end, self._head = len(head), b""
            if self._header_alone:
                # The last frame had a body of its own, and a peer that sends one
                # large frame tends to send more: take the next header alone, so
                # that the payload goes straight into its body (one more small
                # read, instead of copying the start of the payload out of here).
                return view[self._end : HEADER_SIZE]
            if not head:
                return view
        else:
            cap = len(view)
            if self._start and cap - self._end < cap // 4:
                # Move the partial frame to the front. It is at most half the
                # scratch (bigger frames get a body), so this frees at least a
                # quarter of the scratch and each byte moves a bounded number of times.
                pending = self._end - self._start
                view[:pending] = view[self._start : self._end]
                self.bytes_copied += pending
                self._start, self._end = 0, pending
        return view[self._end : self._read_stop(view)]

    def _read_stop(self, view: memoryview) -> int:
        """Where a read into the scratch should stop: at the end of the frame partly
        here (of its header, if that is not all here yet) when one plain read
        would have held that frame, and the scratch's end otherwise.

        Reads of small frames are plain reads, cut with :meth:`receive`, one
        slice per frame; cutting them out of the scratch costs a view and a copy
        each. So the scratch only finishes the small frame a plain read left
        cut in two, and the read after it is plain again. (A frame too large for
        one plain read fills the scratch, or its own body, as it comes.)
        """
        start, end = self._start, self._end
        if end - start < HEADER_SIZE:
            return start + HEADER_SIZE if end > start else len(view)
        (size,) = _unpack_header(view, start)
        if HEADER_SIZE + size > self._plain_size:
            return len(view)
        return start + HEADER_SIZE + size

    def _grow(self, body: bytearray, got: int) -> bytearray:
        """The body is full but the frame is not: double it.

        Body sizes are the frame's size halved ``_halvings`` times (rounded up),
        so each doubling lands on the next one (give or take a byte, trimmed)
        and the last on the frame's size exactly: no step overshoots the frame.

        In place when nobody holds a view of the body any more (release the views
        :meth:`get_buffer` gave you, as FramedTransport does): ``body *= 2``
        resizes it with no temporary buffer, so the C library can extend or move
        its pages, and the old and new bodies are never both in memory; the
        repeated bytes it writes are overwritten by the bytes still to come.
        Otherwise into a new buffer, copying what arrived (under the frame's
        size in all, since the body doubles).
        """
        self._halvings -= 1
        target = -(-self._size >> self._halvings)  # ceil(size / 2**halvings)
        try:
            body *= 2
            del body[target:]  # at most a byte
            return body
        except BufferError:  # a view of the body is still alive somewhere
            pass
        bigger = bytearray(target)
        bigger[:got] = memoryview(body)[:got]
        self.bytes_copied += got
        self._body = bigger
        return bigger

    def buffer_updated(self, nbytes: int, limit: int | None = None) -> list[bytes | bytearray]:
        """``nbytes`` were written at the start of the last :meth:`get_buffer`; return
        the frames this completed (at most ``limit``; see ``ready``)."""
        if self.error is not None:
            raise self.error
        if self._body is not None:
            self._got += nbytes
            if self._got < self._size:
                return []
            body, self._body, self._got = self._body, None, 0
            self._header_alone = True
            self.receive_size = HEADER_SIZE  # (see get_buffer)
            return [body]
        # The bytes went into the scratch: cut every whole frame out of it.
        self._header_alone = False  # (if this was the header read alone, it is in)
        frames: list[bytes | bytearray] = []
        append = frames.append
        view, start, end = self.scratch, self._start, self._end + nbytes
        assert view is not None
        max_size = self.max_frame_size
        if limit is None:
            limit = _NO_LIMIT
        copied = 0  # added to bytes_copied once, not once per frame
        self.ready = False
        size = 0
        while end - start >= HEADER_SIZE:
            if len(frames) >= limit:
                self.ready = True  # maybe more whole frames: next_frames() takes them
                break
            (size,) = _unpack_header(view, start)
            if size > max_size:
                self._start, self._end = start, end
                self.bytes_copied += copied
                self.error = FrameTooLargeError(size, max_size, peer=self.peer)
                if frames:
                    # The good frames before the bad header are the peer's too:
                    # hand them over; the error waits for the next call.
                    return frames
                raise self.error
            stop = start + HEADER_SIZE + size
            if stop > end:  # the rest of this frame has not arrived yet
                if size >= self._body_threshold:
                    # Too big for the scratch: move the part that already arrived (less
                    # than the scratch) to a body of its own, which grows as the rest comes.
                    self._promote(view, start, end, size)
                    start = end = 0
                break
            append(bytes(view[start + HEADER_SIZE : stop]))
            copied += size
            start = stop
        if start == end:
            # Nothing left in the scratch: let another decoder use it meanwhile.
            self.scratch = None
            self._pool.free.append(view)  # (the pool's deque keeps at most `keep`)
            self._start = self._end = 0
            self.receive_size = self._advice(size)
        else:
            self._start, self._end = start, end
        self.bytes_copied += copied
        return frames

    def _advice(self, last_size: int) -> int:
        """(Nothing held) the ``receive_size`` that suits a peer whose last frame
        was ``last_size`` bytes: a plain read, unless one would not hold it."""
        if self._body is not None or HEADER_SIZE + last_size > self._plain_size:
            return 0
        return self._plain_size

    def receive(
        self, data: bytes | bytearray | memoryview, limit: int | None = None, offset: int = 0
    ) -> list[bytes | bytearray]:
        """Cut the frames in ``data[offset:]``, bytes a plain read returned (at most
        ``receive_size``, which must not be 0), straight out of it; return them
        (at most ``limit``; see ``ready``).

        Each frame is one slice of ``data``; nothing is copied into the decoder
        first. Whole frames past ``limit`` stay where they are, in ``data``:
        :meth:`next_frames` cuts them out the same way, from where this call
        stopped (``offset``). Only the start of a frame that has not arrived
        whole is copied in (a large one to a body of its own, as from the
        scratch). A bad header is reported as by :meth:`buffer_updated`, after
        the good frames before it.
        """
        if self.error is not None:
            raise self.error
        end = len(data)
        if not 0 < end - offset <= self.receive_size:
            if not self.receive_size:
                raise RuntimeError(
                    "the decoder holds part of a frame (or whole frames: see ready): "
                    "its next bytes go into get_buffer()"
                )
            if end == offset:
                return []
            raise ValueError(f"receive takes at most receive_size={self.receive_size} bytes")
        if type(data) is not bytes:  # (slices of bytes are bytes: frames come out as bytes)
            data = bytes(data)
            self.bytes_copied += end
        if limit is None:
            limit = _NO_LIMIT
        frames: list[bytes | bytearray] = []
        append, max_size = frames.append, self.max_frame_size
        start, size = offset, 0
        while end - start >= HEADER_SIZE and len(frames) < limit:
            (size,) = _unpack_header(data, start)
            stop = start + HEADER_SIZE + size
            if stop > end or size > max_size:
                break  # not all here yet (or a bad header: see below)
            append(data[start + HEADER_SIZE : stop])
            start = stop
        self.bytes_copied += start - offset - HEADER_SIZE * len(frames)
        if start == end:  # (the usual end: no frame partly here, nothing in a body)
            # Every frame here fitted in one plain read: the next read is one too
            # (also after a header read alone, which may have been a whole frame).
            self.receive_size = self._plain_size
            return frames
        if len(frames) >= limit and end - start >= HEADER_SIZE:
            # Maybe more whole frames: they wait in data, uncopied, for
            # next_frames; until then nothing more is read (see ready).
            self._held, self._held_start = data, start
            self.ready = True
            self.receive_size = 0
            return frames
        rest = memoryview(data)[start:]
        if len(rest) >= HEADER_SIZE and self._body_threshold <= size <= max_size:
            self._promote(rest, 0, len(rest), size)  # a large frame: a body of its own
            return frames
        # Keep the start of the frame in the scratch, where the rest of it goes
        # (see get_buffer); a bad header is found there, as in any read.
        self._header_alone = False  # (a header read alone is in: the whole scratch, please)
        buffer = self.get_buffer()
        buffer[: len(rest)] = rest
        del buffer
        self.bytes_copied += len(rest)
        try:
            frames += self.buffer_updated(len(rest), limit - len(frames))
        except FramingError:
            if frames:  # good frames before the bad header: theirs first
                return frames
            raise
        return frames

    def next_frames(self, limit: int | None = None) -> list[bytes | bytearray]:
        """Whole frames already received but held back by an earlier ``limit``."""
        if self.error is not None:
            raise self.error
        if not self.ready:
            return []
        if self._held is not None:  # in a plain read's bytes: cut on from where we stopped
            data, offset = self._held, self._held_start
            self._held, self.ready = None, False
            self.receive_size = self._plain_size  # (they came in one plain read: they fit)
            return self.receive(data, limit, offset)
        return self.buffer_updated(0, limit)  # no new bytes: only cut out the frames

    def recycle(self, frame: bytes | bytearray | memoryview) -> None:
        """You are done with ``frame`` (a large frame this decoder gave you): the next
        frame of the same size may be received into it, overwriting it.

        This saves the fresh memory a new body would cost, which for large frames is
        about as expensive as receiving them. Only hand back a frame you no longer
        read, through any name or view: the decoder trusts you. A frame you never
        hand back is never reused. The decoder keeps one such buffer, until a frame
        of its size arrives or the decoder goes.
        """
        if type(frame) is bytearray and len(frame) >= self._body_threshold:
            self._spare = frame

    def feed(self, data: Any) -> list[bytes | bytearray]:
        """Copy ``data`` in; return every frame it completed, in order."""
        if self.error is not None:
            raise self.error  # (also for no data: the decoder is dead)
        src = memoryview(data).cast("B")
        frames: list[bytes | bytearray] = []
        while src:
            dst = self.get_buffer()
            k = min(len(dst), len(src))
            dst[:k] = src[:k]
            del dst  # no view of a body left alive: it can grow in place
            try:
                frames += self.buffer_updated(k)
            except FramingError:
                if frames:  # completed by an earlier fill of the scratch: theirs first
                    return frames
                raise
            if self.error is not None:
                break  # frames before a bad header come out; the error comes next call
            src = src[k:]
        return frames

    def _promote(self, view: memoryview, start: int, end: int, size: int) -> None:
        """Move the frame that starts at ``view[start]`` (header complete, payload
        not) out of the scratch, into a body of its own."""
        have = end - start - HEADER_SIZE
        spare = self._spare
        if spare is not None and len(spare) == size:
            body, self._spare = spare, None  # handed back by the owner: no fresh memory
            self._halvings = 0
        else:
            # Start at the frame's size halved as often as it stays above what
            # arrived (and 4 KiB), so that doubling ends on it exactly.
            first, halvings = max(have, FIRST_BODY_SIZE), 0
            while -(-size >> (halvings + 1)) >= first:
                halvings += 1
            self._halvings = halvings
            body = bytearray(-(-size >> halvings))
        body[:have] = view[start + HEADER_SIZE : end]
        self.bytes_copied += have
        self._body, self._size, self._got = body, size, have
        self.receive_size = 0

    def release(self) -> None:
        """Nothing more is coming for now: give the scratch back to the pool and
        keep only the partial frame's own bytes.

        A peer that stops in the middle of a small frame then costs what it sent
        (a partial header: up to 3 bytes; a partial payload: a body that grows as
        the rest arrives), not a whole scratch. Call it when a read would block;
        each byte is still copied a bounded number of times (a partial payload
        moves to its body once, a partial header at most three times).
        """
        if self.error is not None:
            raise self.error
        view = self.scratch
        if view is None or self.ready:
            return
        start, end = self._start, self._end
        if end - start >= HEADER_SIZE:
            (size,) = _unpack_header(view, start)
            self._promote(view, start, end, size)
            self._head = b""
        else:
            self._head = bytes(view[start:end])
            self.bytes_copied += end - start
        self.scratch = None
        self._start = self._end = 0
        self._pool.give(view)
        self.receive_size = 0 if self._head or self._body is not None else self._plain_size

    # ------------------------------------------------------------ the end
    def eof(self) -> None:
        """The stream ended: return if it ended between frames, else raise
        :class:`~barknet.errors.TruncatedFrameError` saying how far the frame got.

        Not while ``ready`` is true (``RuntimeError``, and nothing changes): take
        the whole frames already here first, they come before the end.
        """
        if self.error is not None:
            raise self.error
        if self.ready:
            raise RuntimeError("whole frames are waiting: call next_frames() first")
        state = self.state
        if state.part != "idle":
            self.error = TruncatedFrameError(
                state.part, state.received, state.expected, peer=self.peer
            )
            raise self.error

    # ---------------------------------------------------------- inspection
    @property
    def state(self) -> DecoderState:
        if self._body is not None:
            return DecoderState("payload", self._got, self._size)
        if self.scratch is None and self._head:
            return DecoderState("header", len(self._head), HEADER_SIZE)
        held = self._held
        view: bytes | memoryview | None
        if held is not None:
            view, start, end = held, self._held_start, len(held)
        else:
            view, start, end = self.scratch, self._start, self._end
        if self.ready:
            assert view is not None
            start = self._partial_start(view, start, end)
        pending = end - start
        if pending == 0:
            return DecoderState("idle", 0, 0)
        if pending < HEADER_SIZE:
            return DecoderState("header", pending, HEADER_SIZE)
        assert view is not None
        (size,) = _unpack_header(view, start)
        return DecoderState("payload", pending - HEADER_SIZE, size)

    def _partial_start(self, view: bytes | memoryview, pos: int, end: int) -> int:
        """(While ``ready``.) Where the frame not yet whole starts, past the whole
        frames a ``limit`` held back: those are not part of the state."""
        while end - pos >= HEADER_SIZE:
            (size,) = _unpack_header(view, pos)
            if size > self.max_frame_size or pos + HEADER_SIZE + size > end:
                break
            pos += HEADER_SIZE + size
        return pos

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as frames (header bytes included)."""
        if self._body is not None:
            return HEADER_SIZE + self._got
        if self._held is not None:
            return len(self._held) - self._held_start
        return self._end - self._start + len(self._head)

    def __repr__(self) -> str:
        part, received, expected = self.state
        where = "between frames" if part == "idle" else f"{part} {received}/{expected}"
        return f"<FrameDecoder {where}, max_frame_size={self.max_frame_size}>"
