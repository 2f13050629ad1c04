"""TlsTransport keeps the contract of barknet.interfaces, where a reviewer found it did not:

* the end of the stream (a truncation) is reported whatever the owner's reading pattern;
* ``WRITABLE`` repeats until ``suspend_write``, as over TCP;
* from ``close(peer)`` on, I/O calls for the peer raise ``TransportClosedError``;
* ``close(peer)`` with bytes still held ends within ``linger_timeout``.

Certificates come from ``trustme`` (fixtures in conftest.py); every test binds 127.0.0.1 port 0.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from barknet import (
    EventKind,
    EventWatcher,
    FramedTransport,
    IOEvent,
    IOStatus,
    Peer,
    TcpTransport,
    TransportClosedError,
    WriteResult,
)
from barknet.errors import LingerTimeoutError, TlsError
from barknet.interfaces import ITransport
from barknet.layer import TransportLayer
from barknet.testing.faults import ChunkingTransport
from barknet.testing.trace import TracingTransport
from barknet.tls import TlsTransport

pytestmark = pytest.mark.usefixtures("no_leaks")

HOST = "127.0.0.1"


@pytest.fixture
def closing(ew: EventWatcher) -> Iterator[Callable[[Any], Any]]:
    """``closing(x)`` closes transport or socket ``x`` after the test, before ``ew``."""
    made: list[Any] = []

    def keep(thing: Any) -> Any:
        made.append(thing)
        return thing

    yield keep
    for thing in reversed(made):
        thing.close()
    for _ in range(3):
        ew.run_once(0)


def _handshake_in_thread(ew: EventWatcher, sock: ssl.SSLSocket) -> None:
    """A blocking client's handshake, while the loop runs for the server."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            sock.do_handshake()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    ew.run_until(lambda: not thread.is_alive(), timeout=10)
    thread.join()
    assert not errors, errors


def _blocking_client(
    ew: EventWatcher,
    address: tuple[str, int],
    ctx: ssl.SSLContext,
    *,
    rcvbuf: int | None = None,
    sndbuf: int | None = None,
    timeout: float = 10,
) -> ssl.SSLSocket:
    raw = socket.socket()
    if rcvbuf is not None:
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    if sndbuf is not None:
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    raw.settimeout(timeout)
    raw.connect(address)
    sock = ctx.wrap_socket(raw, server_hostname=HOST, do_handshake_on_connect=False)
    _handshake_in_thread(ew, sock)
    return sock


# ------------------------------------------------------------------ 1. the end is reported
def _finished_frame_and_fin_in_one_burst(
    ew: EventWatcher, address: tuple[str, int], ctx: ssl.SSLContext
) -> socket.socket:
    """A TLS 1.3 client driven by hand: its Finished, one 2-byte frame and a FIN,
    no close_notify, all sent before the server reads any of it."""
    sock = socket.create_connection(address, timeout=5)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=HOST)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    sock.sendall(outgoing.read())  # ClientHello
    sock.settimeout(0.01)
    done = False

    def server_flight_read() -> bool:
        nonlocal done
        try:
            incoming.write(sock.recv(65536))
            tls.do_handshake()
            done = True
        except (TimeoutError, ssl.SSLWantReadError):
            pass
        return done

    ew.run_until(server_flight_read, timeout=5)
    tls.write(struct.pack("!I", 2) + b"ok")
    sock.settimeout(5)
    sock.sendall(outgoing.read())  # Finished + the record, in one burst
    sock.shutdown(socket.SHUT_WR)  # FIN, no close_notify
    return sock


@pytest.mark.parametrize(
    "how", ["tls, one read per READABLE", "tls, read until not OK", "framed over tls"]
)
def test_truncation_right_behind_the_last_data_is_reported_however_the_owner_reads(
    ew, closing, server_ctx, client_ctx, how: str
) -> None:
    """The FIN arrives with the last record; the read that returns the record also
    finds the EOF below, and the transport below stops watching the socket. The
    unread end must still wake the owner (level-triggered) and become exactly one
    CLOSED(ERROR, TlsError(reason="TRUNCATED"))."""
    tls = TlsTransport(TcpTransport(), server_ctx)
    server: ITransport = FramedTransport(tls) if how.startswith("framed") else tls
    once = "one read" in how
    log: list[Any] = []

    def owner(event: IOEvent) -> None:
        if event.kind is EventKind.READABLE:
            while (r := server.resume_read(event.peer)).status is IOStatus.OK:
                log.append(bytes(r.data))
                if once:
                    break
        elif event.kind is EventKind.CLOSED:
            log.append(event)

    server.attach(ew, owner)
    closing(server)
    sock = closing(_finished_frame_and_fin_in_one_burst(ew, server.bind(), client_ctx))
    ew.run_until(lambda: any(isinstance(x, IOEvent) for x in log), timeout=5)
    for _ in range(5):
        ew.run_once(0.001)
    expected = b"ok" if how.startswith("framed") else struct.pack("!I", 2) + b"ok"
    assert b"".join(x for x in log if isinstance(x, bytes)) == expected
    (closed,) = [x for x in log if isinstance(x, IOEvent)]
    assert closed.status is IOStatus.ERROR, closed
    assert isinstance(closed.error, TlsError) and closed.error.reason == "TRUNCATED"
    del sock


# ------------------------------------------------------------------ 2. WRITABLE repeats
def _tls_pair(
    ew: EventWatcher,
    closing: Callable[[Any], Any],
    server_ctx: ssl.SSLContext,
    client_ctx: ssl.SSLContext,
    server_owner: Callable[[ITransport, IOEvent], None],
    client_owner: Callable[[ITransport, IOEvent], None],
    *,
    server_tcp: dict[str, Any] | None = None,
    client_tcp: dict[str, Any] | None = None,
) -> tuple[TlsTransport, TlsTransport, Peer]:
    server = TlsTransport(TcpTransport(**(server_tcp or {})), server_ctx)
    client = TlsTransport(TcpTransport(**(client_tcp or {})), client_ctx)
    server.attach(ew, lambda e: server_owner(server, e))
    client.attach(ew, lambda e: client_owner(client, e))
    closing(server)
    closing(client)
    peer = client.connect(server.bind())
    return server, client, peer


def _read_everything(state: dict[str, Any]) -> Callable[[ITransport, IOEvent], None]:
    def owner(transport: ITransport, event: IOEvent) -> None:
        if event.kind is EventKind.READABLE:
            while (r := transport.resume_read(event.peer)).status is IOStatus.OK:
                state["got"] += len(r.data)

    return owner


