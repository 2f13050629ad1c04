"""Partial I/O and "would block" on demand: a fault-injecting transport.

Theory of operation
-------------------
On loopback with default buffers, a 20-byte frame always arrives in one read
and every write fits, so code that mishandles partial I/O passes its tests by
luck. :class:`ChunkingTransport` removes the luck. It is a decorator like the
other transports: it sits between a framing layer and the transport below and

* caps the bytes of every read (``max_read``) and every write (``max_write``),
  so a frame arrives a few bytes at a time and leaves in many short writes;
* answers a share of reads and writes (``would_block``, from 0 to 1) with
  ``WOULD_BLOCK`` without touching the transport below, on a schedule drawn
  from a seeded random generator, so a failing run can be replayed exactly.

Nothing is lost or reordered: a capped read leaves the rest in the kernel, and
the level-triggered loop reports the peer readable again (the first read after
``suspend_read`` is never refused: only a read below makes the transport there
watch the peer again); a capped or refused write makes this layer replay
``WRITABLE`` on the next turn, as a real socket would once it drained.
``suspend_write(peer)`` cancels that. Faults are made up only for peers that
are open and still yours: once you close or abort a peer, or its ``CLOSED``
came, its calls go straight down and answer as the transport below does
(``TransportClosedError``), and no ``WRITABLE`` promised for it reaches you.
After your half-close (``write_eof``) the same holds for its writes, while its
reads are still faulted. :meth:`ChunkingTransport.limit` gives one peer its own
caps, so a server can chop each of its connections differently.

:class:`RawPeer` is the other half of a fault: a plain blocking socket that can
send bytes no framing layer would send, half-close, or reset.
"""

from __future__ import annotations

import random
import socket
import struct
from typing import Any

from ..events import EventKind, IOEvent, IOStatus, Peer, ReadResult, WriteResult
from ..interfaces import ITransport, WriteData, nbytes
from ..layer import TransportLayer

__all__ = ["ChunkingTransport", "RawPeer"]


