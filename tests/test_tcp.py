"""TcpTransport over real loopback sockets: statuses for every thing a socket can
do, the events that follow, counters, closing, and a misbehaving fake socket."""

from __future__ import annotations

import errno
import itertools
import random
import socket
import struct
from collections import defaultdict
from collections.abc import Callable, Iterator

import pytest
from fakes import WrappedSocket

from barknet import (
    ConnectFailedError,
    ConnectionBrokenError,
    EventKind,
    EventWatcher,
    FramedTransport,
    IOEvent,
    IOStatus,
    Peer,
    ReadResult,
    TcpTransport,
    TransportClosedError,
    WriteResult,
)

pytestmark = pytest.mark.usefixtures("no_leaks")


class RawEndpoint:
    """A TcpTransport and what happened to it. With ``auto_read`` it answers
    READABLE by reading until the status is not OK, keeping bytes and statuses."""

    def __init__(self, ew: EventWatcher, transport: TcpTransport, *, auto_read: bool) -> None:
        self.ew = ew
        self.t = transport
        self.auto_read = auto_read
        self.events: list[IOEvent] = []
        self.data: defaultdict[Peer, bytearray] = defaultdict(bytearray)
        self.statuses: defaultdict[Peer, list[IOStatus]] = defaultdict(list)
        self.errors: list[BaseException | None] = []
        self.on_event: Callable[[IOEvent], None] | None = None
        transport.attach(ew, self._replay)

    def _replay(self, event: IOEvent) -> None:
        self.events.append(event)
        if event.kind is EventKind.READABLE and self.auto_read:
            while True:
                r = self.t.resume_read(event.peer)
                self.statuses[event.peer].append(r.status)
                if r.status is not IOStatus.OK:
                    self.errors.append(r.error)
                    break
                self.data[event.peer] += r.data
        if self.on_event is not None:
            self.on_event(event)

    def of_kind(self, kind: EventKind, peer: Peer | None = None) -> list[IOEvent]:
        return [e for e in self.events if e.kind is kind and (peer is None or e.peer == peer)]

    def accepted(self) -> list[Peer]:
        return [e.peer for e in self.of_kind(EventKind.ACCEPTED)]


@pytest.fixture
def raw(ew: EventWatcher) -> Iterator[Callable[..., RawEndpoint]]:
    """``raw(auto_read=True, **TcpTransport_options)``; closed after the test."""
    made: list[TcpTransport] = []

    def make(*args: object, auto_read: bool = True, **kw: object) -> RawEndpoint:
        transport = TcpTransport(*args, **kw)  # type: ignore[arg-type]
        made.append(transport)
        return RawEndpoint(ew, transport, auto_read=auto_read)

    yield make
    for transport in made:
        transport.close()


def turns(ew: EventWatcher, n: int = 5) -> None:
    for _ in range(n):
        ew.run_once(0.01)


