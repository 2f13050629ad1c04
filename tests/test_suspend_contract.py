"""suspend_read and resume_read at the edges an outside review (round 11) found:
before the peer is connected, after both directions ended below, with TLS
holding bytes when the transport below lets the peer go, and with a message
held by CompressedTransport when the peer's EOF follows.

interfaces.py: suspend_read lasts until you call resume_read; READABLE is
level-triggered (it repeats while a message, a byte or an unread EOF waits); I/O
calls for a peer you did not close answer (they do not raise) until its CLOSED.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from barknet import (
    EventKind,
    EventWatcher,
    FramedTransport,
    IOEvent,
    IOStatus,
    TcpTransport,
    encode_frame,
)
from barknet.compress import STORED, CompressedTransport
from barknet.interfaces import ITransport
from barknet.tls import TlsTransport

pytestmark = pytest.mark.usefixtures("no_leaks")

MESSAGE_KINDS = {"framed", "framed over tls", "compressed"}


def _make(kind: str, ctx: ssl.SSLContext | None, *address: Any, **framed: Any) -> ITransport:
    inner: ITransport = TcpTransport(*address)
    if "tls" in kind:
        inner = TlsTransport(inner, ctx)
    if kind == "compressed":
        return CompressedTransport(FramedTransport(inner, **framed))
    if "framed" in kind:
        return FramedTransport(inner, **framed)
    return inner


def _wire(kind: str, payload: bytes) -> bytes:
    if kind == "compressed":
        return encode_frame(bytes((STORED,)) + payload)
    return encode_frame(payload) if kind in MESSAGE_KINDS else payload


class _RawClient:
    """A plain or TLS client socket, non-blocking, driven between loop turns."""

    def __init__(self, ew: EventWatcher, address: tuple[str, int], ctx: ssl.SSLContext | None):
        self.ew = ew
        raw = socket.create_connection(address, timeout=5)
        raw.setblocking(False)
        self.sock: Any = raw
        if ctx is not None:
            self.sock = ctx.wrap_socket(
                raw, server_hostname="localhost", do_handshake_on_connect=False
            )

            def handshake() -> bool:
                try:
                    self.sock.do_handshake()
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    return False
                return True

            ew.run_until(handshake, timeout=5)

    def send(self, data: bytes) -> None:
        view = memoryview(data)
        for _ in range(2000):
            if not view:
                return
            try:
                view = view[self.sock.send(view) :]
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                self.ew.run_once(0.005)
        raise AssertionError("the client could not send")

    def end(self) -> None:
        """Its close_notify (TLS), then its FIN: both of its ends."""
        if isinstance(self.sock, ssl.SSLSocket):
            # (Its close_notify is sent; it does not wait for ours.)
            with contextlib.suppress(ssl.SSLWantReadError, ssl.SSLWantWriteError):
                self.sock.unwrap()
        socket.socket.shutdown(self.sock, socket.SHUT_WR)

    def close(self) -> None:
        socket.socket.close(self.sock)


@pytest.fixture
def rig(server_ctx: ssl.SSLContext) -> Iterator[Callable[..., tuple[Any, ...]]]:
    """``rig(kind, owner, **framed)``: a server of ``kind`` on a new loop, a raw
    client connected to it, and the accepted peer; all closed after the test."""
    made: list[tuple[EventWatcher, ITransport, _RawClient]] = []

    def make(kind: str, owner: Callable[[Any, IOEvent], None], **framed: Any) -> tuple[Any, ...]:
        ew = EventWatcher()
        server = _make(kind, server_ctx if "tls" in kind else None, **framed)
        peers: list[Any] = []

        def on_event(event: IOEvent) -> None:
            if event.kind is EventKind.ACCEPTED:
                peers.append(event.peer)
            owner(server, event)

        server.attach(ew, on_event)
        client_ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        client_ctx.check_hostname, client_ctx.verify_mode = False, ssl.CERT_NONE
        client = _RawClient(ew, server.bind(), client_ctx if "tls" in kind else None)
        made.append((ew, server, client))
        ew.run_until(lambda: peers, timeout=5)
        return ew, server, client, peers[0]

    yield make
    for ew, server, client in made:
        client.close()
        server.close()
        for _ in range(3):
            ew.run_once(0)
        ew.close()


# ------------------------------------------------------ before it is connected
@pytest.mark.parametrize("every_peer", [False, True], ids=["suspend_read(peer)", "suspend_read()"])
@pytest.mark.parametrize("kind", ["tcp", "framed", "tls", "framed over tls"])
def test_suspend_read_before_the_peer_connected_holds_until_resume_read(
    ew, server_ctx, client_ctx, kind: str, every_peer: bool
) -> None:
    """A client that suspends reading right after connect(): no READABLE until it
    resumes (raw TCP and TLS gave thousands, a busy loop), then every byte."""
    server = _make(kind, server_ctx)

    def server_owner(event: IOEvent) -> None:
        if event.kind is EventKind.ACCEPTED:
            for i in range(3):
                server.resume_write(b"m%d" % i, event.peer)

    server.attach(ew, server_owner)
    client = _make(kind, client_ctx, *server.bind())
    readables = [0]
    client.attach(
        ew, lambda e: readables.__setitem__(0, readables[0] + (e.kind is EventKind.READABLE))
    )
    try:
        peer = client.connect()
        client.suspend_read() if every_peer else client.suspend_read(peer)
        for _ in range(30):
            ew.run_once(0.01)
        assert readables[0] == 0
        got = bytearray()

        def read_all() -> bool:
            while (result := client.resume_read(peer)).status is IOStatus.OK:
                got.extend(result.data)
            return len(got) >= 6

        ew.run_until(read_all, timeout=5)
        assert bytes(got) == b"m0m1m2"
    finally:
        client.close()
        server.close()
        ew.run_once(0)


# -------------------------------------------------- both directions ended below
@pytest.mark.parametrize("kind", ["tcp", "framed", "tls", "framed over tls", "compressed"])
def test_a_peer_that_ended_both_ways_is_still_yours_until_its_closed(rig, kind: str) -> None:
    """Our write_eof first, then the peer's messages and its end, read in one go
    (64-byte reads that fill their buffer, so the read after them finds the
    end): the transport below closes the peer at once. The owner takes one
    message (or all the bytes), then suspends: those calls answer until CLOSED
    (no TransportClosedError out of the loop), no READABLE comes while
    suspended, and after the resume every message arrives, then one CLOSED(EOF)."""
    byte = kind in ("tcp", "tls")
    messages = [bytes([65 + i]) * (59 if kind == "compressed" else 60) for i in range(3)]
    got: list[bytes] = []
    closed: list[Any] = []
    state: dict[str, Any] = {"suspended": False, "raised": []}

    def take(server: Any, peer: Any) -> IOStatus:
        result = server.resume_read(peer)
        if result.status is IOStatus.OK:
            got.append(bytes(result.data))
        return result.status

    def owner(server: Any, event: IOEvent) -> None:
        if event.kind is EventKind.ACCEPTED:
            server.write_eof(event.peer)
        elif event.kind is EventKind.READABLE:
            assert not state["suspended"], "READABLE while suspended"
            if byte:
                while take(server, event.peer) is IOStatus.OK:
                    pass
            else:
                take(server, event.peer)
            if not state["raised"] and not state.get("resumed"):
                try:
                    server.suspend_read(event.peer)
                    server.suspend_write(event.peer)
                except Exception as exc:  # (what must not happen)
                    state["raised"].append(exc)
                state["suspended"] = True
                ew.call_later(0.05, resume, server, event.peer)
        elif event.kind is EventKind.CLOSED:
            closed.append(event.status)

    def resume(server: Any, peer: Any) -> None:
        state["suspended"], state["resumed"] = False, True
        if not closed:
            take(server, peer)

    ew, _server, client, _peer = rig(kind, owner, buffer_size=64)
    client.send(b"".join(_wire(kind, m) for m in messages))
    client.end()
    ew.run_until(lambda: closed, timeout=5)
    assert state["raised"] == []
    assert (b"".join(got) == b"".join(messages)) if byte else got == messages
    assert closed == [IOStatus.EOF]


# --------------------------------------------- TLS: bytes held when below ends
def test_tls_holds_the_closed_from_below_until_you_read_what_it_still_holds(rig) -> None:
    """The read that resumes after suspend_read pulls the peer's FIN; with our
    write_eof sent, TCP then closes the peer, and its CLOSED reached TLS while
    OpenSSL still held 16 of the peer's 30 bytes: they were lost, and the end
    still said EOF. Now TLS holds the CLOSED until they are read (as
    FramedTransport does for frames), counters included."""
    got = bytearray()
    statuses: list[IOStatus] = []
    closed: list[Any] = []

    def owner(server: Any, event: IOEvent) -> None:
        if event.kind is EventKind.ACCEPTED:
            server.write_eof(event.peer)
        elif event.kind is EventKind.READABLE:
            result = server.resume_read(event.peer, max_len=7)
            statuses.append(result.status)
            got.extend(result.data)
            if len(got) == 7:
                server.suspend_read(event.peer)
                ew.call_later(0.1, resume, server, event.peer)
        elif event.kind is EventKind.CLOSED:
            closed.append((event.status, server.counters(event.peer).bytes_received))

    def resume(server: Any, peer: Any) -> None:
        result = server.resume_read(peer, max_len=7)
        statuses.append(result.status)
        got.extend(result.data)

    ew, _server, client, _peer = rig("tls", owner)
    client.send(bytes(range(65, 95)))
    client.end()
    ew.run_until(lambda: closed, timeout=5)
    assert bytes(got) == bytes(range(65, 95))
    assert statuses[-1] is IOStatus.EOF
    assert len(closed) == 1 and closed[0][0] is IOStatus.EOF and closed[0][1] > 30


# ------------------------------------- Compressed: a held message, then the EOF
@pytest.mark.parametrize("half_close", [False, True])
def test_a_held_message_then_the_peers_eof_still_ends_the_peer(rig, half_close: bool) -> None:
    """A message refused for a small buffer waits in CompressedTransport; the
    owner suspends, then a read takes it. The read ahead that restarts reading
    below must not take the EOF that follows it: with half_close, the owner
    still reads that EOF, and CLOSED(EOF) comes either way."""
    statuses: list[IOStatus] = []
    closed: list[Any] = []

    def owner(server: Any, event: IOEvent) -> None:
        if event.kind is EventKind.READABLE:
            if not statuses:
                statuses.append(IOStatus.WOULD_BLOCK)
                with pytest.raises(BufferError):
                    server.resume_read(event.peer, bytearray(10))
                server.suspend_read(event.peer)
                ew.call_later(0.05, take, server, event.peer)
            else:
                take(server, event.peer)
        elif event.kind is EventKind.CLOSED:
            closed.append(event.status)

    def take(server: Any, peer: Any) -> None:
        result = server.resume_read(peer)
        statuses.append(result.status)
        if result.status is IOStatus.EOF:
            server.write_eof(peer)

    ew, _server, client, _peer = rig("compressed", owner, half_close=half_close)
    client.send(_wire("compressed", b"A" * 50))
    client.end()
    ew.run_until(lambda: closed, timeout=5)
    assert statuses[1] is IOStatus.OK
    assert (IOStatus.EOF in statuses) is half_close
    assert closed == [IOStatus.EOF]


@pytest.mark.parametrize("kind", ["framed", "framed over tls"])
def test_an_unread_eof_is_not_announced_while_suspended_after_both_ended(rig, kind: str) -> None:
    """With half_close the peer's EOF is news for the owner, announced by READABLE;
    but not while the owner has suspended reading, also when both directions
    already ended below. After the resume, the EOF is read, then CLOSED(EOF)."""
    got: list[bytes] = []
    statuses: list[IOStatus] = []
    closed: list[Any] = []
    state = {"suspended": False}

    def owner(server: Any, event: IOEvent) -> None:
        if event.kind is EventKind.ACCEPTED:
            server.write_eof(event.peer)
        elif event.kind is EventKind.READABLE:
            assert not state["suspended"], "READABLE while suspended"
            if not got:
                got.extend(bytes(frame) for frame in server.read_frames(event.peer))
                server.suspend_read(event.peer)  # every frame taken, the EOF not yet
                state["suspended"] = True
                ew.call_later(0.05, resume, server, event.peer)
        elif event.kind is EventKind.CLOSED:
            closed.append(event.status)

    def resume(server: Any, peer: Any) -> None:
        state["suspended"] = False
        statuses.append(server.resume_read(peer).status)

    ew, _server, client, _peer = rig(kind, owner, buffer_size=64, half_close=True)
    client.send(b"".join(_wire(kind, bytes([65 + i]) * 60) for i in range(3)))
    client.end()
    ew.run_until(lambda: closed, timeout=5)
    assert got == [bytes([65 + i]) * 60 for i in range(3)]
    assert statuses == [IOStatus.EOF]
    assert closed == [IOStatus.EOF]
