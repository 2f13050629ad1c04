"""Length-prefix framing over any transport, as a decorator.

Theory of operation
-------------------
``FramedTransport(inner)`` is an :class:`~barknet.interfaces.ITransport` whose
unit is a whole *frame* instead of a byte. It never looks at sockets: it only
calls ``inner``'s ``resume_*``/``suspend_*`` methods and listens to ``inner``'s
events, so it runs the same over TCP, over a chunking fault injector, or over
another framed transport.

It keeps two pieces of state per peer, as the chapter does:

* **Receive state** (:class:`RecvState`): a sans-I/O
  :class:`~barknet.framing.FrameDecoder` holding the partial header or payload,
  and the whole frames decoded but not yet taken by the owner. On the inner
  ``READABLE``, the decoder lends out memory and the inner transport reads
  straight into it (a scratch shared by all peers, or, for a large frame, a
  body that grows as its bytes arrive), until a read comes back short or would
  block, or :data:`FRAMES_PER_TURN` frames are waiting. When frames are ready
  the owner gets ``READABLE`` and pulls them one by one with
  ``resume_read(peer)``, or all at once with ``read_frames(peer)`` (a list:
  one call per batch, where many small frames make the per-call cost the
  largest one).

* **Send state** (:class:`SendState`): the frames queued for the peer and how
  far the first of them got (a sans-I/O :class:`~barknet.frame_queue.FrameQueue`,
  the sending half of the codec), and whether the peer is paused or closing.
  ``resume_write(payload, peer)`` tries to send the frame at once when
  nothing waits, and otherwise queues it: a small one copied, with its
  header, into a buffer shared by the small frames queued with it; a large
  one as its header and your payload itself (no copy).
  ``write_frames(payloads, peer)`` queues a batch with one call.
  Everything queued goes out in one scatter/gather write (up to 1024
  buffers, so many small frames share one system call). A short write leaves
  the rest queued; on the inner ``WRITABLE`` the queue is flushed again, and
  when it is empty this layer suspends writing and replays ``DRAINED``.

``READABLE`` is level-triggered, as the interface promises: after the owner's
callback returns, if whole frames still wait (the owner took one and left the
rest, as asyncio and trio owners do) and the owner did not ``suspend_read``,
``READABLE`` comes again on the next turn of the loop, and again, until none
wait. Meanwhile this layer stops reading that peer, so the kernel's buffers
fill and the sender is slowed down: a slow reader costs bounded memory. An
owner that drains until ``WOULD_BLOCK`` pays nothing for this (nothing waits
when its callback returns), and nothing is scheduled when nothing waits.

Fairness is counted in frames, not only in reads: one turn of the loop hands
the owner at most :data:`FRAMES_PER_TURN` frames of one peer (the rest stay
undecoded, 4 bytes each for empty frames, and come on the next turns), so a
peer streaming zero-length frames gets its share of the loop, not all of it.

Flow control follows asyncio: when the queue grows past ``high_water`` the
owner gets ``PAUSE_WRITING`` (right away, inside the ``resume_write`` that
crossed it; for frames written before ``CONNECTED``, right after it) and
``RESUME_WRITING`` once the queue falls to ``low_water``.

A framing error (a length over ``max_frame_size``, a stream that ends mid-frame,
or, with ``frame_timeout``, a frame that stalls) aborts that peer alone and
reaches the owner as ``CLOSED(ERROR, <typed error>)``. Whole frames that came
before the bad bytes reach the owner first, and the peer is closed only after
the owner's callback for them returned, so its replies are accepted the same
whether TCP delivered the bad header with those frames or later.

Ending a conversation. ``close(peer)`` refuses new frames (and reads) at once,
sends the queued ones, then closes through the inner transport, which closes
gracefully (lingering until the peer's EOF; see :mod:`barknet.tcp`). A peer that
does not read could keep the queue from ever leaving, so that wait is bounded
too: after ``linger_timeout`` seconds the peer is aborted, ``CLOSED(ERROR,
LingerTimeoutError)``. Meanwhile what the peer sends is read and dropped, so a
peer that finishes writing before it reads is not stuck behind us.
``write_eof(peer)`` refuses new frames too, and passes the half-close down once
the queue drained.
A peer that ends cleanly between frames: with ``half_close=False`` (the
default) the peer is closed once you took its frames and the queue drained,
``CLOSED(EOF)``; with ``half_close=True`` you read ``EOF`` from
``resume_read`` and may keep writing, until your ``write_eof`` (then
``CLOSED(EOF)``) or ``close``. If both directions end below while frames still
wait for you, ``CLOSED`` waits until you took them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import socket
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .errors import (
    BarknetError,
    FrameTimeoutError,
    FramingError,
    LingerTimeoutError,
    TransportClosedError,
)
from .events import EventKind, IOCounters, IOEvent, IOStatus, Peer, ReadResult, WriteResult
from .frame_queue import frame_batch
from .framed_state import PeerSnapshot, RecvState, SendState
from .framing import (
    DEFAULT_BUFFER_SIZE,
    DEFAULT_MAX_FRAME_SIZE,
    HEADER,
    HEADER_SIZE,
    MAX_ENCODABLE,
    SMALL_FRAME,
    FrameDecoder,
    ScratchPool,
    buffer_size,
    encode_header,
)
from .interfaces import Buffer, ITransport, Replay, WriteData
from .layer import copy_message_into, linger_timeout_below

if TYPE_CHECKING:
    from .reactor import EventWatcher

__all__ = ["FramedTransport", "PeerSnapshot", "RecvState", "SendState"]

#: Reads per inner READABLE before letting other peers have a turn.
READS_PER_EVENT = 4
#: Frames of one peer handed to the owner per turn of the loop, at most.
FRAMES_PER_TURN = 512
#: Free scratch buffers the transport keeps for its peers' decoders.
SPARE_SCRATCHES = 4


#: Enum members the per-message paths compare against, looked up once: on
#: CPython 3.10 and 3.11 ``EventKind.READABLE`` goes through the enum
#: metaclass's ``__getattr__`` hook, about 60 ns a time (a global is 3 ns).
_OK, _WOULD_BLOCK, _EOF, _ERROR = IOStatus.OK, IOStatus.WOULD_BLOCK, IOStatus.EOF, IOStatus.ERROR
_READABLE, _WRITABLE = EventKind.READABLE, EventKind.WRITABLE
_pack_header = HEADER.pack
_TAKES = "resume_write takes bytes-like data (one buffer, or a sequence of them)"
#: Building a result with tuple.__new__ skips the Python-level __new__ that
#: NamedTuple generates: worth it only on the per-frame paths.
_tuple_new = tuple.__new__
#: Answers that carry nothing but their status, made once (they are immutable).
_QUEUED = WriteResult(0, IOStatus.WOULD_BLOCK)
_NOTHING_YET = ReadResult(b"", IOStatus.WOULD_BLOCK)


class FramedTransport(ITransport):
    """Frames of up to ``max_frame_size`` bytes over any byte transport.

    ``frame_timeout`` (seconds, off by default) closes a peer that starts a
    frame and then sends nothing more for that long. ``high_water`` and
    ``low_water`` bound the bytes queued per peer before the owner is asked to
    pause.

    ``resume_write`` keeps a reference to your payload until it is sent: if
    you pass a ``bytearray`` that you will change, wait for ``DRAINED`` (or
    pass ``bytes``).

    ``coalesce=True`` saves system calls when you write in bursts: the first
    frame written in a loop turn is sent at once, as usual, but the frames
    written after it in the same turn are only queued (``resume_write``
    answers ``WOULD_BLOCK`` with ``sent=0``) and leave together at the end of
    the turn, one scatter/gather write per 1024 buffers; ``DRAINED`` follows
    when all left. A thousand 64-byte frames written in one callback then cost
    two or three system calls instead of a thousand, while a request/response
    exchange (one frame per turn) sees no added latency. Off by default, so
    that every frame written outside the loop leaves at once.

    ``half_close`` says what the peer's EOF means (see the module docstring):
    False closes the peer once you took its frames, True leaves it open for
    your writes until your ``write_eof`` or ``close``.

    ``linger_timeout`` bounds how long ``close(peer)`` waits for queued frames
    to leave; None takes the ``linger_timeout`` of the first transport below
    that has one (a tracing layer in between has none; 5 s if none has), so
    over ``TcpTransport`` one setting bounds every stage of a close.
    """

    def __init__(
        self,
        inner: ITransport,
        *,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        frame_timeout: float | None = None,
        high_water: int = 64 * 1024,
        low_water: int | None = None,
        buffer_size: int = DEFAULT_BUFFER_SIZE,
        coalesce: bool = False,
        half_close: bool = False,
        linger_timeout: float | None = None,
    ) -> None:
        self.inner = inner
        self.linger_timeout = linger_timeout_below(inner, linger_timeout)
        self.half_close = half_close
        self.coalesce = coalesce
        self.max_frame_size = max_frame_size
        self.frame_timeout = frame_timeout
        self.high_water = high_water
        self.low_water = high_water // 4 if low_water is None else low_water
        if not 0 <= self.low_water <= self.high_water:
            raise ValueError("need 0 <= low_water <= high_water")
        self.buffer_size = buffer_size
        self._scratches = ScratchPool(buffer_size, keep=SPARE_SCRATCHES)
        self._watcher: EventWatcher | None = None
        self._replay: Replay | None = None
        self._recv: dict[Peer, RecvState] = {}
        self._send: dict[Peer, SendState] = {}
        self._frames_sent_closed = 0
        self._frames_received_closed = 0
        #: A peer's counters while its CLOSED is being delivered (see _finish).
        self._leaving: dict[Peer, IOCounters] = {}

    # ------------------------------------------------------------ lifecycle
    def attach(self, watcher: EventWatcher, replay: Replay) -> None:
        self._watcher = watcher
        self._replay = replay
        self.inner.attach(watcher, self._on_inner_event)

    def bind(self) -> tuple[str, int]:
        return self.inner.bind()

    def connect(self, address: tuple[str, int] | None = None) -> Peer:
        peer = self.inner.connect(address)
        self._open(peer)
        return peer

    def adopt(self, sock: socket.socket) -> Peer:
        """Frame an already connected socket; see :meth:`TcpTransport.adopt`."""
        peer = self.inner.adopt(sock)
        self._open(peer)
        self._send[peer].announced = True  # (no event announces an adopted peer)
        return peer

    @property
    def address(self) -> tuple[str, int] | None:
        return self.inner.address

    def _open(self, peer: Peer) -> None:
        if peer not in self._recv:
            decoder = FrameDecoder(
                self.max_frame_size, buffer_size=self.buffer_size, peer=peer, pool=self._scratches
            )
            self._recv[peer] = RecvState(decoder, IOEvent(EventKind.READABLE, peer))
            self._send[peer] = SendState()

    def close(self, peer: Peer | None = None) -> None:
        """Close ``peer`` once its queued frames are sent, gracefully (no
        argument: close everything now, dropping what is queued).

        From this call on the peer is no longer yours: new frames are refused,
        and reads raise too (``TransportClosedError``); frames that arrived and
        that you did not take are dropped."""
        if peer is None:
            for each, send in list(self._send.items()):
                # Every peer is let go below, now: what this turn still had
                # scheduled for one (a coalesced flush, a READABLE) does nothing.
                self._yours_no_more(each)
                send.closing = send.dropped = True
                if self._recv[each].inner_closed:
                    self._finish_soon(each)  # gone below already, its CLOSED held for you
            self.inner.close()
            return
        self._yours_no_more(peer)
        self._close(peer)

    def _yours_no_more(self, peer: Peer) -> None:
        """You closed or aborted ``peer``: your I/O calls for it raise from now on
        (the checks sit on the paused paths, so reads pay nothing for them)."""
        send, recv = self._send.get(peer), self._recv.get(peer)
        if send is not None and recv is not None:
            send.owner_closed = True
            recv.paused_by_owner = True
            recv.frames.clear()

    def _close(self, peer: Peer) -> None:
        """Close ``peer`` gracefully: yours (``close``), or ours, after its EOF."""
        send = self._send.get(peer)
        if send is None or send.closing:
            return
        send.closing = True
        if send.dropped:
            return  # the inner transport dropped it already: CLOSED is on its way
        recv = self._recv[peer]
        if recv.error is not None or recv.inner_closed:
            # The inner transport already dropped it; CLOSED is on its way (or,
            # with frames still waiting for you, comes on the next turn).
            if recv.inner_closed and recv.error is None:
                self._finish_soon(peer)
            return
        recv.paused_by_owner = True  # (reading below ends here, or turns to discarding)
        if not send.buffers or self._watcher.closed:  # type: ignore[union-attr]
            # (No suspend_read below first: the inner transport's close reads what
            # it needs, a TLS handshake to finish or a TCP peer's EOF to wait for.
            # With the loop closed first, what is queued has nothing to send it.)
            self.inner.close(peer)
            return
        # Frames wait to go: bounded, and the peer is read (and ignored) meanwhile.
        recv.discarding = True
        send.linger_timer = self._watcher.call_later(  # type: ignore[union-attr]
            self.linger_timeout, self._linger_expired, peer
        )
        self._discard(peer, recv)

    def _discard(self, peer: Peer, recv: RecvState) -> None:
        """Closing, queue not yet sent: read what the peer sends and drop it,
        until the inner transport would block (it then says READABLE again)."""
        for _ in range(READS_PER_EVENT):
            data, status, error = self.inner.resume_read(peer)
            if status is _OK:
                recv.discarded += len(data)
                continue
            if status is _ERROR:
                self._broken(peer, error)  # CLOSED(ERROR) follows
            return  # WOULD_BLOCK, or EOF (the inner transport stops reading)

    def _linger_expired(self, peer: Peer) -> None:
        send = self._send.get(peer)
        if send is None or not send.buffers or send.dropped:
            return
        send.linger_timer = None
        discarded = self._recv[peer].discarded
        self._abort(peer, LingerTimeoutError(self.linger_timeout, discarded, peer=peer))

    def write_eof(self, peer: Peer) -> None:
        """Send no more frames to ``peer`` (those queued still go), then half-close
        below: the peer reads EOF after the last of them. You keep reading."""
        send = self._send.get(peer)
        if send is not None and send.eof and not send.owner_closed:
            return  # (again: harmless)
        if send is not None and self._still_queueing(send):
            send.eof = True  # (the close after the queue ends it)
            return
        if send is None or send.closing:
            raise TransportClosedError(f"{peer} is closed", peer=peer)
        if send.eof:
            return
        send.eof = True
        if not send.buffers:
            self._send_eof(peer, send)

    def _send_eof(self, peer: Peer, send: SendState) -> None:
        recv = self._recv[peer]
        if send.eof_sent or recv.error is not None or recv.inner_closed:
            return
        send.eof_sent = True
        self.inner.write_eof(peer)

    def abort(self, peer: Peer) -> None:
        """Close ``peer`` now, dropping its queued frames; ``CLOSED`` follows."""
        recv = self._recv.get(peer)
        self._yours_no_more(peer)
        if recv is not None and recv.inner_closed:
            self._finish_soon(peer)
            return
        self._dropped(peer)
        send = self._send.get(peer)
        if send is not None:
            send.closing = True
        self.inner.abort(peer)

    def _dropped(self, peer: Peer) -> None:
        """The inner transport no longer has ``peer``: refuse writes, and ignore a
        WRITABLE a layer below had already scheduled (CLOSED is on its way)."""
        send = self._send.get(peer)
        if send is not None:
            send.dropped = True

    def _broken(self, peer: Peer, error: BarknetError | None) -> None:
        """The inner transport found ``peer`` broken and dropped it; CLOSED follows.
        Until then, calls for ``peer`` get this error instead of reaching it."""
        recv = self._recv.get(peer)
        if recv is not None and recv.error is None:
            recv.error = error
        self._dropped(peer)

    def _abort(self, peer: Peer, error: BarknetError) -> None:
        """The peer broke the rules (framing, or would not take a close): close
        it now, report ``error``."""
        recv = self._recv[peer]
        recv.error = error
        self._dropped(peer)
        if recv.inner_closed:
            self._finish_soon(peer)  # gone below already, its CLOSED taken: ours says why
        else:
            self.inner.abort(peer)

    # ---------------------------------------------------------------- events
    def _on_inner_event(self, event: IOEvent) -> None:
        kind, peer, _, _ = event  # (unpacking a tuple is cheaper than two attributes)
        if kind is _READABLE:  # the common case, handled here
            recv = self._recv.get(peer)
            if recv is None:
                return
            if recv.discarding:
                self._discard(peer, recv)
                return
            if recv.frames:
                # The owner has not taken the last batch: stop reading until it
                # does (our own READABLE keeps coming meanwhile, see _announce).
                recv.paused_for_owner = True
                self.inner.suspend_read(peer)
                return
            if recv.replay_due:
                return  # a replay this turn serves this peer: one turn's worth, not two
            self._pump(peer, recv)
            if recv.frames:
                # A callback queued now would run in this same turn, after the
                # sockets: the peer had its turn's worth, so a replay waits for
                # the next turn.
                self._announce(peer, recv, next_turn=True)
        elif kind is _WRITABLE:
            self._on_writable(peer)
        elif kind is EventKind.CLOSED:
            self._on_closed(event)
        elif kind is EventKind.ACCEPTED or kind is EventKind.CONNECTED:
            self._open(peer)
            send = self._send[peer]
            if not send.owner_closed:  # (closed before it was connected)
                send.announced = True
                self._emit(event)
                # Frames queued before it: the pause they earned comes now, after
                # CONNECTED, as the order of events has it (unless the owner
                # closed the loop from its callback: then nothing more happens).
                if not self._watcher.closed:  # type: ignore[union-attr]  # attached
                    self._pause_if_full(send, peer)
        # DRAINED / PAUSE / RESUME from a framing layer below us describe its
        # own queue; ours is the one our owner cares about.

    def _on_closed(self, event: IOEvent) -> None:
        peer = event.peer
        recv, send = self._recv.get(peer), self._send.get(peer)
        if recv is None or send is None:
            # A peer we never saw open (a failed connect or TLS handshake): its
            # counters are those below, in its CLOSED callback too.
            try:
                below = self.inner.counters(peer)
            except TransportClosedError:
                self._emit(event)
                return
            self._emit_closed(event, below)
            return
        recv.inner_closed = True
        recv.totals_below = self.inner.counters(peer)
        if event.status is IOStatus.ERROR or recv.error is not None:
            error = recv.error if recv.error is not None else event.error
            if recv.frames and not send.owner_closed and error is not None:
                # The peer broke (or we aborted it) behind frames that had already
                # arrived whole: they are yours first, then its CLOSED(ERROR).
                # Reading below is over; the READABLE replays go on until you took
                # them, and the last replay delivers the CLOSED (_replay_readable).
                recv.error = error
                self._dropped(peer)  # writes now get the error, as from a broken peer
                recv.paused_for_owner = True
                if not recv.replay_due and not recv.paused_by_owner:
                    self._announce(peer, recv)
                return
        elif (
            not send.closing
            and not send.dropped
            and (recv.frames or (self.half_close and recv.eof and not recv.eof_taken))
        ):
            # Both directions ended below while frames (or, with half_close, the
            # EOF) still wait for you: CLOSED comes once you took them. (If you
            # suspended reading, your resume_read announces them.)
            if not recv.paused_by_owner:
                self._emit(recv.readable)
            return
        if recv.error is None and recv.held_error is not None:
            recv.error = recv.held_error  # its frames are taken: now the error is news
        self._finish(peer, event)

    def _finish_soon(self, peer: Peer) -> None:
        """CLOSED(OK) through call_soon for a peer you closed or aborted after the
        inner transport let it go: never from inside your own call."""
        self._send[peer].closing = True
        self._watcher.call_soon(self._finish_if_known, peer)  # type: ignore[union-attr]

    def _finish_if_known(self, peer: Peer) -> None:
        if peer in self._recv:
            self._finish(peer, IOEvent(EventKind.CLOSED, peer, IOStatus.OK))

    def _finish(self, peer: Peer, event: IOEvent) -> None:
        """The peer is gone below: forget it and tell the owner, once."""
        recv = self._recv.pop(peer)
        send = self._send.pop(peer)
        if recv.timer is not None:
            recv.timer.cancel()
        if send.linger_timer is not None:
            send.linger_timer.cancel()
        self._frames_sent_closed += send.frames_sent
        self._frames_received_closed += recv.frames_received
        if recv.error is not None:
            event = IOEvent(EventKind.CLOSED, peer, IOStatus.ERROR, recv.error)
        elif event.status is IOStatus.OK and recv.eof and not send.owner_closed:
            event = IOEvent(EventKind.CLOSED, peer, IOStatus.EOF)  # it ended, we closed
        self._emit_closed(event, self._peer_counters(peer, recv, send))

    def _emit_closed(self, event: IOEvent, counters: IOCounters) -> None:
        """The peer's CLOSED, with its ``counters`` answering in the callback too."""
        self._leaving[event.peer] = counters
        try:
            self._emit(event)
        finally:
            del self._leaving[event.peer]

    def _emit(self, event: IOEvent) -> None:
        if self._replay is not None:
            self._replay(event)

    # ---------------------------------------------------------------- reads
    def _announce(self, peer: Peer, recv: RecvState, *, next_turn: bool = False) -> None:
        """Tell the owner frames (or, with ``half_close``, the peer's EOF) wait; if
        some still wait after its callback (or we stopped reading for it, or a
        framing error waits behind them), come back on a later turn
        (``next_turn``: not this one's callbacks, the next's). Nothing is
        scheduled for an owner that took everything. A callback that raises
        (a bug the loop lets out) still leaves the frames announced later."""
        try:
            self._replay(recv.readable)  # type: ignore[misc]  # attached: set
        finally:
            if (
                recv.frames
                or recv.paused_for_owner
                or recv.decoder.ready
                or recv.held_error
                or (self.half_close and self._eof_unread(recv))
            ) and not recv.replay_due:
                recv.replay_due = True
                recv.replay_waits = next_turn
                self._watcher.call_soon(self._replay_readable, peer)  # type: ignore[union-attr]

    def _eof_unread(self, recv: RecvState) -> bool:
        """With ``half_close``, the peer's EOF is news the owner must read
        (``resume_read`` says ``EOF``); READABLE repeats until it has."""
        return self.half_close and recv.eof and not recv.eof_taken and not recv.frames

    def _replay_readable(self, peer: Peer) -> None:
        """Level-triggered READABLE: one turn later, frames still wait, or we stopped
        reading for the owner and it has taken them all (then read again)."""
        recv = self._recv.get(peer)
        if recv is None:
            return
        if recv.replay_waits:
            recv.replay_waits = False
            self._watcher.call_soon(self._replay_readable, peer)  # type: ignore[union-attr]
            return
        recv.replay_due = False
        if recv.paused_by_owner:
            return  # resume_read after suspend_read starts things again
        if recv.error is not None:
            # Broken behind frames that arrived before the error (see _on_closed):
            # announce them while they wait, then report the error.
            if recv.frames:
                self._announce(peer, recv)
            elif recv.inner_closed:
                self._finish(peer, IOEvent(EventKind.CLOSED, peer, IOStatus.ERROR, recv.error))
            return
        if self._eof_unread(recv):
            self._announce(peer, recv)  # nothing more to read below: just say it again
            return
        if not recv.frames:
            if recv.held_error is not None:
                self._abort(peer, recv.held_error)  # its frames are all taken now
                return
            recv.paused_for_owner = False
            try:
                self._pump(peer, recv, resumed=True)  # reads again, resumes the inner transport
            except TransportClosedError:
                return  # the whole transport was closed this turn: CLOSED is on its way
        if recv.frames:
            self._announce(peer, recv)

    def _pump(self, peer: Peer, recv: RecvState, *, resumed: bool = False) -> None:
        """Read from the inner transport into the decoder until it runs dry, or
        until a turn's worth of frames waits for the owner. ``resumed``: we had
        stopped reading, so the ``frame_timeout`` clock starts again from now."""
        decoder, inner, frames = recv.decoder, self.inner, recv.frames
        progressed = False
        if decoder.ready:  # whole frames held back last turn: those first
            more = decoder.next_frames(FRAMES_PER_TURN - len(frames))
            frames.extend(more)
            recv.frames_received += len(more)
            if decoder.ready:
                return
            if decoder.error is not None:
                self._hold(peer, recv, decoder.error)
                return
        if recv.held_error is not None:
            return
        for _ in range(READS_PER_EVENT):
            room = FRAMES_PER_TURN - len(frames)
            if room <= 0:
                break
            plain = decoder.receive_size
            if plain:
                # No frame partly held, small frames lately: a plain read, and the
                # frames cut straight out of what it returns.
                data, status, read_error = inner.resume_read(peer, None, 0, plain)
                short = len(data) < plain
            else:
                # Into the decoder's memory: the rest of a frame (a large one
                # straight into its body), or a large frame's successor.
                buffer = decoder.get_buffer()
                data, status, read_error = inner.resume_read(peer, buffer)
                got = len(data)
                short = got < len(buffer)
                # Let go of the views of the decoder's memory before it is told of
                # the bytes: a large frame's body can then grow in place.
                del buffer, data
            if status is _OK:
                progressed = True
                try:
                    if plain:
                        more = decoder.receive(data, room)
                    else:
                        more = decoder.buffer_updated(got, room)
                except FramingError as error:
                    self._hold(peer, recv, error)
                    return
                if more:
                    frames.extend(more)
                    recv.frames_received += len(more)
                if decoder.error is not None:  # good frames first, then the bad header
                    self._hold(peer, recv, decoder.error)
                    return
                if decoder.ready:
                    break  # a turn's worth of frames: enough for now
                if short:  # the kernel had no more for now: hold only a partial frame's bytes
                    if decoder.scratch is not None:
                        decoder.release()
                    break
            elif status is _EOF:
                try:
                    decoder.eof()
                except FramingError as error:
                    self._hold(peer, recv, error)
                    return
                recv.eof = True
                self._watcher.call_soon(self._finish_if_done, peer)  # type: ignore[union-attr]
                break
            else:  # WOULD_BLOCK, or ERROR (the inner transport closes the peer)
                if status is _ERROR:
                    self._broken(peer, read_error)
                else:
                    decoder.release()  # nothing more for now: give the scratch back
                break
        if self.frame_timeout is not None and (progressed or resumed):
            self._watch_deadline(peer, recv)

    def _hold(self, peer: Peer, recv: RecvState, error: FramingError) -> None:
        """A framing error: close the peer now if no frame waits for the owner, else
        once it took them (and its callback, which may reply, returned)."""
        if recv.frames:
            recv.held_error = error
            recv.paused_for_owner = True
            # (The read that found the error may have found the end too, and the
            # inner transport let the peer go: its CLOSED is on the way.)
            with contextlib.suppress(TransportClosedError):
                self.inner.suspend_read(peer)
        else:
            self._abort(peer, error)

    def _finish_if_done(self, peer: Peer) -> None:
        """After a clean EOF, once the owner took every frame: if the inner
        transport already closed the peer, deliver its CLOSED now; otherwise,
        without ``half_close``, close (after sending what is queued); with it,
        make sure the owner hears of the EOF."""
        recv = self._recv.get(peer)
        if recv is None or not recv.eof or recv.frames or self._send[peer].owner_closed:
            return  # (closed by you: your close delivers CLOSED, and says OK)
        if recv.inner_closed:
            if not self.half_close or recv.eof_taken:
                self._finish(peer, IOEvent(EventKind.CLOSED, peer, IOStatus.EOF))
            elif not recv.replay_due and not recv.paused_by_owner:
                self._announce(peer, recv)
        elif not self.half_close:
            self._close(peer)
        elif not recv.eof_taken and not recv.paused_by_owner and not recv.replay_due:
            self._announce(peer, recv)

    def resume_read(
        self,
        peer: Peer,
        buffer: bytearray | memoryview | None = None,
        offset: int = 0,
        max_len: int | None = None,
    ) -> ReadResult:
        """Take the next whole frame from ``peer``.

        ``WOULD_BLOCK`` means no whole frame is here yet (``READABLE`` will
        tell you when one is); ``EOF`` that the peer ended cleanly. With
        ``buffer``, the frame is copied into ``buffer[offset:]`` (a
        ``BufferError`` if it does not fit in ``max_len`` or the room left).
        """
        recv = self._recv.get(peer)
        if recv is not None and recv.frames and buffer is None and not recv.paused_by_owner:
            # The common case, first and short: an owner's loop calls this once
            # per frame (a million times a second for small frames).
            frames = recv.frames
            frame = frames.popleft()
            if not frames and recv.eof:
                self._watcher.call_soon(self._finish_if_done, peer)  # type: ignore[union-attr]
            return _tuple_new(ReadResult, (frame, _OK, None))  # = ReadResult(frame, OK)
        if recv is None:
            raise TransportClosedError(
                f"{peer} is closed (or never belonged to {self!r})", peer=peer
            )
        if recv.paused_by_owner or (recv.paused_for_owner and not recv.frames):
            if self._send[peer].owner_closed:  # (close and abort pause reading)
                raise TransportClosedError(f"you closed {peer}", peer=peer)
            self._read_again(peer, recv)
        if recv.frames:
            frame = recv.frames[0]
            result = (
                ReadResult(frame, IOStatus.OK)
                if buffer is None
                # Copied before it leaves the queue: a frame that does not fit
                # (BufferError) stays first in line for a bigger buffer.
                else copy_message_into(frame, buffer, offset, max_len)
            )
            recv.frames.popleft()
            if not recv.frames and recv.eof:
                self._watcher.call_soon(self._finish_if_done, peer)  # type: ignore[union-attr]
            return result
        if recv.error is not None:
            return ReadResult(b"", IOStatus.ERROR, recv.error)
        if recv.eof:
            if not recv.eof_taken:
                recv.eof_taken = True
                if recv.inner_closed:  # both directions ended: CLOSED(EOF) follows
                    self._watcher.call_soon(self._finish_if_done, peer)  # type: ignore[union-attr]
            return ReadResult(b"", IOStatus.EOF)
        return _NOTHING_YET

    def read_frames(self, peer: Peer, limit: int | None = None) -> list[bytes | bytearray]:
        """Take every whole frame from ``peer`` that is already here (at most
        ``limit``), in order; ``[]`` when none is.

        The batch form of ``resume_read``, for an owner that handles many small
        frames: one call hands over the frames this turn's reads decoded (at
        most ``FRAMES_PER_TURN``), where a ``resume_read`` loop pays a call and
        a result per frame, a large part of the cost of a 64-byte frame.

        It never reports the end: once it returns ``[]``, ask ``resume_read``
        why (``WOULD_BLOCK``, ``EOF``, or ``ERROR`` for a broken peer; a
        framing error found behind the frames you took closes the peer with
        ``CLOSED(ERROR)`` instead). With ``half_close`` the peer's EOF is news
        that only ``resume_read`` delivers: ``READABLE`` repeats until you
        take it there. Everything else is as with ``resume_read``:
        ``READABLE`` repeats while frames wait, and after ``suspend_read`` this
        call reads again. ``limit`` below 1 is a ``ValueError``.
        """
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be at least 1, or None for all (got {limit})")
        recv = self._recv.get(peer)
        if recv is None:
            raise TransportClosedError(
                f"{peer} is closed (or never belonged to {self!r})", peer=peer
            )
        frames = recv.frames
        if recv.paused_by_owner or (recv.paused_for_owner and not frames):
            if self._send[peer].owner_closed:  # (close and abort pause reading)
                raise TransportClosedError(f"you closed {peer}", peer=peer)
            self._read_again(peer, recv)
        if limit is None or limit >= len(frames):
            taken = list(frames)
            frames.clear()
        else:
            taken = [frames.popleft() for _ in range(limit)]
        if recv.eof and taken and not frames:
            self._watcher.call_soon(self._finish_if_done, peer)  # type: ignore[union-attr]
        return taken

    def _read_again(self, peer: Peer, recv: RecvState) -> None:
        """A read from an owner who had stopped reading (``suspend_read``), or
        for whom we had (frames waited; it has now taken them all): read again
        now, rather than on the next turn."""
        gone = recv.error is not None or recv.inner_closed  # nothing more to read below
        if recv.paused_by_owner and not self._send[peer].closing:
            recv.paused_by_owner = False
            if gone:
                pass  # what is here is all there is: it is announced below
            elif not recv.frames and recv.held_error is None:
                recv.paused_for_owner = False
                self._pump(peer, recv, resumed=True)
            else:
                # Reading below stays stopped (suspend_read stopped it) until the
                # owner took the frames here: then it reads again, as when we stop
                # it ourselves for frames waiting (_replay_readable, below).
                recv.paused_for_owner = True
            waiting = (
                recv.frames
                or recv.paused_for_owner
                or recv.held_error is not None
                or (self.half_close and self._eof_unread(recv))
            )
            if waiting and not recv.replay_due:
                # Level-triggered: what this call leaves behind is announced next turn.
                recv.replay_due = True
                self._watcher.call_soon(self._replay_readable, peer)  # type: ignore[union-attr]
        if not recv.frames and recv.paused_for_owner and recv.held_error is None and not gone:
            recv.paused_for_owner = False
            self._pump(peer, recv, resumed=True)

    def recycle(self, frame: bytes | bytearray | memoryview, peer: Peer) -> None:
        """You are done with ``frame``, a large frame ``peer`` sent you: the next
        frame of the same size from ``peer`` may be received straight into it.

        Large frames come as a ``bytearray`` of their own; fresh memory for the
        next one costs about as much as receiving it (the kernel zeroes and maps
        every page), so a program that streams large frames hands each one back
        when done with it: a 16 MiB stream then runs in the same 16 MiB. Only
        a frame you hand back is ever reused, so one you keep is never
        overwritten; hand back only what you no longer read (an echo server:
        after ``DRAINED``, since ``resume_write`` keeps a reference until sent).
        Small frames (``bytes``) and peers already closed are ignored.
        """
        recv = self._recv.get(peer)
        if recv is not None:
            recv.decoder.recycle(frame)

    def suspend_read(self, peer: Peer | None = None) -> None:
        """Stop reading ``peer`` (no argument: every peer still yours) until you
        call ``resume_read``. Peers you closed are left alone: a close reads
        and discards until it ends."""
        if peer is not None:
            recv, send = self._recv.get(peer), self._send.get(peer)
            if recv is None or send is None or send.owner_closed:
                raise TransportClosedError(f"{peer} is closed", peer=peer)
        for p in list(self._recv) if peer is None else [peer]:
            recv, send = self._recv[p], self._send[p]
            if send.closing:
                continue  # closing: reading (and discarding) is not yours to stop
            recv.paused_by_owner = True
            if recv.error is None and not recv.inner_closed:  # else dropped below
                self.inner.suspend_read(p)

    # ------------------------------------------------------------- deadline
    def _watch_deadline(self, peer: Peer, recv: RecvState) -> None:
        if recv.decoder.state.part == "idle":
            if recv.timer is not None:
                recv.timer.cancel()
                recv.timer = None
            return
        watcher = self._watcher
        assert watcher is not None and self.frame_timeout is not None
        recv.last_progress = watcher.time()
        if recv.timer is None:
            recv.timer = watcher.call_later(self.frame_timeout, self._deadline, peer)

    def _deadline(self, peer: Peer) -> None:
        recv = self._recv.get(peer)
        if recv is None or recv.error is not None:
            return
        watcher = self._watcher
        timeout = self.frame_timeout
        assert watcher is not None and timeout is not None
        recv.timer = None
        part, received, expected = recv.decoder.state
        if part == "idle":
            return
        if recv.paused_by_owner or recv.paused_for_owner or recv.decoder.ready:
            # We are not reading (the owner asked, or must take frames first): the
            # rest of the frame may be waiting in our own buffers. Not the peer's
            # fault, so the clock stops here, and starts afresh when we read again
            # (_pump, resumed): time paused never counts.
            return
        left = recv.last_progress + timeout - watcher.time()
        if left > 0:  # bytes arrived since the timer was set: wait for the rest
            recv.timer = watcher.call_later(left, self._deadline, peer)
            return
        if part == "payload":
            received, expected = received + HEADER_SIZE, expected + HEADER_SIZE
        self._abort(peer, FrameTimeoutError(timeout, received, expected, peer=peer))

    # --------------------------------------------------------------- writes
    def resume_write(self, data: WriteData, peer: Peer) -> WriteResult:
        """Queue one frame whose payload is ``data`` (one buffer, or several that
        are sent back to back as one payload) and send what fits now.

        ``sent`` counts the bytes of this frame, header included, that left at
        once; the rest is sent by the transport as the socket allows.
        Raises ``FrameTooLargeError`` (nothing queued) for a payload over the
        limit, ``TransportClosedError`` if you closed the peer.
        """
        send = self._send.get(peer)
        if send is None or ((send.closing or send.eof) and not self._still_queueing(send)):
            raise self._refusal(peer, send, "the frame was")
        if send.dropped and self._recv[peer].error is not None:
            # The peer broke (every error marks it dropped); CLOSED is on the way.
            return WriteResult(0, IOStatus.ERROR, self._recv[peer].error)
        if isinstance(data, Buffer):
            size = buffer_size(data, _TAKES) if type(data) is memoryview else len(data)
            if size > self.max_frame_size or size > MAX_ENCODABLE:
                encode_header(size, self.max_frame_size)  # raises FrameTooLargeError
            header = _pack_header(size)  # the size is checked once, here
            if (
                not send.buffers
                and not send.waiting
                and (not self.coalesce or self._first_of_turn(send))
            ):
                # The common case: nothing waits (and, with coalesce, this is the
                # turn's first frame), so offer the frame to the inner transport
                # now. A small payload is glued to its header (copying a few
                # hundred bytes is cheaper than a scatter/gather list); a larger
                # one goes as [header, payload], one sendmsg, no copy.
                wire: Any = header + data if size <= SMALL_FRAME else [header, data]
                result = self.inner.resume_write(wire, peer)
                sent, status, _ = result
                if status is _OK and sent == HEADER_SIZE + size:
                    send.frames_sent += 1
                    return result
                return self._queue_rest(send, peer, header, data, size, result)
            send.push(header, data, size)
        else:
            if isinstance(data, str):  # (a sequence, of str: no bytes until you encode it)
                raise TypeError(f"{_TAKES}, not str")
            sized = [(part, buffer_size(part, _TAKES)) for part in data]
            parts = [part for part, n in sized if n]
            size = sum(n for _, n in sized)
            header = encode_header(size, self.max_frame_size)  # (raises before we note the turn)
            idle = not send.buffers and not send.waiting
            send.push_parts(header, parts, size)
            return self._queued(
                send, peer, not self.coalesce or (idle and self._first_of_turn(send))
            )
        return self._queued(send, peer, not self.coalesce)

    def _first_of_turn(self, send: SendState) -> bool:
        """(coalesce) Nothing queued: is this the turn's first write to the peer? It
        leaves at once (no added latency); the frames written after it in the same
        turn are queued and leave together at the turn's end."""
        turn = self._watcher.turns  # type: ignore[union-attr]  # attached
        first, send.turn = send.turn != turn, turn
        return first

    def write_frames(self, frames: Iterable[Buffer], peer: Peer) -> WriteResult:
        """Queue each buffer of ``frames`` as one frame, in order, and send what fits.

        The batch form of ``resume_write``, for an owner that has many small
        frames at once: one call queues them all (each small one copied with
        its header into the shared buffer, as ``resume_write`` would), where a
        loop pays the per-call checks once per frame. Each payload is one
        bytes-like buffer (a frame in several parts goes through
        ``resume_write``). All or nothing: if one payload is over
        ``max_frame_size`` (``FrameTooLargeError``) or not a buffer
        (``TypeError``), none is queued. Otherwise as ``resume_write``: what
        fits leaves at once (with ``coalesce``, only the first write of a turn;
        later ones leave together at the turn's end), the rest waits for the
        socket (``WOULD_BLOCK``), and ``PAUSE_WRITING`` comes once the queue is
        past ``high_water``.
        """
        send = self._send.get(peer)
        if send is None or ((send.closing or send.eof) and not self._still_queueing(send)):
            raise self._refusal(peer, send, "the frames were")
        # All framed (and checked) before any is queued, or it raises.
        buffers, sizes = frame_batch(frames, self.max_frame_size)
        if send.dropped and self._recv[peer].error is not None:
            # The peer broke (every error marks it dropped); CLOSED is on the way.
            return WriteResult(0, IOStatus.ERROR, self._recv[peer].error)
        if not sizes:
            return WriteResult(0, IOStatus.OK)
        # As with resume_write: with coalesce, the first write of a turn leaves at
        # once, later ones wait for the turn's end and leave together.
        now = not self.coalesce or (
            not send.buffers and not send.waiting and self._first_of_turn(send)
        )
        send.push_batch(buffers, sizes)
        return self._queued(send, peer, now)

    @staticmethod
    def _still_queueing(send: SendState) -> bool:
        """Closing on our own (``half_close=False``: the peer ended and you took
        its frames), and the queue has not drained yet: until it has, the peer is
        still yours to write to, and a frame you write joins the queue."""
        return (
            send.closing
            and not (send.owner_closed or send.dropped or send.eof)
            and bool(send.buffers)
        )

    @staticmethod
    def _refusal(peer: Peer, send: SendState | None, what: str) -> TransportClosedError:
        """Why a write to ``peer`` was refused: it is closed, or you ended your side."""
        if send is not None and send.eof:
            why = "you called write_eof"
        elif send is not None and send.closing and not (send.owner_closed or send.dropped):
            why = "ended its side, and was closed once you took its frames and the queue drained"
        else:
            why = "is closed"
        return TransportClosedError(f"{peer} {why}; {what} not sent", peer=peer)

    def _queued(self, send: SendState, peer: Peer, now: bool) -> WriteResult:
        """Frames were queued: send them ``now``, or else at the end of the turn
        (``coalesce``), or when the socket allows; pause the owner past
        ``high_water``."""
        if send.waiting:
            result = _QUEUED
        elif not now:
            if not send.flush_due:
                send.flush_due = True
                self._watcher.call_soon(self._flush_due, peer)  # type: ignore[union-attr]
            result = _QUEUED
        else:
            result = self._flush(peer, send)
            if result.status is _OK:
                return result
        self._pause_if_full(send, peer)
        return result

    def _pause_if_full(self, send: SendState, peer: Peer) -> None:
        """``PAUSE_WRITING`` once the queue is past ``high_water``; for a peer you
        connect, not before the owner heard ``CONNECTED`` (a connect that fails
        is one ``CLOSED`` and nothing else)."""
        if send.queued > self.high_water and not send.paused and send.announced:
            send.paused = True
            self._emit(IOEvent(EventKind.PAUSE_WRITING, peer))

    def _queue_rest(
        self,
        send: SendState,
        peer: Peer,
        header: bytes,
        data: Any,
        size: int,
        result: WriteResult,
    ) -> WriteResult:
        """The inner transport did not take the whole frame at once (a short write,
        WOULD_BLOCK or an error): queue what is left, or give up on a broken peer."""
        sent, status, error = result
        if status is _ERROR:
            self._broken(peer, error)
            return result
        send.push_unsent(header, data, size, sent)
        if status is _WOULD_BLOCK:
            send.waiting = True  # the inner transport replays WRITABLE
            result = WriteResult(sent, _WOULD_BLOCK)
        else:  # OK yet short (a transport that does not promise WRITABLE): go on
            more = self._flush(peer, send)
            result = WriteResult(sent + more.sent, more.status, more.error)
            if more.status is not _WOULD_BLOCK:
                return result
        self._pause_if_full(send, peer)
        return result

    def _flush(self, peer: Peer, send: SendState) -> WriteResult:
        """Write queued buffers until the queue is empty or the inner transport
        pushes back. Returns the bytes written and how it stopped."""
        inner = self.inner
        total = 0
        while send.buffers:
            iov = send.iov()
            result = inner.resume_write(iov if len(iov) > 1 else iov[0], peer)
            if result.sent:
                send.advance(result.sent)
                total += result.sent
            if result.status is _ERROR:
                self._broken(peer, result.error)
                return WriteResult(total, _ERROR, result.error)
            if result.status is _WOULD_BLOCK:
                send.waiting = True  # the inner transport replays WRITABLE
                return WriteResult(total, _WOULD_BLOCK)
        if send.waiting:
            send.waiting = False
            inner.suspend_write(peer)
        return WriteResult(total, _OK)

    def _flush_due(self, peer: Peer) -> None:
        """(coalescing) End of the turn: write what this turn queued, in one go."""
        send = self._send.get(peer)
        if send is None:
            return
        send.flush_due = False
        if send.buffers and not send.waiting:  # else nothing to do, or WRITABLE will flush
            self._on_writable(peer)

    def _on_writable(self, peer: Peer) -> None:
        send = self._send.get(peer)
        if send is None or send.dropped:
            return
        if not send.buffers:  # nothing left (e.g. WRITABLE after a connect)
            send.waiting = False
            self.inner.suspend_write(peer)
            return
        result = self._flush(peer, send)
        if result.status is _ERROR:
            return
        # A peer you closed is yours no more: no flow events for it (an owner that
        # reads on RESUME_WRITING would be refused). And whatever a callback does,
        # raising included, what the queue's end brings still comes.
        try:
            if send.paused and send.queued <= self.low_water:
                send.paused = False
                if not send.owner_closed:
                    self._emit(IOEvent(EventKind.RESUME_WRITING, peer))
        except BaseException:
            if result.status is _OK:  # on the next turn: one owner exception at a time
                self._watcher.call_soon(self._drained, peer, send)  # type: ignore[union-attr]
            raise
        if result.status is _OK:
            self._drained(peer, send)

    def _drained(self, peer: Peer, send: SendState) -> None:
        """If the queue is still empty (the owner may have queued more from
        ``RESUME_WRITING``): ``DRAINED`` if the peer is still yours, then the close
        or the half-close that waited for the queue, even if the callback raised."""
        if self._send.get(peer) is not send or send.buffers:
            return
        try:
            if not send.owner_closed:
                self._emit(IOEvent(EventKind.DRAINED, peer))
        finally:
            if self._send.get(peer) is send and not send.buffers:
                if send.closing:
                    if send.linger_timer is not None:
                        send.linger_timer.cancel()
                        send.linger_timer = None
                    self.inner.close(peer)
                elif send.eof:
                    self._send_eof(peer, send)

    def suspend_write(self, peer: Peer) -> None:
        """Framing layers finish their own writes; this only checks ``peer``."""
        send = self._send.get(peer)
        if send is None or send.owner_closed:
            raise TransportClosedError(f"{peer} is closed", peer=peer)

    # ------------------------------------------------------------ inspection
    @property
    def peers(self) -> list[Peer]:
        """The peers open right now (not those you closed whose frames still leave)."""
        return [
            peer
            for peer, send in self._send.items()
            if not send.closing or self._still_queueing(send)
        ]

    def write_buffer_size(self, peer: Peer) -> int:
        """Bytes queued for ``peer`` and not yet written."""
        send = self._send.get(peer)
        return 0 if send is None else send.queued

    def snapshot(self, peer: Peer) -> PeerSnapshot:
        """Where ``peer``'s receive and send state stand right now."""
        recv, send = self._recv.get(peer), self._send.get(peer)
        if recv is None or send is None:
            raise TransportClosedError(f"{peer} is closed", peer=peer)
        return PeerSnapshot.of(recv, send)

    def counters(self, peer: Peer | None = None) -> IOCounters:
        if peer is not None:
            recv, send = self._recv.get(peer), self._send.get(peer)
            if recv is not None and send is not None:
                return self._peer_counters(peer, recv, send)
            leaving = self._leaving.get(peer)
            if leaving is None:
                raise TransportClosedError(
                    f"{peer} is closed (or never belonged to {self!r})", peer=peer
                )
            return dataclasses.replace(leaving)
        counters = self.inner.counters()
        counters.frames_sent = self._frames_sent_closed + sum(
            s.frames_sent for s in self._send.values()
        )
        counters.frames_received = self._frames_received_closed + sum(
            r.frames_received for r in self._recv.values()
        )
        return counters

    def _peer_counters(self, peer: Peer, recv: RecvState, send: SendState) -> IOCounters:
        below = recv.totals_below
        counters = self.inner.counters(peer) if below is None else dataclasses.replace(below)
        counters.frames_sent = send.frames_sent
        counters.frames_received = recv.frames_received
        return counters

    def __repr__(self) -> str:
        queued = sum(s.queued for s in self._send.values())
        return (
            f"<FramedTransport over {self.inner!r}, {len(self._recv)} peers, "
            f"{queued} bytes queued, max_frame_size={self.max_frame_size}>"
        )
