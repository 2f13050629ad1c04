"""Notebooks 04 and 05: why a byte stream needs framing, three ways to frame,
the wire as a hex view, and one large frame through FramedTransport."""

from __future__ import annotations

import contextlib
import random
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..events import EventKind, IOEvent, IOStatus, Peer
from ..framed import FramedTransport
from ..framing import DEFAULT_MAX_FRAME_SIZE, PLAIN_READ_SIZE
from ..reactor import EventWatcher
from ..tcp import TcpTransport
from ..testing.trace import Trace, TracingTransport
from .common import KiB, MiB, closing, connected_pair, wait_readable_bytes, yes

__all__ = [
    "BigFrame",
    "big_frame",
    "delimiter_escape",
    "delimiter_split",
    "delimiter_unescape",
    "fixed_size_split",
    "reads_after_sends",
    "reads_of_one_send",
    "wire_capture",
]


def reads_after_sends(messages: Sequence[bytes] = (b"hello", b"world")) -> list[bytes]:
    """Send each message with its own ``send``, let them all arrive, then read
    once: the reader gets them glued together. Returns what each read returned."""
    with connected_pair() as (client, server):
        for m in messages:
            client.sendall(m)
        total = sum(len(m) for m in messages)
        with contextlib.suppress(BlockingIOError):
            wait_readable_bytes(server, total)
        return [server.recv(65536)]


def reads_of_one_send(size: int = 64 * KiB, rcvbuf: int = 4 * KiB) -> tuple[int, list[int]]:
    """One blocking ``send`` of ``size`` bytes into a connection whose receiver
    has a small ``SO_RCVBUF``, read with ``recv(size)`` calls until all is in.

    Returns ``(what the one send returned, bytes returned by each read)``. The
    sender runs in a helper thread (a blocking send waits for room), joined
    before the function returns.
    """
    message = bytes(size)
    sent: list[int] = []
    reads: list[int] = []
    with connected_pair(rcvbuf=rcvbuf) as (client, server):
        sender = threading.Thread(target=lambda: sent.append(client.send(message)), daemon=True)
        sender.start()
        try:
            server.settimeout(5)
            while sum(reads) < size:
                reads.append(len(server.recv(size)))
        finally:
            sender.join(timeout=5)
    return sent[0], reads


def delimiter_split(messages: Sequence[bytes], delimiter: bytes = b"\n") -> list[bytes]:
    """Join messages with ``delimiter`` as a sender would, then split the stream
    as the receiver must. A message that contains the delimiter comes out in pieces."""
    stream = b"".join(m + delimiter for m in messages)
    return stream.split(delimiter)[:-1]


def delimiter_escape(message: bytes, delimiter: bytes = b"\n", escape: bytes = b"\\") -> bytes:
    """Byte stuffing: put ``escape`` before every escape byte and every delimiter
    byte, so the delimiter never appears bare inside a message."""
    if len(delimiter) != 1 or len(escape) != 1:
        raise ValueError("one-byte delimiter and escape, please")
    return message.replace(escape, escape + escape).replace(delimiter, escape + delimiter)


def delimiter_unescape(
    stream: bytes, delimiter: bytes = b"\n", escape: bytes = b"\\"
) -> list[bytes]:
    """Split an escaped stream into messages. Note that it has to look at every
    byte: a length prefix lets the reader skip straight to the end instead."""
    out: list[bytes] = []
    current = bytearray()
    it = iter(stream)
    for byte in it:
        if byte == escape[0]:
            current.append(next(it))
        elif byte == delimiter[0]:
            out.append(bytes(current))
            current.clear()
        else:
            current.append(byte)
    return out


def fixed_size_split(messages: Sequence[bytes], size: int) -> tuple[list[bytes], int]:
    """Pad each message to ``size`` bytes (refusing longer ones); return the
    records as the receiver cuts them and how many bytes were padding."""
    for m in messages:
        if len(m) > size:
            raise ValueError(f"a {len(m)}-byte message does not fit in a {size}-byte record")
    stream = b"".join(m.ljust(size, b"\0") for m in messages)
    records = [stream[i : i + size] for i in range(0, len(stream), size)]
    return records, len(stream) - sum(len(m) for m in messages)