def connected_pair(
    ew: EventWatcher, raw: Callable[..., RawEndpoint], **client_kw: object
) -> tuple[RawEndpoint, RawEndpoint, Peer, Peer]:
    """A server and a client transport with one connection; returns both peers."""
    auto_server = client_kw.pop("auto_read_server", True)
    server = raw(auto_read=auto_server, **client_kw.pop("server_kw", {}))  # type: ignore[arg-type]
    host, port = server.t.bind()
    client = raw(host, port, **client_kw)
    cpeer = client.t.connect()
    ew.run_until(lambda: client.of_kind(EventKind.CONNECTED) and server.accepted(), timeout=5)
    return server, client, server.accepted()[0], cpeer


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def reset(sock: socket.socket) -> None:
    """Make the next close send a RST instead of a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


# --------------------------------------------------------------- connecting
def test_bind_to_port_zero_reports_the_real_port(ew, raw):
    server = raw()
    address = server.t.bind()
    assert address[0] == "127.0.0.1"
    assert address[1] > 0
    assert server.t.address == address
    assert f"listening on 127.0.0.1:{address[1]}" in repr(server.t)
    with socket.create_connection(address, timeout=5):
        ew.run_until(lambda: server.accepted(), timeout=5)
    with pytest.raises(RuntimeError, match="already bound"):
        server.t.bind()


def test_connect_emits_connected_and_the_server_accepted(ew, raw):
    server, client, speer, cpeer = connected_pair(ew, raw)
    (connected,) = client.of_kind(EventKind.CONNECTED)
    assert connected == IOEvent(EventKind.CONNECTED, cpeer, IOStatus.OK, None)
    assert cpeer.remote == server.t.address
    assert speer.remote == client.t.socket_of(cpeer).getsockname()[:2]
    assert server.t.peers == [speer]
    assert client.t.peers == [cpeer]


def test_connect_to_a_closed_port_closes_the_peer_with_connect_failed(ew, raw):
    port = unused_port()
    client = raw("127.0.0.1", port)
    peer = client.t.connect()
    ew.run_until(lambda: client.of_kind(EventKind.CLOSED), timeout=5)
    turns(ew)
    (closed,) = client.events  # no CONNECTED, exactly one CLOSED
    assert (closed.kind, closed.peer, closed.status) == (EventKind.CLOSED, peer, IOStatus.ERROR)
    assert isinstance(closed.error, ConnectFailedError)
    assert isinstance(closed.error, ConnectionBrokenError)
    assert closed.error.errno == errno.ECONNREFUSED
    assert closed.error.peer == peer
    assert f"127.0.0.1:{port}" in str(closed.error)
    assert "ECONNREFUSED" in str(closed.error)
    assert client.t.peers == []


def test_write_before_the_connect_finishes_would_block_then_writable_follows(ew, raw):
    server = raw()
    client = raw(*server.t.bind())
    peer = client.t.connect()
    assert client.t.resume_write(b"early", peer) == WriteResult(0, IOStatus.WOULD_BLOCK)
    assert client.t.resume_read(peer).status is IOStatus.WOULD_BLOCK
    assert client.t.counters(peer).recv_calls == 0  # nothing to read yet: no recv made
    ew.run_until(lambda: client.of_kind(EventKind.WRITABLE, peer), timeout=5)
    kinds = [e.kind for e in client.events]
    assert kinds.index(EventKind.CONNECTED) < kinds.index(EventKind.WRITABLE)
    assert client.t.resume_write(b"early", peer) == WriteResult(5, IOStatus.OK)
    client.t.suspend_write(peer)
    ew.run_until(lambda: bytes(server.data[server.accepted()[0]]) == b"early", timeout=5)


def test_suspend_write_before_the_connect_finishes_means_no_writable_after_it(ew, raw):
    """You offered bytes while connecting, then changed your mind: the transport
    must not wake you with WRITABLE once the connect is done."""
    server = raw()
    client = raw(*server.t.bind())
    peer = client.t.connect()
    assert client.t.resume_write(b"early", peer).status is IOStatus.WOULD_BLOCK
    client.t.suspend_write(peer)
    ew.run_until(lambda: client.of_kind(EventKind.CONNECTED, peer), timeout=5)
    turns(ew, 5)
    assert client.of_kind(EventKind.WRITABLE, peer) == []


# ----------------------------------------------------------------- bytes
def test_bytes_flow_both_ways(ew, raw):
    server, client, speer, cpeer = connected_pair(ew, raw)
    assert client.t.resume_write(b"ping", cpeer) == WriteResult(4, IOStatus.OK)
    ew.run_until(lambda: server.data[speer] == b"ping", timeout=5)
    assert server.t.resume_write(bytearray(b"pong!"), speer) == WriteResult(5, IOStatus.OK)
    ew.run_until(lambda: client.data[cpeer] == b"pong!", timeout=5)
    c, s = client.t.counters(cpeer), server.t.counters(speer)
    assert (c.bytes_sent, c.bytes_received) == (4, 5)
    assert (s.bytes_sent, s.bytes_received) == (5, 4)
    assert c.frames_sent == c.frames_received == 0  # a raw transport has no frames


def test_sendmsg_sends_a_list_of_buffers_in_one_call(ew, raw):
    server, client, speer, cpeer = connected_pair(ew, raw)
    before = client.t.counters(cpeer).send_calls
    parts = [b"ab", bytearray(b"cd"), memoryview(b"xefx")[1:3], b""]
    assert client.t.resume_write(parts, cpeer) == WriteResult(6, IOStatus.OK)
    assert client.t.counters(cpeer).send_calls == before + 1
    ew.run_until(lambda: server.data[speer] == b"abcdef", timeout=5)


def test_a_list_that_starts_with_iov_max_empty_parts_still_moves_its_bytes(ew, raw):
    """Of a list longer than IOV_MAX only the first IOV_MAX parts are offered; empty
    parts must not use up those slots, or the write moves nothing, answers
    WOULD_BLOCK on a socket with room, and an owner that offers the rest again
    offers the same list for ever."""
    from barknet.interfaces import IOV_MAX

    server, client, speer, cpeer = connected_pair(ew, raw)
    parts = [b""] * IOV_MAX + [b"!"]
    assert client.t.resume_write(parts, cpeer) == WriteResult(1, IOStatus.OK)
    ew.run_until(lambda: server.data[speer] == b"!", timeout=5)


def test_writing_nothing_makes_no_system_call(ew, raw):
    _, client, _, cpeer = connected_pair(ew, raw)
    assert client.t.resume_write(b"", cpeer) == WriteResult(0, IOStatus.OK)
    assert client.t.resume_write([b"", b""], cpeer) == WriteResult(0, IOStatus.OK)
    assert client.t.counters(cpeer).send_calls == 0


def test_resume_read_into_the_callers_buffer(ew, raw):
    server, client, speer, cpeer = connected_pair(ew, raw, auto_read_server=False)
    client.t.resume_write(b"0123456789", cpeer)
    ew.run_until(lambda: server.of_kind(EventKind.READABLE, speer), timeout=5)
    buffer = bytearray(16)
    r = server.t.resume_read(speer, buffer, offset=2, max_len=4)
    assert r.status is IOStatus.OK
    assert bytes(r.data) == b"0123"
    assert r.data.obj is buffer  # a view of the caller's memory
    assert buffer[:8] == b"\0\x000123\0\0"
    r = server.t.resume_read(speer, buffer, offset=6)
    assert bytes(r.data) == b"456789"
    assert server.t.counters(speer).short_recvs == 1  # asked 10 bytes, got 6
    with pytest.raises(ValueError, match="no room"):
        server.t.resume_read(speer, buffer, offset=16)


def test_a_short_read_is_any_read_of_fewer_bytes_than_asked(ew, raw):
    server, client, speer, cpeer = connected_pair(ew, raw, auto_read_server=False)
    got: list[bytes] = []

    def read_ten() -> bool:
        result = server.t.resume_read(speer, max_len=10)
        got.append(bytes(result.data))
        return result.status is IOStatus.OK

    for sent, short in ((b"x" * 9, 1), (b"y" * 10, 1)):  # one byte short, then all of it
        client.t.resume_write(sent, cpeer)
        ew.run_until(read_ten, timeout=5)
        assert got[-1] == sent
        assert server.t.counters(speer).short_recvs == short


def test_after_both_directions_end_reads_answer_eof_until_closed(ew, raw):
    server, client, speer, cpeer = connected_pair(ew, raw)
    client.t.write_eof(cpeer)
    ew.run_until(lambda: IOStatus.EOF in server.statuses[speer], timeout=5)
    server.t.write_eof(speer)  # both directions are over: CLOSED(EOF) is on its way
    assert server.t.resume_read(speer).status is IOStatus.EOF
    ew.run_until(lambda: server.of_kind(EventKind.CLOSED, speer), timeout=5)
    assert [e.status for e in server.of_kind(EventKind.CLOSED, speer)] == [IOStatus.EOF]


def test_tcp_nodelay_is_on_for_accepted_and_connected_sockets_unless_asked_off(ew, raw):
    server, client, speer, cpeer = connected_pair(ew, raw)
    for transport, peer in ((server.t, speer), (client.t, cpeer)):
        sock = transport.socket_of(peer)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    quiet = raw(*server.t.address, nodelay=False)
    peer = quiet.t.connect()
    ew.run_until(lambda: quiet.of_kind(EventKind.CONNECTED), timeout=5)
    assert quiet.t.socket_of(peer).getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0


def test_would_block_is_a_status_and_counted(ew, raw):
    server, _, speer, _ = connected_pair(ew, raw)
    assert server.t.counters(speer).recv_eagain == 0
    assert server.t.resume_read(speer) == ReadResult(b"", IOStatus.WOULD_BLOCK, None)
    assert server.t.resume_read(speer).status is IOStatus.WOULD_BLOCK
    counters = server.t.counters(speer)
    assert counters.recv_eagain == 2
    assert counters.recv_calls == 2


def test_eof_when_the_peer_closes_and_read_interest_is_dropped(ew, raw):
    server, client, speer, cpeer = connected_pair(ew, raw)
    client.t.resume_write(b"last words", cpeer)
    client.t.close(cpeer)
    ew.run_until(lambda: IOStatus.EOF in server.statuses[speer], timeout=5)
    assert server.data[speer] == b"last words"
    readable = len(server.of_kind(EventKind.READABLE, speer))
    turns(ew, 5)
    # No READABLE storm: after EOF the transport stopped watching the socket.
    assert len(server.of_kind(EventKind.READABLE, speer)) == readable
    calls = server.t.counters(speer).recv_calls
    assert server.t.resume_read(speer).status is IOStatus.EOF  # and EOF stays EOF,
    assert server.t.counters(speer).recv_calls == calls  # told without another recv
    turns(ew, 5)
    assert len(server.of_kind(EventKind.READABLE, speer)) == readable  # nor a new watch
    assert speer in server.t.peers  # half-closed: we may still write
    assert server.of_kind(EventKind.CLOSED, speer) == []
    server.t.close(speer)
    ew.run_until(lambda: server.of_kind(EventKind.CLOSED, speer), timeout=5)
    assert server.of_kind(EventKind.CLOSED, speer)[0].status is IOStatus.OK


# --------------------------------------------------------------- breakage
def test_reset_by_peer_on_read_gives_error_status_and_one_closed_event(ew, raw):
    server, client, speer, cpeer = connected_pair(ew, raw, auto_read=False)
    reset(server.t.socket_of(speer))
    server.t.abort(speer)  # close(peer) would linger: abort resets
    ew.run_until(lambda: client.of_kind(EventKind.READABLE, cpeer), timeout=5)
    r = client.t.resume_read(cpeer)
    assert r.status is IOStatus.ERROR
    assert isinstance(r.error, ConnectionBrokenError)
    assert r.error.errno == errno.ECONNRESET
    assert isinstance(r.error.__cause__, OSError)
    assert r.error.__cause__.errno == errno.ECONNRESET
    assert r.error.peer == cpeer
    assert "ECONNRESET" in str(r.error)
    ew.run_until(lambda: client.of_kind(EventKind.CLOSED, cpeer), timeout=5)
    turns(ew)
    (closed,) = client.of_kind(EventKind.CLOSED)
    assert closed == IOEvent(EventKind.CLOSED, cpeer, IOStatus.ERROR, r.error)
    with pytest.raises(TransportClosedError):
        client.t.resume_read(cpeer)


def test_reset_by_peer_on_write_gives_error_status_and_one_closed_event(ew, raw):
    server, client, speer, cpeer = connected_pair(ew, raw, auto_read=False)
    reset(server.t.socket_of(speer))
    server.t.abort(speer)  # close(peer) would linger: abort resets
    ew.run_until(lambda: client.of_kind(EventKind.READABLE, cpeer), timeout=5)
    w = client.t.resume_write(b"anyone there?", cpeer)
    assert w.status is IOStatus.ERROR
    assert w.sent == 0
    assert isinstance(w.error, ConnectionBrokenError)
    assert isinstance(w.error.__cause__, OSError)
    assert w.error.errno in (errno.ECONNRESET, errno.EPIPE)
    ew.run_until(lambda: client.of_kind(EventKind.CLOSED, cpeer), timeout=5)
    turns(ew)
    (closed,) = client.of_kind(EventKind.CLOSED)
    assert (closed.status, closed.error) == (IOStatus.ERROR, w.error)


def test_calls_on_a_broken_peer_answer_its_error_until_closed_then_raise(ew, raw):
    """Between the error and its CLOSED, the owner may still be handling the
    peer: its calls get the error as a status (as on every layer), not an
    exception; once CLOSED came the peer is unknown, and they raise."""
    server, client, speer, cpeer = connected_pair(ew, raw, auto_read=False)
    reset(server.t.socket_of(speer))
    server.t.abort(speer)
    ew.run_until(lambda: client.of_kind(EventKind.READABLE, cpeer), timeout=5)
    first = client.t.resume_read(cpeer)
    assert first.status is IOStatus.ERROR
    assert client.of_kind(EventKind.CLOSED, cpeer) == []  # it comes on the next turn
    again = client.t.resume_read(cpeer)
    assert (again.status, again.error) == (IOStatus.ERROR, first.error)
    write = client.t.resume_write(b"x", cpeer)
    assert (write.status, write.sent, write.error) == (IOStatus.ERROR, 0, first.error)
    client.t.suspend_read(cpeer)  # quiet: nothing is watched for it any more
    client.t.suspend_write(cpeer)
    client.t.write_eof(cpeer)
    client.t.close(cpeer)
    ew.run_until(lambda: client.of_kind(EventKind.CLOSED, cpeer), timeout=5)
    turns(ew)
    assert client.of_kind(EventKind.CLOSED, cpeer) == [
        IOEvent(EventKind.CLOSED, cpeer, IOStatus.ERROR, first.error)
    ]
    for call in (client.t.resume_read, client.t.suspend_read, client.t.write_eof):
        with pytest.raises(TransportClosedError):
            call(cpeer)
    with pytest.raises(TransportClosedError):
        client.t.resume_write(b"x", cpeer)


@pytest.mark.parametrize("ending", ["close", "abort"])
def test_closing_a_broken_peer_before_its_closed_makes_its_calls_raise(ew, raw, ending):
    server, client, speer, cpeer = connected_pair(ew, raw, auto_read=False)
    reset(server.t.socket_of(speer))
    server.t.abort(speer)
    ew.run_until(lambda: client.of_kind(EventKind.READABLE, cpeer), timeout=5)
    assert client.t.resume_read(cpeer).status is IOStatus.ERROR
    getattr(client.t, ending)(cpeer)  # yours no more, broken or not (as on every layer)
    with pytest.raises(TransportClosedError):
        client.t.resume_read(cpeer)


def test_using_a_peer_you_closed_raises_transport_closed(ew, raw):
    server, client, speer, cpeer = connected_pair(ew, raw)
    client.t.close(cpeer)
    client.t.close(cpeer)  # idempotent
    with pytest.raises(TransportClosedError) as info:
        client.t.resume_write(b"x", cpeer)
    assert info.value.peer == cpeer
    with pytest.raises(TransportClosedError):
        client.t.resume_read(cpeer)
    with pytest.raises(TransportClosedError):
        client.t.suspend_write(cpeer)
    # close(peer) lingers until the peer ends its side too: the server does.
    ew.run_until(lambda: IOStatus.EOF in server.statuses[speer], timeout=5)
    server.t.close(speer)
    ew.run_until(lambda: client.of_kind(EventKind.CLOSED), timeout=5)
    turns(ew)
    (closed,) = client.of_kind(EventKind.CLOSED)
    assert (closed.peer, closed.status, closed.error) == (cpeer, IOStatus.OK, None)


def test_close_is_idempotent_emits_one_closed_per_peer_and_frees_every_fd(ew, raw, fds):
    before = fds()
    server = raw()
    client = raw(*server.t.bind())
    cpeers = [client.t.connect() for _ in range(3)]
    ew.run_until(
        lambda: len(server.accepted()) == 3 and len(client.of_kind(EventKind.CONNECTED)) == 3,
        timeout=5,
    )
    assert len(fds() - before) == 7  # a listener and 3 connections of two ends
    server.t.close()
    client.t.close()
    server.t.close()
    client.t.close()
    turns(ew)
    for endpoint, peers in ((server, server.accepted()), (client, cpeers)):
        closed = endpoint.of_kind(EventKind.CLOSED)
        assert sorted(e.peer.id for e in closed) == sorted(p.id for p in peers)
        assert {(e.status, e.error) for e in closed} == {(IOStatus.OK, None)}
    assert fds() - before == set()
    assert repr(server.t).startswith("<TcpTransport closed")
    with pytest.raises(TransportClosedError):
        client.t.connect()
    with pytest.raises(TransportClosedError):
        server.t.bind()


def test_totals_keep_the_counts_of_closed_peers(ew, raw):
    server, client, speer, cpeer = connected_pair(ew, raw)
    client.t.resume_write(b"12345", cpeer)
    ew.run_until(lambda: len(server.data[speer]) == 5, timeout=5)
    client.t.close(cpeer)
    assert client.t.counters().bytes_sent == 5


# ------------------------------------------------------------ partial writes
def test_small_sndbuf_makes_writes_short_and_writable_repeats_until_suspended(ew, raw):
    server, client, speer, cpeer = connected_pair(ew, raw, sndbuf=4096, server_kw={"rcvbuf": 4096})
    payload = random.Random(1).randbytes(1024 * 1024)
    w = client.t.resume_write(payload, cpeer)
    assert w.status is IOStatus.WOULD_BLOCK
    assert 0 < w.sent < len(payload)
    assert client.t.counters(cpeer).short_sends == 1
    # The server drains what arrived; the socket becomes writable and WRITABLE
    # is replayed turn after turn while we do nothing about it.
    ew.run_until(lambda: len(server.data[speer]) == w.sent, timeout=5)
    ew.run_until(lambda: len(client.of_kind(EventKind.WRITABLE, cpeer)) >= 3, timeout=5)
    client.t.suspend_write(cpeer)
    writable = len(client.of_kind(EventKind.WRITABLE, cpeer))
    turns(ew)
    assert len(client.of_kind(EventKind.WRITABLE, cpeer)) == writable


def test_owner_finishes_a_large_write_by_offering_the_rest_on_writable(ew, raw):
    server, client, speer, cpeer = connected_pair(ew, raw, sndbuf=4096, server_kw={"rcvbuf": 4096})
    payload = memoryview(random.Random(2).randbytes(2 * 1024 * 1024))
    sent = 0

    def write_more(event: IOEvent) -> None:
        nonlocal sent
        if event.kind is EventKind.WRITABLE:
            w = client.t.resume_write(payload[sent:], cpeer)
            sent += w.sent
            if sent == len(payload):
                client.t.suspend_write(cpeer)

    client.on_event = write_more
    sent = client.t.resume_write(payload, cpeer).sent
    ew.run_until(lambda: len(server.data[speer]) == len(payload), timeout=10)
    assert server.data[speer] == payload
    counters = client.t.counters(cpeer)
    assert counters.short_sends > 1
    assert counters.bytes_sent == len(payload)
    assert server.t.counters(speer).bytes_received == len(payload)


# ------------------------------------------------------------ a fake socket
class StingySocket(WrappedSocket):
    """Wraps one end of a real socket pair (so the selector can watch it), but
    sends at most 2 bytes per call, receives at most 3, and says EAGAIN on the
    receive calls its schedule marks True."""

    def __init__(self, real: socket.socket, eagain_schedule: list[bool]) -> None:
        super().__init__(real)
        self._eagain = itertools.cycle(eagain_schedule)

    def send(self, data: bytes, flags: int = 0) -> int:
        return self.real.send(memoryview(data)[:2], flags)

    def sendmsg(self, buffers: list[bytes], ancdata: object = (), flags: int = 0) -> int:
        head = b"".join(bytes(b) for b in buffers)[:2]
        return self.real.send(head, flags)

    def recv(self, size: int) -> bytes:
        if next(self._eagain):
            raise BlockingIOError(errno.EAGAIN, "fake EAGAIN")
        return self.real.recv(min(size, 3))

    def recv_into(self, buffer: memoryview, nbytes: int = 0) -> int:
        if next(self._eagain):
            raise BlockingIOError(errno.EAGAIN, "fake EAGAIN")
        return self.real.recv_into(memoryview(buffer)[:3])


@pytest.fixture
def socket_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    try:
        yield a, b
    finally:
        a.close()  # harmless if a transport closed it already
        b.close()


def test_fake_socket_short_sends_and_eagain_become_statuses_and_counts(ew, raw, socket_pair):
    a, b = socket_pair
    t = raw(auto_read=False).t
    peer = t.adopt(StingySocket(a, [True, False]))
    assert peer.remote is None  # a Unix socket pair has no (host, port)

    assert t.resume_write(b"hello", peer) == WriteResult(2, IOStatus.WOULD_BLOCK)
    assert t.resume_write([b"l", b"lo"], peer) == WriteResult(2, IOStatus.WOULD_BLOCK)
    assert b.recv(100) == b"hell"
    t.suspend_write(peer)

    b.send(b"abcdef")
    assert t.resume_read(peer) == ReadResult(b"", IOStatus.WOULD_BLOCK, None)
    assert t.resume_read(peer) == ReadResult(b"abc", IOStatus.OK, None)
    assert t.resume_read(peer).status is IOStatus.WOULD_BLOCK
    assert t.resume_read(peer) == ReadResult(b"def", IOStatus.OK, None)

    c = t.counters(peer)
    assert (c.send_calls, c.short_sends, c.bytes_sent) == (2, 2, 4)
    assert (c.recv_calls, c.recv_eagain, c.short_recvs, c.bytes_received) == (4, 2, 2, 6)


def test_framed_transport_over_a_stingy_fake_socket_delivers_whole_frames_in_order(
    ew, framed_endpoint, socket_pair
):
    a, b = socket_pair
    left = framed_endpoint(FramedTransport(TcpTransport()))
    right = framed_endpoint(FramedTransport(TcpTransport()), echo=True)
    lpeer = left.transport.adopt(StingySocket(a, [False, True, False, False, True]))
    rpeer = right.transport.adopt(b)
    rng = random.Random(3)
    frames = [rng.randbytes(rng.choice([0, 1, 5, 40, 300])) for _ in range(40)]
    for frame in frames:
        left.transport.resume_write(frame, lpeer)
    ew.run_until(lambda: len(left.frames[lpeer]) == len(frames), timeout=20)
    assert right.frames[rpeer] == frames
    assert left.frames[lpeer] == frames
    counters = left.transport.counters(lpeer)
    assert counters.short_sends > 0
    assert counters.recv_eagain > 0
    assert counters.short_recvs > 0
    assert counters.frames_sent == counters.frames_received == len(frames)


def test_a_list_longer_than_iov_max_is_a_short_write_and_the_rest_goes_on_writable(
    ew, socket_pair
):
    """One sendmsg takes at most IOV_MAX buffers: the answer for a longer list must
    say the rest did not leave (WOULD_BLOCK, WRITABLE later), never a silent OK."""
    from barknet.interfaces import IOV_MAX

    a, b = socket_pair
    events: list[IOEvent] = []
    t = TcpTransport()
    t.attach(ew, events.append)
    try:
        peer = t.adopt(a)
        pieces = [b"%05d," % i for i in range(IOV_MAX + 500)]
        result = t.resume_write(pieces, peer)
        assert result == WriteResult(6 * IOV_MAX, IOStatus.WOULD_BLOCK)
        ew.run_until(lambda: any(e.kind is EventKind.WRITABLE for e in events), timeout=5)
        assert t.resume_write(pieces[IOV_MAX:], peer).status is IOStatus.OK
        t.suspend_write(peer)
        got = bytearray()
        while len(got) < 6 * len(pieces):
            got += b.recv(65536)
        assert bytes(got) == b"".join(pieces)
    finally:
        t.close()
        ew.run_once(0)