def test_writable_repeats_for_an_owner_that_writes_one_chunk_per_event(
    ew, closing, server_ctx, client_ctx
) -> None:
    """Fill until a write comes back short, then one 1 KiB chunk per WRITABLE, never
    calling suspend_write until all is sent: every byte must leave (over TCP,
    WRITABLE repeats while the socket has room; over TLS it must too)."""
    total = 1 << 20
    st = {"sent": 0, "got": 0, "writable": 0}

    def client_owner(transport: ITransport, event: IOEvent) -> None:
        if event.kind is EventKind.CONNECTED:
            while (r := transport.resume_write(b"w" * 65536, event.peer)).status is IOStatus.OK:
                st["sent"] += r.sent
            st["sent"] += r.sent
        elif event.kind is EventKind.WRITABLE:
            st["writable"] += 1
            if st["sent"] < total:
                st["sent"] += transport.resume_write(b"w" * 1024, event.peer).sent
            else:
                transport.suspend_write(event.peer)

    _tls_pair(
        ew,
        closing,
        server_ctx,
        client_ctx,
        _read_everything(st),
        client_owner,
        server_tcp={"rcvbuf": 4096},
        client_tcp={"sndbuf": 4096},
    )
    ew.run_until(lambda: st["sent"] >= total and st["got"] == st["sent"], timeout=20)


def test_writable_repeats_each_turn_there_is_room_until_suspend_write(
    ew, closing, server_ctx, client_ctx
) -> None:
    """An owner refused once, then idle on WRITABLE: the event comes again turn after
    turn (as TCP's does) until the owner says suspend_write, then never again."""
    events: list[IOEvent] = []
    writable_turns: list[int] = []
    st = {"got": 0}

    def client_owner(transport: ITransport, event: IOEvent) -> None:
        events.append(event)
        if event.kind is EventKind.WRITABLE:
            writable_turns.append(ew.turns)

    _server, client, peer = _tls_pair(
        ew, closing, server_ctx, client_ctx, _read_everything(st), client_owner
    )
    ew.run_until(lambda: any(e.kind is EventKind.CONNECTED for e in events), timeout=10)
    offered = 0
    while (r := client.resume_write(b"x" * 65536, peer)).status is IOStatus.OK:
        offered += r.sent
    offered += r.sent

    def writable() -> int:
        return sum(e.kind is EventKind.WRITABLE for e in events)

    ew.run_until(lambda: writable() >= 10 and st["got"] == offered, timeout=10)
    assert len(set(writable_turns)) == len(writable_turns), "two WRITABLEs in one turn"
    client.suspend_write(peer)
    ew.run_once(0)  # a WRITABLE already scheduled for this turn may still come
    seen = writable()
    for _ in range(20):
        ew.run_once(0.001)
    assert writable() == seen, "WRITABLE after suspend_write"


def test_writable_does_not_spin_while_the_reader_reads_nothing(
    ew, closing, server_ctx, client_ctx
) -> None:
    """A writer that never suspends, and a peer that stops reading: once the bytes held
    are over the low-water mark, no WRITABLE comes (nothing would be taken)."""
    events: list[IOEvent] = []

    def server_owner(transport: ITransport, event: IOEvent) -> None:
        if event.kind is EventKind.ACCEPTED:
            transport.suspend_read(event.peer)

    def client_owner(transport: ITransport, event: IOEvent) -> None:
        events.append(event)
        if event.kind is EventKind.WRITABLE:
            transport.resume_write(b"y" * 1024, event.peer)

    _server, client, peer = _tls_pair(
        ew,
        closing,
        server_ctx,
        client_ctx,
        server_owner,
        client_owner,
        server_tcp={"rcvbuf": 4096},
        client_tcp={"sndbuf": 4096},
    )
    ew.run_until(lambda: any(e.kind is EventKind.CONNECTED for e in events), timeout=10)
    while client.resume_write(b"x" * 65536, peer).status is IOStatus.OK:
        pass
    for _ in range(50):
        ew.run_once(0.002)
    seen = sum(e.kind is EventKind.WRITABLE for e in events)
    for _ in range(50):
        ew.run_once(0.002)
    assert sum(e.kind is EventKind.WRITABLE for e in events) == seen, "WRITABLE with no room"
    assert client.write_buffer_size(peer) > client.low_water


# ------------------------------------------------------------- 3. after close(peer)
@pytest.mark.parametrize("ending", ["close", "close with bytes still unread", "abort"])
def test_io_calls_after_close_raise_and_the_peer_leaves_peers(
    ew, closing, server_ctx, client_ctx, ending
) -> None:
    outcome: dict[str, Any] = {}
    after_close: list[IOEvent] = []

    def attempt(call: Callable[[], Any]) -> Any:
        try:
            return call()
        except TransportClosedError as exc:
            return exc

    def server_owner(transport: ITransport, event: IOEvent) -> None:
        if outcome and event.kind is not EventKind.CLOSED:
            after_close.append(event)
        if event.kind is EventKind.READABLE and not outcome:
            peer = event.peer
            assert peer in transport.peers
            if ending == "close with bytes still unread":
                # Decrypted bytes wait here now: a READABLE for them must not follow.
                assert transport.resume_read(peer, max_len=10).status is IOStatus.OK
            if ending == "abort":
                transport.abort(peer)
            else:
                transport.close(peer)
            outcome["in peers"] = peer in transport.peers
            outcome["resume_read"] = attempt(lambda: transport.resume_read(peer))
            outcome["suspend_read"] = attempt(lambda: transport.suspend_read(peer))
            outcome["resume_write"] = attempt(lambda: transport.resume_write(b"x", peer))
            outcome["suspend_write"] = attempt(lambda: transport.suspend_write(peer))
            outcome["write_eof"] = attempt(lambda: transport.write_eof(peer))
            outcome["peer"] = peer
            if ending != "abort":
                transport.close(peer)  # idempotent

    client_events: list[IOEvent] = []
    _server, client, peer = _tls_pair(
        ew, closing, server_ctx, client_ctx, server_owner, lambda t, e: client_events.append(e)
    )
    ew.run_until(lambda: any(e.kind is EventKind.CONNECTED for e in client_events), timeout=10)
    client.resume_write(b"abcdefghi" * 1000, peer)
    ew.run_until(lambda: outcome, timeout=10)
    assert outcome["in peers"] is False
    for name in ("resume_read", "suspend_read", "resume_write", "suspend_write", "write_eof"):
        error = outcome[name]
        assert isinstance(error, TransportClosedError), f"{name} after close: {error!r}"
        assert error.peer == outcome["peer"], f"{name}: the error names no peer"
    client.close(peer)
    for _ in range(20):
        ew.run_once(0.002)
    assert not after_close, f"events after close(peer): {after_close}"