def wire_capture(payloads: Sequence[bytes], *, capture: int = 4096) -> tuple[Trace, list[bytes]]:
    """Send ``payloads`` as frames from a client to a server over real TCP, with
    a :class:`TracingTransport` under each ``FramedTransport``.

    All frames are written before the loop turns, so the server sees them in
    as few reads as the kernel likes. Returns the trace and the frames received.
    """
    trace = Trace(capture=capture)
    got: list[bytes] = []
    with EventWatcher() as ew:
        tcp_server = TcpTransport()
        server = FramedTransport(TracingTransport(tcp_server, trace, "server"))
        client = FramedTransport(TracingTransport(TcpTransport(), trace, "client"))
        with closing(client, server):
            ready: list[Peer] = []
            accepted: list[Peer] = []

            def on_server(ev: IOEvent) -> None:
                if ev.kind is EventKind.ACCEPTED:
                    ready.append(ev.peer)
                    accepted.append(ev.peer)
                elif ev.kind is EventKind.READABLE:
                    while (r := server.resume_read(ev.peer)).status is IOStatus.OK:
                        got.append(bytes(r.data))

            def on_client(ev: IOEvent) -> None:
                if ev.kind is EventKind.CONNECTED:
                    ready.append(ev.peer)

            server.attach(ew, on_server)
            client.attach(ew, on_client)
            peer = client.connect(server.bind())
            ew.run_until(lambda: len(ready) == 2, timeout=5)
            for p in payloads:
                client.resume_write(p, peer)
            # Let every byte reach the server's socket before its first read.
            total = sum(len(p) + 4 for p in payloads)
            wait_readable_bytes(tcp_server.socket_of(accepted[0]), total)
            ew.run_until(lambda: len(got) == len(payloads), timeout=5)
    return trace, got


# -------------------------------------------------- 05: transports and layering
@dataclass
class BigFrame:
    """One large frame sent over loopback through FramedTransport, as the
    receiving owner got it."""

    size: int
    frame_type: str
    frame_len: int
    intact: bool
    recv_calls: int
    bytes_copied: int
    scratch: int  # the decoder's scratch buffer: frames smaller than half of it go there
    first_read: int  # the most bytes the first (plain) read could bring with the header

    def summary(self) -> str:
        """Only facts that hold on every run (the number of reads varies)."""
        one = self.frame_type == "bytearray" and self.frame_len == self.size
        return "\n".join(
            [
                f"sent one frame with a {self.size}-byte payload",
                f"the owner got: {self.frame_type} of {self.frame_len} bytes",
                f"same bytes as sent: {yes(self.intact)}",
                f"received into one bytearray of exactly {self.size} bytes: {yes(one)}",
                f"it took more than one recv: {yes(self.recv_calls > 1)}",
                "bytes the decoder copied inside itself: under "
                f"{self.first_read // KiB} KiB (only what the first read brought with the "
                f"header): {yes(self.bytes_copied < self.first_read)}",
            ]
        )


def big_frame(size: int = 16 * MiB, timeout: float = 10.0) -> BigFrame:
    """Send one ``size``-byte frame from a client to a server, both
    ``FramedTransport`` over TCP on loopback, and report how it arrived.

    A frame larger than half the decoder's scratch buffer gets a body of its own
    as soon as its header is in, which doubles in place as the bytes arrive
    until it has the frame's exact size; the socket reads the rest straight
    into it, so the payload is not copied again inside the framing layer.
    """
    payload = random.Random(size).randbytes(size)
    got: list[Any] = []
    with EventWatcher() as ew:
        server = FramedTransport(TcpTransport(), max_frame_size=max(size, DEFAULT_MAX_FRAME_SIZE))
        client = FramedTransport(TcpTransport(), max_frame_size=max(size, DEFAULT_MAX_FRAME_SIZE))
        with closing(client, server):
            peers: list[Peer] = []

            def on_server(ev: IOEvent) -> None:
                if ev.kind is EventKind.ACCEPTED:
                    peers.append(ev.peer)
                elif ev.kind is EventKind.READABLE:
                    while (r := server.resume_read(ev.peer)).status is IOStatus.OK:
                        got.append(r.data)

            server.attach(ew, on_server)
            client.attach(ew, lambda ev: None)
            peer = client.connect(server.bind())
            client.resume_write(payload, peer)
            ew.run_until(lambda: bool(got), timeout=timeout)
            decoder = server._recv[peers[0]].decoder  # a look inside, for the course
            counters = server.counters(peers[0])
            frame = got[0]
            return BigFrame(
                size=size,
                frame_type=type(frame).__name__,
                frame_len=len(frame),
                intact=frame == payload,
                recv_calls=counters.recv_calls,
                bytes_copied=decoder.bytes_copied,
                scratch=server.buffer_size,
                first_read=PLAIN_READ_SIZE,
            )


# ------------------------------------------------------ 07: the live lab
