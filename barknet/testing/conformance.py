"""One suite of checks for every framing transport: ours, and the one you write.

Theory of operation
-------------------
A check is a function that takes a *maker*, ``make(inner) -> ITransport``,
which wraps a byte transport in the framing transport under test. The check
builds a server and clients on loopback with it, drives them on a private
:class:`~barknet.reactor.EventWatcher`, and raises ``AssertionError`` with a
plain-English message when the transport misbehaves. Every check is bounded
(it gives up after a few seconds) and closes everything it opened.

The same checks run

* in ``tests/test_conformance.py`` against :class:`~barknet.framed.FramedTransport`,
  directly over TCP and over a :class:`~barknet.testing.faults.ChunkingTransport`;
* the "contract" checks (the interface's promises beyond the exercise, such as
  level-triggered ``READABLE``) also in ``tests/test_readable.py``, against
  :class:`~barknet.compress.CompressedTransport` over framing too;
* in the exercise notebook against the learner's own framing, through
  :func:`run_checks`, which returns a readable :class:`Report` instead of raising.

The idea comes from trio's ``check_half_closeable_stream(maker)``: one set of
expectations, many implementations.

The checks use only the :class:`~barknet.interfaces.ITransport` methods and
events, so any implementation that follows the event grammar can pass.
"""

from __future__ import annotations

import hashlib
import random
import socket
import struct
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import FrameTooLargeError, TransportClosedError, TruncatedFrameError
from ..events import EventKind, IOEvent, IOStatus, Peer
from ..interfaces import ITransport
from ..reactor import EventWatcher
from ..tcp import TcpTransport
from .faults import ChunkingTransport

__all__ = ["CHECKS", "CONTRACT_CHECKS", "Check", "CheckResult", "Maker", "Report", "run_checks"]

Maker = Callable[[ITransport], ITransport]

#: How long one check may wait for the loop before it is declared stuck;
#: :func:`run_checks` can change it.
TIMEOUT = 10.0


_limits = {"timeout": TIMEOUT}


def _payloads(count: int, max_size: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(rng.randint(0, max_size)) for _ in range(count)]


class _Side:
    """One framing transport plus what its owner has seen, frame by frame.

    ``per_readable``: take at most that many frames per READABLE (None: all of
    them, until WOULD_BLOCK), as an asyncio- or trio-style owner does.
    """

    def __init__(
        self,
        ew: EventWatcher,
        transport: ITransport,
        *,
        echo: bool,
        per_readable: int | None = None,
    ) -> None:
        self.ew = ew
        self.transport = transport
        self.echo = echo
        self.per_readable = per_readable
        self.frames: dict[Peer, list[bytes]] = {}
        self.events: list[IOEvent] = []
        self.closed: dict[Peer, IOEvent] = {}
        self.opened: list[Peer] = []
        transport.attach(ew, self._on_event)

    def _on_event(self, event: IOEvent) -> None:
        self.events.append(event)
        kind, peer = event.kind, event.peer
        if kind is EventKind.READABLE:
            taken = 0
            while self.per_readable is None or taken < self.per_readable:
                taken += 1
                result = self.transport.resume_read(peer)
                if result.status is not IOStatus.OK:
                    break
                frame = bytes(result.data)
                self.frames.setdefault(peer, []).append(frame)
                if self.echo:
                    self.transport.resume_write(frame, peer)
        elif kind in (EventKind.ACCEPTED, EventKind.CONNECTED):
            self.opened.append(peer)
            self.frames.setdefault(peer, [])
        elif kind is EventKind.CLOSED:
            if peer in self.closed:
                raise AssertionError(f"CLOSED came twice for {peer}")
            self.closed[peer] = event

    def received(self, peer: Peer) -> list[bytes]:
        return self.frames.get(peer, [])


