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
the level-triggered loop reports the peer readable again; a capped or refused
write makes this layer replay ``WRITABLE`` on the next turn, as a real socket
would once it drained. ``suspend_write(peer)`` cancels that.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from .events import EventKind, IOCounters, IOEvent, IOStatus, Peer, ReadResult, WriteResult
from .interfaces import ITransport, Replay, WriteData

if TYPE_CHECKING:
    from .reactor import EventWatcher

__all__ = ["ChunkingTransport"]


def _nbytes(data: Any) -> int:
    return data.nbytes if isinstance(data, memoryview) else len(data)


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
        n = _nbytes(buffer)
        if n <= room:
            taken.append(buffer)
            size += n
        else:
            taken.append(memoryview(buffer)[:room])
            size += room
    return taken, size


class ChunkingTransport(ITransport):
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
        self.inner = inner
        self.max_read = max_read
        self.max_write = max_write
        self.would_block = would_block
        self._random = random.Random(seed)
        self._watcher: EventWatcher | None = None
        self._replay: Replay | None = None
        self._writable_due: set[Peer] = set()
        self.injected = {"capped_reads": 0, "capped_writes": 0, "would_block": 0}

    # ------------------------------------------------------------ delegation
    def attach(self, watcher: EventWatcher, replay: Replay) -> None:
        self._watcher = watcher
        self._replay = replay
        self.inner.attach(watcher, self._on_inner_event)

    def _on_inner_event(self, event: IOEvent) -> None:
        if event.kind is EventKind.CLOSED:
            self._writable_due.discard(event.peer)
        if self._replay is not None:
            self._replay(event)

    def bind(self) -> tuple[str, int]:
        return self.inner.bind()

    def connect(self, *args: Any, **kwargs: Any) -> Peer:
        return self.inner.connect(*args, **kwargs)

    def adopt(self, sock: Any) -> Peer:
        return self.inner.adopt(sock)  # type: ignore[attr-defined]

    def close(self, peer: Peer | None = None) -> None:
        self.inner.close(peer)

    def suspend_read(self, peer: Peer | None = None) -> None:
        self.inner.suspend_read(peer)

    def counters(self, peer: Peer | None = None) -> IOCounters:
        return self.inner.counters(peer)

    def __getattr__(self, name: str) -> Any:
        # Anything else (address, peers, socket_of, ...) is the inner transport's.
        return getattr(self.inner, name)

    # ----------------------------------------------------------------- reads
    def _refuse(self) -> bool:
        if self.would_block and self._random.random() < self.would_block:
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
        if self._refuse():
            # The bytes stay in the kernel; the loop reports the peer readable again.
            return ReadResult(b"", IOStatus.WOULD_BLOCK)
        if self.max_read is not None:
            if buffer is not None:
                room = len(memoryview(buffer)[offset:])
                if max_len is not None:
                    room = min(room, max_len)
            else:
                room = max_len if max_len is not None else self.max_read + 1
            if room > self.max_read:
                self.injected["capped_reads"] += 1
                max_len = self.max_read
        return self.inner.resume_read(peer, buffer, offset, max_len)

    # ---------------------------------------------------------------- writes
    def resume_write(self, data: WriteData, peer: Peer) -> WriteResult:
        if self._refuse():
            self._writable_soon(peer)
            return WriteResult(0, IOStatus.WOULD_BLOCK)
        asked = (
            _nbytes(data)
            if isinstance(data, (bytes, bytearray, memoryview))
            else sum(_nbytes(b) for b in data)
        )
        if self.max_write is None or asked <= self.max_write:
            return self.inner.resume_write(data, peer)
        self.injected["capped_writes"] += 1
        part, _ = _take(data, self.max_write)
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
        if peer in self._writable_due:
            self._writable_due.discard(peer)
            if self._replay is not None:
                self._replay(IOEvent(EventKind.WRITABLE, peer))

    def suspend_write(self, peer: Peer) -> None:
        self._writable_due.discard(peer)
        self.inner.suspend_write(peer)

    def __repr__(self) -> str:
        return (
            f"<ChunkingTransport max_read={self.max_read} max_write={self.max_write} "
            f"would_block={self.would_block} over {self.inner!r}>"
        )
