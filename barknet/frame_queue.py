"""The sending half of the codec, sans I/O: frames queued in wire order, and how
far the writes took them.

:func:`frame_batch` frames many payloads at once (every one checked before any
is queued); :class:`FrameQueue` holds what waits to be sent. Neither touches a
socket: a transport asks the queue what to write (:meth:`FrameQueue.iov`),
writes what the socket takes, and says how much left (:meth:`FrameQueue.advance`).
The receiving half, and the header and limits both halves share, are in
:mod:`barknet.framing`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from itertools import islice
from typing import Any

from .framing import (
    DEFAULT_MAX_FRAME_SIZE,
    HEADER,
    HEADER_SIZE,
    MAX_ENCODABLE,
    SMALL_FRAME,
    buffer_size,
    encode_header,
)
from .interfaces import IOV_MAX, nbytes

__all__ = ["TAIL_SIZE", "FrameQueue", "frame_batch"]

#: Queued small frames share one buffer of up to about this size.
TAIL_SIZE = 256 * 1024
_pack_header = HEADER.pack


def frame_batch(
    frames: Iterable[Any], max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
) -> tuple[list[Any], list[int]]:
    """Each payload of ``frames`` framed, in wire order, ready for
    :meth:`FrameQueue.push_batch`: the buffers to queue and each frame's size
    on the wire (header included).

    Small payloads are copied with their headers into shared buffers, as
    :meth:`FrameQueue.push` would; large ones stay as they are, after their
    header. All in one pass and before anything is queued, so a batch
    goes out whole or not at all, never with a header and no body:
    ``TypeError`` for a payload that is not one bytes-like buffer (see
    :func:`buffer_size`), ``FrameTooLargeError`` for one over the limit.
    """
    limit = min(max_frame_size, MAX_ENCODABLE)
    buffers: list[Any] = []
    sizes: list[int] = []
    run = bytearray()  # small frames, back to back
    for data in frames:
        size = len(data) if type(data) is bytes else buffer_size(data, _BATCH_TAKES, _BATCH_HINT)
        if size > limit:
            encode_header(size, max_frame_size)  # raises FrameTooLargeError
        if size <= SMALL_FRAME:
            if len(run) >= TAIL_SIZE:
                buffers.append(run)
                run = bytearray()
            run += _pack_header(size)
            run += data
        else:
            if run:
                buffers.append(run)
                run = bytearray()
            buffers.append(_pack_header(size))
            buffers.append(data)
        sizes.append(HEADER_SIZE + size)
    if run:
        buffers.append(run)
    return buffers, sizes


_BATCH_TAKES = "write_frames takes one bytes-like payload per frame"
_BATCH_HINT = " (a frame in several parts: resume_write)"


class FrameQueue:
    """Frames waiting to be sent, in wire order, and how far the first one got.

    The sending half of the codec, sans I/O like :class:`~barknet.framing.FrameDecoder`: a
    transport queues frames with :meth:`push`, asks :meth:`iov` what to write
    next, writes what the socket takes and reports it with :meth:`advance`.
    The queue drops what left, remembers where the first buffer was cut, and
    counts the frames that left whole, however the writes split them.

    Buffers are queued, not copied: a payload stays the object you passed
    (``sendmsg`` gathers header and payload without joining them), except
    that small frames (up to :data:`~barknet.framing.SMALL_FRAME`) are copied, header and
    payload, into one shared ``bytearray``: a thousand 64-byte frames are then
    one buffer for the kernel, not two thousand.
    """

    __slots__ = ("buffers", "frame_sent", "frame_sizes", "frames_sent", "offset", "queued", "tail")

    def __init__(self) -> None:
        self.buffers: deque[Any] = deque()  # headers and payloads, in wire order
        self.offset = 0  # bytes of buffers[0] already sent
        self.frame_sizes: deque[int] = deque()  # header + payload size of each queued frame
        self.frame_sent = 0  # bytes of the first queued frame already sent
        self.queued = 0  # bytes still to send
        self.frames_sent = 0  # frames that left whole (counted here, or by the transport)
        #: The last buffer, while small frames may still be appended to it (None once
        #: :meth:`iov` handed it out: a buffer being sent is never resized).
        self.tail: bytearray | None = None

    def push(self, header: bytes, data: Any, size: int) -> None:
        """Queue one frame: ``header`` and its ``size``-byte payload ``data``."""
        if size <= SMALL_FRAME:
            tail = self.tail
            if tail is None or len(tail) >= TAIL_SIZE:
                tail = self.tail = bytearray()
                self.buffers.append(tail)
            tail += header
            tail += data
        else:
            self.tail = None  # later small frames must queue after this one
            self.buffers.append(header)
            self.buffers.append(data)
        self.frame_sizes.append(HEADER_SIZE + size)
        self.queued += HEADER_SIZE + size

    def push_batch(self, buffers: list[Any], sizes: list[int]) -> None:
        """Queue the frames :func:`frame_batch` made: its buffers, in order."""
        if not buffers:
            return
        self.buffers.extend(buffers)
        self.frame_sizes.extend(sizes)
        self.queued += sum(sizes)
        # Later small frames may join the batch's last run of small ones (ours),
        # never a payload of yours.
        self.tail = buffers[-1] if sizes[-1] <= HEADER_SIZE + SMALL_FRAME else None

    def push_parts(self, header: bytes, parts: list[Any], size: int) -> None:
        """Queue one frame whose payload is ``parts`` (``size`` bytes in all), uncopied."""
        self.tail = None
        self.buffers.append(header)
        self.buffers.extend(parts)
        self.frame_sizes.append(HEADER_SIZE + size)
        self.queued += HEADER_SIZE + size

    def push_unsent(self, header: bytes, data: Any, size: int, sent: int) -> None:
        """Queue the rest of a frame of which a write already took ``sent`` bytes."""
        self.tail = None
        self.buffers.append(header)
        if size:
            self.buffers.append(data)
        self.frame_sizes.append(HEADER_SIZE + size)
        self.queued += HEADER_SIZE + size
        if sent:
            self.advance(sent)

    def iov(self) -> list[Any]:
        """What to write next: up to :data:`~barknet.interfaces.IOV_MAX` buffers
        from the front (the first one cut where the last write stopped)."""
        self.tail = None  # from now on the queued buffers are only read
        buffers = self.buffers
        if self.offset:
            return [memoryview(buffers[0])[self.offset :], *islice(buffers, 1, IOV_MAX)]
        return list(islice(buffers, IOV_MAX))

    def advance(self, sent: int) -> None:
        """``sent`` bytes from the front left: drop them, count the finished frames."""
        self.queued -= sent
        if not self.queued:  # everything left: no buffer or frame to walk through
            self.buffers.clear()
            self.offset = self.frame_sent = 0
            self.frames_sent += len(self.frame_sizes)
            self.frame_sizes.clear()
            return
        buffers, left = self.buffers, sent
        while left:
            remaining = nbytes(buffers[0]) - self.offset
            if left < remaining:
                self.offset += left
                break
            left -= remaining
            buffers.popleft()
            self.offset = 0
        sizes = self.frame_sizes
        done = self.frame_sent + sent
        while sizes and done >= sizes[0]:
            done -= sizes.popleft()
            self.frames_sent += 1
        self.frame_sent = done