# ------------------------------------------------------------- 4. close(peer) is bounded
def test_linger_timeout_defaults_to_the_transport_below() -> None:
    assert TlsTransport(TcpTransport(linger_timeout=0.25)).linger_timeout == 0.25
    assert TlsTransport(TcpTransport(linger_timeout=9), linger_timeout=0.5).linger_timeout == 0.5
    assert TlsTransport(ChunkingTransport(TcpTransport())).linger_timeout == 5.0
    assert TlsTransport(TcpTransport(linger_timeout=0)).linger_timeout == 0
    # A layer in between that passes bytes through has none: the one below it counts.
    chunking = ChunkingTransport(TcpTransport(linger_timeout=0.25))
    assert TlsTransport(chunking).linger_timeout == 0.25
    assert (
        FramedTransport(TracingTransport(TcpTransport(linger_timeout=0.7))).linger_timeout == 0.7
    )


@pytest.mark.parametrize(
    ("whose", "peer_sends"),
    [("below", False), ("own", False), ("below", True), ("reading", True)],
    ids=[
        "timeout from below, silent peer",
        "own timeout",
        "peer sends, then FIN",
        "owner was reading; peer sends, then FIN",
    ],
)
def test_close_with_bytes_held_for_a_peer_that_never_reads_ends_at_the_linger_timeout(
    ew, closing, server_ctx, client_ctx, whose: str, peer_sends: bool
) -> None:
    """The peer never reads: what TLS holds can never leave. close(peer) must still
    end, with one CLOSED(ERROR, LingerTimeoutError), after linger_timeout (ours,
    or by default the transport below's). Meanwhile what the peer sends is read
    and dropped (counted in ``discarded``), and once it ended nothing spins."""
    timeout = 0.5
    tcp = TcpTransport(sndbuf=8192, linger_timeout=30 if whose == "own" else timeout)
    own = {"linger_timeout": timeout} if whose == "own" else {}
    server = TlsTransport(tcp, server_ctx, **own)
    events: list[IOEvent] = []
    held: list[int] = []

    def owner(event: IOEvent) -> None:
        events.append(event)
        if event.kind is EventKind.ACCEPTED:
            if whose == "reading":  # READABLE was wanted: after close it must not come
                assert server.resume_read(event.peer).status is IOStatus.WOULD_BLOCK
            server.resume_write(b"x" * (1 << 20), event.peer)
            server.close(event.peer)
            held.append(server.write_buffer_size(event.peer))

    server.attach(ew, owner)
    closing(server)
    sock = closing(_blocking_client(ew, server.bind(), client_ctx, rcvbuf=4096))
    ew.run_until(lambda: held, timeout=10)
    assert held[0] > 0  # the bytes are held here, so the close must wait for them
    (peer,) = [e.peer for e in events if e.kind is EventKind.ACCEPTED]
    if peer_sends:
        sock.sendall(b"z" * 1000)
        sock.shutdown(socket.SHUT_WR)  # (no close_notify: it does not matter now)
        for _ in range(5):
            ew.run_once(0.005)
    reads_before = tcp.counters(peer).recv_calls
    for _ in range(10):
        ew.run_once(0.005)
    assert tcp.counters(peer).recv_calls - reads_before <= 2, "busy loop while lingering"
    ew.run_until(lambda: any(e.kind is EventKind.CLOSED for e in events), timeout=5)
    for _ in range(5):
        ew.run_once(0.01)
    (closed,) = [e for e in events if e.kind is EventKind.CLOSED]
    assert closed.status is IOStatus.ERROR
    assert isinstance(closed.error, LingerTimeoutError), closed
    assert closed.error.timeout == timeout and closed.error.peer == peer
    assert closed.error.discarded == (1000 if peer_sends else 0)
    assert [e.kind for e in events] == [
        EventKind.ACCEPTED,
        EventKind.PAUSE_WRITING,
        EventKind.CLOSED,
    ]
    del sock


def test_close_while_a_pipelining_peer_still_sends_discards_its_bytes_and_does_not_deadlock(
    ew, closing, server_ctx, client_ctx
) -> None:
    """The peer sends a large request and reads only once it has sent all of it; we
    answer and close(peer) without reading the request. If the TLS layer stopped
    reading while its held reply waits, neither side would move: the peer blocks on
    a full socket, our reply waits for it to read. The request is read and
    discarded meanwhile, the reply arrives whole, and the close ends cleanly: the
    timer for the held bytes stops once they left, though the peer then takes
    longer than that timeout to hang up (the transport below lingers for it)."""
    request = b"q" * (2 << 20)
    # A high-water mark far above what the sockets buffer: the reply waits here.
    tcp = TcpTransport(sndbuf=8192, rcvbuf=8192)
    server = TlsTransport(tcp, server_ctx, high_water=1 << 20, linger_timeout=0.3)
    events: list[IOEvent] = []
    sent: list[int] = []

    def owner(event: IOEvent) -> None:
        events.append(event)
        if event.kind is EventKind.ACCEPTED:
            sent.append(server.resume_write(b"r" * (1 << 20), event.peer).sent)
            server.close(event.peer)
            sent.append(server.write_buffer_size(event.peer))

    server.attach(ew, owner)
    closing(server)
    sock = closing(
        _blocking_client(ew, server.bind(), client_ctx, rcvbuf=8192, sndbuf=8192, timeout=5)
    )
    reply = bytearray()
    errors: list[BaseException] = []

    def peer() -> None:
        try:
            sock.sendall(request)
            while chunk := sock.recv(65536):
                reply.extend(chunk)
            time.sleep(0.5)  # longer than the TLS layer's linger_timeout
        except BaseException as exc:
            errors.append(exc)
        finally:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_WR)

    thread = threading.Thread(target=peer, daemon=True)
    thread.start()
    try:
        ew.run_until(lambda: any(e.kind is EventKind.CLOSED for e in events), timeout=5)
    finally:
        thread.join(10)  # (its socket times out after 5 s, if it ever blocks that long)
    assert not thread.is_alive()
    assert not errors, errors
    assert sent[1] > 256 * 1024  # more than the sockets hold: the reply had to wait
    assert reply == b"r" * sent[0]
    (closed,) = [e for e in events if e.kind is EventKind.CLOSED]
    assert closed.status is IOStatus.OK, closed


