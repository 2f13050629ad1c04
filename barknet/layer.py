"""A base for transports that wrap another transport and change one thing.

Theory of operation
-------------------
A decorator transport sits on top of ``inner`` and is an
:class:`~barknet.interfaces.ITransport` itself. Most of what it is asked to do
it passes straight down (``bind``, ``connect``, ``close``, the suspends, the
counters), and most of what ``inner`` reports it passes straight up. Writing
those pass-throughs again in every layer hides the one thing the layer is for,
so :class:`TransportLayer` writes them once:

* every ``ITransport`` method and property (``connect``, ``adopt``,
  ``write_eof``, ``abort``, ``address``, ``peers`` ...) delegates to ``inner``;
* ``attach`` keeps the watcher and the owner's ``replay``, and listens to
  ``inner`` through :meth:`TransportLayer._on_inner_event`, which forwards the
  event unchanged unless a subclass overrides it.

Anything that is not part of the interface (``socket_of``, ``snapshot`` ...) you
ask of the transport that has it, through ``.inner``: a layer does not pretend
to be what it wraps.

A subclass overrides only the methods it changes: the chunking fault injector
overrides reads and writes, the tracer records them, the compressor rewrites
payloads. :class:`~barknet.framed.FramedTransport` changes nearly everything,
so it spells every method out instead.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any

from .events import IOCounters, IOEvent, IOStatus, Peer, ReadResult, WriteResult
from .interfaces import LINGER_TIMEOUT, ITransport, Replay, WriteData

if TYPE_CHECKING:
    from .reactor import EventWatcher

__all__ = ["TransportLayer", "copy_message_into", "linger_timeout_below"]


def copy_message_into(
    message: bytes | bytearray | memoryview,
    buffer: bytearray | memoryview,
    offset: int = 0,
    max_len: int | None = None,
) -> ReadResult:
    """Answer a ``resume_read(peer, buffer, offset, max_len)`` of a message layer.

    A byte transport reads *into* the caller's buffer; a message transport
    already holds the whole message, so it copies it there, and refuses with
    ``BufferError`` rather than cut a message in two.
    """
    room = memoryview(buffer)[offset:]
    if max_len is not None:
        room = room[:max_len]
    size = len(message)
    if size > len(room):
        raise BufferError(f"a {size}-byte message does not fit in {len(room)} bytes")
    room[:size] = message
    return ReadResult(room[:size], IOStatus.OK)


def linger_timeout_below(inner: ITransport, given: float | None) -> float:
    """How long a layer that holds bytes lets ``close(peer)`` wait for them:
    ``given``, else the ``linger_timeout`` of the first transport below that has
    one (a tracing or chunking layer in between passes bytes through and has none
    of its own), so that over ``TcpTransport`` one setting bounds every stage of
    a close; else :data:`~barknet.interfaces.LINGER_TIMEOUT`."""
    if given is not None:
        return given
    below: Any = inner
    while below is not None:
        seconds: float | None = getattr(below, "linger_timeout", None)
        if seconds is not None:
            return seconds
        below = getattr(below, "inner", None)
    return LINGER_TIMEOUT


class TransportLayer(ITransport):
    """Delegates every call to ``inner`` and every event to the owner."""

    def __init__(self, inner: ITransport) -> None:
        self.inner = inner
        self._watcher: EventWatcher | None = None
        self._replay: Replay | None = None

    def attach(self, watcher: EventWatcher, replay: Replay) -> None:
        self._watcher = watcher
        self._replay = replay
        self.inner.attach(watcher, self._on_inner_event)

    def _on_inner_event(self, event: IOEvent) -> None:
        """An event from ``inner``; override to change or react to it."""
        self._emit(event)

    def _emit(self, event: IOEvent) -> None:
        if self._replay is not None:
            self._replay(event)

    def bind(self) -> tuple[str, int]:
        return self.inner.bind()

    def connect(self, address: tuple[str, int] | None = None) -> Peer:
        return self.inner.connect(address)

    def adopt(self, sock: socket.socket) -> Peer:
        """Take over a connected socket; see :meth:`TcpTransport.adopt`."""
        return self.inner.adopt(sock)

    @property
    def address(self) -> tuple[str, int] | None:
        return self.inner.address

    @property
    def peers(self) -> list[Peer]:
        return self.inner.peers

    def close(self, peer: Peer | None = None) -> None:
        self.inner.close(peer)

    def abort(self, peer: Peer) -> None:
        self.inner.abort(peer)

    def write_eof(self, peer: Peer) -> None:
        self.inner.write_eof(peer)

    def resume_read(
        self,
        peer: Peer,
        buffer: bytearray | memoryview | None = None,
        offset: int = 0,
        max_len: int | None = None,
    ) -> ReadResult:
        return self.inner.resume_read(peer, buffer, offset, max_len)

    def suspend_read(self, peer: Peer | None = None) -> None:
        self.inner.suspend_read(peer)

    def resume_write(self, data: WriteData, peer: Peer) -> WriteResult:
        return self.inner.resume_write(data, peer)

    def suspend_write(self, peer: Peer) -> None:
        self.inner.suspend_write(peer)

    def counters(self, peer: Peer | None = None) -> IOCounters:
        return self.inner.counters(peer)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} over {self.inner!r}>"
