"""Fake sockets for the tests: one end of a real socket pair (so the selector can
watch its descriptor) with a chosen misbehaviour layered on top.

``WrappedSocket`` passes every call the transports make straight to the real
socket; a fake overrides only the calls it wants to spoil.
"""

from __future__ import annotations

import socket


class WrappedSocket:
    """Everything a ``TcpTransport`` calls on an adopted socket, passed through."""

    def __init__(self, real: socket.socket) -> None:
        self.real = real

    def fileno(self) -> int:
        return self.real.fileno()

    def setblocking(self, flag: bool) -> None:
        self.real.setblocking(flag)

    def getpeername(self) -> object:
        return self.real.getpeername()

    def close(self) -> None:
        self.real.close()

    def shutdown(self, how: int) -> None:
        self.real.shutdown(how)

    def recv(self, size: int) -> bytes:
        return self.real.recv(size)

    def recv_into(self, buffer: memoryview, nbytes: int = 0) -> int:
        return self.real.recv_into(buffer, nbytes)

    def send(self, data: bytes, flags: int = 0) -> int:
        return self.real.send(data, flags)

    def sendmsg(self, buffers: list[bytes], ancdata: object = (), flags: int = 0) -> int:
        return self.real.sendmsg(buffers, ancdata, flags)