@pytest.mark.parametrize("framed", [False, True], ids=["tls", "framed over tls"])
@pytest.mark.parametrize("turns", [0, 1, 2])
def test_a_close_during_the_handshake_still_sends_what_was_written(
    ew, closing, server_ctx, client_ctx, framed: bool, turns: int
) -> None:
    """connect, write, close at once (or a turn or two later, mid-handshake): the
    handshake must go on, the request must arrive, and CLOSED must say OK."""
    got: list[bytes] = []
    client_events: list[IOEvent] = []

    def stack(ctx: ssl.SSLContext, **options: Any) -> ITransport:
        tls = TlsTransport(TcpTransport(linger_timeout=1.0, **options), ctx)
        return FramedTransport(tls) if framed else tls

    server = closing(stack(server_ctx))

    def on_server(event: IOEvent) -> None:
        if event.kind is EventKind.READABLE:
            while (r := server.resume_read(event.peer)).status is IOStatus.OK:
                got.append(bytes(r.data))
            if r.status is IOStatus.EOF:
                server.close(event.peer)

    server.attach(ew, on_server)
    host, port = server.bind()
    client = closing(stack(client_ctx, host=host, port=port))
    client.attach(ew, client_events.append)
    peer = client.connect()
    client.resume_write(b"request", peer)
    for _ in range(turns):
        ew.run_once(0.05)
    client.close(peer)
    ew.run_until(lambda: any(e.kind is EventKind.CLOSED for e in client_events), timeout=5)
    assert b"".join(got).endswith(b"request")
    (closed,) = [e for e in client_events if e.kind is EventKind.CLOSED]
    assert (closed.status, closed.error) == (IOStatus.OK, None)


@pytest.mark.parametrize("everyone", [False, True], ids=["suspend_read(peer)", "suspend_read()"])
@pytest.mark.parametrize("framed", [False, True], ids=["tls", "framed over tls"])
def test_suspending_reads_during_the_handshake_does_not_stall_it(
    ew, closing, server_ctx, client_ctx, framed: bool, everyone: bool
) -> None:
    """The owner has a client peer before its handshake is done: suspending and
    resuming its reads then must not stop the handshake (it reads for itself),
    and once it is done, what the server sends is announced (reading resumed)."""
    events: list[IOEvent] = []
    server = closing(TlsTransport(TcpTransport(), server_ctx))

    def greet(event: IOEvent) -> None:
        if event.kind is EventKind.ACCEPTED:
            server.resume_write(b"hello" if not framed else b"\0\0\0\x05hello", event.peer)

    server.attach(ew, greet)
    tls = TlsTransport(TcpTransport(*server.bind()), client_ctx)
    client: ITransport = closing(FramedTransport(tls) if framed else tls)
    client.attach(ew, events.append)
    peer = client.connect()
    ew.run_once(0.05)  # connected below, ClientHello sent: the handshake is under way
    client.suspend_read(None if everyone else peer)
    assert client.resume_read(peer).status is IOStatus.WOULD_BLOCK
    ew.run_until(lambda: any(e.kind is EventKind.CONNECTED for e in events), timeout=5)
    ew.run_until(lambda: any(e.kind is EventKind.READABLE for e in events), timeout=5)
    assert bytes(client.resume_read(peer).data) == b"hello"


def test_reading_again_after_suspend_read_watches_the_peer_even_when_the_read_is_served_from_tls(
    ew, closing, server_ctx, client_ctx
) -> None:
    """The owner reads 50 of 100 bytes, suspends, then reads exactly the 50 that TLS
    already holds decrypted: that read needs nothing from the socket, yet it is a
    resume_read, so bytes the peer sends later must be announced."""
    st: dict[str, Any] = {"peer": None, "later": b""}

    def server_owner(transport: ITransport, event: IOEvent) -> None:
        if event.kind is not EventKind.READABLE:
            return
        if st["peer"] is None:
            st["peer"] = event.peer
            assert transport.resume_read(event.peer, max_len=50).data == b"A" * 50
            transport.suspend_read(event.peer)
        else:
            st["later"] += bytes(transport.resume_read(event.peer).data)

    server, client, peer = _tls_pair(
        ew, closing, server_ctx, client_ctx, server_owner, lambda t, e: None
    )
    client.resume_write(b"A" * 100, peer)
    ew.run_until(lambda: st["peer"] is not None, timeout=5)
    for _ in range(5):
        ew.run_once(0.01)
    assert server.resume_read(st["peer"], max_len=50).data == b"A" * 50  # all from TLS
    client.resume_write(b"B" * 100, peer)
    ew.run_until(lambda: st["later"] == b"B" * 100, timeout=5)


def test_calls_for_a_peer_that_truncated_answer_error_until_its_closed(
    ew, closing, server_ctx, client_ctx
) -> None:
    """A peer that hangs up without close_notify is a TlsError(TRUNCATED): until its
    CLOSED, calls for it answer ERROR or do nothing, as for any broken peer; none
    raises, since the owner closed nothing (the README, "A bad peer")."""
    seen: dict[str, Any] = {"calls": None, "closed": []}
    server = closing(TlsTransport(TcpTransport(), server_ctx))

    def owner(event: IOEvent) -> None:
        if event.kind is EventKind.CLOSED:
            seen["closed"].append(event)
        if event.kind is not EventKind.READABLE or seen["calls"] is not None:
            return
        while (result := server.resume_read(event.peer)).status is IOStatus.OK:
            pass
        if result.status is IOStatus.ERROR:
            peer = event.peer
            seen["calls"] = [
                result.error.reason,  # type: ignore[union-attr]
                server.resume_read(peer).status,
                server.resume_write(b"late", peer).status,
                server.suspend_read(peer),
                server.suspend_write(peer),
                server.write_eof(peer),
            ]

    server.attach(ew, owner)
    sock = closing(_blocking_client(ew, server.bind(), client_ctx))
    sock.sendall(b"hello")
    sock.shutdown(socket.SHUT_WR)  # a FIN and no close_notify: a truncation
    ew.run_until(lambda: seen["closed"], timeout=5)
    assert seen["calls"] == ["TRUNCATED", IOStatus.ERROR, IOStatus.ERROR, None, None, None]
    (closed,) = seen["closed"]
    assert isinstance(closed.error, TlsError) and closed.error.reason == "TRUNCATED"


