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

* ``CLOSED`` comes exactly once per peer, whatever the reason: you closed it
  (status ``OK``), the peer ended cleanly (``EOF``), or it broke (``ERROR``,
  with the typed error). After it, the peer is unknown to the transport.
* ``READABLE`` repeats while unread bytes (or an unread EOF) wait. Answer it by
  calling ``resume_read(peer)`` until the status is not ``OK``, or by
  ``suspend_read(peer)``; ignoring it makes the loop call you again at once.
* ``WRITABLE`` comes only after a ``resume_write`` came back short or
  ``WOULD_BLOCK``, and repeats until you ``suspend_write(peer)``.
* ``PAUSE_WRITING`` and ``RESUME_WRITING`` alternate, starting with pause.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from .events import IOCounters, IOEvent, Peer, ReadResult, WriteResult

if TYPE_CHECKING:
    from .reactor import EventWatcher

__all__ = ["Buffer", "ITransport", "Replay", "WriteData"]

#: A readable bytes-like object.
Buffer = bytes | bytearray | memoryview
#: What ``resume_write`` accepts: one buffer, or several sent in order as one
#: scatter/gather write (one ``sendmsg`` on TCP).
WriteData = Buffer | Sequence[Buffer]
#: The owner's callback for events.
Replay = Callable[[IOEvent], None]


class ITransport(ABC):
    """A non-blocking byte or message transport for one or many peers."""

    @abstractmethod
    def attach(self, watcher: EventWatcher, replay: Replay) -> None:
        """Run on ``watcher`` and deliver events to ``replay``. Call this first."""
        raise NotImplementedError

    @abstractmethod
    def bind(self) -> tuple[str, int]:
        """Start accepting peers (server side); return the address actually bound."""
        raise NotImplementedError

    @abstractmethod
    def connect(self) -> Peer:
        """Start connecting (client side) without blocking.

        Returns the new peer at once; ``CONNECTED`` or ``CLOSED`` follows.
        """
        raise NotImplementedError

    @abstractmethod
    def close(self, peer: Peer | None = None) -> None:
        """Close one peer, or (no argument) the whole transport. Idempotent."""
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
        """System calls and bytes so far, for one peer or the whole transport."""
        raise NotImplementedError
