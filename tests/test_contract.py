"""The contract checks of barknet.testing.contract against every stack barknet ships.

Message stacks: FramedTransport, CompressedTransport over it, each directly over
TCP, through a ChunkingTransport and through a TracingTransport. Byte stacks (the
byte-level checks): TcpTransport, alone, chunked and traced. The half-close
checks need a framing layer that keeps a half-closed peer open
(``half_close=True``); the others run with the defaults. A check that talks to
the transport through a raw socket in plain frames (``plain_wire``) does not run
over the compressing stacks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import pytest

from barknet import EventKind, FramedTransport
from barknet.compress import CompressedTransport
from barknet.interfaces import ITransport
from barknet.testing.conformance import Check, checks_for, run_checks
from barknet.testing.contract import CONTRACT_CHECKS
from barknet.testing.faults import ChunkingTransport
from barknet.testing.queueing import QUEUEING_CHECKS
from barknet.testing.trace import TracingTransport

pytestmark = pytest.mark.usefixtures("no_leaks")

Wrap = Callable[[ITransport], ITransport]
BELOW: dict[str, Wrap] = {
    "tcp": lambda inner: inner,
    "chunked": lambda inner: ChunkingTransport(inner, max_read=1000, max_write=1500),
    "traced": lambda inner: TracingTransport(inner),
}
HALF_CLOSE = {"half-close, client first", "half-close, server first"}
CONTRACT = CONTRACT_CHECKS
#: For a transport that queues (water marks): the framing stacks, not a byte stream.
QUEUEING = QUEUEING_CHECKS


def _framed(below: Wrap, **kw: object) -> Callable[[ITransport], ITransport]:
    return lambda inner: FramedTransport(below(inner), **kw)  # type: ignore[arg-type]


def _compressed(below: Wrap, **kw: object) -> Callable[[ITransport], ITransport]:
    return lambda inner: CompressedTransport(FramedTransport(below(inner), **kw))  # type: ignore[arg-type]


CASES = []
for name, below in BELOW.items():
    for check in CONTRACT:
        kw = {"half_close": True} if check.name in HALF_CLOSE else {}
        CASES.append(pytest.param(_framed(below, **kw), check, id=f"framed-{name}-{check.name}"))
        if not check.plain_wire:  # (a raw peer's plain frames are not compressed ones)
            CASES.append(
                pytest.param(_compressed(below, **kw), check, id=f"compressed-{name}-{check.name}")
            )
        CASES.append(pytest.param(below, check, id=f"bytes-{name}-{check.name}"))
    for check in QUEUEING:
        CASES.append(pytest.param(_framed(below), check, id=f"framed-{name}-{check.name}"))


@pytest.mark.parametrize(("make", "check"), CASES)
def test_stack_keeps_the_contract(make, check: Check) -> None:
    check.run(make)


def test_every_contract_check_is_registered_and_documented() -> None:
    names = {check.name for check in CONTRACT}
    assert len(names) == 10
    assert all(check.doc for check in CONTRACT)


def test_the_queueing_level_holds_the_checks_for_a_transport_that_queues() -> None:
    assert [check.name for check in QUEUEING] == [
        "water marks and DRAINED",
        "close gives up on a queue the peer never takes",
    ]
    assert not any(check.level == "queueing" for check in checks_for(("core", "errors")))


class _NeverPauses(FramedTransport):
    """Queues without limit: PAUSE_WRITING never comes."""

    def _pause_if_full(self, send, peer):  # type: ignore[no-untyped-def]
        pass


class _ResumesEarly(FramedTransport):
    """RESUME_WRITING as soon as the queue is under high_water, not low_water
    (while it decides, its low_water is high_water's)."""

    def _on_writable(self, peer):  # type: ignore[no-untyped-def]
        kept, self.low_water = self.low_water, self.high_water
        try:
            super()._on_writable(peer)
        finally:
            self.low_water = kept


class _NeverGivesUp(FramedTransport):
    """close(peer) waits for ever on a queue the peer never takes."""

    def _linger_expired(self, peer):  # type: ignore[no-untyped-def]
        pass


class _AbortWithoutClosed(FramedTransport):
    """abort(peer) drops the peer, and its CLOSED with it."""

    def abort(self, peer):  # type: ignore[no-untyped-def]
        self._silenced = {*getattr(self, "_silenced", ()), peer}
        super().abort(peer)

    def _emit(self, event):  # type: ignore[no-untyped-def]
        if event.kind is not EventKind.CLOSED or event.peer not in getattr(self, "_silenced", ()):
            super()._emit(event)


class _CountersGoneInClosed(FramedTransport):
    """Forgets a peer's counters before its CLOSED callback runs."""

    def _emit_closed(self, event, counters):  # type: ignore[no-untyped-def]
        self._emit(event)


class _ReadableAfterEofRead(FramedTransport):
    """With half_close, READABLE every turn even once the owner read the EOF."""

    def _eof_unread(self, recv):  # type: ignore[no-untyped-def]
        return self.half_close and recv.eof and not recv.frames


@pytest.mark.parametrize(
    ("wrong", "check", "says"),
    [
        (_NeverPauses, "water marks and DRAINED", "no PAUSE_WRITING"),
        (_ResumesEarly, "water marks and DRAINED", "above low_water"),
        (
            _NeverGivesUp,
            "close gives up on a queue the peer never takes",
            "CLOSED after the linger timeout",
        ),
        (
            _AbortWithoutClosed,
            "an fd closed and reused within one turn",
            "abort(peer) was never followed by that peer's CLOSED",
        ),
        (
            _CountersGoneInClosed,
            "CLOSED tells a reset from a clean end, and counters answer in it",
            "in its CLOSED callback raised",
        ),
        (_ReadableAfterEofRead, "half-close, client first", "after the reader had read the EOF"),
    ],
    ids=lambda value: value.__name__ if isinstance(value, type) else None,
)
def test_each_check_fails_a_transport_that_breaks_its_promise(
    wrong: type, check: str, says: str
) -> None:
    report = run_checks(wrong, levels=("contract", "queueing"), names=[check], timeout=5)
    (failure,) = report.failures
    assert says in failure.message, failure.message


def test_run_checks_runs_the_contract_checks_by_level() -> None:
    report = run_checks(
        lambda inner: inner, levels=("contract",), names=["half-close, client first"]
    )
    assert [r.check.name for r in report.results] == ["half-close, client first"]
    assert report.passed, str(report)


def _close_both(ew, client: ITransport, server: ITransport) -> None:  # type: ignore[no-untyped-def]
    """Close both ends, then give their CLOSED events the turns to run in."""
    client.close()
    server.close()
    for _ in range(3):
        ew.run_once(0)


def _stack(kind: str, server_ctx, client_ctx, address=None, **tcp_options) -> ITransport:  # type: ignore[no-untyped-def]
    from barknet import TcpTransport
    from barknet.tls import TlsTransport

    tcp = TcpTransport(**tcp_options) if address is None else TcpTransport(*address, **tcp_options)
    if kind in ("tls", "framed over tls"):
        inner: ITransport = TlsTransport(tcp, server_ctx if address is None else client_ctx)
    else:
        inner = tcp
    if kind in ("framed", "framed over tls"):
        return FramedTransport(inner)
    if kind == "compressed":
        return CompressedTransport(FramedTransport(inner))
    return inner


@pytest.mark.parametrize("take_one_first", [False, True], ids=["raises", "reads one, raises"])
@pytest.mark.parametrize("kind", ["framed", "compressed", "tls", "framed over tls"])
def test_a_readable_callback_that_raises_once_does_not_stall_the_peer(
    ew, server_ctx, client_ctx, kind: str, take_one_first: bool
) -> None:
    """The loop lets an owner's exception out and may be run again (reactor.py): the
    frames still waiting must then be announced, and the peer's CLOSED must come."""
    from barknet import EventKind, IOStatus

    got: list[bytes] = []
    closed: list[object] = []
    raised = []
    server = _stack(kind, server_ctx, client_ctx)

    def owner(event):  # type: ignore[no-untyped-def]
        if event.kind is EventKind.CLOSED:
            closed.append(event.status)
        if event.kind is not EventKind.READABLE:
            return
        if not raised:
            raised.append(True)
            if take_one_first:
                got.append(bytes(server.resume_read(event.peer).data))
            raise RuntimeError("a bug in the owner")
        result = server.resume_read(event.peer)
        if result.status is IOStatus.OK:
            got.append(bytes(result.data))
        elif result.status is IOStatus.EOF:
            server.close(event.peer)  # (a byte stack leaves the close to its owner)

    server.attach(ew, owner)
    client = _stack(kind, server_ctx, client_ctx, server.bind())
    client.attach(ew, lambda event: None)
    try:
        peer = client.connect()
        for i in range(5):
            client.resume_write(b"m%d" % i, peer)

        def run_until(condition, what):  # type: ignore[no-untyped-def]
            for _ in range(2000):
                if condition():
                    return
                try:
                    ew.run_once(0.005)
                except RuntimeError as exc:
                    assert str(exc) == "a bug in the owner"
            raise AssertionError(f"no {what}; got {got}")

        want = b"m0m1m2m3m4"
        run_until(lambda: b"".join(got) == want, "frames after the exception")
        assert raised
        client.close(peer)
        run_until(lambda: closed, "CLOSED after the client closed")
    finally:
        _close_both(ew, client, server)


def _run_letting_out(ew, condition, what: str, bug: str = "a bug in the owner") -> int:  # type: ignore[no-untyped-def]
    """Run until ``condition``, letting the owner's exception out of the loop as it
    does, and running again (reactor.py). Returns how often it was let out."""
    raised = 0
    for _ in range(2000):
        if condition():
            return raised
        try:
            ew.run_once(0.005)
        except RuntimeError as exc:
            assert str(exc) == bug
            raised += 1
    raise AssertionError(f"no {what}")


@pytest.mark.parametrize("then", ["write", "write_eof"])
@pytest.mark.parametrize("kind", ["tcp", "framed", "tls", "framed over tls"])
def test_a_connected_callback_that_raises_once_still_sends_what_was_asked_before(
    ew, server_ctx, client_ctx, kind: str, then: str
) -> None:
    """A client writes (or half-closes) before it is connected; its owner's CONNECTED
    callback raises once. What it asked for must still reach the server."""
    from barknet import EventKind, IOStatus

    got: list[object] = []
    server = _stack(kind, server_ctx, client_ctx)

    def server_owner(event):  # type: ignore[no-untyped-def]
        if event.kind is EventKind.READABLE:
            while (result := server.resume_read(event.peer)).status is IOStatus.OK:
                got.append(bytes(result.data))
            if result.status is IOStatus.EOF:
                got.append("EOF")
        elif event.kind is EventKind.CLOSED and event.status is IOStatus.EOF and not got:
            got.append("EOF")  # (a framing layer closes on the EOF itself, by default)

    def client_owner(event):  # type: ignore[no-untyped-def]
        if event.kind is EventKind.CONNECTED:
            raise RuntimeError("a bug in the owner")
        if event.kind is EventKind.WRITABLE and kind == "tcp":
            # Raw TCP keeps nothing: the refused write is offered again on WRITABLE.
            client.resume_write(b"hello", event.peer)
            client.suspend_write(event.peer)

    server.attach(ew, server_owner)
    client = _stack(kind, server_ctx, client_ctx, server.bind())
    client.attach(ew, client_owner)
    try:
        peer = client.connect()
        if then == "write":
            client.resume_write(b"hello", peer)
        else:
            client.write_eof(peer)
        want = [b"hello"] if then == "write" else ["EOF"]
        raised = _run_letting_out(ew, lambda: got == want, f"{want} at the server")
        assert raised == 1
    finally:
        _close_both(ew, client, server)


@pytest.mark.parametrize("kind", ["tls", "framed over tls"])
def test_an_accepted_callback_that_raises_once_still_announces_what_came_with_the_handshake(
    ew, server_ctx, client_ctx, kind: str
) -> None:
    from barknet import EventKind, IOStatus

    got: list[bytes] = []
    raised: list[bool] = []
    server = _stack(kind, server_ctx, client_ctx)

    def server_owner(event):  # type: ignore[no-untyped-def]
        if event.kind is EventKind.ACCEPTED and not raised:
            raised.append(True)
            raise RuntimeError("a bug in the owner")
        if event.kind is EventKind.READABLE:
            while (result := server.resume_read(event.peer)).status is IOStatus.OK:
                got.append(bytes(result.data))

    server.attach(ew, server_owner)
    client = _stack(kind, server_ctx, client_ctx, server.bind())
    client.attach(ew, lambda event: None)
    try:
        peer = client.connect()
        client.resume_write(b"early", peer)  # leaves with the client's last handshake flight
        assert _run_letting_out(ew, lambda: got == [b"early"], "early bytes announced") == 1
    finally:
        _close_both(ew, client, server)


@pytest.mark.parametrize("kind", ["tcp", "framed", "compressed", "tls", "framed over tls"])
def test_after_close_with_no_argument_only_closed_comes_even_with_a_repeat_scheduled(
    ew, server_ctx, client_ctx, kind: str
) -> None:
    """The owner leaves data unread (so a level-triggered READABLE is due next turn),
    then closes the whole transport from a callback of its own: from then on the
    only event is each peer's CLOSED, and reads raise (interfaces.py)."""
    from barknet import EventKind, TransportClosedError

    after: list[object] = []
    closed_at: list[int] = []
    mine: list[object] = []
    server = _stack(kind, server_ctx, client_ctx)

    def close_everything() -> None:
        closed_at.append(ew.turns)
        server.close()

    def server_owner(event):  # type: ignore[no-untyped-def]
        if closed_at:
            after.append(event.kind)
            if event.kind is EventKind.READABLE:
                after.append(server.resume_read(event.peer).status)
            return
        if event.kind is EventKind.READABLE and not after:
            if kind == "compressed":
                with contextlib.suppress(BufferError):  # refused: it stays first in line
                    server.resume_read(event.peer, bytearray(2))
            elif kind in ("tcp", "tls"):
                server.resume_read(event.peer, max_len=1)  # leave the rest
            else:
                server.resume_read(event.peer)  # one frame of several
            after.append("read")
            mine.append(event.peer)
            ew.call_soon(close_everything)

    server.attach(ew, server_owner)
    client = _stack(kind, server_ctx, client_ctx, server.bind())

    def client_owner(event):  # type: ignore[no-untyped-def]
        if event.kind is EventKind.CONNECTED:  # (raw TCP keeps nothing sent before)
            for i in range(4):
                client.resume_write(b"message %d" % i, event.peer)

    client.attach(ew, client_owner)
    try:
        client.connect()
        for _ in range(2000):
            if EventKind.CLOSED in after:
                break
            ew.run_once(0.005)
        assert after == ["read", EventKind.CLOSED], after
        with pytest.raises(TransportClosedError):
            server.resume_read(mine[0])  # type: ignore[arg-type]
    finally:
        _close_both(ew, client, server)


@pytest.mark.parametrize("size", [1000, 300_000], ids=["small", "past high_water"])
@pytest.mark.parametrize("kind", ["tcp", "framed", "compressed", "tls", "framed over tls"])
def test_a_peer_closed_before_it_connected_gets_only_its_closed_and_its_data_still_goes(
    ew, server_ctx, client_ctx, kind: str, size: int
) -> None:
    """Written to and closed before it was connected: yours no more from close(peer),
    so the only event for it is its CLOSED (no CONNECTED, RESUME_WRITING or DRAINED),
    while what you wrote still reaches the server on a layer that queues."""
    from barknet import EventKind, IOStatus

    got = bytearray()
    server = _stack(kind, server_ctx, client_ctx)

    def server_owner(event):  # type: ignore[no-untyped-def]
        if event.kind is EventKind.READABLE:
            while (result := server.resume_read(event.peer)).status is IOStatus.OK:
                got.extend(result.data)
            if result.status is IOStatus.EOF:
                server.close(event.peer)

    events: list[object] = []
    server.attach(ew, server_owner)
    client = _stack(kind, server_ctx, client_ctx, server.bind())
    client.attach(ew, lambda event: events.append(event.kind))
    try:
        peer = client.connect()
        taken = client.resume_write(b"q" * size, peer).sent
        # A message layer queues the whole frame; a byte layer keeps what it took
        # (TLS: up to its high_water; raw TCP: nothing before the connect finished).
        want = size if kind in ("framed", "compressed", "framed over tls") else taken
        mark = len(events)
        client.close(peer)
        for _ in range(2000):
            if EventKind.CLOSED in events and len(got) >= want:
                break
            ew.run_once(0.005)
        assert events[mark:] == [EventKind.CLOSED], events
        assert len(got) == want
    finally:
        _close_both(ew, client, server)


@pytest.mark.parametrize("end", ["eof", "eof, slow reader", "reset"])
@pytest.mark.parametrize("kind", ["tcp", "framed", "compressed", "tls", "framed over tls"])
def test_counters_of_a_peer_answer_until_its_closed_was_delivered(
    ew, server_ctx, client_ctx, kind: str, end: str
) -> None:
    """interfaces.py: ``counters(peer)`` answers for a peer up to and including its
    CLOSED callback (an owner logs a connection's totals there), also in the turn
    where a reset broke it, and while a framing layer holds the CLOSED from below
    for frames the owner has not taken yet (the slow reader takes one a turn);
    once CLOSED was delivered it raises."""
    import os
    import socket
    import struct

    from barknet import EventKind, IOStatus, TcpTransport, TransportClosedError
    from barknet.tls import TlsTransport

    seen: list[object] = []
    slow = end == "eof, slow reader"
    server = _stack(kind, server_ctx, client_ctx)

    def look(peer) -> object:  # type: ignore[no-untyped-def]
        try:
            return server.counters(peer).bytes_received
        except TransportClosedError as exc:
            return exc

    def server_owner(event):  # type: ignore[no-untyped-def]
        if event.kind is EventKind.READABLE:
            for _ in range(1 if slow else 1000):
                result = server.resume_read(event.peer, max_len=400 if slow else None)
                if result.status is not IOStatus.OK:
                    break
                seen.append(("read", len(result.data)))
            seen.append((result.status.name, look(event.peer)))
            if result.status is IOStatus.EOF:
                server.close(event.peer)
        elif event.kind is EventKind.ACCEPTED and slow:
            # Our side ends first: the peer's EOF then ends both directions below,
            # while frames still wait for us.
            server.write_eof(event.peer)
        elif event.kind is EventKind.CLOSED:
            seen.append(("CLOSED", look(event.peer)))
            ew.call_soon(lambda: seen.append(("after", look(event.peer))))

    server.attach(ew, server_owner)
    client_tcp = TcpTransport(*server.bind())
    client: ITransport = client_tcp
    if kind in ("tls", "framed over tls"):
        client = TlsTransport(client, client_ctx)
    if kind in ("framed", "framed over tls"):
        client = FramedTransport(client)
    elif kind == "compressed":
        client = CompressedTransport(FramedTransport(client))

    def client_owner(event):  # type: ignore[no-untyped-def]
        if event.kind is EventKind.CONNECTED:  # (raw TCP keeps nothing sent before)
            for _ in range(3):
                client.resume_write(os.urandom(1000), event.peer)  # (incompressible)
            if slow:  # the end comes with the data
                client.close(event.peer)

    client.attach(ew, client_owner)
    try:
        peer = client.connect()
        ew.run_until(lambda: any(what == "read" for what, _ in seen), timeout=5)
        if end == "eof":
            client.close(peer)
        elif end == "reset":  # a reset: unread bytes and no linger make the kernel send RST
            client_tcp.socket_of(peer).setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
            client_tcp.abort(peer)
        ew.run_until(lambda: any(what == "after" for what, _ in seen), timeout=5)
        answers = [(what, n) for what, n in seen if what not in ("read", "WOULD_BLOCK")]
        assert all(isinstance(n, int) for what, n in answers[:-1]), answers
        closed = [n for what, n in answers if what == "CLOSED"]
        assert len(closed) == 1 and closed[0] >= 3000, answers  # type: ignore[operator]
        assert answers[-1][0] == "after" and isinstance(answers[-1][1], TransportClosedError)
    finally:
        _close_both(ew, client, server)


@pytest.mark.parametrize("how", ["close(peer)", "close()", "abort(peer)"])
@pytest.mark.parametrize("kind", ["tcp", "framed", "compressed", "tls", "framed over tls"])
def test_closing_after_the_loop_was_closed_releases_everything_without_raising(
    server_ctx, client_ctx, kind: str, how: str
) -> None:
    """A with-block of the EventWatcher that ends before the transports' is a
    common slip (reactor.py asks for the transports first): what is still queued
    then has no loop to send it, so a close drops it and frees the socket, as
    TcpTransport's close already did, instead of raising from the closed loop."""
    import os

    from barknet import EventKind, EventWatcher

    ew = EventWatcher()
    peers: list[object] = []
    server = _stack(kind, server_ctx, client_ctx, sndbuf=4096)
    server.attach(ew, lambda e: peers.append(e.peer) if e.kind is EventKind.ACCEPTED else None)
    client = _stack(kind, server_ctx, client_ctx, server.bind(), rcvbuf=4096)
    client.attach(ew, lambda event: None)  # (it never reads: the server's queue stays)
    try:
        client.connect()
        ew.run_until(lambda: peers and client.peers, timeout=5)
        for _ in range(3):
            server.resume_write(os.urandom(100_000), peers[0])  # type: ignore[arg-type]
            ew.run_once(0.01)
    finally:
        ew.close()
    try:
        if how == "close(peer)":
            server.close(peers[0])  # type: ignore[arg-type]
        elif how == "abort(peer)":
            server.abort(peers[0])  # type: ignore[arg-type]
        else:
            server.close()
    finally:
        server.close()
        client.close()


def test_write_eof_after_the_loop_was_closed_with_a_write_pending_does_not_raise(
    server_ctx, client_ctx
) -> None:
    """As close(): a TcpTransport whose loop was closed first still shuts its side
    down (the socket is there) without asking the closed loop for anything."""
    from barknet import EventKind, EventWatcher

    ew = EventWatcher()
    peers: list[object] = []
    server = _stack("tcp", server_ctx, client_ctx, sndbuf=4096)
    server.attach(ew, lambda e: peers.append(e.peer) if e.kind is EventKind.ACCEPTED else None)
    client = _stack("tcp", server_ctx, client_ctx, server.bind(), rcvbuf=4096)
    client.attach(ew, lambda event: None)
    try:
        client.connect()
        ew.run_until(lambda: peers and client.peers, timeout=5)
        while server.resume_write(bytes(65536), peers[0]).status.name == "OK":  # type: ignore[arg-type]
            pass  # until a short write: WRITABLE is being watched for
        ew.close()
        server.write_eof(peers[0])  # type: ignore[arg-type]
    finally:
        ew.close()
        server.close()
        client.close()


@pytest.mark.parametrize("kind", ["tcp", "framed", "compressed"])
def test_closing_the_loop_from_accepted_with_more_connections_waiting_makes_run_return(
    server_ctx, client_ctx, kind: str
) -> None:
    """reactor.py: ``close()`` from a callback ends the turn and ``run`` returns. The
    transport must not go on, after its owner's callback, to accept the next
    waiting connection and watch it on the closed loop (that raised RuntimeError
    out of ``run``)."""
    import socket

    from barknet import EventWatcher

    ew = EventWatcher()
    heard: list[EventKind] = []
    server = _stack(kind, server_ctx, client_ctx)

    def owner(event):  # type: ignore[no-untyped-def]
        heard.append(event.kind)
        if event.kind is EventKind.ACCEPTED:
            ew.close()

    server.attach(ew, owner)
    address = server.bind()
    socks = [socket.create_connection(address, timeout=5) for _ in range(3)]
    try:
        ew.call_later(5, ew.stop)  # (bounded, should ACCEPTED never come)
        ew.run()
        assert heard == [EventKind.ACCEPTED]
    finally:
        server.close()
        for sock in socks:
            sock.close()
        ew.close()


@pytest.mark.parametrize("kind", ["tcp", "framed", "compressed", "tls", "framed over tls"])
def test_closing_the_loop_from_connected_after_an_early_write_makes_run_return(
    server_ctx, client_ctx, kind: str
) -> None:
    """The same from CONNECTED, for a client that wrote before its connection was
    up (more than ``high_water``, where frames are queued): after the callback
    the transport must neither watch for WRITABLE on the closed loop nor tell
    the owner anything more (a PAUSE_WRITING)."""
    from barknet import EventWatcher

    ew = EventWatcher()
    heard: list[EventKind] = []
    server = _stack(kind, server_ctx, client_ctx)
    server.attach(ew, lambda event: None)
    client = _stack(kind, server_ctx, client_ctx, server.bind())

    def owner(event):  # type: ignore[no-untyped-def]
        heard.append(event.kind)
        if event.kind is EventKind.CONNECTED:
            ew.close()

    client.attach(ew, owner)
    try:
        peer = client.connect()
        client.resume_write(bytes(100_000), peer)
        ew.call_later(5, ew.stop)
        ew.run()
        assert heard == [EventKind.CONNECTED]
    finally:
        client.close()
        server.close()
        ew.close()
