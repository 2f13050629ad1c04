"""The small value types that transports and their owners exchange.

Theory of operation
-------------------
A transport never hands you a socket. It hands you a :class:`Peer` (a hashable
name for one connection), tells you what happened to it with an
:class:`IOEvent`, and answers each read or write with an :class:`IOStatus`
inside a :class:`ReadResult` or :class:`WriteResult`. "Would block" is one of
those statuses: it is the normal state of a non-blocking socket, not an error,
so it is a return value and never an exception.

:class:`IOCounters` count the system calls behind the scenes, so a notebook can
show how often a ``send`` came back short or a ``recv`` said "nothing yet".
"""

from __future__ import annotations

import enum
import itertools
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

from .errors import BarknetError

__all__ = [
    "EventKind",
    "IOCounters",
    "IOEvent",
    "IOStatus",
    "Peer",
    "ReadResult",
    "WriteResult",
]

_peer_ids = itertools.count(1)


class Peer:
    """One connection, as the owner of a transport sees it.

    Every layer of a transport stack talks about the very same ``Peer``
    objects: a ``FramedTransport`` and the ``TcpTransport`` under it key their
    per-peer state by the object the bottom layer made. So a peer is equal
    only to itself, and hashes by identity, which Python does in C: a peer is
    looked up in a dictionary several times per message, and a ``__hash__``
    written in Python would cost a function call each time. ``id`` is a small
    number for people to read; ``remote`` is the other end's ``(host, port)``
    when known.
    """

    __slots__ = ("id", "remote")

    def __init__(self, remote: tuple[str, int] | None = None) -> None:
        self.id = next(_peer_ids)
        self.remote = remote

    def __repr__(self) -> str:
        if self.remote is None:
            return f"Peer#{self.id}"
        return f"Peer#{self.id}({self.remote[0]}:{self.remote[1]})"


class IOStatus(enum.Enum):
    """How one read or write went."""

    OK = "ok"  #: bytes moved
    WOULD_BLOCK = "would block"  #: EAGAIN: nothing can move now; wait for an event
    EOF = "eof"  #: the peer finished sending; no more bytes will come
    ERROR = "error"  #: the connection is broken; see the ``error`` field


class EventKind(enum.Enum):
    """What a transport tells its owner through ``replay``."""

    ACCEPTED = "accepted"  #: a server got a new peer
    CONNECTED = "connected"  #: a client's connect finished
    #: a message (or the peer's EOF) waits; repeated while one does (level-triggered)
    READABLE = "readable"
    WRITABLE = "writable"  #: the socket can take more of what ``resume_write`` left over
    DRAINED = "drained"  #: (framing layers) everything queued for the peer was written
    PAUSE_WRITING = "pause writing"  #: (framing layers) queue above the high-water mark
    RESUME_WRITING = "resume writing"  #: (framing layers) queue back under the low-water mark
    CLOSED = "closed"  #: the peer is gone; ``status`` and ``error`` say why


class IOEvent(NamedTuple):
    """Something that happened to one peer, delivered to the owner's ``replay``.

    For ``CLOSED``, ``status`` is ``OK`` when you closed it (and, for a graceful
    ``close(peer)``, the peer then ended its side), ``EOF`` when both sides
    ended cleanly (the peer's EOF, and your ``write_eof`` or the transport's own
    close after it), and ``ERROR`` with ``error`` set when it broke (including a
    ``LingerTimeoutError`` when a closed peer never ended its side).
    """

    kind: EventKind
    peer: Peer
    status: IOStatus = IOStatus.OK
    error: BarknetError | None = None


class ReadResult(NamedTuple):
    """What ``resume_read`` got: ``data`` (empty unless ``status`` is OK)."""

    data: bytes | bytearray | memoryview
    status: IOStatus
    error: BarknetError | None = None


class WriteResult(NamedTuple):
    """What ``resume_write`` did: ``sent`` bytes left right now; the status says the rest."""

    sent: int
    status: IOStatus
    error: BarknetError | None = None


@dataclass
class IOCounters:
    """Counts of the system calls and bytes behind a transport or one of its peers.

    A *short* send or receive is one that moved fewer bytes than were offered:
    the everyday partial I/O that framing has to survive. ``frames_*`` are
    filled in by framing layers; a raw TCP transport leaves them at zero.
    """

    send_calls: int = 0
    short_sends: int = 0
    send_eagain: int = 0
    bytes_sent: int = 0
    recv_calls: int = 0
    short_recvs: int = 0
    recv_eagain: int = 0
    bytes_received: int = 0
    frames_sent: int = 0
    frames_received: int = 0

    def add(self, other: IOCounters) -> None:
        """Add ``other`` into these counters (used to keep totals of closed peers)."""
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}
