"""Per-message zlib compression, as one more layer of the transport stack.

Theory of operation
-------------------
Compression transforms *messages*, so it sits **above** the framing layer::

    CompressedTransport(FramedTransport(TcpTransport()))

Each ``resume_write`` compresses one whole message and hands it to the framing
layer as one frame; each frame read from below is decompressed back into one
message. Placed below framing instead, it would have to compress a byte stream
and flush at arbitrary points, and a short write would leave it holding
compressed bytes that belong to no message. (Encryption is the opposite case: TLS
works on the byte stream, so it belongs below framing, between it and TCP.)

Every frame starts with one flag byte: ``0`` means the message follows as is,
``1`` that it follows zlib-compressed. A message is sent compressed only when
that makes it smaller, so incompressible data (already compressed, random)
costs one byte and no CPU on the receiving side. gRPC's per-message
"compressed" flag works the same way.

Two limits keep a peer from hurting you:

* ``max_frame_size`` bounds the *decompressed* message, in both directions.
  A sender gets ``FrameTooLargeError`` at the call, like the framing layer.
  A receiver stops inflating after ``max_frame_size`` bytes, so a tiny frame
  that would expand to gigabytes (a "zip bomb") costs no more than one message.
* A frame that is empty, has an unknown flag, or is not valid zlib data closes
  that peer with :class:`CompressionError`.

Both reach the owner as ``CLOSED(ERROR, <error>)`` for that peer alone, exactly
like the framing errors of the layer below, which pass through untouched.
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING

from .errors import FrameTooLargeError, FramingError, TransportClosedError
from .events import EventKind, IOEvent, IOStatus, Peer, ReadResult, WriteResult
from .framing import DEFAULT_MAX_FRAME_SIZE
from .interfaces import Buffer, ITransport, WriteData
from .layer import TransportLayer, copy_message_into

if TYPE_CHECKING:
    pass

__all__ = ["COMPRESSED", "STORED", "CompressedTransport", "CompressionError"]

#: Flag byte: the message follows unchanged.
STORED = 0
#: Flag byte: the message follows as one zlib stream.
COMPRESSED = 1


class CompressionError(FramingError):
    """A frame that does not hold a valid (flagged, zlib) message."""


def _join(data: WriteData) -> bytes | bytearray | memoryview:
    if isinstance(data, Buffer):
        return data
    return b"".join(data)


class CompressedTransport(TransportLayer):
    """Compresses each message sent over a message transport ``inner``
    (a :class:`~barknet.framed.FramedTransport`), and inflates each one received.

    ``level`` is zlib's (1 fast .. 9 small). ``max_frame_size`` limits the
    uncompressed message; by default it is one byte under ``inner``'s limit, so
    that a message sent uncompressed (plus its flag byte) always fits below.

    ``resume_write`` returns what ``inner`` did with the *compressed* frame.
    """

    def __init__(
        self, inner: ITransport, *, level: int = 6, max_frame_size: int | None = None
    ) -> None:
        if not -1 <= level <= 9:
            raise ValueError("level is zlib's: -1 (default) or 0..9")
        super().__init__(inner)
        self.level = level
        if max_frame_size is None:
            max_frame_size = getattr(inner, "max_frame_size", DEFAULT_MAX_FRAME_SIZE + 1) - 1
        self.max_frame_size = max_frame_size
        self._errors: dict[Peer, FramingError] = {}
        #: A message the owner's buffer had no room for (BufferError): it is
        #: already inflated and gone from below, so it waits here, first in line.
        self._unread: dict[Peer, bytes] = {}
        #: A READABLE for it is scheduled (on the turn after this one, by number).
        self._reminder_due: dict[Peer, int] = {}
        self._quiet: set[Peer] = set()  # ... but you suspended reading since
        #: Peers with a message held here whose reading you suspended, until a read
        #: reaches the layer below again (only such a read resumes it there).
        self._suspended: set[Peer] = set()
        self._closed_by_you: set[Peer] = set()  # until their CLOSED
        #: Payload bytes before and after compression, over every message the
        #: layer below took (one it refused, or a broken peer's, is not counted).
        self.bytes_in = 0
        self.bytes_out = 0

    # ------------------------------------------------------------ delegation
    def _on_inner_event(self, event: IOEvent) -> None:
        if event.kind is EventKind.CLOSED:
            self._forget_unread(event.peer)
            self._closed_by_you.discard(event.peer)
            error = self._errors.pop(event.peer, None)
            if error is not None:
                event = IOEvent(EventKind.CLOSED, event.peer, IOStatus.ERROR, error)
        self._emit(event)

    # ---------------------------------------------------------------- writes
    def resume_write(self, data: WriteData, peer: Peer) -> WriteResult:
        """Compress one message (if that makes it smaller) and send it as one frame.

        Raises ``FrameTooLargeError`` for a message over ``max_frame_size`` (judged
        before compression: the receiver has to hold it uncompressed).
        """
        error = self._broken(peer)
        if error is not None:
            return WriteResult(0, IOStatus.ERROR, error)
        message = _join(data)
        size = message.nbytes if isinstance(message, memoryview) else len(message)
        if size > self.max_frame_size:
            raise FrameTooLargeError(size, self.max_frame_size, peer=peer, sending=True)
        packed = zlib.compress(message, self.level) if size else b""
        body: Buffer = message
        flag, wire = STORED, size
        if len(packed) < size:
            flag, body, wire = COMPRESSED, packed, len(packed)
        result = self.inner.resume_write([bytes((flag,)), body], peer)
        if result.status is not IOStatus.ERROR:  # (a refused one raised: not sent either)
            self.bytes_in += size
            self.bytes_out += 1 + wire
        return result

    # ----------------------------------------------------------------- reads
    def resume_read(
        self,
        peer: Peer,
        buffer: bytearray | memoryview | None = None,
        offset: int = 0,
        max_len: int | None = None,
    ) -> ReadResult:
        """Take the next whole message; statuses as in ``inner.resume_read``."""
        error = self._broken(peer)
        if error is not None:
            return ReadResult(b"", IOStatus.ERROR, error)
        message = self._unread.pop(peer, None) if self._unread else None
        held = message is not None  # (refused before: this read did not go below)
        if message is None:
            self._suspended.discard(peer)  # (this read reaches the layer below)
            result = self.inner.resume_read(peer)
            if result.status is not IOStatus.OK:
                return result
            try:
                message = self._unpack(memoryview(result.data), peer)
            except FramingError as exc:
                self._errors[peer] = exc
                self.inner.abort(peer)  # a peer that breaks the rules is not waited for
                return ReadResult(b"", IOStatus.ERROR, exc)
        if buffer is None:
            result = ReadResult(message, IOStatus.OK)
        else:
            try:
                result = copy_message_into(message, buffer, offset, max_len)
            except BufferError:
                # Refused, not lost: the next read gets it, and READABLE says so
                # (the layer below no longer counts it as waiting). A read resumes
                # reading, as on every layer.
                self._unread[peer] = message
                self._quiet.discard(peer)
                self._remind(peer)
                raise
        if held and peer in self._suspended:
            # You had suspended reading, and a read starts it again, as on every
            # layer; but this one did not reach the layer below, which stays
            # suspended until a read does. So read its next message now: it
            # waits here, announced from the next turn, while you take this one.
            self._quiet.discard(peer)
            self._read_ahead(peer)
        return result

    def _read_ahead(self, peer: Peer) -> None:
        self._suspended.discard(peer)
        # read_frames (FramedTransport's) never reports the end, so an EOF stays
        # the layer below's news, announced from there; resume_read would take it.
        read_frames = getattr(self.inner, "read_frames", None)
        if read_frames is not None:
            frames = read_frames(peer, 1)
            if not frames:
                return  # nothing yet, or an end: the layer below says so
            data = frames[0]
        else:
            result = self.inner.resume_read(peer)
            if result.status is not IOStatus.OK:
                return  # (nothing yet, or an end: the next read asks below and hears it)
            data = result.data
        try:
            self._unread[peer] = self._unpack(memoryview(data), peer)
        except FramingError as exc:
            self._errors[peer] = exc  # (the next call answers with it)
            self.inner.abort(peer)
            return
        self._remind(peer)

    def _broken(self, peer: Peer) -> FramingError | None:
        """The error that made us abort ``peer`` below, until its CLOSED: calls for
        it answer with it, or do nothing, as for any broken peer (the layer below
        would raise, since we aborted it). After your own close, they raise."""
        error = self._errors.get(peer)
        if error is not None and peer in self._closed_by_you:
            raise TransportClosedError(f"you closed {peer}", peer=peer)
        return error

    def suspend_read(self, peer: Peer | None = None) -> None:
        if peer is not None and self._broken(peer) is not None:
            return
        self.inner.suspend_read(peer)  # (raises for a peer you closed)
        self._quiet.update(self._unread if peer is None else [peer])
        self._suspended.update(self._unread if peer is None else [peer])

    def suspend_write(self, peer: Peer) -> None:
        if self._broken(peer) is None:
            self.inner.suspend_write(peer)

    def write_eof(self, peer: Peer) -> None:
        if self._broken(peer) is None:
            self.inner.write_eof(peer)

    def close(self, peer: Peer | None = None) -> None:
        for each in [peer] if peer is not None else [*self._unread, *self._errors]:
            self._yours_no_more(each)  # (no argument: every peer, at once)
        self.inner.close(peer)

    def abort(self, peer: Peer) -> None:
        self._yours_no_more(peer)
        self.inner.abort(peer)

    def _yours_no_more(self, peer: Peer) -> None:
        """You closed ``peer``: its held message goes, and reads raise (the layer
        below raises for them, but a peer that broke our rules is answered here)."""
        self._forget_unread(peer)
        if peer in self._errors:
            self._closed_by_you.add(peer)

    def _forget_unread(self, peer: Peer) -> None:
        self._unread.pop(peer, None)
        self._quiet.discard(peer)
        self._suspended.discard(peer)

    def _remind(self, peer: Peer) -> None:
        if peer not in self._reminder_due:  # one scheduled at a time
            watcher = self._watcher
            assert watcher is not None
            self._reminder_due[peer] = watcher.turns
            watcher.call_soon(self._readable_again, peer)

    def _readable_again(self, peer: Peer) -> None:
        """Level-triggered READABLE for a refused message: once a turn until it is
        read, the peer is closed, or you suspend reading (then ``resume_read``
        returns it)."""
        watcher = self._watcher
        assert watcher is not None
        if self._reminder_due.get(peer) == watcher.turns:
            # Scheduled during this turn's I/O, so it would run in this turn:
            # this turn had its READABLE, the reminder is for the next one.
            watcher.call_soon(self._readable_again, peer)
            return
        self._reminder_due.pop(peer, None)
        if peer in self._unread and peer not in self._quiet:
            try:
                self._emit(IOEvent(EventKind.READABLE, peer))
            finally:  # (even after a callback that raised: it is announced again)
                if peer in self._unread and peer not in self._quiet:
                    self._remind(peer)

    def _unpack(self, frame: memoryview, peer: Peer) -> bytes:
        if not frame.nbytes:
            raise CompressionError("an empty frame has no flag byte", peer=peer)
        flag, body = frame[0], frame[1:]
        if flag == STORED:
            if body.nbytes > self.max_frame_size:
                raise FrameTooLargeError(body.nbytes, self.max_frame_size, peer=peer)
            return bytes(body)
        if flag != COMPRESSED:
            raise CompressionError(f"unknown flag byte {flag} from {peer}", peer=peer)
        inflater = zlib.decompressobj()
        try:
            # Ask for one byte more than allowed: getting it proves the message is too big,
            # and inflating stops there however much the frame would expand.
            message = inflater.decompress(body, self.max_frame_size + 1)
        except zlib.error as exc:
            raise CompressionError(f"corrupt zlib data from {peer}: {exc}", peer=peer) from exc
        if len(message) > self.max_frame_size:
            raise FrameTooLargeError(len(message), self.max_frame_size, peer=peer, inflated=True)
        if not inflater.eof or inflater.unused_data:
            raise CompressionError(
                f"the zlib stream from {peer} is cut short or followed by extra bytes", peer=peer
            )
        return message

    def __repr__(self) -> str:
        return f"<CompressedTransport level={self.level} over {self.inner!r}>"
