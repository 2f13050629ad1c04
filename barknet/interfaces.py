"""The transport interface, and nothing else.

Theory of operation
-------------------
A transport moves bytes for one or many peers on top of an
:class:`~barknet.reactor.EventWatcher`. It does not block and it does not
decide what the bytes mean. Its owner (your code, or another transport that
wraps it) learns what happened through ``replay(event)`` and then *resumes*
the work: ``resume_read`` pulls what is there now, ``resume_write`` pushes
what fits now. Both return at once with a status; "would block" just means
"wait for the next event". When you have nothing more to do for a while you
*suspend* (``suspend_read``, ``suspend_write``) so the loop stops waking you.

Transports stack like decorators: ``FramedTransport(TcpTransport())`` is a
transport too, so the same owner code runs over either, and a test can slip a
chunking or tracing transport in between.

Order of events
---------------
For every peer, the events a transport replays follow this grammar::

    start -> (ACCEPTED | CONNECTED)
               [-> READABLE | WRITABLE | DRAINED | PAUSE_WRITING | RESUME_WRITING]*
           -> CLOSED -> end
    start -> CLOSED(status=ERROR, ConnectFailedError) -> end     # a connect that failed
    start -> CLOSED(status=ERROR, TlsError) -> end     # a TLS handshake that failed
    start -> CLOSED -> end     # a peer you closed before it was connected

(a layer that must finish a handshake first, like ``TlsTransport``, replays
``ACCEPTED``/``CONNECTED`` only once it is done, so a peer whose handshake fails
comes and goes as one ``CLOSED``), and the calls you make for a peer follow
this one (``write_eof`` and the peer's EOF may come in either order, or not at
all)::

    open -> [resume_write]* [-> write_eof] ...       # your direction
    open -> [resume_read -> OK]* [-> resume_read -> EOF] ...   # the peer's direction
    ... -> close(peer) -> (lingering) -> CLOSED      # or CLOSED by itself, see below

* ``CLOSED`` comes exactly once per peer, whatever the reason: you closed it
  (status ``OK``), the peer ended cleanly (``EOF``), or it broke (``ERROR``,
  with the typed error). After it, the peer is unknown to the transport.
* ``READABLE`` is *level-triggered*: it is replayed, turn after turn, while a
  whole message (on a byte transport: any byte) or an unread EOF waits for you
  and you have not called ``suspend_read(peer)``. You may take one message per
  ``READABLE`` or read until the status is not ``OK``; both get everything,
  and no ``READABLE`` comes while nothing waits.
* ``WRITABLE`` comes only after a ``resume_write`` came back short or
  ``WOULD_BLOCK``, and repeats until you ``suspend_write(peer)``.
* ``PAUSE_WRITING`` and ``RESUME_WRITING`` alternate, starting with pause.

Half-close: ``write_eof(peer)`` says "I am done sending, I still read". A
queueing layer sends what is queued first; after it, ``resume_write`` raises
``TransportClosedError``. The peer's EOF reaches you as ``resume_read`` status
``EOF``. Once *both* directions have ended (you read the peer's EOF and your
``write_eof`` went out) the transport closes the peer itself: ``CLOSED(EOF)``.
A raw ``TcpTransport`` never closes on the peer's EOF alone; a
``FramedTransport`` does so by default once its queue drained (``half_close=False``).

Graceful close: ``close(peer)`` sends what is queued, shuts down the write
side, then reads and discards until the peer's EOF before closing the socket,
so pipelined bytes you never read cannot make the kernel reset the connection
and destroy your last reply. Each wait is bounded by ``linger_timeout``
seconds: the queue's (a peer that does not read never takes it; what it sends
meanwhile is discarded too) and the EOF's. ``CLOSED`` follows and tells the
truth: ``OK`` if the peer's EOF arrived, ``ERROR`` with a
``ConnectionBrokenError`` if it reset, or a ``LingerTimeoutError`` if it never
finished. From ``close(peer)`` on, I/O calls for the peer raise
``TransportClosedError``, and the only event still to come for it is its
``CLOSED`` (no ``READABLE``, ``DRAINED`` or ``RESUME_WRITING``: the peer is not
yours any more). ``close()`` with no argument closes everything at once.
"""

from __future__ import annotations

import os
import socket
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from .events import IOCounters, IOEvent, Peer, ReadResult, WriteResult

if TYPE_CHECKING:
    from .reactor import EventWatcher

__all__ = ["IOV_MAX", "LINGER_TIMEOUT", "Buffer", "ITransport", "Replay", "WriteData", "nbytes"]