class _Lab:
    """A server (echoing, unless told not to) and any number of clients."""

    def __init__(
        self,
        make: Maker,
        *,
        echo: bool = True,
        sndbuf: int | None = None,
        rcvbuf: int | None = None,
        chunking: dict[str, Any] | None = None,
        per_readable: int | None = None,
    ) -> None:
        self.make = make
        self.sndbuf, self.rcvbuf, self.chunking = sndbuf, rcvbuf, chunking
        self.ew = EventWatcher()
        self.tcps: list[TcpTransport] = []
        self.sides: list[_Side] = []
        try:
            self.server = self._side(echo=echo, per_readable=per_readable)
            self.address = self.server.transport.bind()
        except BaseException:
            self.close()
            raise

    def _side(self, *, echo: bool, seed: int = 0, per_readable: int | None = None) -> _Side:
        tcp = TcpTransport(sndbuf=self.sndbuf, rcvbuf=self.rcvbuf)
        self.tcps.append(tcp)
        inner: ITransport = tcp
        if self.chunking is not None:
            inner = ChunkingTransport(tcp, seed=seed + len(self.tcps), **self.chunking)
        side = _Side(self.ew, self.make(inner), echo=echo, per_readable=per_readable)
        self.sides.append(side)
        return side

    def client(self) -> tuple[_Side, Peer]:
        side = self._side(echo=False)
        peer = side.transport.connect(self.address)
        return side, peer

    def run_until(self, condition: Callable[[], object], what: str) -> None:
        timeout = _limits["timeout"]
        try:
            self.ew.run_until(condition, timeout)
        except TimeoutError:
            raise AssertionError(f"gave up after {timeout:g} s waiting for {what}") from None

    def close(self) -> None:
        for side in self.sides:
            side.transport.close()
        for tcp in self.tcps:
            tcp.close()
        # Let CLOSED events run so user callbacks see them, then release the loop.
        if not self.ew.closed:
            for _ in range(3):
                self.ew.run_once(0)
            self.ew.close()

    def __enter__(self) -> _Lab:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _raw_client(address: tuple[str, int]) -> socket.socket:
    """A plain blocking socket, for sending bytes a framing layer would never send."""
    sock = socket.create_connection(address, timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _same(got: list[bytes], want: list[bytes], who: str) -> None:
    if got == want:
        return
    for i, (g, w) in enumerate(zip(got, want, strict=False)):
        if g != w:
            raise AssertionError(
                f"{who}: frame {i} differs: got {len(g)} bytes "
                f"(sha1 {hashlib.sha1(g).hexdigest()[:8]}), "
                f"expected {len(w)} bytes (sha1 {hashlib.sha1(w).hexdigest()[:8]})"
            )
    raise AssertionError(f"{who}: got {len(got)} frames, expected {len(want)}")


# ---------------------------------------------------------------- the checks
def _echo_round_trip(make: Maker, payloads: list[bytes], **lab_options: Any) -> _Lab:
    lab = _Lab(make, **lab_options)
    try:
        client, peer = lab.client()
        for payload in payloads:
            client.transport.resume_write(payload, peer)
        lab.run_until(
            lambda: len(client.received(peer)) >= len(payloads) or peer in client.closed,
            f"{len(payloads)} echoed frames",
        )
        if peer in client.closed:
            raise AssertionError(f"the connection closed early: {client.closed[peer]}")
        _same(client.received(peer), payloads, "echo")
    except BaseException:
        lab.close()
        raise
    return lab


def check_single_message(make: Maker) -> None:
    """One frame goes to an echo server and comes back whole."""
    _echo_round_trip(make, [b"hello, barknet"]).close()


def check_zero_length_frame(make: Maker) -> None:
    """An empty payload is a valid frame, distinct from "no frame"."""
    _echo_round_trip(make, [b"", b"x", b"", b""]).close()


def check_frames_in_order(make: Maker) -> None:
    """Many frames of varied sizes arrive whole and in the order they were sent."""
    _echo_round_trip(make, _payloads(200, 3000, seed=1)).close()


def check_rapid_fire_small_messages(make: Maker) -> None:
    """Thousands of tiny frames sent in one burst: none lost, merged or reordered."""
    payloads = [struct.pack("!I", i) * (i % 5) for i in range(5000)]
    with _Lab(make, echo=False) as lab:
        client, peer = lab.client()
        for payload in payloads:
            client.transport.resume_write(payload, peer)
        lab.run_until(
            lambda: lab.server.opened and len(lab.server.received(lab.server.opened[0])) >= 5000,
            "5000 frames at the server",
        )
        _same(lab.server.received(lab.server.opened[0]), payloads, "server")


def check_large_message_partial_io(make: Maker) -> None:
    """A 4 MiB frame through 4 KiB socket buffers: many short reads and writes, one frame."""
    payload = random.Random(2).randbytes(4 * 1024 * 1024)
    lab = _echo_round_trip(make, [payload], sndbuf=4096, rcvbuf=4096)
    try:
        sent = sum(t.counters().short_sends for t in lab.tcps)
        received = sum(t.counters().short_recvs for t in lab.tcps)
        if sent == 0 or received == 0:
            raise AssertionError(
                f"expected partial I/O with 4 KiB buffers, saw {sent} short sends "
                f"and {received} short reads"
            )
    finally:
        lab.close()


def check_many_concurrent_connections(make: Maker) -> None:
    """50 clients at once, each with its own frames: each gets back exactly its own."""
    with _Lab(make) as lab:
        clients = [lab.client() for _ in range(50)]
        sent = {}
        for i, (side, peer) in enumerate(clients):
            sent[peer] = _payloads(5, 2000, seed=100 + i)
            for payload in sent[peer]:
                side.transport.resume_write(payload, peer)
        lab.run_until(
            lambda: all(len(side.received(peer)) >= 5 for side, peer in clients),
            "every client's echoes",
        )
        for side, peer in clients:
            _same(side.received(peer), sent[peer], f"client {peer}")


def check_survives_chunking(make: Maker) -> None:
    """Reads of at most 7 bytes, writes of at most 5, a third of calls "would block"."""
    chunking = {"max_read": 7, "max_write": 5, "would_block": 0.3}
    _echo_round_trip(make, [*_payloads(30, 300, seed=3), b""], chunking=chunking).close()


def check_survives_one_byte_io(make: Maker) -> None:
    """Every read and every write moves a single byte: frames still arrive whole."""
    chunking = {"max_read": 1, "max_write": 1}
    _echo_round_trip(make, [b"a", b"", b"bcdefgh" * 10], chunking=chunking).close()


def check_clean_close_is_eof(make: Maker) -> None:
    """A client that closes between frames: the server gets every frame, then CLOSED(EOF)."""
    payloads = _payloads(20, 500, seed=4)
    with _Lab(make, echo=False) as lab:
        client, peer = lab.client()
        for payload in payloads:
            client.transport.resume_write(payload, peer)
        client.transport.close(peer)
        lab.run_until(lambda: lab.server.closed, "the server to see the close")
        (server_peer, event) = next(iter(lab.server.closed.items()))
        _same(lab.server.received(server_peer), payloads, "server")
        if event.status is not IOStatus.EOF or event.error is not None:
            raise AssertionError(f"a clean close should be CLOSED(EOF), got {event}")


def _expect_framing_error(
    make: Maker, raw: bytes, error_type: type[Exception], what: str
) -> BaseException:
    """Send ``raw`` from a raw socket, then close it; a framed client on the same
    server must keep working. Returns the error the server reported."""
    with _Lab(make) as lab:
        good, good_peer = lab.client()
        good.transport.resume_write(b"before", good_peer)
        lab.run_until(lambda: good.received(good_peer), "the good client's first echo")
        bad = _raw_client(lab.address)
        try:
            bad.sendall(raw)
            # The bad peer ends its side too, so a transport that closes it
            # gracefully (lingering until the peer's EOF) is not kept waiting.
            bad.shutdown(socket.SHUT_WR)
            lab.run_until(lambda: lab.server.closed, f"the server to close the peer that {what}")
        finally:
            bad.close()
        (_, event) = next(iter(lab.server.closed.items()))
        if event.status is not IOStatus.ERROR or not isinstance(event.error, error_type):
            raise AssertionError(
                f"a peer that {what} should be CLOSED(ERROR, {error_type.__name__}), got {event}"
            )
        good.transport.resume_write(b"after", good_peer)
        lab.run_until(lambda: len(good.received(good_peer)) >= 2, "the good client's second echo")
        _same(good.received(good_peer), [b"before", b"after"], "the other client")
        return event.error


def check_oversized_length_prefix(make: Maker) -> None:
    """A length prefix of 0xFFFFFFFF closes that peer with FrameTooLargeError only."""
    error = _expect_framing_error(
        make, b"\xff\xff\xff\xff", FrameTooLargeError, "announced a 4 GiB frame"
    )
    if getattr(error, "size", None) != 0xFFFFFFFF:
        raise AssertionError(f"the error should carry the announced size, got {error!r}")


def check_eof_mid_header(make: Maker) -> None:
    """A stream that stops after 2 of 4 header bytes is a TruncatedFrameError (header)."""
    error = _expect_framing_error(make, b"\x00\x00", TruncatedFrameError, "stopped mid-header")
    if (getattr(error, "part", None), getattr(error, "received", None)) != ("header", 2):
        raise AssertionError(f"expected 2 of 4 header bytes in the error, got {error!r}")


def check_eof_mid_payload(make: Maker) -> None:
    """A stream that stops 10 bytes into a 100-byte payload is a TruncatedFrameError."""
    error = _expect_framing_error(
        make, struct.pack("!I", 100) + b"x" * 10, TruncatedFrameError, "stopped mid-payload"
    )
    got = (getattr(error, "part", None), error.received, error.expected)  # type: ignore[attr-defined]
    if got != ("payload", 10, 100):
        raise AssertionError(f"expected 10 of 100 payload bytes in the error, got {error!r}")


def check_send_after_close_raises(make: Maker) -> None:
    """Writing to a peer you closed is your bug: TransportClosedError, at the call."""
    with _Lab(make) as lab:
        client, peer = lab.client()
        lab.run_until(lambda: lab.server.opened, "the connection")
        client.transport.close(peer)
        try:
            client.transport.resume_write(b"too late", peer)
        except TransportClosedError:
            return
        raise AssertionError("resume_write after close(peer) did not raise TransportClosedError")


def check_oversized_send_refused(make: Maker) -> None:
    """A payload over the limit is refused at the call, and nothing reaches the wire."""
    with _Lab(make) as lab:
        client, peer = lab.client()
        lab.run_until(lambda: lab.server.opened, "the connection")
        limit = getattr(client.transport, "max_frame_size", None)
        if limit is None:
            raise AssertionError("the transport should expose its max_frame_size")
        try:
            client.transport.resume_write(bytes(limit + 1), peer)
        except FrameTooLargeError:
            pass
        else:
            raise AssertionError("an oversized payload was accepted")
        client.transport.resume_write(b"fine", peer)
        lab.run_until(lambda: client.received(peer), "the echo after the refused frame")
        _same(client.received(peer), [b"fine"], "client")


# ------------------------------------------------------- the contract checks
# These hold any transport to the interface's contract (see
# barknet.interfaces): graceful close, half-close, a loop that refuses to be
# re-entered, no busy loop. They run over message transports (a
# ``max_frame_size`` attribute says so) and over byte streams alike: what
# they compare is the bytes, joined.
_REQUEST = b"next, please"


def _is_message_transport(transport: ITransport) -> bool:
    return getattr(transport, "max_frame_size", None) is not None


class _Owner:
    """A contract check's owner of one transport: keeps what arrived per peer,
    whether the peer's EOF was read, and each peer's CLOSED; sends byte
    streams to the end across WRITABLE events."""

    def __init__(self, ew: EventWatcher, transport: ITransport, *, auto_read: bool = True) -> None:
        self.ew = ew
        self.transport = transport
        self.messages = _is_message_transport(transport)
        self.auto_read = auto_read
        self.events: list[IOEvent] = []
        self.data: dict[Peer, bytearray] = {}
        self.eof: set[Peer] = set()
        self.closed: dict[Peer, IOEvent] = {}
        self.opened: list[Peer] = []
        self.on_event: Callable[[IOEvent], None] | None = None
        #: Reads per READABLE (None: until the status is not OK) and bytes per read.
        self.per_readable: int | None = None
        self.read_size: int | None = None
        self._sending: dict[Peer, deque[tuple[memoryview, Callable[[], None] | None]]] = {}
        transport.attach(ew, self._on_event)

    def _on_event(self, event: IOEvent) -> None:
        self.events.append(event)
        kind, peer = event.kind, event.peer
        if kind is EventKind.CLOSED:
            if peer in self.closed:
                raise AssertionError(f"CLOSED came twice for {peer}")
            self.closed[peer] = event
            self._sending.pop(peer, None)
        elif kind in (EventKind.ACCEPTED, EventKind.CONNECTED):
            self.opened.append(peer)
            self.data.setdefault(peer, bytearray())
        elif kind is EventKind.READABLE:
            if self.auto_read:
                self.read(peer)
            else:
                self.transport.suspend_read(peer)
        elif kind is EventKind.WRITABLE:
            if peer in self._sending:
                self._push(peer)
            else:
                self.transport.suspend_write(peer)
        if self.on_event is not None:
            self.on_event(event)

    def read(self, peer: Peer) -> None:
        """Read until the status is not OK, or (``per_readable``) that many reads of
        at most ``read_size`` bytes each, as an owner that takes one at a time."""
        reads = 0
        while self.per_readable is None or reads < self.per_readable:
            reads += 1
            result = self.transport.resume_read(peer, max_len=self.read_size)
            if result.status is IOStatus.OK:
                self.data.setdefault(peer, bytearray()).extend(result.data)
                continue
            if result.status is IOStatus.EOF:
                self.eof.add(peer)
            return

    def send(self, peer: Peer, data: bytes, then: Callable[[], None] | None = None) -> None:
        """Send ``data`` (one message, or the whole byte stream), then call ``then``."""
        if self.messages:
            self.transport.resume_write(data, peer)
            if then is not None:
                then()
            return
        queue = self._sending.setdefault(peer, deque())
        queue.append((memoryview(data), then))
        if len(queue) == 1:
            self._push(peer)

    def _push(self, peer: Peer) -> None:
        queue = self._sending[peer]
        while queue:
            view, then = queue[0]
            while view.nbytes:
                result = self.transport.resume_write(view, peer)
                view = view[result.sent :]
                if result.status is IOStatus.ERROR:
                    self._sending.pop(peer, None)
                    return
                if result.status is IOStatus.WOULD_BLOCK:
                    queue[0] = (view, then)
                    return
            queue.popleft()
            if then is not None:
                then()
        del self._sending[peer]

    def received(self, peer: Peer) -> bytes:
        return bytes(self.data.get(peer, b""))


class _ContractLab:
    """A server and clients, each an :class:`_Owner` of a transport made by ``make``
    over TCP (with the socket buffer sizes given)."""

    def __init__(
        self,
        make: Maker,
        *,
        server_kw: dict[str, Any] | None = None,
        client_kw: dict[str, Any] | None = None,
    ) -> None:
        self.make = make
        self.client_kw = client_kw or {}
        self.ew = EventWatcher()
        self.transports: list[ITransport] = []
        self.closing = False
        try:
            self.server = self._owner(server_kw or {})
            self.address = self.server.transport.bind()
        except BaseException:
            self.close()
            raise

    def _owner(self, tcp_kw: dict[str, Any], **owner_kw: Any) -> _Owner:
        transport = self.make(TcpTransport(**tcp_kw))
        self.transports.append(transport)
        return _Owner(self.ew, transport, **owner_kw)

    def client(self, **owner_kw: Any) -> tuple[_Owner, Peer]:
        owner = self._owner(self.client_kw, **owner_kw)
        return owner, owner.transport.connect(self.address)

    def run_until(self, condition: Callable[[], object], what: str) -> None:
        timeout = _limits["timeout"]
        try:
            self.ew.run_until(condition, timeout)
        except TimeoutError:
            raise AssertionError(f"gave up after {timeout:g} s waiting for {what}") from None

    def close(self) -> None:
        self.closing = True
        for transport in self.transports:
            transport.close()
        if not self.ew.closed:
            for _ in range(3):
                self.ew.run_once(0)
            self.ew.close()

    def __enter__(self) -> _ContractLab:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _digest(data: bytes) -> str:
    return f"{len(data)} bytes (sha1 {hashlib.sha1(data).hexdigest()[:8]})"


def _expect_bytes(got: bytes, want: bytes, who: str) -> None:
    if got != want:
        raise AssertionError(f"{who} got {_digest(got)}, expected {_digest(want)}")


def _expect_clean(event: IOEvent | None, statuses: tuple[IOStatus, ...], who: str) -> None:
    if event is None or event.status not in statuses:
        want = " or ".join(f"CLOSED({s.name})" for s in statuses)
        raise AssertionError(f"{who} should end with {want}, got {event}")


def check_close_delivers_everything_while_the_peer_keeps_sending(make: Maker) -> None:
    """A 4 MiB reply, then close(peer), while the peer keeps sending small requests
    and reads slowly: the peer gets every byte and a clean EOF, and the closing
    side's CLOSED says OK (the peer's EOF came), not a reset."""
    reply = random.Random(5).randbytes(4 * 1024 * 1024)
    with _ContractLab(make, client_kw={"rcvbuf": 4096}) as lab:
        server = lab.server

        def on_server(event: IOEvent) -> None:
            peer = event.peer
            if (
                event.kind is EventKind.READABLE
                and server.received(peer)
                and peer in server.opened
            ):
                server.opened.remove(peer)  # reply once, to the first request
                server.transport.suspend_read(peer)  # busy replying: reads no more
                server.send(peer, reply, then=lambda: server.transport.close(peer))

        server.on_event = on_server
        client, peer = lab.client()

        def on_client(event: IOEvent) -> None:
            if event.kind is EventKind.CONNECTED:
                client.send(peer, _REQUEST)
                lab.ew.call_later(0.001, keep_asking)
            if peer in client.eof and peer not in client.closed:
                client.transport.close(peer)  # (a framing layer may have done it already)

        def keep_asking() -> None:
            if lab.closing or peer in client.eof or peer in client.closed:
                return
            if not client.messages:
                client.transport.resume_write(_REQUEST, peer)  # a short one is fine
            else:
                client.send(peer, _REQUEST)
            lab.ew.call_later(0.001, keep_asking)

        client.on_event = on_client
        lab.run_until(
            lambda: peer in client.closed and len(server.closed) == 1,
            "both sides to close after the 4 MiB reply",
        )
        _expect_bytes(client.received(peer), reply, "the peer that kept sending")
        _expect_clean(client.closed[peer], (IOStatus.OK, IOStatus.EOF), "the peer")
        if peer not in client.eof and client.closed[peer].status is not IOStatus.EOF:
            raise AssertionError("the peer never read a clean EOF after the reply")
        (closed,) = server.closed.values()
        _expect_clean(closed, (IOStatus.OK,), "the side that closed")


def _half_close_exchange(make: Maker, *, client_first: bool) -> None:
    ask, answer = b"question " * 1000, b"answer " * 3000
    with _ContractLab(make) as lab:
        server = lab.server
        client, peer = lab.client()
        first, second = (client, server) if client_first else (server, client)
        late: list[BaseException] = []

        def finish(owner: _Owner, p: Peer) -> None:
            owner.transport.write_eof(p)
            try:
                owner.transport.resume_write(b"after write_eof", p)
            except TransportClosedError as exc:
                late.append(exc)

        def on_first(event: IOEvent) -> None:
            opened = EventKind.CONNECTED if first is client else EventKind.ACCEPTED
            if event.kind is opened:
                p = event.peer
                first.send(p, ask, then=lambda: finish(first, p))

        replied: set[Peer] = set()

        def on_second(event: IOEvent) -> None:
            p = event.peer
            if p in second.eof and p not in replied:
                replied.add(p)
                # Reply on a later turn: the half-closed peer must still be open.
                lab.ew.call_later(
                    0.01, lambda: second.send(p, answer, then=lambda: finish(second, p))
                )

        first.on_event, second.on_event = on_first, on_second
        lab.run_until(
            lambda: peer in client.closed and len(server.closed) == 1,
            "both sides to finish and close",
        )
        (server_peer,) = server.closed
        _expect_bytes(second.received(peer if second is client else server_peer), ask, "reader")
        _expect_bytes(first.received(peer if first is client else server_peer), answer, "asker")
        for owner, p, who in ((client, peer, "the client"), (server, server_peer, "the server")):
            if p not in owner.eof:
                raise AssertionError(f"{who} never read the other side's EOF")
            _expect_clean(owner.closed[p], (IOStatus.EOF,), who)
        if len(late) != 2:
            raise AssertionError(
                f"resume_write after write_eof should raise TransportClosedError; "
                f"it did {len(late)} times of 2"
            )


def check_half_close_client_first(make: Maker) -> None:
    """The client sends, then write_eof; the server reads it all and the EOF, replies
    on a later turn, then write_eof: both get everything, then CLOSED(EOF)."""
    _half_close_exchange(make, client_first=True)


def check_half_close_server_first(make: Maker) -> None:
    """The same, the other way round: the server speaks first and half-closes."""
    _half_close_exchange(make, client_first=False)


def check_callback_that_reenters_the_loop(make: Maker) -> None:
    """An owner whose callback runs the loop gets RuntimeError("already running"),
    and the connection goes on as if nothing happened."""
    payloads = [b"one", b"two" * 100, b"three" * 1000]
    with _ContractLab(make) as lab:
        server = lab.server
        refused: list[str] = []

        def on_server(event: IOEvent) -> None:
            if event.kind is EventKind.READABLE and not refused:
                for reenter in (lambda: lab.ew.run_once(0), lambda: lab.ew.run_until(bool)):
                    try:
                        reenter()
                    except RuntimeError as exc:
                        refused.append(str(exc))

        server.on_event = on_server
        client, peer = lab.client()
        for payload in payloads:
            client.send(peer, payload)
        want = b"".join(payloads)
        lab.run_until(
            lambda: len(server.received(server.opened[0]) if server.opened else b"") >= len(want),
            "the server to get every message",
        )
        _expect_bytes(server.received(server.opened[0]), want, "the server")
        if len(refused) != 2 or not all("already running" in r for r in refused):
            raise AssertionError(f"re-entering the loop should be refused, got {refused}")


def check_writes_after_close_while_queued(make: Maker) -> None:
    """close(peer) with 2 MiB still on its way, while the peer sends to us and we
    read none of it: writes after close raise TransportClosedError, the peer gets
    every byte and a clean EOF, and our CLOSED says OK."""
    payload = random.Random(6).randbytes(2 * 1024 * 1024)
    greeting = bytes(256 * 1024)  # more than we will ever read
    with _ContractLab(make, client_kw={"sndbuf": 4096}) as lab:
        server = lab.server

        def on_server(event: IOEvent) -> None:
            if event.kind is EventKind.ACCEPTED:
                server.send(event.peer, greeting)
            if event.peer in server.eof and event.peer not in server.closed:
                server.transport.close(event.peer)  # (a framing layer may have done it)

        server.on_event = on_server
        client, peer = lab.client(auto_read=False)
        late: list[TransportClosedError] = []

        def close_then_write() -> None:
            client.transport.close(peer)
            try:
                client.transport.resume_write(b"too late", peer)
            except TransportClosedError as exc:
                late.append(exc)

        def on_client(event: IOEvent) -> None:
            if event.kind is EventKind.CONNECTED:
                client.send(peer, payload, then=close_then_write)

        client.on_event = on_client
        lab.run_until(
            lambda: peer in client.closed and len(server.closed) == 1, "both sides to close"
        )
        (server_peer,) = server.closed
        _expect_bytes(server.received(server_peer), payload, "the peer")
        if server_peer not in server.eof and server.closed[server_peer].status is not IOStatus.EOF:
            raise AssertionError("the peer never read a clean EOF")
        _expect_clean(client.closed[peer], (IOStatus.OK,), "the side that closed")
        if not late:
            raise AssertionError("resume_write after close(peer) did not raise")


def check_no_busy_loop_after_a_drain(make: Maker) -> None:
    """After an exchange, with nothing queued and nothing to read, 50 loop turns
    dispatch nothing: no WRITABLE, DRAINED or READABLE, no callback at all."""
    with _ContractLab(make, client_kw={"sndbuf": 4096}) as lab:
        server = lab.server
        client, peer = lab.client()
        payload = random.Random(7).randbytes(512 * 1024)  # several WRITABLE rounds
        client.on_event = lambda e: (
            client.send(peer, payload) if e.kind is EventKind.CONNECTED else None
        )
        lab.run_until(
            lambda: server.opened and len(server.received(server.opened[0])) >= len(payload),
            "the server to get the payload",
        )
        for _ in range(5):  # let what is already scheduled (DRAINED, suspends) run
            lab.ew.run_once(0)
        dispatched: list[str] = []
        before_client, before_server = len(client.events), len(server.events)
        lab.ew.tracer = lambda kind, _callback: dispatched.append(kind)
        for _ in range(50):
            lab.ew.run_once(0)
        lab.ew.tracer = None
        new = client.events[before_client:] + server.events[before_server:]
        if new or dispatched:
            raise AssertionError(
                f"an idle connection kept the loop busy: {len(dispatched)} dispatches "
                f"({sorted(set(dispatched))}) and {len(new)} events "
                f"({sorted({e.kind.name for e in new})}) in 50 turns"
            )


def check_fd_closed_and_reused_within_a_turn(make: Maker) -> None:
    """In one loop turn, peer A becomes writable and, before its turn comes, a
    callback aborts A and starts a connect that gets A's descriptor number (to a
    listener whose backlog is full, so it cannot finish). A's stale readiness
    must not reach the new peer: no CONNECTED for it."""
    stuck = socket.socket()
    fillers: list[socket.socket] = []
    try:
        stuck.bind(("127.0.0.1", 0))
        stuck.listen(0)  # one connection fills its queue; later SYNs are dropped
        for _ in range(2):
            filler = socket.socket()
            fillers.append(filler)
            filler.setblocking(False)
            filler.connect_ex(stuck.getsockname())
        with _ContractLab(make, client_kw={"sndbuf": 4096}) as lab:
            server = lab.server
            server.auto_read = False  # A's bytes pile up: A's writes block
            client, a = lab.client()
            lab.run_until(lambda: server.opened and a in client.opened, "peer A")
            t = client.transport.connect(lab.address)
            lab.run_until(lambda: len(server.opened) == 2 and t in client.opened, "peer T")
            a_there, t_there = server.opened
            for _ in range(64):  # whole messages, so a framing server stops reading too
                client.send(a, bytes(16 * 1024))
            for _ in range(5):
                lab.ew.run_once(0.01)
            swapped: list[Peer] = []

            def on_client(event: IOEvent) -> None:
                if event.kind is EventKind.READABLE and event.peer == t and not swapped:
                    client.transport.abort(a)
                    swapped.append(client.transport.connect(stuck.getsockname()))

            client.on_event = on_client
            # One action makes T readable and, right after, A writable again.
            server.send(t_there, b"go")
            server.read(a_there)
            lab.run_until(lambda: bool(swapped), "T's READABLE")
            for _ in range(10):
                lab.ew.run_once(0.01)
            b = swapped[0]
            wrong = [e for e in client.events if e.peer == b and e.kind is not EventKind.CLOSED]
            if wrong:
                raise AssertionError(
                    f"a connect that cannot have finished got {wrong[0].kind.name}: "
                    "the readiness of the closed peer that had the same descriptor"
                )
    finally:
        stuck.close()
        for filler in fillers:
            filler.close()


def check_one_message_per_readable(make: Maker) -> None:
    """An owner that takes exactly one message per READABLE still gets every one:
    READABLE repeats while messages wait (a burst, then more that come later),
    and stops once none wait (no busy loop). Over a byte stream the owner takes
    one small read (3 bytes) per READABLE, so bytes are always left behind."""
    burst = [b"frame %d" % i for i in range(5)]
    later = [b"later %d" % i for i in range(3)]
    with _ContractLab(make) as lab:
        server = lab.server
        server.per_readable = 1
        if not server.messages:
            server.read_size = 3
        client, peer = lab.client()

        def got() -> bytes:
            return server.received(server.opened[0]) if server.opened else b""

        for payload in burst:
            client.send(peer, payload)
        want = b"".join(burst)
        lab.run_until(lambda: len(got()) >= len(want), f"{len(burst)} messages, one per READABLE")
        for payload in later:
            client.send(peer, payload)
        want = b"".join(burst + later)
        lab.run_until(lambda: len(got()) >= len(want), "the messages sent later, one per READABLE")
        _expect_bytes(got(), want, "server")
        readable = sum(e.kind is EventKind.READABLE for e in server.events)
        for _ in range(20):
            lab.ew.run_once(0.001)
        idle = sum(e.kind is EventKind.READABLE for e in server.events) - readable
        if idle:
            raise AssertionError(f"READABLE came {idle} more times with nothing waiting")


@dataclass(frozen=True)
class Check:
    name: str
    run: Callable[[Maker], None]
    #: "core" checks cover what the chapter's exercise asks; "errors" the error
    #: cases; "contract" the interface's promises beyond the exercise (run_checks
    #: leaves those out unless asked).
    level: str

    @property
    def doc(self) -> str:
        return (self.run.__doc__ or "").strip()


CHECKS: list[Check] = [
    Check("single message", check_single_message, "core"),
    Check("zero-length frame", check_zero_length_frame, "core"),
    Check("frames in order", check_frames_in_order, "core"),
    Check("rapid fire of small messages", check_rapid_fire_small_messages, "core"),
    Check("large message, partial I/O", check_large_message_partial_io, "core"),
    Check("50 concurrent connections", check_many_concurrent_connections, "core"),
    Check("survives chunking and would-block", check_survives_chunking, "core"),
    Check("survives one-byte I/O", check_survives_one_byte_io, "core"),
    Check("clean close is EOF", check_clean_close_is_eof, "errors"),
    Check("oversized length prefix", check_oversized_length_prefix, "errors"),
    Check("EOF mid-header", check_eof_mid_header, "errors"),
    Check("EOF mid-payload", check_eof_mid_payload, "errors"),
    Check("send after close raises", check_send_after_close_raises, "errors"),
    Check("oversized send refused", check_oversized_send_refused, "errors"),
]

#: The interface's contract, for message and byte transports alike. Kept apart
#: from :data:`CHECKS` (the framing suite the exercise grades): the exercise's
#: transport predates half-close. ``run_checks(make, levels=("contract",))``
#: runs them.
CONTRACT_CHECKS: list[Check] = [
    Check(
        "close delivers everything while the peer keeps sending",
        check_close_delivers_everything_while_the_peer_keeps_sending,
        "contract",
    ),
    Check("half-close, client first", check_half_close_client_first, "contract"),
    Check("half-close, server first", check_half_close_server_first, "contract"),
    Check("a callback that re-enters the loop", check_callback_that_reenters_the_loop, "contract"),
    Check(
        "writes after close(peer) while data is queued",
        check_writes_after_close_while_queued,
        "contract",
    ),
    Check("no busy loop after a drain", check_no_busy_loop_after_a_drain, "contract"),
    Check(
        "an fd closed and reused within one turn",
        check_fd_closed_and_reused_within_a_turn,
        "contract",
    ),
    Check("one message per READABLE", check_one_message_per_readable, "contract"),
]


@dataclass
class CheckResult:
    check: Check
    passed: bool
    message: str = ""
    seconds: float = 0.0


@dataclass
class Report:
    """What :func:`run_checks` found; prints as a short table, one line per check."""

    results: list[CheckResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def failures(self) -> list[CheckResult]:
        return [r for r in self.results if not r.passed]

    def __str__(self) -> str:
        lines = []
        for r in self.results:
            mark = "PASS" if r.passed else "FAIL"
            lines.append(f"{mark}  {r.check.name}")
            if not r.passed:
                lines.extend(f"      {line}" for line in r.message.splitlines())
        ok = sum(r.passed for r in self.results)
        lines.append(f"{ok} of {len(self.results)} checks passed")
        return "\n".join(lines)


def run_checks(
    make: Maker,
    *,
    levels: tuple[str, ...] = ("core", "errors"),
    names: list[str] | None = None,
    timeout: float = TIMEOUT,
) -> Report:
    """Run the checks against ``make`` and collect a report instead of raising.

    An ``AssertionError`` is reported as its message (what went wrong); any
    other exception as the last lines of its traceback (where your code broke).
    ``timeout`` bounds each wait inside a check, so a transport that hangs
    costs seconds, not forever.
    """
    report = Report()
    _limits["timeout"] = timeout
    try:
        _run_into(report, make, levels, names)
    finally:
        _limits["timeout"] = TIMEOUT
    return report


def _run_into(
    report: Report, make: Maker, levels: tuple[str, ...], names: list[str] | None
) -> None:
    for check in CHECKS + CONTRACT_CHECKS:
        if check.level not in levels or (names is not None and check.name not in names):
            continue
        started = time.monotonic()
        try:
            check.run(make)
        except AssertionError as exc:
            report.results.append(CheckResult(check, False, str(exc)))
        except Exception as exc:
            tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
            where = "".join(tb[-3:]).rstrip()
            report.results.append(CheckResult(check, False, where))
        else:
            report.results.append(CheckResult(check, True))
        report.results[-1].seconds = time.monotonic() - started
