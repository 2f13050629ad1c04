"""A careful hand-written ``selectors`` loop: the pure-Python floor for an event loop.

Theory of operation
-------------------
No layers, no events, no result objects: one ``selectors`` loop, one small
state object per connection, and the framing done inline where the bytes land.
It is what a seasoned engineer writes when one program must be fast and nobody
else will reuse it, and every figure barknet's layers add on top of it is the
price of their reuse. It is careful all the same: reads of any size, partial
writes queued and finished on writability, large frames received into one
exact-size buffer, and a high-water mark for the bulk sender.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
from collections import deque
from collections.abc import Callable
from itertools import islice
from typing import Any

from .common import CHILD_TIMEOUT, HEADER, HOST, MAX_FRAME, Session, _now

__all__ = ["selectors_client", "serve_selectors"]

SCRATCH = 64 * 1024
SMALL = 2048  # payloads up to this size are joined to their header in one send
HIGH_WATER = 64 * 1024
READS_PER_EVENT = 16


class _Conn:
    """One non-blocking connection: a receive scratch, an optional large body, a send queue."""

    def __init__(self, sel: selectors.BaseSelector, sock: socket.socket) -> None:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sel, self.sock = sel, sock
        self.scratch = bytearray(SCRATCH)
        self.view = memoryview(self.scratch)
        self.start = self.end = 0  # unparsed bytes are scratch[start:end]
        self.body: bytearray | None = None  # a frame larger than half the scratch
        self.got = 0
        self.queue: deque[Any] = deque()
        self.queued = 0
        self.on_frame: Callable[[Any], object] = lambda frame: None
        self.on_drain: Callable[[], None] = lambda: None
        self.eof = False
        sel.register(sock, selectors.EVENT_READ, self)

    # -- reading
    def readable(self) -> None:
        for _ in range(READS_PER_EVENT):
            if self.body is not None:
                room = memoryview(self.body)[self.got :]
            else:
                if self.end == len(self.scratch):  # move the partial frame to the front
                    left = self.end - self.start
                    self.scratch[:left] = self.scratch[self.start : self.end]
                    self.start, self.end = 0, left
                room = self.view[self.end :]
            try:
                n = self.sock.recv_into(room)
            except BlockingIOError:
                return
            if n == 0:
                self.eof = True
                self.sel.unregister(self.sock)
                return
            if self.body is not None:
                self.got += n
                if self.got == len(self.body):
                    body, self.body = self.body, None
                    self.on_frame(body)
            else:
                self.end += n
                self._parse()
            if n < len(room):
                return

    def _parse(self) -> None:
        scratch, start, end = self.scratch, self.start, self.end
        while end - start >= 4:
            (size,) = HEADER.unpack_from(scratch, start)
            if size > MAX_FRAME:
                raise ValueError(f"frame of {size} bytes announced")
            if size > SCRATCH // 2:  # large: continue in an exact-size body
                have = min(size, end - start - 4)
                self.body = bytearray(size)
                self.body[:have] = scratch[start + 4 : start + 4 + have]
                self.got, start = have, start + 4 + have
                if have == size:
                    body, self.body = self.body, None
                    self.on_frame(body)
                    continue
                break
            if end - start - 4 < size:
                break
            self.on_frame(self.view[start + 4 : start + 4 + size])
            start += 4 + size
        if start == end:
            start = end = 0
        self.start, self.end = start, end

    # -- writing
    def send(self, payload: Any) -> None:
        size = memoryview(payload).nbytes
        header = HEADER.pack(size)
        if not self.queue:
            try:
                if size <= SMALL:
                    wire: Any = header + bytes(payload)
                    sent = self.sock.send(wire)
                    if sent == len(wire):
                        return
                    self.queue.append(memoryview(wire)[sent:])
                    self.queued += len(wire) - sent
                else:
                    sent = self.sock.sendmsg([header, payload])
                    if sent == size + 4:
                        return
                    self._queue_tail([header, _kept(payload)], sent)
            except BlockingIOError:
                self._queue_tail([header, _kept(payload)], 0)
            self.sel.modify(self.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, self)
            return
        self.queue.append(header)
        self.queue.append(_kept(payload))
        self.queued += size + 4

    def send_wire(self, wire: bytes) -> None:
        """Send bytes that are already framed (the bulk sender batches small frames)."""
        sent = 0
        if not self.queue:
            with contextlib.suppress(BlockingIOError):
                sent = self.sock.send(wire)
            if sent == len(wire):
                return
            self.sel.modify(self.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, self)
        self.queue.append(memoryview(wire)[sent:])
        self.queued += len(wire) - sent

    def _queue_tail(self, parts: list[Any], sent: int) -> None:
        for part in parts:
            view = memoryview(part).cast("B")
            if sent >= len(view):
                sent -= len(view)
                continue
            self.queue.append(view[sent:])
            self.queued += len(view) - sent
            sent = 0

    def writable(self) -> None:
        queue = self.queue
        while queue:
            try:
                sent = self.sock.sendmsg(list(islice(queue, 1024)))
            except BlockingIOError:
                return
            self.queued -= sent
            while sent:
                first = memoryview(queue[0]).cast("B")
                if sent >= len(first):
                    sent -= len(first)
                    queue.popleft()
                else:
                    queue[0] = first[sent:]
                    sent = 0
        self.sel.modify(self.sock, selectors.EVENT_READ, self)
        self.on_drain()

    def close(self) -> None:
        if not self.eof:
            self.sel.unregister(self.sock)
        self.sock.close()


def _kept(payload: Any) -> Any:
    """What may wait in a send queue: a view into our receive scratch must be copied,
    since the scratch is refilled; bytes and whole frame bodies are ours to keep."""
    return bytes(payload) if isinstance(payload, memoryview) else payload


def _turn(sel: selectors.BaseSelector, timeout: float | None) -> None:
    for key, mask in sel.select(timeout):
        conn = key.data
        if conn is None:
            continue
        if mask & selectors.EVENT_READ:
            conn.readable()
        if mask & selectors.EVENT_WRITE and conn.queue:
            conn.writable()


def serve_selectors(ready: Callable[[int], None]) -> None:
    """Echo/sink/rss server: accept, then frames to a :class:`Session` per connection."""
    sel = selectors.DefaultSelector()
    listener = socket.create_server((HOST, 0))
    listener.setblocking(False)
    sel.register(listener, selectors.EVENT_READ, None)
    ready(listener.getsockname()[1])
    conns: list[_Conn] = []
    while True:
        for key, mask in sel.select():
            conn = key.data
            if conn is None:
                sock, _ = listener.accept()
                made = _Conn(sel, sock)
                made.on_frame = Session(made.send).frame
                conns.append(made)
                continue
            if mask & selectors.EVENT_READ:
                conn.readable()
                if conn.eof:
                    conns.remove(conn)
                    conn.close()
                    continue
            if mask & selectors.EVENT_WRITE and conn.queue:
                conn.writable()


def selectors_client(port: int, tasks: list[list[Any]], place: Callable[[str], None]) -> list[Any]:
    """Ping-pong and bulk tasks over one fresh connection each, as the other clients do."""
    results: list[Any] = []
    sel = selectors.DefaultSelector()
    try:
        for kind, size, count, warm in tasks:
            place(kind)
            conn = _Conn(sel, socket.create_connection((HOST, port), timeout=CHILD_TIMEOUT))
            try:
                if kind == "pingpong":
                    results.append(_pingpong(sel, conn, b"x" * size, count, warm))
                else:
                    _bulk(sel, conn, b"x" * size, warm)
                    results.append(_bulk(sel, conn, b"x" * size, count))
            finally:
                conn.close()
    finally:
        sel.close()
    return results


def _pingpong(
    sel: selectors.BaseSelector, conn: _Conn, payload: bytes, count: int, warm: int
) -> list[int]:
    samples: list[int] = []
    state = {"done": 0, "t0": 0}

    def on_echo(_frame: Any) -> None:
        t = _now()
        state["done"] += 1
        if state["done"] > warm:
            samples.append(t - state["t0"])
        if state["done"] < warm + count:
            state["t0"] = _now()
            conn.send(payload)

    conn.on_frame = on_echo
    conn.send(b"echo")
    state["t0"] = _now()
    conn.send(payload)
    while state["done"] < warm + count:
        _turn(sel, CHILD_TIMEOUT)
    return samples


def _bulk(sel: selectors.BaseSelector, conn: _Conn, payload: bytes, count: int) -> int:
    state = {"left": count, "ok": False}

    one = HEADER.pack(len(payload)) + payload
    batch = max(1, HIGH_WATER // len(one)) if len(payload) <= SMALL else 1

    def pump() -> None:
        # Small frames leave as one buffer of many frames: one send for hundreds.
        while state["left"] and conn.queued <= HIGH_WATER:
            k = min(batch, state["left"])
            state["left"] -= k
            if k == 1:
                conn.send(payload)
            else:
                conn.send_wire(one * k)

    def on_ok(_frame: Any) -> None:
        state["ok"] = True

    conn.on_frame, conn.on_drain = on_ok, pump
    t0 = _now()
    conn.send(f"sink {count}".encode())
    pump()
    while not state["ok"]:
        _turn(sel, CHILD_TIMEOUT)
        pump()
    return _now() - t0