#: A readable bytes-like object.
Buffer = bytes | bytearray | memoryview
#: What ``resume_write`` accepts: one buffer, or several sent in order as one
#: scatter/gather write (one ``sendmsg`` on TCP).
WriteData = Buffer | Sequence[Buffer]
#: Seconds a graceful ``close(peer)`` waits at most, by default, at each stage
#: (queued bytes leaving, the peer's EOF); see "Graceful close" above.
LINGER_TIMEOUT = 5.0
#: Most buffers one scatter/gather write (``sendmsg``) accepts; every layer that
#: hands a list of buffers down sends at most this many at a time.
IOV_MAX: int = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024


def nbytes(data: Buffer) -> int:
    """The size of ``data`` in bytes (``len`` counts items of a memoryview, not bytes)."""
    return data.nbytes if isinstance(data, memoryview) else len(data)


#: The owner's callback for events.
Replay = Callable[[IOEvent], None]


class ITransport(ABC):
    """A non-blocking byte or message transport for one or many peers.

    ``abort``, ``adopt``, ``address``, ``peers`` and ``write_eof`` are part of
    the interface but not abstract, so a transport that does without some of them
    (a first attempt in a notebook, say) still instantiates; it fails the
    contract checks that need them with ``NotImplementedError``.
    """

    @abstractmethod
    def attach(self, watcher: EventWatcher, replay: Replay) -> None:
        """Run on ``watcher`` and deliver events to ``replay``. Call this first."""
        raise NotImplementedError

    @abstractmethod
    def bind(self) -> tuple[str, int]:
        """Start accepting peers (server side); return the address actually bound."""
        raise NotImplementedError

    @abstractmethod
    def connect(self, address: tuple[str, int] | None = None) -> Peer:
        """Start connecting (client side) to ``address`` without blocking
        (default: the address the transport was made with).

        Returns the new peer at once; ``CONNECTED`` or ``CLOSED`` follows.
        """
        raise NotImplementedError

    def adopt(self, sock: socket.socket) -> Peer:
        """Take over an already connected socket as a new peer (no event announces
        it); a layer passes it down and starts tracking the peer itself."""
        raise NotImplementedError

    @property
    def address(self) -> tuple[str, int] | None:
        """The address ``bind`` got (with the real port), or None before ``bind``."""
        raise NotImplementedError

    @property
    def peers(self) -> list[Peer]:
        """The peers open right now (not those you closed and that are lingering)."""
        raise NotImplementedError

    def write_eof(self, peer: Peer) -> None:
        """Half-close: you will send nothing more to ``peer``, and you still read.

        What is queued is sent first. Later writes raise ``TransportClosedError``.
        Calling it again is harmless. See "Half-close" in the module docstring.
        """
        raise NotImplementedError

    @abstractmethod
    def close(self, peer: Peer | None = None) -> None:
        """Close one peer gracefully (see "Graceful close" above), or (no
        argument) the whole transport at once. Idempotent."""
        raise NotImplementedError

    def abort(self, peer: Peer) -> None:
        """Close ``peer`` now: drop what is queued and do not wait for the peer.

        For a peer that broke the rules (a framing error): there is nothing
        left to say to it. ``CLOSED`` follows as for ``close``: never from inside
        this call (from a callback, possibly later in the same turn).
        """
        raise NotImplementedError

    @abstractmethod
    def resume_read(
        self,
        peer: Peer,
        buffer: bytearray | memoryview | None = None,
        offset: int = 0,
        max_len: int | None = None,
    ) -> ReadResult:
        """Read what ``peer`` has for you now, and keep watching it for more.

        With ``buffer``, the bytes land in ``buffer[offset:offset + max_len]``
        and ``data`` is a view of them, so a large message can be received with
        no extra copy. Otherwise the transport allocates ``data``.
        """
        raise NotImplementedError

    @abstractmethod
    def suspend_read(self, peer: Peer | None = None) -> None:
        """Stop watching ``peer`` (or every peer) for incoming bytes."""
        raise NotImplementedError

    @abstractmethod
    def resume_write(self, data: WriteData, peer: Peer) -> WriteResult:
        """Send as much of ``data`` to ``peer`` as can go now.

        What happens to the rest depends on the layer: a raw transport leaves it
        to you and replays ``WRITABLE`` when more fits; a framing layer keeps it
        and finishes the job itself.
        """
        raise NotImplementedError

    @abstractmethod
    def suspend_write(self, peer: Peer) -> None:
        """Stop waking the owner with ``WRITABLE`` for ``peer``: nothing more to send."""
        raise NotImplementedError

    @abstractmethod
    def counters(self, peer: Peer | None = None) -> IOCounters:
        """System calls and bytes so far, for one peer or the whole transport.

        A peer's counters answer until its ``CLOSED`` has been delivered, in the
        ``CLOSED`` callback too (where an owner logs a connection's totals),
        whatever ended it; after that, ``TransportClosedError``.
        """
        raise NotImplementedError