def test_readable_comes_at_most_once_a_turn_for_an_owner_that_does_not_read(
    ew, closing, server_ctx, client_ctx
) -> None:
    """Level-triggered means turn after turn (interfaces.py): the socket's READABLE
    and the layer's own repeat must not both reach the owner in one turn."""
    turns: list[int] = []

    def server_owner(transport: ITransport, event: IOEvent) -> None:
        if event.kind is EventKind.READABLE:
            if not turns:  # one byte, once: TLS then holds the rest of the record
                assert transport.resume_read(event.peer, max_len=1).data == b"u"
            turns.append(ew.turns)  # and nothing more is read

    _, client, peer = _tls_pair(
        ew, closing, server_ctx, client_ctx, server_owner, lambda t, e: None
    )
    client.resume_write(b"unread", peer)
    ew.run_until(lambda: turns, timeout=5)
    client.resume_write(b"more, which the socket holds", peer)
    for _ in range(20):
        ew.run_once(0.01)
    assert len(turns) >= 20 and len(set(turns)) == len(turns), turns


@pytest.mark.parametrize("raise_on", [EventKind.WRITABLE, EventKind.RESUME_WRITING])
def test_writable_still_repeats_after_a_flow_callback_that_raised_once(
    ew, closing, server_ctx, client_ctx, raise_on
) -> None:
    """The loop lets an owner's exception out and may be run again: WRITABLE repeats
    each turn there is room until suspend_write, also after the owner's WRITABLE (or
    RESUME_WRITING) callback raised once; else an owner waiting for it stalls."""
    st = {"got": 0, "raised": 0, "writable": 0}

    def client_owner(transport: ITransport, event: IOEvent) -> None:
        if event.kind is EventKind.CONNECTED:
            while transport.resume_write(b"w" * 65536, event.peer).status is IOStatus.OK:
                pass  # until refused: WRITABLE is owed from now on
        elif event.kind is raise_on and not st["raised"]:
            st["raised"] += 1
            raise RuntimeError("a bug in the owner")
        elif event.kind is EventKind.WRITABLE:
            st["writable"] += 1  # and writes nothing more

    _tls_pair(ew, closing, server_ctx, client_ctx, _read_everything(st), client_owner)
    for _ in range(2000):
        if st["writable"] >= 3:
            break
        with contextlib.suppress(RuntimeError):  # the owner's bug, let out once
            ew.run_once(0.005)
    assert st["raised"] == 1 and st["writable"] >= 3, st


def test_no_writable_while_the_owners_writes_from_resume_writing_filled_the_layer_again(
    ew, closing, server_ctx, client_ctx
) -> None:
    """WRITABLE comes while TLS holds at most low_water (tls.py): an owner that writes
    past high_water from its RESUME_WRITING callback (a nested PAUSE_WRITING) must not
    get a WRITABLE right after it."""
    flow: list[tuple[EventKind, int]] = []
    peers: list[Peer] = []

    def client_owner(event: IOEvent) -> None:
        if event.kind in (EventKind.PAUSE_WRITING, EventKind.RESUME_WRITING, EventKind.WRITABLE):
            flow.append((event.kind, client.write_buffer_size(event.peer)))
        if event.kind is EventKind.RESUME_WRITING and len(flow) < 3:
            client.resume_write(b"r" * 200_000, event.peer)  # past high_water again

    server = closing(TlsTransport(TcpTransport(rcvbuf=8192), server_ctx))
    server.attach(ew, lambda e: peers.append(e.peer) if e.kind is EventKind.ACCEPTED else None)
    client = closing(TlsTransport(TcpTransport(*server.bind(), sndbuf=8192), client_ctx))
    client.attach(ew, client_owner)
    peer = client.connect()
    ew.run_until(lambda: peers, timeout=10)
    first = client.resume_write(b"w" * 200_000, peer)  # the server reads nothing yet
    assert first.status is IOStatus.WOULD_BLOCK  # taken in part: WRITABLE is owed
    for _ in range(2000):  # the server reads between turns, as a slow reader would
        if any(kind is EventKind.WRITABLE for kind, _ in flow):
            break
        ew.run_once(0.005)
        while server.resume_read(peers[0]).status is IOStatus.OK:
            pass
    kinds = [kind for kind, _ in flow]
    assert kinds[:3] == [
        EventKind.PAUSE_WRITING,
        EventKind.RESUME_WRITING,
        EventKind.PAUSE_WRITING,
    ], flow
    assert EventKind.WRITABLE in kinds, flow
    assert all(held <= server.low_water for kind, held in flow if kind is EventKind.WRITABLE), flow


# ------------------------------------- 3. flow events, endings and counters (round 12)
def _fill_until_paused(ew: EventWatcher, server: TlsTransport, peer: Peer) -> None:
    """Write to a peer that reads nothing until TLS refuses (it paused us)."""
    chunk = b"x" * 65536
    for _ in range(2000):
        if server.resume_write(chunk, peer).status is not IOStatus.OK:
            return
        ew.run_once(0.001)
    raise AssertionError("TLS never refused a write to a peer that reads nothing")


def test_resume_writing_comes_when_a_write_from_readable_takes_the_held_bytes_down_to_nothing(
    ew, closing, server_ctx, client_ctx
) -> None:
    """tls.py: once the held bytes are down to low_water, RESUME_WRITING and then
    WRITABLE follow. Here the peer drains its socket while our loop is not running,
    then sends a request; in the next turn the reader runs first, and the owner's
    reply takes every held byte down at once. The WRITABLE from below that would
    have brought the flow events never comes (nothing is held any more), so they
    are TLS's to give."""
    events: list[EventKind] = []
    replies: list[WriteResult] = []

    def owner(event: IOEvent) -> None:
        events.append(event.kind)
        if event.kind is EventKind.READABLE:
            while server.resume_read(event.peer).status is IOStatus.OK:
                replies.append(server.resume_write(b"reply", event.peer))

    server = closing(TlsTransport(TcpTransport(), server_ctx))
    server.attach(ew, owner)
    client = closing(_blocking_client(ew, server.bind(), client_ctx))
    ew.run_until(lambda: server.peers, timeout=10)
    (peer,) = server.peers
    _fill_until_paused(ew, server, peer)
    assert EventKind.PAUSE_WRITING in events
    client.settimeout(0.2)
    with contextlib.suppress(TimeoutError):
        while client.recv(1 << 20):  # everything the kernel holds; our loop is idle
            pass
    client.settimeout(10)
    client.sendall(b"request")
    since = len(events)
    ew.run_until(lambda: EventKind.WRITABLE in events[since:], timeout=5)
    assert replies and replies[0] == WriteResult(5, IOStatus.OK)
    assert server.write_buffer_size(peer) <= server.low_water
    flow = [k for k in events[since:] if k is not EventKind.READABLE]
    assert flow[:2] == [EventKind.RESUME_WRITING, EventKind.WRITABLE], events[since:]


