"""What :class:`~barknet.framed.FramedTransport` remembers about each peer.

The chapter's two pieces of per-peer state, as two small classes:
:class:`RecvState` (the decoder holding a partial frame, the whole frames the
owner has not taken yet, and where the peer stands: EOF, errors, paused) and
:class:`SendState` (a :class:`~barknet.frame_queue.FrameQueue` of frames still to
send, and whether the peer waits for ``WRITABLE``, is paused or is closing).
They hold no behaviour of their own: the transport reads and changes them, so
all the decisions stay in one place, :mod:`barknet.framed`.
:class:`PeerSnapshot` is a picture of both, for notebooks and debugging.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, NamedTuple

from .errors import BarknetError, FramingError
from .events import IOCounters, IOEvent
from .frame_queue import FrameQueue
from .framing import FrameDecoder

if TYPE_CHECKING:
    from .reactor import TimerHandle

__all__ = ["PeerSnapshot", "RecvState", "SendState"]


class RecvState:
    """Per-peer receive state: the partial frame, and frames waiting for the owner."""

    __slots__ = (
        "decoder",
        "discarded",
        "discarding",
        "eof",
        "eof_taken",
        "error",
        "frames",
        "frames_received",
        "held_error",
        "inner_closed",
        "last_progress",
        "paused_by_owner",
        "paused_for_owner",
        "readable",
        "replay_due",
        "replay_waits",
        "timer",
        "totals_below",
    )

    def __init__(self, decoder: FrameDecoder, readable: IOEvent) -> None:
        self.decoder = decoder
        self.readable = readable  # this peer's READABLE event, made once (it is immutable)
        self.frames: deque[bytes | bytearray] = deque()
        self.eof = False  # the peer ended cleanly between frames
        self.eof_taken = False  # resume_read told the owner EOF
        self.inner_closed = False  # the inner transport closed the peer (CLOSED came)
        #: The inner transport's counters for the peer, taken when its CLOSED came
        #: (it forgets the peer then; we may hold the CLOSED for unread frames).
        self.totals_below: IOCounters | None = None
        self.error: BarknetError | None = None  # a framing error, or broken below
        self.paused_by_owner = False  # suspend_read() was called
        self.paused_for_owner = False  # we stopped reading until the owner takes frames
        self.replay_due = False  # _replay_readable is scheduled for the next turn
        self.replay_waits = False  # ... and must skip the turn it was scheduled in
        #: A framing error found behind whole frames: reported once the owner took them.
        self.held_error: FramingError | None = None
        self.frames_received = 0
        #: After close(peer), while queued frames still go out: what the peer sends
        #: is read and dropped (so a peer that writes before it reads is not stuck
        #: behind us), and counted for the LingerTimeoutError.
        self.discarding = False
        self.discarded = 0
        self.last_progress = 0.0
        self.timer: TimerHandle | None = None


class SendState(FrameQueue):
    """Per-peer send state: the queue of frames (a :class:`~barknet.frame_queue.FrameQueue`),
    and where the peer stands: waiting for WRITABLE, paused, closing."""

    __slots__ = (
        "announced",
        "closing",
        "dropped",
        "eof",
        "eof_sent",
        "flush_due",
        "linger_timer",
        "owner_closed",
        "paused",
        "turn",
        "waiting",
    )

    def __init__(self) -> None:
        super().__init__()
        self.announced = False  # the owner heard ACCEPTED or CONNECTED (or adopted it)
        self.waiting = False  # a write came back short: waiting for WRITABLE
        self.paused = False  # PAUSE_WRITING was replayed and not yet resumed
        self.closing = False  # close() was called: close once the queue is empty
        self.owner_closed = False  # ... by you (not by us after the peer's EOF): I/O raises
        self.dropped = False  # the inner transport dropped the peer (abort, or broken)
        self.eof = False  # write_eof() was called: pass it down once the queue is empty
        self.eof_sent = False  # ... and it was passed down
        self.flush_due = False  # (coalescing) a flush is scheduled for the end of this turn
        self.turn = -1  # (coalescing) the loop's turn in which the last frame was written
        self.linger_timer: TimerHandle | None = None  # close(peer) waits this long for the queue


class PeerSnapshot(NamedTuple):
    """A picture of one peer's framing state, for notebooks and debugging."""

    recv_part: str  # "idle", "header" or "payload"
    recv_received: int
    recv_expected: int
    frames_waiting: int  # decoded, not yet taken by the owner
    send_queued_bytes: int
    send_queued_frames: int
    send_frame_size: int  # header + payload of the frame being sent (0: none)
    send_frame_sent: int  # how far it got

    @classmethod
    def of(cls, recv: RecvState, send: SendState) -> PeerSnapshot:
        part, received, expected = recv.decoder.state
        sizes = send.frame_sizes
        return cls(
            part,
            received,
            expected,
            len(recv.frames),
            send.queued,
            len(sizes),
            sizes[0] if sizes else 0,
            send.frame_sent,
        )
