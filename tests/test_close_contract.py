"""Ending a conversation, unit by unit: the lingering close's verdicts, half-close
in FramedTransport, and the accept loop's errors (bounded, nothing leaked).

The end-to-end scenarios (4 MiB reply then close while the peer keeps sending,
half-close both ways) are contract checks in barknet.testing.contract, run against
every stack by tests/test_contract.py.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import ssl
import struct
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from barknet import (
    ConnectionBrokenError,
    EventKind,
    FramedTransport,
    IOEvent,
    IOStatus,
    LingerTimeoutError,
    TcpTransport,
    TransportClosedError,
    TruncatedFrameError,
    WriteResult,
    encode_frame,
)
from barknet.tcp import ACCEPT_ERRORS_KEPT

pytestmark = pytest.mark.usefixtures("no_leaks")


def drain(sock: socket.socket) -> tuple[bytes, bool]:
    """Everything ``sock`` can read now, and whether it read EOF."""
    got = bytearray()
    while True:
        try:
            chunk = sock.recv(65536)
        except BlockingIOError:
            return bytes(got), False
        if not chunk:
            return bytes(got), True
        got += chunk


@pytest.fixture
def tcp_pair(ew) -> Iterator[tuple[TcpTransport, list[IOEvent], socket.socket, socket.socket]]:
    """A TcpTransport (linger_timeout 0.2 s) that accepted one real TCP connection,
    its events, the accepted-side socket, and the plain client socket."""
    events: list[IOEvent] = []
    tcp = TcpTransport(linger_timeout=0.2)
    tcp.attach(ew, events.append)
    client = socket.create_connection(tcp.bind())
    client.setblocking(False)
    try:
        ew.run_until(lambda: any(e.kind is EventKind.ACCEPTED for e in events), timeout=5)
        yield tcp, events, tcp.socket_of(events[0].peer), client
    finally:
        tcp.close()
        client.close()


#: FramedTransport options for the tests where 64 bytes of frames fill the scratch
#: exactly, so that the read after them finds the peer's EOF (with both half_close).
SCRATCH_OF_64_BYTES = [
    {"half_close": False, "buffer_size": 64},
    {"half_close": True, "buffer_size": 64},
]


def closed_events(events: list[IOEvent]) -> list[IOEvent]:
    return [e for e in events if e.kind is EventKind.CLOSED]


# ----------------------------------------------------------- lingering close
def test_close_waits_for_the_peers_eof_and_reports_ok(ew, tcp_pair):
    tcp, events, _, client = tcp_pair
    peer = events[0].peer
    tcp.resume_write(b"last words", peer)
    tcp.close(peer)
    assert tcp.peers == []  # yours no more, though still lingering
    with pytest.raises(TransportClosedError):
        tcp.resume_write(b"more", peer)
    client.send(b"a pipelined request we will never read")
    for _ in range(5):
        ew.run_once(0.01)
    assert closed_events(events) == []  # still waiting for the peer's EOF
    ew.run_until(lambda: drain(client)[1] or True, timeout=5)
    client.shutdown(socket.SHUT_WR)
    ew.run_until(lambda: closed_events(events), timeout=5)
    assert closed_events(events) == [IOEvent(EventKind.CLOSED, peer, IOStatus.OK)]


def test_bytes_read_and_dropped_while_lingering_are_counted(ew, tcp_pair):
    """counters() say what crossed the wire: what a closed peer still sends is
    read (and dropped) by the lingering close, so it counts like any read."""
    tcp, events, _, client = tcp_pair
    peer = events[0].peer
    client.send(b"a" * 1000)
    got = bytearray()

    def read_it() -> bool:
        got.extend(tcp.resume_read(peer).data)
        return len(got) == 1000

    ew.run_until(read_it, timeout=5)
    tcp.close(peer)
    client.setblocking(True)
    client.sendall(b"b" * 50_000)
    client.shutdown(socket.SHUT_WR)
    ew.run_until(lambda: closed_events(events), timeout=5)
    assert closed_events(events)[0].status is IOStatus.OK
    assert tcp.counters().bytes_received == 51_000


def test_a_peer_that_never_ends_its_side_gives_a_linger_timeout_error(ew, tcp_pair):
    tcp, events, _, client = tcp_pair
    peer = events[0].peer
    tcp.close(peer)
    client.send(b"x" * 1000)  # keeps talking, never sends EOF
    ew.run_until(lambda: closed_events(events), timeout=5)
    (closed,) = closed_events(events)
    assert closed.status is IOStatus.ERROR
    assert isinstance(closed.error, LingerTimeoutError)
    assert closed.error.discarded == 1000
    assert closed.error.timeout == 0.2


def test_suspending_every_peer_does_not_stop_a_lingering_close(ew, tcp_pair):
    """suspend_read() with no argument is about the peers still yours: a peer
    lingering after close(peer) is still read and discarded until its EOF."""
    tcp, events, _, client = tcp_pair
    peer = events[0].peer
    tcp.close(peer)
    tcp.suspend_read()
    client.send(b"x" * 1000)
    client.shutdown(socket.SHUT_WR)
    ew.run_until(lambda: closed_events(events), timeout=5)
    assert [(e.status, e.error) for e in closed_events(events)] == [(IOStatus.OK, None)]


def test_a_reset_while_lingering_gives_connection_broken(ew, tcp_pair):
    tcp, events, _, client = tcp_pair
    peer = events[0].peer
    tcp.close(peer)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()  # a reset
    ew.run_until(lambda: closed_events(events), timeout=5)
    (closed,) = closed_events(events)
    assert closed.status is IOStatus.ERROR
    assert isinstance(closed.error, ConnectionBrokenError)
    assert not isinstance(closed.error, LingerTimeoutError)
    assert closed.error.errno == errno.ECONNRESET


def test_write_eof_then_the_peers_eof_closes_with_eof(ew, tcp_pair):
    tcp, events, _, client = tcp_pair
    peer = events[0].peer
    tcp.write_eof(peer)
    tcp.write_eof(peer)  # harmless
    with pytest.raises(TransportClosedError, match="write_eof"):
        tcp.resume_write(b"x", peer)
    ew.run_until(lambda: drain(client)[1], timeout=5)  # the client reads our EOF
    client.send(b"still talking")
    ew.run_until(lambda: tcp.resume_read(peer).status is IOStatus.OK, timeout=5)
    assert closed_events(events) == []  # our EOF alone closes nothing
    client.shutdown(socket.SHUT_WR)
    ew.run_until(lambda: tcp.resume_read(peer).status is IOStatus.EOF, timeout=5)
    ew.run_until(lambda: closed_events(events), timeout=5)
    assert closed_events(events) == [IOEvent(EventKind.CLOSED, peer, IOStatus.EOF)]


def test_write_eof_after_the_peer_reset_still_lets_you_read_what_it_sent(ew, tcp_pair):
    """A peer that sent its request and closed its socket answers our next bytes
    with a reset; shutdown() then fails (ENOTCONN). The request is still in the
    kernel and readable (then the peer's EOF): the failed shutdown must not
    throw it away, as dropping the socket would."""
    tcp, events, _, client = tcp_pair
    peer = events[0].peer
    tcp.suspend_read(peer)  # (we read later, as a server busy elsewhere would)
    client.setblocking(True)
    client.sendall(b"request " * 100)
    client.close()  # the whole socket: our next bytes get a reset
    ew.run_once(0.05)
    assert tcp.resume_write(b"reply", peer).status is IOStatus.OK
    ew.run_once(0.05)  # the reset arrives
    tcp.write_eof(peer)
    got = bytearray()
    statuses: list[IOStatus] = []

    def read() -> bool:
        result = tcp.resume_read(peer)
        got.extend(result.data)
        statuses.append(result.status)
        return result.status is not IOStatus.OK and result.status is not IOStatus.WOULD_BLOCK

    ew.run_until(read, timeout=5)
    assert bytes(got) == b"request " * 100
    assert statuses[-1] is IOStatus.EOF
    ew.run_until(lambda: closed_events(events), timeout=5)
    assert closed_events(events) == [IOEvent(EventKind.CLOSED, peer, IOStatus.EOF)]


# -------------------------------------------------------- FramedTransport ends
@pytest.fixture
def framed_pair(ew, framed_endpoint, request) -> Iterator[tuple[object, object, socket.socket]]:
    """A FramedTransport (options from the test's parameter) over one end of a
    socket pair; the test drives the other end by hand."""
    a, b = socket.socketpair()
    b.setblocking(False)
    try:
        options = getattr(request, "param", {})
        auto_read = options.pop("auto_read", True)
        endpoint = framed_endpoint(FramedTransport(TcpTransport(), **options), take=auto_read)
        peer = endpoint.transport.adopt(a)
        yield endpoint, peer, b
    finally:
        with contextlib.suppress(OSError):
            ew.unwatch(b.fileno())
        a.close()
        b.close()


@pytest.mark.parametrize("framed_pair", [{"half_close": True}], indirect=True)
def test_half_close_true_keeps_the_peer_open_for_our_writes(ew, framed_pair):
    endpoint, peer, other = framed_pair
    t = endpoint.transport
    statuses: list[IOStatus] = []
    endpoint.on_event = lambda e: (
        statuses.append(t.resume_read(peer).status) if e.kind is EventKind.READABLE else None
    )
    other.send(encode_frame(b"question"))
    other.shutdown(socket.SHUT_WR)
    ew.run_until(lambda: IOStatus.EOF in statuses, timeout=5)
    assert endpoint.frames[peer] == [b"question"]
    for _ in range(5):
        ew.run_once(0.01)
    assert endpoint.closed(peer) == []  # still open: we may answer
    t.resume_write(b"answer", peer)
    t.write_eof(peer)
    ew.run_until(lambda: endpoint.closed(peer), timeout=5)
    assert endpoint.closed(peer) == [IOEvent(EventKind.CLOSED, peer, IOStatus.EOF)]
    assert drain(other) == (encode_frame(b"answer"), True)


def test_half_close_false_closes_once_the_peers_eof_is_read(ew, framed_pair):
    endpoint, peer, other = framed_pair
    assert endpoint.transport.half_close is False
    other.send(encode_frame(b"bye"))
    other.shutdown(socket.SHUT_WR)
    ew.run_until(lambda: endpoint.closed(peer), timeout=5)
    assert endpoint.closed(peer) == [IOEvent(EventKind.CLOSED, peer, IOStatus.EOF)]


def test_write_eof_goes_out_after_every_queued_frame(ew, framed_pair):
    endpoint, peer, other = framed_pair
    t = endpoint.transport
    big = bytes(1024 * 1024)  # more than the socket pair holds: it queues
    t.resume_write(big, peer)
    t.resume_write(b"tail", peer)
    t.write_eof(peer)
    with pytest.raises(TransportClosedError, match="write_eof"):
        t.resume_write(b"late", peer)
    got = bytearray()
    eof: list[bool] = []

    def read_other() -> None:
        data, ended = drain(other)
        got.extend(data)
        if ended:
            eof.append(True)
            ew.unwatch(other.fileno())

    ew.watch_read(other.fileno(), read_other)
    ew.run_until(lambda: eof, timeout=5)
    assert bytes(got) == encode_frame(big) + encode_frame(b"tail")
    assert endpoint.closed(peer) == []  # we still read: the peer has not ended


@pytest.mark.parametrize("framed_pair", [{"auto_read": False, "buffer_size": 64}], indirect=True)
def test_closed_waits_for_frames_still_unread_when_both_directions_end(ew, framed_pair):
    endpoint, peer, other = framed_pair
    t = endpoint.transport
    frames = [bytes([i]) * 12 for i in range(4)]  # 4 x 16 bytes: one full 64-byte read
    other.send(b"".join(encode_frame(f) for f in frames))
    other.shutdown(socket.SHUT_WR)
    ew.run_until(lambda: endpoint.of_kind(EventKind.READABLE, peer), timeout=5)
    t.write_eof(peer)  # the framing layer read the EOF too: both directions ended below
    for _ in range(5):
        ew.run_once(0.01)
    assert t.inner.peers == []  # the TCP layer closed it ...
    assert endpoint.closed(peer) == []  # ... but four frames still wait for us
    assert t.counters(peer).bytes_received == 64  # (as do its counters: interfaces.py)
    assert [bytes(t.resume_read(peer).data) for _ in range(4)] == frames
    ew.run_until(lambda: endpoint.closed(peer), timeout=5)
    assert endpoint.closed(peer) == [IOEvent(EventKind.CLOSED, peer, IOStatus.EOF)]


# ---------------------------------------------------------------- accepting
def test_accept_errors_stay_bounded_while_out_of_descriptors(ew, monkeypatch):
    tcp = TcpTransport()
    tcp.attach(ew, lambda event: None)
    address = tcp.bind()

    def emfile(self: socket.socket) -> object:  # only our listener accepts here
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(socket.socket, "accept", emfile)
    tcp.accept_pause = 0  # retry every turn: 500 errors in 500 turns, not 25 s
    waiting = socket.create_connection(address)  # stays in the backlog: always readable
    try:
        ew.run_until(lambda: tcp.accept_error_count >= 500, timeout=10)
    finally:
        waiting.close()
        tcp.close()
    assert len(tcp.accept_errors) == ACCEPT_ERRORS_KEPT
    assert all(e.errno == errno.EMFILE and e.__traceback__ is None for e in tcp.accept_errors)


def test_a_setsockopt_error_on_an_accepted_socket_closes_it_and_accepting_goes_on(ew, monkeypatch):
    events: list[IOEvent] = []
    tcp = TcpTransport()
    tcp.attach(ew, events.append)
    address = tcp.bind()
    real_setsockopt = socket.socket.setsockopt
    failures: list[int] = []

    def flaky(self: socket.socket, level: int, option: int, value: object) -> None:
        if option == socket.TCP_NODELAY and not failures:
            failures.append(self.fileno())
            raise OSError(errno.EINVAL, "Invalid argument")
        real_setsockopt(self, level, option, value)  # type: ignore[arg-type]

    monkeypatch.setattr(socket.socket, "setsockopt", flaky)
    first = socket.create_connection(address)
    second = socket.create_connection(address)
    try:
        ew.run_until(lambda: tcp.accept_error_count == 1 and tcp.peers, timeout=5)
        first.settimeout(5)
        assert first.recv(1) == b""  # the failed one was closed, not leaked
        assert [e.kind for e in events] == [EventKind.ACCEPTED]
        assert tcp.accept_errors[0].errno == errno.EINVAL
    finally:
        first.close()
        second.close()
        tcp.close()


def test_peers_leaves_out_a_peer_closed_while_its_frames_still_leave(ew, framed_pair):
    endpoint, peer, _ = framed_pair
    t = endpoint.transport
    t.resume_write(bytes(1024 * 1024), peer)  # more than the socket pair holds
    assert t.peers == [peer]
    t.close(peer)
    assert t.peers == []  # yours no more, though its frames are still on their way
    assert t.write_buffer_size(peer) > 0


def test_close_with_frames_waiting_after_both_sides_sent_eof_closes_at_once(stage) -> None:
    """Our write_eof went out and the peer sent frames and then its EOF, while the
    owner takes nothing: no CLOSED while the frames wait, and an owner that closes
    the peer instead of taking them gets one CLOSED(OK) at once."""
    server = stage.server(echo=False, take=False)
    raw, peer = server.raw()
    server.transport.write_eof(peer)
    raw.send(encode_frame(b"one") + encode_frame(b"two"))
    raw.half_close()
    stage.run_until(lambda: raw.poll() == b"" and raw.eof)  # our EOF reached it
    stage.turns(20)
    assert server.closed(peer) == [], "CLOSED came before the owner took its frames"
    server.transport.close(peer)
    stage.turns(3)
    assert [e.status for e in server.closed(peer)] == [IOStatus.OK]


@pytest.mark.parametrize("framed_pair", [{"linger_timeout": 0.2}], indirect=True)
def test_close_gives_up_on_a_peer_that_never_takes_the_queued_frames(ew, framed_pair):
    """close(peer) is bounded even when the queue cannot leave: after
    linger_timeout the peer is aborted and CLOSED says why."""
    endpoint, peer, other = framed_pair
    t = endpoint.transport
    t.resume_write(bytes(4 * 1024 * 1024), peer)  # far more than a socket pair holds
    other.send(b"a request we will never read")
    t.close(peer)
    ew.run_until(lambda: endpoint.closed(peer), timeout=5)
    (closed,) = endpoint.closed(peer)
    assert closed.status is IOStatus.ERROR
    assert isinstance(closed.error, LingerTimeoutError)
    assert closed.error.timeout == 0.2
    assert closed.error.discarded == len(b"a request we will never read")
    assert t.peers == []


def test_close_bounds_its_wait_by_the_inner_transports_linger_timeout(ew) -> None:
    assert FramedTransport(TcpTransport(linger_timeout=0.7)).linger_timeout == 0.7
    assert FramedTransport(TcpTransport(), linger_timeout=2).linger_timeout == 2
    assert FramedTransport(TcpTransport()).linger_timeout == TcpTransport().linger_timeout


@pytest.mark.parametrize("then_suspend_all", [False, True], ids=["close", "close, suspend_read()"])
def test_a_peer_that_writes_before_it_reads_still_gets_the_reply_after_close(
    ew, framed_pair, then_suspend_all
):
    """While close(peer) waits for the queue, what the peer sends is read and
    dropped: a peer that reads only once its own long write is done would
    otherwise be stuck behind us, and we behind it. suspend_read() with no
    argument means the peers still yours: it does not stop that reading."""
    endpoint, peer, other = framed_pair
    t = endpoint.transport
    reply = encode_frame(bytes(2 * 1024 * 1024))
    t.resume_write(reply[4:], peer)
    t.close(peer)
    if then_suspend_all:
        t.suspend_read()
    request = bytes(4 * 1024 * 1024)  # the peer's write: more than the socket pair holds
    sent = 0
    give_up = ew.time() + 4  # (under the linger timeout: stuck, the test fails, not hangs)
    while sent < len(request) and ew.time() < give_up:  # it writes all before reading
        with contextlib.suppress(BlockingIOError):
            sent += other.send(request[sent : sent + 65536])
        ew.run_once(0.001)
    assert sent == len(request), "the peer's write got stuck behind our close"
    got = bytearray()
    while not endpoint.closed(peer) and ew.time() < give_up:
        ew.run_once(0.001)
        got += drain(other)[0]
        if len(got) == len(reply):
            other.shutdown(socket.SHUT_WR)  # done: end our side, the close can finish
    got += drain(other)[0]
    assert got == reply
    assert [e.status for e in endpoint.closed(peer)] == [IOStatus.OK]


@pytest.mark.parametrize("ending", ["close", "abort"])
def test_frames_that_arrived_are_not_readable_after_close_or_abort(ew, framed_pair, ending):
    endpoint, peer, other = framed_pair
    t = endpoint.transport
    endpoint.take = False  # the owner leaves them waiting
    other.send(encode_frame(b"one") + encode_frame(b"two"))
    ew.run_until(lambda: t.snapshot(peer).frames_waiting == 2, timeout=5)
    getattr(t, ending)(peer)
    for call in (t.resume_read, t.read_frames, t.suspend_read, t.suspend_write):
        with pytest.raises(TransportClosedError):
            call(peer)


@pytest.mark.parametrize("ending", ["close", "abort", "close()", "take them all, then close"])
@pytest.mark.parametrize("framed_pair", SCRATCH_OF_64_BYTES, indirect=True)
def test_closing_a_peer_already_gone_below_reports_closed_ok_on_a_later_turn(
    ew, framed_pair, ending
):
    """Both directions ended below while frames wait for the owner; the owner
    closes instead of taking them. CLOSED(OK), since you closed it, and never
    from inside your own call."""
    endpoint, peer, other = framed_pair
    t = endpoint.transport
    endpoint.take = False
    t.write_eof(peer)
    other.send(encode_frame(b"abcd") * 8)  # 64 bytes
    other.shutdown(socket.SHUT_WR)
    ew.run_until(lambda: t.snapshot(peer).frames_waiting == 8 and drain(other)[1], timeout=5)
    for _ in range(5):
        ew.run_once(0.005)  # the inner transport closes the peer: both ends are over
    assert t.inner.peers == [], "not the case under test: the peer is still open below"
    assert endpoint.closed(peer) == []
    if ending == "take them all, then close":
        assert len(t.read_frames(peer)) == 8  # the last one taken: the end is news now
        t.close(peer)
    elif ending == "close()":
        t.close()  # every peer at once, this one included
    else:
        getattr(t, ending)(peer)
    assert endpoint.closed(peer) == [], f"CLOSED came from inside {ending}"
    assert peer not in t.peers  # yours no more, at once
    ew.run_once(0)
    assert [(e.status, e.error) for e in endpoint.closed(peer)] == [(IOStatus.OK, None)]


@pytest.mark.parametrize("then_write_eof", [False, True])
def test_with_half_close_off_the_peer_stays_yours_until_the_queue_after_its_eof_drained(
    ew, framed_pair, then_write_eof: bool
):
    """README: FramedTransport(half_close=False) "closes once you took the frames and
    its queue drained". Until the queue drained the peer is still yours: a frame you
    write then joins the queue and arrives (TransportClosedError means *you* closed
    it), and it is still among ``peers``. Then CLOSED(EOF)."""
    endpoint, peer, other = framed_pair
    t = endpoint.transport
    big = b"r" * 4_000_000
    later: list[object] = []

    def write_later() -> None:
        later.append(t.resume_write(b"later", peer))
        later.append(peer in t.peers)
        if then_write_eof:  # accepted too: the close that follows the queue ends our side
            t.write_eof(peer)
            t.write_eof(peer)  # again: harmless, as ITransport.write_eof says
            with pytest.raises(TransportClosedError, match="you called write_eof"):
                t.resume_write(b"after write_eof", peer)

    def keep_suspending() -> None:  # every turn until its CLOSED
        if not endpoint.closed(peer):
            t.suspend_read()
            ew.call_soon(keep_suspending)

    def reply(event: IOEvent) -> None:
        if event.kind is EventKind.DRAINED:  # the close is due now: refused, and says why
            why = "you called write_eof" if then_write_eof else "ended its side"
            with pytest.raises(TransportClosedError, match=why):
                t.resume_write(b"too late", peer)
            # Refused, so no longer among the open peers; and suspend_read() for
            # every peer still yours leaves this one alone while it is closed.
            assert peer not in t.peers
            keep_suspending()
            later.append("drained")
        asked = endpoint.frames[peer] == [b"request"]
        if event.kind is EventKind.READABLE and asked and not later:
            later.append(t.resume_write(big, peer).status)  # the peer reads nothing yet
            ew.call_later(0.05, write_later)  # the peer's EOF was taken meanwhile

    endpoint.on_event = reply
    other.sendall(encode_frame(b"request"))
    other.shutdown(socket.SHUT_WR)
    ew.run_until(lambda: len(later) == 3, timeout=5)
    assert later == [IOStatus.WOULD_BLOCK, WriteResult(0, IOStatus.WOULD_BLOCK), True]
    got = bytearray()

    def read_all() -> bool:
        data, eof = drain(other)
        got.extend(data)
        return eof

    ew.run_until(read_all, timeout=10)
    assert bytes(got) == encode_frame(big) + encode_frame(b"later")
    ew.run_until(lambda: endpoint.closed(peer), timeout=5)
    assert [(e.status, e.error) for e in endpoint.closed(peer)] == [(IOStatus.EOF, None)]
    assert later[3:] == ["drained"]


@pytest.mark.parametrize("framed_pair", [{"half_close": True}], indirect=True)
def test_closing_after_reading_the_peers_eof_reports_closed_ok(ew, framed_pair):
    """The peer ended its side, you read its EOF, replied and closed: CLOSED(OK)
    (you closed it), as TcpTransport and TlsTransport say."""
    endpoint, peer, other = framed_pair
    t = endpoint.transport
    endpoint.take = False
    other.shutdown(socket.SHUT_WR)
    ew.run_until(lambda: t.resume_read(peer).status is IOStatus.EOF, timeout=5)
    t.resume_write(b"reply", peer)
    t.close(peer)
    ew.run_until(lambda: endpoint.closed(peer), timeout=5)
    assert drain(other)[0] == encode_frame(b"reply")
    assert [(e.status, e.error) for e in endpoint.closed(peer)] == [(IOStatus.OK, None)]


@pytest.mark.parametrize("turns_before_taking", [0, 5])
@pytest.mark.parametrize("framed_pair", SCRATCH_OF_64_BYTES, indirect=True)
def test_a_truncated_frame_behind_frames_and_the_peers_eof_is_reported_once_they_are_taken(
    ew, framed_pair, turns_before_taking
):
    """After our write_eof, the peer sends whole frames, 2 bytes of a header and
    its EOF. The read that finds the truncation finds the end too, and the inner
    transport lets the peer go (both directions over) while frames still wait.
    Nothing may escape the loop, and whenever the owner takes the frames, one
    CLOSED(ERROR, TruncatedFrameError) follows."""
    endpoint, peer, other = framed_pair
    t = endpoint.transport
    endpoint.take = False
    t.write_eof(peer)
    other.sendall(encode_frame(b"abcd") * 6 + encode_frame(b"0123456789") + b"\0\0")  # 64 B
    other.shutdown(socket.SHUT_WR)
    for _ in range(turns_before_taking):
        ew.run_once(0.01)
    endpoint.take = True
    ew.run_until(lambda: endpoint.closed(peer), timeout=5)
    for _ in range(5):
        ew.run_once(0.01)
    assert endpoint.frames[peer] == [b"abcd"] * 6 + [b"0123456789"]
    (closed,) = endpoint.closed(peer)
    assert closed.status is IOStatus.ERROR
    assert isinstance(closed.error, TruncatedFrameError), closed
    assert (closed.error.part, closed.error.received) == ("header", 2)


@pytest.mark.parametrize("compressed", [False, True], ids=["framed", "compressed"])
def test_closing_everything_while_coalesced_frames_wait_raises_nothing_from_the_loop(
    stage, compressed
) -> None:
    """close() with no argument lets every peer go at once: the end-of-turn flush that
    coalesce had scheduled must find nothing to do, not a closed transport below."""
    from barknet.compress import CompressedTransport

    server = stage.server(echo=False)
    transport: object = FramedTransport(TcpTransport(*server.address), coalesce=True)
    if compressed:
        transport = CompressedTransport(transport)  # type: ignore[arg-type]
    client = stage.endpoint(transport)  # type: ignore[arg-type]
    peer = client.connect()
    stage.run_until(lambda: server.accepted())
    client.transport.resume_write(b"one", peer)
    client.transport.resume_write(b"two", peer)  # waits for the end of this turn
    client.transport.close()
    stage.turns(5)  # (an exception out of the loop fails the test here)
    assert [e.status for e in client.closed(peer)] == [IOStatus.OK]
    with pytest.raises(TransportClosedError):
        client.transport.resume_write(b"three", peer)


@pytest.mark.parametrize("framed_pair", [{"high_water": 64 * 1024}], indirect=True)
def test_a_peer_you_closed_gets_no_flow_events_while_its_queue_leaves(ew, framed_pair):
    """From close(peer) on the peer is yours no more: its queue still leaves, but
    RESUME_WRITING and DRAINED are not for you (an owner that reads on
    RESUME_WRITING would be refused); CLOSED(OK) ends it."""
    endpoint, peer, other = framed_pair
    t = endpoint.transport
    t.resume_write(bytes(1024 * 1024), peer)  # past high_water: PAUSE_WRITING
    assert endpoint.of_kind(EventKind.PAUSE_WRITING)
    t.close(peer)
    mark = len(endpoint.events)
    got = bytearray()

    def drained_and_ended() -> bool:
        data, eof = drain(other)
        got.extend(data)
        if eof:
            other.shutdown(socket.SHUT_WR)  # our side ends too, so the close need not linger
        return bool(endpoint.closed(peer))

    ew.run_until(drained_and_ended, timeout=5)
    assert len(got) == 4 + 1024 * 1024
    assert [e.kind for e in endpoint.events[mark:]] == [EventKind.CLOSED]
    assert [e.status for e in endpoint.closed(peer)] == [IOStatus.OK]


@pytest.mark.parametrize("raise_on", [EventKind.DRAINED, EventKind.RESUME_WRITING])
@pytest.mark.parametrize("framed_pair", [{"high_water": 64 * 1024}], indirect=True)
def test_a_flow_callback_that_raises_does_not_stop_a_half_close_waiting_for_the_queue(
    ew, framed_pair, raise_on
):
    """write_eof waits for the queue; the owner's callback for its DRAINED (or
    RESUME_WRITING) raising once must not stop the half-close from going out."""
    endpoint, peer, other = framed_pair
    t = endpoint.transport
    raised: list[EventKind] = []

    def owner(event: IOEvent) -> None:
        if event.kind is raise_on and not raised:
            raised.append(event.kind)
            raise RuntimeError("a bug in the owner")

    endpoint.on_event = owner
    t.resume_write(bytes(1024 * 1024), peer)
    t.write_eof(peer)
    got, eof = bytearray(), False
    for _ in range(2000):
        data, eof = drain(other)
        got.extend(data)
        if eof:
            break
        with contextlib.suppress(RuntimeError):  # the owner's bug, let out once
            ew.run_once(0.005)
    assert raised == [raise_on]
    assert eof and len(got) == 4 + 1024 * 1024


@pytest.mark.parametrize("in_resume", ["close(peer)", "abort(peer)", "close()", "raise"])
@pytest.mark.parametrize("framed_pair", [{"high_water": 64 * 1024}], indirect=True)
def test_what_the_owner_does_in_resume_writing_decides_whether_drained_follows(
    ew, framed_pair, in_resume
):
    """RESUME_WRITING and the queue's end often come from one flush. An owner that
    closes the peer in RESUME_WRITING gets no DRAINED after it (only CLOSED); one
    whose callback raised still gets its DRAINED."""
    endpoint, peer, other = framed_pair
    t = endpoint.transport
    marks: list[int] = []

    def owner(event: IOEvent) -> None:
        if event.kind is EventKind.RESUME_WRITING and not marks:
            marks.append(len(endpoint.events))
            if in_resume == "raise":
                raise RuntimeError("a bug in the owner")
            if in_resume == "close()":
                t.close()
            else:
                getattr(t, in_resume[: -len("(peer)")])(peer)

    def owner_checked(event: IOEvent) -> None:
        if event.kind is EventKind.DRAINED:
            # Not called while the RESUME_WRITING exception is still on its way out:
            # one owner exception at a time, none hidden behind another.
            assert sys.exc_info()[1] is None
        owner(event)

    endpoint.on_event = owner_checked
    t.resume_write(bytes(1024 * 1024), peer)

    def done() -> bool:
        _data, eof = drain(other)
        if eof:
            other.shutdown(socket.SHUT_WR)  # so that a graceful close need not linger
        kinds = [e.kind for e in endpoint.events[marks[0] :]] if marks else []
        return EventKind.CLOSED in kinds or EventKind.DRAINED in kinds

    for _ in range(2000):
        if done():
            break
        with contextlib.suppress(RuntimeError):  # the owner's bug, let out once
            ew.run_once(0.005)
    for _ in range(5):
        ew.run_once(0.005)
    after = [e.kind for e in endpoint.events[marks[0] :]]
    if in_resume == "raise":
        assert EventKind.DRAINED in after and EventKind.CLOSED not in after, after
    else:
        assert EventKind.DRAINED not in after and after.count(EventKind.CLOSED) == 1, after


@pytest.mark.parametrize("framed_pair", [{"high_water": 64 * 1024}], indirect=True)
def test_drained_waits_for_what_the_owner_queued_from_resume_writing(ew, framed_pair):
    """RESUME_WRITING often comes from the flush that empties the queue; an owner that
    writes more from it has not drained: DRAINED comes only once that left too."""
    endpoint, peer, other = framed_pair
    t = endpoint.transport
    queued_at_drained: list[int] = []
    wrote_more: list[bool] = []

    def owner(event: IOEvent) -> None:
        if event.kind is EventKind.RESUME_WRITING and not wrote_more:
            wrote_more.append(True)
            t.resume_write(bytes(1024 * 1024), peer)  # more than the socket pair holds
        if event.kind is EventKind.DRAINED:
            queued_at_drained.append(t.write_buffer_size(peer))

    endpoint.on_event = owner
    t.resume_write(bytes(1024 * 1024), peer)
    got = 0
    for _ in range(2000):
        got += len(drain(other)[0])
        if queued_at_drained:
            break
        ew.run_once(0.005)
    assert wrote_more and queued_at_drained == [0]
    assert got + len(drain(other)[0]) == 2 * (4 + 1024 * 1024)


def test_a_failed_accept_rests_the_listener_for_accept_pause_then_tries_again(ew, monkeypatch):
    """README: "While accept fails (e.g. out of descriptors), the listener rests
    accept_pause seconds between tries". A listener with a connection waiting
    stays readable: without the rest, every turn would retry (a busy loop)."""
    tcp = TcpTransport()
    tcp.attach(ew, lambda event: None)
    address = tcp.bind()

    def emfile(self: socket.socket) -> object:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(socket.socket, "accept", emfile)
    tcp.accept_pause = 5.0  # longer than the 50 turns below take, on any machine
    waiting = socket.create_connection(address)
    try:
        ew.run_until(lambda: tcp.accept_error_count == 1, timeout=5)
        for _ in range(50):
            ew.run_once(0)
        assert tcp.accept_error_count == 1  # resting: not watched, no retry
        tcp.close()
        # And it tries again once the rest is over (a short one this time).
        tcp = TcpTransport()
        tcp.attach(ew, lambda event: None)
        waiting.close()
        waiting = socket.create_connection(tcp.bind())
        tcp.accept_pause = 0.01
        ew.run_until(lambda: tcp.accept_error_count >= 3, timeout=5)
    finally:
        waiting.close()
        tcp.close()


def test_the_defaults_the_readme_states_are_the_codes() -> None:
    """Numbers the README gives as defaults: a change to one must change the text too."""
    from barknet.tls import TlsTransport

    assert TcpTransport().linger_timeout == 5.0  # "TcpTransport(linger_timeout=5.0)"
    assert ACCEPT_ERRORS_KEPT == 8  # "keeps only the last 8 errors"
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls = TlsTransport(TcpTransport(), context)
    assert tls.handshake_timeout == 60.0  # "within handshake_timeout (60 s)"
    assert (tls.high_water, tls.low_water) == (64 * 1024, 16 * 1024)  # "64 KiB, a quarter"
    assert TlsTransport(TcpTransport(), context, high_water=1000).low_water == 250
    readme = " ".join((Path(__file__).resolve().parent.parent / "README.md").read_text().split())
    for text in (
        "`TcpTransport(linger_timeout=5.0)`",
        "keeps only the last 8 errors",
        "`handshake_timeout` (60 s)",
        "(`high_water` 64 KiB, `low_water` a quarter)",
    ):
        assert text in readme, text