def _refused_address() -> tuple[str, int]:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()


@pytest.mark.parametrize(
    ("stack", "case"),
    [("framed", "connects"), ("framed", "refused")]
    + [(s, c) for s in ("tls", "framed over tls") for c in ("connects", "refused", "untrusted")],
)
def test_pause_writing_never_comes_before_connected(
    ew, closing, server_ctx, client_ctx, stack: str, case: str
) -> None:
    """interfaces.py: start -> CONNECTED [-> ... PAUSE_WRITING ...]* -> CLOSED, and a
    connect or handshake that fails is one CLOSED. A client that writes more than
    high_water right after connect() gets its PAUSE_WRITING after CONNECTED, or
    none at all."""
    tls = stack != "framed"
    if case == "refused":
        address = _refused_address()
    else:
        listener = TcpTransport()
        server: ITransport = FramedTransport(listener) if stack == "framed" else listener
        if tls:
            server = TlsTransport(listener, server_ctx)
            if stack == "framed over tls":
                server = FramedTransport(server)
        server.attach(ew, lambda e: None)  # reads nothing: the client's queue stays
        closing(server)
        address = server.bind()
    ctx = ssl.create_default_context() if case == "untrusted" else client_ctx
    below: ITransport = TlsTransport(TcpTransport(), ctx) if tls else TcpTransport()
    client: ITransport = below if stack == "tls" else FramedTransport(below)
    kinds: list[EventKind] = []
    client.attach(ew, lambda e: kinds.append(e.kind))
    closing(client)
    peer = client.connect(address)
    client.resume_write(b"z" * 300_000, peer)
    ew.run_until(lambda: EventKind.CONNECTED in kinds or EventKind.CLOSED in kinds, timeout=10)
    for _ in range(5):
        ew.run_once(0.01)
    if case == "connects":
        assert kinds[0] is EventKind.CONNECTED, kinds
    else:
        assert kinds == [EventKind.CLOSED], kinds


@pytest.mark.parametrize("stack", ["tls, close after its EOF", "framed over tls"])
def test_once_both_close_notifies_crossed_the_peer_is_closed_without_waiting_for_a_fin(
    ew, closing, server_ctx, client_ctx, stack: str
) -> None:
    """README: once both close_notifies crossed, the peer is closed at once, with
    no wait for a TCP FIN the peer may never send (it may keep TCP open, to pool it
    or go on in plaintext). Here the client unwraps and keeps its socket; the
    server's close (yours after reading the EOF, or FramedTransport's own) must not
    linger for a FIN until linger_timeout and call it LingerTimeoutError."""
    framed = stack.startswith("framed")
    tls = TlsTransport(TcpTransport(linger_timeout=30), server_ctx)
    server: ITransport = FramedTransport(tls) if framed else tls
    closed: list[IOEvent] = []

    def owner(event: IOEvent) -> None:
        if event.kind is EventKind.READABLE:
            while (r := server.resume_read(event.peer)).status is IOStatus.OK:
                server.resume_write(bytes(r.data), event.peer)
            if r.status is IOStatus.EOF:
                server.close(event.peer)
        elif event.kind is EventKind.CLOSED:
            closed.append(event)

    server.attach(ew, owner)
    closing(server)
    client = closing(_blocking_client(ew, server.bind(), client_ctx))
    message = struct.pack("!I", 5) + b"hello" if framed else b"hello"
    client.sendall(message)
    got = bytearray()
    while len(got) < len(message):
        ew.run_once(0.01)
        client.settimeout(0.01)
        with contextlib.suppress(TimeoutError, ssl.SSLWantReadError):
            got += client.recv(100)
    unwrapped: list[socket.socket] = []
    thread = threading.Thread(target=lambda: unwrapped.append(client.unwrap()), daemon=True)
    client.settimeout(10)
    thread.start()
    ew.run_until(lambda: closed and not thread.is_alive(), timeout=5)
    thread.join()
    closing(unwrapped[0])  # still open: no FIN from this side
    expected = IOStatus.EOF if framed else IOStatus.OK  # (framed closed it on its own)
    assert [(e.status, e.error) for e in closed] == [(expected, None)]


@pytest.mark.parametrize("stack", ["framed over tls", "compressed over framed over tls"])
def test_counters_answer_in_the_closed_callback_of_a_peer_whose_handshake_failed(
    ew, closing, server_ctx, stack: str
) -> None:
    """interfaces.py: a peer's counters answer until its CLOSED has been delivered, in
    the CLOSED callback too, whatever ended it. A framing layer above TLS never saw
    this peer open (no ACCEPTED), but the bytes it sent were counted below."""
    from barknet.compress import CompressedTransport

    framed = FramedTransport(TlsTransport(TcpTransport(), server_ctx, handshake_timeout=1))
    server: ITransport = CompressedTransport(framed) if stack.startswith("compressed") else framed
    seen: list[object] = []

    def owner(event: IOEvent) -> None:
        if event.kind is EventKind.CLOSED:
            seen.append(event.error)
            seen.append(server.counters(event.peer).bytes_received)

    server.attach(ew, owner)
    closing(server)
    sock = closing(socket.create_connection(server.bind(), timeout=5))
    sock.sendall(b"GET / HTTP/1.0\r\n\r\n")  # 18 bytes, not TLS
    ew.run_until(lambda: seen, timeout=5)
    assert isinstance(seen[0], TlsError) and seen[1] == 18, seen


def test_a_failed_handshake_keeps_its_reason_and_ends_by_the_handshake_timeout(
    ew, closing, server_ctx
) -> None:
    """README: a peer that does not speak TLS reaches the owner as one
    CLOSED(ERROR, TlsError) whose reason is OpenSSL's. The close after the alert
    lingers for the peer's EOF; a peer that keeps the connection open must not turn
    that reason into HANDSHAKE_TIMEOUT, and the wait ends by the handshake timeout
    (here far shorter than linger_timeout)."""
    server = TlsTransport(TcpTransport(linger_timeout=30), server_ctx, handshake_timeout=0.5)
    closed: list[IOEvent] = []
    server.attach(ew, lambda e: closed.append(e) if e.kind is EventKind.CLOSED else None)
    closing(server)
    sock = closing(socket.create_connection(server.bind(), timeout=5))
    sock.sendall(b"hello\n")  # then stays, waiting for an answer
    ew.run_until(lambda: closed, timeout=5)
    (event,) = closed
    assert event.status is IOStatus.ERROR
    assert isinstance(event.error, TlsError) and event.error.reason == "WRONG_VERSION_NUMBER"