def _take(data: WriteData, limit: int) -> tuple[WriteData, int]:
    """The first ``limit`` bytes of ``data`` (one buffer or several), and their size."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        view = memoryview(data)[:limit]
        return view, view.nbytes
    taken: list[Any] = []
    size = 0
    for buffer in data:
        room = limit - size
        if room <= 0:
            break
        n = nbytes(buffer)
        if n <= room:
            taken.append(buffer)
            size += n
        else:
            taken.append(memoryview(buffer)[:room])
            size += room
    return taken, size


class ChunkingTransport(TransportLayer):
    """Wraps ``inner`` and makes its I/O as partial as you ask, reproducibly.

    ``injected`` counts what this layer did on purpose: capped reads and
    writes, and the ``WOULD_BLOCK`` answers it made up.
    """

    def __init__(
        self,
        inner: ITransport,
        *,
        max_read: int | None = None,
        max_write: int | None = None,
        would_block: float = 0.0,
        seed: int = 0,
    ) -> None:
        if (max_read is not None and max_read < 1) or (max_write is not None and max_write < 1):
            raise ValueError("max_read and max_write must be at least 1 byte")
        if not 0.0 <= would_block < 1.0:
            raise ValueError("would_block is a probability in [0, 1)")
        super().__init__(inner)
        self.max_read = max_read
        self.max_write = max_write
        self.would_block = would_block
        self._random = random.Random(seed)
        self._writable_due: set[Peer] = set()
        #: The peers this layer may fault: open, and not closed by you. For any
        #: other, calls go straight down, which answers as it must
        #: (TransportClosedError, or the broken peer's ERROR), never a made-up WOULD_BLOCK.
        self._faulted: set[Peer] = set()
        #: Those you half-closed (write_eof): their writes go straight down (and
        #: raise); their reads are still faulted.
        self._ended: set[Peer] = set()
        #: Those you suspended reading for: their next read goes down unrefused.
        self._suspended: set[Peer] = set()
        self._caps: dict[Peer, tuple[int | None, int | None]] = {}
        self.injected = {"capped_reads": 0, "capped_writes": 0, "would_block": 0}

    def limit(
        self, peer: Peer, *, max_read: int | None = None, max_write: int | None = None
    ) -> None:
        """Give ``peer`` its own caps (instead of the transport-wide ones).

        A server sees all its peers through one transport; this lets a soak test
        chop every connection differently, e.g. from its ``ACCEPTED`` event.
        """
        if (max_read is not None and max_read < 1) or (max_write is not None and max_write < 1):
            raise ValueError("max_read and max_write must be at least 1 byte")
        self._caps[peer] = (max_read, max_write)

    def _caps_of(self, peer: Peer) -> tuple[int | None, int | None]:
        return self._caps.get(peer, (self.max_read, self.max_write))

    # ------------------------------------------------------------ delegation
    def connect(self, address: tuple[str, int] | None = None) -> Peer:
        peer = self.inner.connect(address)
        self._faulted.add(peer)
        return peer

    def adopt(self, sock: socket.socket) -> Peer:
        peer = self.inner.adopt(sock)
        self._faulted.add(peer)
        return peer

    def _on_inner_event(self, event: IOEvent) -> None:
        if event.kind is EventKind.CLOSED:
            self._forget(event.peer)
            self._caps.pop(event.peer, None)
        elif event.kind is EventKind.ACCEPTED or event.kind is EventKind.CONNECTED:
            self._faulted.add(event.peer)
        self._emit(event)

    # ----------------------------------------------------------------- reads
    def _refuse(self, peer: Peer, *, writing: bool = False) -> bool:
        if (
            self.would_block
            and peer in self._faulted
            and not (writing and peer in self._ended)
            and self._random.random() < self.would_block
        ):
            self.injected["would_block"] += 1
            return True
        return False

    def resume_read(
        self,
        peer: Peer,
        buffer: bytearray | memoryview | None = None,
        offset: int = 0,
        max_len: int | None = None,
    ) -> ReadResult:
        if peer in self._suspended:
            # The first read after suspend_read goes down unrefused: only a read
            # there makes the transport below watch the peer again, and without
            # that nothing would report it readable again.
            self._suspended.discard(peer)
        elif self._refuse(peer):
            # The bytes stay in the kernel; the loop reports the peer readable again.
            return ReadResult(b"", IOStatus.WOULD_BLOCK)
        max_read = self._caps_of(peer)[0]
        if max_read is not None:
            if buffer is not None:
                room = len(memoryview(buffer)[offset:])
                if max_len is not None:
                    room = min(room, max_len)
            else:
                room = max_len if max_len is not None else max_read + 1
            if room > max_read:
                self.injected["capped_reads"] += 1
                max_len = max_read
        return self.inner.resume_read(peer, buffer, offset, max_len)

    # ---------------------------------------------------------------- writes
    def resume_write(self, data: WriteData, peer: Peer) -> WriteResult:
        if self._refuse(peer, writing=True):
            self._writable_soon(peer)
            return WriteResult(0, IOStatus.WOULD_BLOCK)
        asked = (
            nbytes(data)
            if isinstance(data, (bytes, bytearray, memoryview))
            else sum(nbytes(b) for b in data)
        )
        max_write = self._caps_of(peer)[1]
        if max_write is None or asked <= max_write:
            return self.inner.resume_write(data, peer)
        self.injected["capped_writes"] += 1
        part, _ = _take(data, max_write)
        result = self.inner.resume_write(part, peer)
        if result.status is IOStatus.OK:
            # We sent less than asked: say so, and promise a WRITABLE like a socket would.
            self._writable_soon(peer)
            return WriteResult(result.sent, IOStatus.WOULD_BLOCK)
        return result

    def _writable_soon(self, peer: Peer) -> None:
        if peer in self._writable_due:
            return
        self._writable_due.add(peer)
        assert self._watcher is not None, "attach() first"
        self._watcher.call_soon(self._writable, peer)

    def _writable(self, peer: Peer) -> None:
        """The promised ``WRITABLE``, and again each turn until ``suspend_write``, as a
        socket's (an owner that ignores one, or raises in it, is woken again)."""
        if peer not in self._writable_due:
            return
        if peer not in self._faulted:
            self._writable_due.discard(peer)
            return
        try:
            if self._replay is not None:
                self._replay(IOEvent(EventKind.WRITABLE, peer))
        finally:
            if peer in self._writable_due and peer in self._faulted:
                assert self._watcher is not None
                self._watcher.call_soon(self._writable, peer)  # (runs on the next turn)

    def suspend_read(self, peer: Peer | None = None) -> None:
        self.inner.suspend_read(peer)
        self._suspended.update(self._faulted if peer is None else [peer])

    def suspend_write(self, peer: Peer) -> None:
        self._writable_due.discard(peer)
        self.inner.suspend_write(peer)

    def write_eof(self, peer: Peer) -> None:
        self.inner.write_eof(peer)
        self._writable_due.discard(peer)  # (writes raise from now on)
        self._ended.add(peer)

    def close(self, peer: Peer | None = None) -> None:
        # A WRITABLE promised for a peer you close must not reach you afterwards.
        for each in [*self._faulted, *self._writable_due] if peer is None else [peer]:
            self._forget(each)
        self.inner.close(peer)

    def abort(self, peer: Peer) -> None:
        self._forget(peer)
        self.inner.abort(peer)

    def _forget(self, peer: Peer) -> None:
        """Not yours any more: no faults, no promised WRITABLE."""
        self._writable_due.discard(peer)
        self._faulted.discard(peer)
        self._ended.discard(peer)
        self._suspended.discard(peer)

    def __repr__(self) -> str:
        return (
            f"<ChunkingTransport max_read={self.max_read} max_write={self.max_write} "
            f"would_block={self.would_block} over {self.inner!r}>"
        )


# ------------------------------------------------------------------ raw peer


class RawPeer:
    """A plain client socket that misbehaves on purpose.

    A ``FramedTransport`` would never send half a header or reset a connection
    in the middle of a conversation; a buggy or hostile program will. This
    client speaks raw bytes so you can play that program. It is blocking for
    sends (they are small) and non-blocking for reads (the loop runs in the
    same thread, so waiting for an answer would wait forever).
    """

    def __init__(self, address: tuple[str, int]) -> None:
        self.sock = socket.create_connection(address, timeout=5)
        self.sock.settimeout(None)  # blocking sends; reads use MSG_DONTWAIT
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.eof = False  # the server closed its end
        self.reset_seen = False  # the server reset the connection
        self.data = bytearray()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def half_close(self) -> None:
        """Say "I will send nothing more": the server reads EOF, we can still read."""
        self.sock.shutdown(socket.SHUT_WR)

    def reset(self) -> None:
        """Close with ``SO_LINGER`` 0: the kernel sends RST instead of a polite FIN."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def poll(self) -> bytes:
        """Take whatever has arrived, without waiting; notes EOF and resets."""
        if self.sock.fileno() < 0:
            return bytes(self.data)
        while True:
            try:
                chunk = self.sock.recv(256 * 1024, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            except ConnectionResetError:
                self.reset_seen = True
                break
            if not chunk:
                self.eof = True
                break
            self.data += chunk
        return bytes(self.data)

    def close(self) -> None:
        self.sock.close()
