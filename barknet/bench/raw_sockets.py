"""Raw blocking sockets: ``sendall`` and ``recv_into`` with one reused buffer,
the practical floor for Python."""

from __future__ import annotations

import socket
from collections.abc import Callable
from functools import partial
from typing import Any

from .common import HEADER, HOST, Session, _now


# --------------------------------------------------------------------- raw
def _raw_recv_exact(sock: socket.socket, view: memoryview) -> None:
    got, want = 0, len(view)
    while got < want:
        n = sock.recv_into(view[got:])
        if not n:
            raise EOFError("connection closed mid-frame")
        got += n


class _RawReader:
    """Blocking frame reader: header, then the payload into one reused buffer."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.header = bytearray(4)
        self.header_view = memoryview(self.header)
        self.buf = bytearray(64 * 1024)
        self.view = memoryview(self.buf)

    def frame(self) -> memoryview | None:
        try:
            _raw_recv_exact(self.sock, self.header_view)
        except EOFError:
            return None
        (size,) = HEADER.unpack(self.header)
        if size > len(self.buf):
            self.view.release()
            self.buf = bytearray(size)
            self.view = memoryview(self.buf)
        view = self.view[:size]
        _raw_recv_exact(self.sock, view)
        return view


def _raw_send(sock: socket.socket, payload: Any) -> None:
    data = memoryview(payload).cast("B")
    buffers = [memoryview(HEADER.pack(len(data))), data]
    while buffers:
        sent = sock.sendmsg(buffers)
        while sent:
            if sent >= len(buffers[0]):
                sent -= len(buffers.pop(0))
            else:
                buffers[0] = buffers[0][sent:]
                sent = 0


def _serve_raw(ready: Callable[[int], None]) -> None:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((HOST, 0))
    listener.listen(8)
    ready(listener.getsockname()[1])
    while True:  # one connection at a time: the clients use them one after another
        sock, _ = listener.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with sock:
            reader = _RawReader(sock)
            session = Session(partial(_raw_send, sock))
            while (frame := reader.frame()) is not None:
                session.frame(frame)


def _raw_connect(port: int) -> socket.socket:
    sock = socket.create_connection((HOST, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _raw_client(port: int, tasks: list[list[Any]], place: Callable[[str], None]) -> list[Any]:
    results: list[Any] = []
    for kind, size, count, warm in tasks:
        place(kind)
        with _raw_connect(port) as sock:
            reader = _RawReader(sock)
            frame = HEADER.pack(size) + b"x" * size
            if kind == "pingpong":
                sock.sendall(HEADER.pack(4) + b"echo")
                samples = []
                for i in range(warm + count):
                    t0 = _now()
                    sock.sendall(frame)
                    reader.frame()
                    if i >= warm:
                        samples.append(_now() - t0)
                results.append(samples)
            else:
                elapsed = 0
                for n in (warm, count):
                    command = f"sink {n}".encode()
                    t0 = _now()
                    sock.sendall(HEADER.pack(len(command)) + command)
                    for _ in range(n):
                        sock.sendall(frame)
                    assert bytes(reader.frame() or b"") == b"ok"
                    elapsed = _now() - t0
                results.append(elapsed)
    return results