# ------------------------------------------ 4. the end of a session, against real peers (round 13)
class _HandDriven:
    """A TLS client over a blocking socket, driven through ssl.MemoryBIO, so the test
    decides which bytes go on the wire and when (a close_notify alone, then raw bytes)."""

    def __init__(self, address: tuple[str, int], ctx: ssl.SSLContext) -> None:
        self.sock = socket.create_connection(address, timeout=10)
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self.incoming, self.outgoing, server_hostname=HOST)

    def handshake(self) -> None:
        while True:
            try:
                self.tls.do_handshake()
                self.sock.sendall(self.outgoing.read())
                return
            except ssl.SSLWantReadError:
                self.sock.sendall(self.outgoing.read())
                self.incoming.write(self.sock.recv(65536))

    def send_close_notify(self) -> None:
        with contextlib.suppress(ssl.SSLWantReadError):
            self.tls.unwrap()
        self.sock.sendall(self.outgoing.read())

    def read_to_the_end(self) -> tuple[bytes, str]:
        """Plaintext until the server's close_notify (or how the stream ended)."""
        got = bytearray()
        while True:
            try:
                while chunk := self.tls.read(65536):
                    got += chunk
                return bytes(got), "close_notify"
            except ssl.SSLZeroReturnError:
                return bytes(got), "close_notify"
            except ssl.SSLWantReadError:
                pass
            try:
                data = self.sock.recv(65536)
            except OSError as exc:
                return bytes(got), f"{type(exc).__name__}: {exc}"
            if not data:
                return bytes(got), "FIN without close_notify"
            self.incoming.write(data)

    def close(self) -> None:
        self.sock.close()


def _against_a_hand_driven_peer(
    ew: EventWatcher,
    closing: Callable[[Any], Any],
    server: ITransport,
    client_ctx: ssl.SSLContext,
    script: Callable[[_HandDriven], tuple[bytes, str]],
    closed: list[IOEvent],
) -> tuple[bytes, str]:
    """Run ``script(peer)`` in a thread against ``server`` (attached, not bound)
    until it returned and the server's CLOSED came; returns what the script did."""
    closing(server)
    client = _HandDriven(server.bind(), client_ctx)
    closing(client)
    ended: list[tuple[bytes, str]] = []
    thread = threading.Thread(target=lambda: ended.append(script(client)), daemon=True)
    thread.start()
    ew.run_until(lambda: closed and not thread.is_alive(), timeout=10)
    thread.join()
    return ended[0]


@pytest.mark.parametrize("framed", [False, True], ids=["tls", "framed over tls"])
def test_after_your_close_the_peers_close_notify_ends_it_at_once_though_tcp_stays_open(
    ew, closing, server_ctx, client_ctx, framed: bool
) -> None:
    """README: once both close_notifies crossed, the peer is closed at once, with no
    wait for a TCP FIN the peer may never send (OK if you called close). Here you
    close first; the peer answers with its close_notify and keeps TCP open. Its
    close_notify must be read (not dropped unread by the close below, which would
    then wait for a FIN until linger_timeout and call it LingerTimeoutError)."""
    tls = TlsTransport(TcpTransport(linger_timeout=30), server_ctx)
    server: ITransport = FramedTransport(tls) if framed else tls
    closed: list[IOEvent] = []

    def owner(event: IOEvent) -> None:
        if event.kind is EventKind.ACCEPTED:
            server.resume_write(b"hello", event.peer)
            server.close(event.peer)
        elif event.kind is EventKind.CLOSED:
            closed.append(event)

    def peer(client: _HandDriven) -> tuple[bytes, str]:
        client.handshake()
        ended = client.read_to_the_end()  # hello, then the server's close_notify
        client.send_close_notify()  # ours, and TCP stays open
        return ended

    server.attach(ew, owner)
    ended = _against_a_hand_driven_peer(ew, closing, server, client_ctx, peer, closed)
    assert ended == (struct.pack("!I", 5) + b"hello" if framed else b"hello", "close_notify")
    assert [(e.status, e.error) for e in closed] == [(IOStatus.OK, None)]


def test_bytes_the_peer_sent_after_its_close_notify_do_not_make_the_close_reset_our_reply(
    ew, closing, server_ctx, client_ctx
) -> None:
    """interfaces.py: the close must not let bytes we never read make the kernel reset
    the connection and destroy our last reply. A peer sends its close_notify, then
    goes on in plaintext (b"QUIT"), and reads. Our reply (4 MiB) and our
    close_notify follow; once both close_notifies crossed, the socket is closed at
    once, and what the peer sent after its close_notify is read and dropped first,
    so every byte of the reply arrives."""
    reply = b"s" * (4 << 20)
    tls = TlsTransport(TcpTransport(), server_ctx)
    closed: list[IOEvent] = []
    left = bytearray()

    def push(peer: Peer) -> None:
        while left:
            result = tls.resume_write(bytes(left[:65536]), peer)
            del left[: result.sent]
            if result.status is not IOStatus.OK:
                return
        tls.suspend_write(peer)
        tls.write_eof(peer)

    def answer(peer: Peer) -> None:
        left.extend(reply)
        push(peer)

    def owner(event: IOEvent) -> None:
        if event.kind is EventKind.READABLE:
            while (r := tls.resume_read(event.peer)).status is IOStatus.OK:
                pass
            if r.status is IOStatus.EOF:  # its close_notify; answer once QUIT is here
                ew.call_later(0.3, answer, event.peer)
        elif event.kind is EventKind.WRITABLE:
            push(event.peer)
        elif event.kind is EventKind.CLOSED:
            closed.append(event)

    def peer(client: _HandDriven) -> tuple[bytes, str]:
        client.handshake()
        client.send_close_notify()
        time.sleep(0.1)
        client.sock.sendall(b"QUIT")  # in plaintext, after its close_notify
        return client.read_to_the_end()

    tls.attach(ew, owner)
    (got, how) = _against_a_hand_driven_peer(ew, closing, tls, client_ctx, peer, closed)
    assert (len(got), how) == (len(reply), "close_notify")
    assert [(e.status, e.error) for e in closed] == [(IOStatus.EOF, None)]


@pytest.mark.parametrize("between", [False, True], ids=["tls over tcp", "chunking between"])
def test_after_your_close_a_peer_that_never_answers_is_given_up_at_the_linger_timeout(
    ew, closing, server_ctx, client_ctx, between: bool
) -> None:
    """interfaces.py: each wait of a close is bounded. Our close_notify left at once;
    the peer neither answers with its own nor ends TCP: after the linger_timeout of
    the transport below (whose wait for a FIN this one stands in for; a layer in
    between that passes bytes through has none of its own), CLOSED(ERROR,
    LingerTimeoutError), never a wait for ever."""
    tcp = TcpTransport(linger_timeout=0.3)
    tls = TlsTransport(ChunkingTransport(tcp) if between else tcp, server_ctx)
    closed: list[IOEvent] = []

    def owner(event: IOEvent) -> None:
        if event.kind is EventKind.ACCEPTED:
            tls.close(event.peer)
        elif event.kind is EventKind.CLOSED:
            closed.append(event)

    def peer(client: _HandDriven) -> tuple[bytes, str]:
        client.handshake()
        return b"", "silent"  # (returns at once; the socket stays open, silent)

    tls.attach(ew, owner)
    _against_a_hand_driven_peer(ew, closing, tls, client_ctx, peer, closed)
    (event,) = closed
    assert event.status is IOStatus.ERROR and isinstance(event.error, LingerTimeoutError)
    assert "0.3 s" in str(event.error)


# ------------------------------------------- promises a mutation audit found unpinned
def test_a_client_handshake_times_out_from_connect(ew, closing, client_ctx) -> None:
    """A listener that accepts the connection in the kernel and never speaks TLS:
    the client's clock starts at connect, and one CLOSED says HANDSHAKE_TIMEOUT."""
    mute = closing(socket.create_server(("127.0.0.1", 0)))
    events: list[IOEvent] = []
    client = closing(TlsTransport(TcpTransport(), client_ctx, handshake_timeout=0.3))
    client.attach(ew, events.append)
    client.connect(mute.getsockname()[:2])
    ew.run_until(lambda: events, timeout=3)
    for _ in range(3):
        ew.run_once(0.01)  # nothing else follows
    assert [e.kind for e in events] == [EventKind.CLOSED]
    assert isinstance(events[0].error, TlsError)
    assert events[0].error.reason == "HANDSHAKE_TIMEOUT"


def test_peers_leaves_out_a_peer_still_in_its_handshake(ew, closing, server_ctx) -> None:
    server = closing(TlsTransport(TcpTransport(), server_ctx))
    server.attach(ew, lambda event: None)
    silent = closing(socket.create_connection(server.bind()))
    ew.run_until(lambda: server.inner.peers, timeout=5)  # (accepted below)
    assert silent.fileno() >= 0 and server.peers == []


def test_plaintext_waiting_keeps_its_place_ahead_of_newer_plaintext() -> None:
    from barknet.tls_session import TlsSession

    session = TlsSession(Peer(), server_side=False)
    session.handshaking = False
    assert session.can_encrypt
    session.plain += b"older"
    assert not session.can_encrypt  # newer plaintext waits behind it


def test_a_read_with_no_room_is_a_value_error(ew, closing, server_ctx, client_ctx) -> None:
    state = {"got": 0}
    _server, client, peer = _tls_pair(
        ew, closing, server_ctx, client_ctx, _read_everything(state), lambda t, e: None
    )
    ew.run_until(lambda: client.peers, timeout=5)
    with pytest.raises(ValueError, match="no room"):
        client.resume_read(peer, bytearray(10), offset=10)
    with pytest.raises(ValueError, match="no room"):
        client.resume_read(peer, bytearray(10), max_len=0)


def test_no_writable_for_an_owner_whose_writes_were_all_taken(
    ew, closing, server_ctx, client_ctx
) -> None:
    """WRITABLE answers a refused write: a write taken whole (some of it still held
    here, to leave as the socket allows) asks for nothing, so none comes."""
    state = {"got": 0}
    writable: list[IOEvent] = []

    def client_owner(transport: ITransport, event: IOEvent) -> None:
        if event.kind is EventKind.WRITABLE:
            writable.append(event)

    _server, client, peer = _tls_pair(
        ew,
        closing,
        server_ctx,
        client_ctx,
        _read_everything(state),
        client_owner,
        client_tcp={"sndbuf": 4096},
    )
    ew.run_until(lambda: client.peers, timeout=5)
    result = client.resume_write(b"w" * 60_000, peer)
    assert result == WriteResult(60_000, IOStatus.OK)
    assert client.write_buffer_size(peer) > 0  # (held here, not all in the socket yet)
    ew.run_until(lambda: state["got"] == 60_000, timeout=10)
    for _ in range(10):
        ew.run_once(0.01)
    assert writable == []


class _TakesMostThenNothing(TransportLayer):
    """Below TLS: passes writes through until ``keep`` is set; then the next write
    leaves all but its last ``keep`` bytes, and later writes leave nothing."""

    def __init__(self, inner: TcpTransport) -> None:
        super().__init__(inner)
        self.keep: int | None = None

    def resume_write(self, data, peer):  # type: ignore[no-untyped-def]
        if self.keep is None:
            return self.inner.resume_write(data, peer)
        if self.keep < 0:
            return WriteResult(0, IOStatus.WOULD_BLOCK)
        parts = data if isinstance(data, list) else [data]
        wire = b"".join(bytes(p) for p in parts)
        cut, self.keep = max(0, len(wire) - self.keep), -1
        result = self.inner.resume_write(wire[:cut], peer)
        assert result == WriteResult(cut, IOStatus.OK)
        return WriteResult(cut, IOStatus.WOULD_BLOCK)


def test_one_write_takes_at_most_one_record_past_the_high_water_mark(
    ew, closing, server_ctx, client_ctx
) -> None:
    """A large write is taken while at most high_water is held, in whole records:
    so what one call leaves held is at most high_water plus one record (and its
    overhead), however the layer below takes the records."""
    from barknet.tls_session import RECORD_SIZE

    server = closing(TlsTransport(TcpTransport(), server_ctx))
    server.attach(ew, lambda event: None)
    below = _TakesMostThenNothing(TcpTransport())
    client = closing(TlsTransport(below, client_ctx, high_water=65536))
    events: list[IOEvent] = []
    client.attach(ew, events.append)
    peer = client.connect(server.bind())
    ew.run_until(lambda: client.peers, timeout=5)
    below.keep = 64_000  # just under the mark stays held after the first records
    result = client.resume_write(bytes(1 << 20), peer)
    assert result.status is IOStatus.WOULD_BLOCK and 0 < result.sent < 1 << 20
    assert 65536 < client.write_buffer_size(peer) <= 65536 + RECORD_SIZE + 300
