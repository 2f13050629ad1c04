"""The interface's contract, checked on any transport: the promises beyond framing.

Theory of operation
-------------------
These checks hold a transport, message or byte stream, to what
:mod:`barknet.interfaces` promises: a graceful close that delivers everything
while the peer keeps sending, half-close both ways, a loop that refuses to be
re-entered, an fd closed and reused within one turn (and the ``CLOSED`` of
an aborted peer), no writes after ``close(peer)``, no busy loop after a drain
or after the peer's EOF was read, level-triggered ``READABLE`` (one message per
``READABLE`` still gets them all), ``suspend_read`` that holds it back, and a
``CLOSED`` that tells a reset from a clean end, with counters that still answer
in it. They use the same :class:`~barknet.testing.checks.Check` records, lab
and runner as the framing suite in :mod:`barknet.testing.conformance`;
``run_checks(make, levels=("contract",))`` runs them, the exercise's
self-check runs them with the framing suite, and the two marked ``also_in``
run in a default ``run_checks`` too. (The water marks and ``DRAINED`` of a
transport that queues are :mod:`barknet.testing.queueing`'s.)
"""

from __future__ import annotations

import hashlib
import random
import socket
from typing import Any

from ..errors import ConnectionBrokenError, TransportClosedError
from ..events import EventKind, IOEvent, IOStatus, Peer
from ..interfaces import ITransport
from .checks import Check, Lab, Maker, Side
from .faults import RawPeer
from .harness import IDLE_READABLES

__all__ = ["CONTRACT_CHECKS"]


# ------------------------------------------------------- the contract checks
# These hold any transport to the interface's contract (see
# barknet.interfaces): graceful close, half-close, a loop that refuses to be
# re-entered, no busy loop. They run over message transports (a
# ``max_frame_size`` attribute says so) and over byte streams alike: what
# they compare is the bytes, joined.
_REQUEST = b"next, please"


# The owners and the lab are the framing suite's (barknet.testing.checks), with
# two differences: the server does not echo, and every owner answers the
# wake-ups it has no use for (suspend_read, suspend_write), so a busy loop is
# the transport's and not the owner's. Side.send finishes a byte stream across
# WRITABLE events; Side.received joins what arrived, messages or bytes.
_Owner = Side


def _ContractLab(
    make: Maker,
    *,
    server_kw: dict[str, Any] | None = None,
    client_kw: dict[str, Any] | None = None,
) -> Lab:
    """A server that does not echo and clients, each a quiet :class:`Side` of a
    transport made by ``make`` over TCP (with the socket buffer sizes given)."""
    return Lab(make, echo=False, quiet=True, server_tcp=server_kw, client_tcp=client_kw)


def _digest(data: bytes) -> str:
    return f"{len(data)} bytes (sha1 {hashlib.sha1(data).hexdigest()[:8]})"


def _expect_bytes(got: bytes, want: bytes, who: str) -> None:
    if got != want:
        raise AssertionError(f"{who} got {_digest(got)}, expected {_digest(want)}")


def _expect_clean(event: IOEvent | None, statuses: tuple[IOStatus, ...], who: str) -> None:
    if event is None or event.status not in statuses:
        want = " or ".join(f"CLOSED({s.name})" for s in statuses)
        raise AssertionError(f"{who} should end with {want}, got {event}")


def _expect_only_closed_after(owner: Side, peer: Peer, since: int) -> None:
    """From ``owner.events[since]`` on (the moment ``close(peer)`` was called), no
    event for ``peer`` but its CLOSED."""
    after = {
        e.kind.name
        for e in owner.events[since:]
        if e.peer == peer and e.kind is not EventKind.CLOSED
    }
    if after:
        raise AssertionError(
            f"after close(peer), {', '.join(sorted(after))} came as well as its "
            "CLOSED: the only event still to come for a peer you closed is its CLOSED "
            "(what is queued still goes out, but it is not yours to hear about)"
        )


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


def _half_closing(make: Maker) -> Maker:
    """``make``, with a framing layer's own half-close switch turned on: a layer
    that closes a peer on its EOF by default (``half_close=False``, as
    ``FramedTransport`` and the exercise's transport do) can only be checked for
    half-close with it on. Transports without the switch are made as they are."""

    def made(inner: ITransport) -> ITransport:
        transport = make(inner)
        if getattr(transport, "half_close", None) is False:
            transport.half_close = True  # type: ignore[attr-defined]
        return transport

    return made


def _half_close_exchange(make: Maker, *, client_first: bool) -> None:
    # Larger than the 4 KiB send buffers: write_eof comes while most of the
    # message is still queued, so an EOF that overtakes the queue loses it.
    ask, answer = b"question " * 30_000, b"answer " * 60_000
    small = {"sndbuf": 4096}
    with _ContractLab(_half_closing(make), server_kw=small, client_kw=small) as lab:
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
        after_eof = [0]  # READABLEs the second side got once it had read the EOF

        def on_second(event: IOEvent) -> None:
            p = event.peer
            if p in replied and event.kind is EventKind.READABLE:
                after_eof[0] += 1
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
        reader_peer = peer if second is client else server_peer
        got = second.received(reader_peer)
        if len(got) < len(ask):
            if second.readable_after_eof[reader_peer] > IDLE_READABLES:
                raise AssertionError(
                    f"the reader got {_digest(got)} of {_digest(ask)}, and READABLE kept "
                    "coming after its resume_read said EOF: the frames were there, but EOF "
                    "was answered first. resume_read must hand out every frame that waits "
                    "before it says EOF"
                )
            raise AssertionError(
                f"the reader got {_digest(got)} of {_digest(ask)} before the exchange "
                "ended: did the EOF overtake the message? write_eof came while most of it "
                "was still queued, and what is queued must go out first, the EOF after it"
            )
        if len(late) != 2 and len(got) > len(ask):
            raise AssertionError(
                f"resume_write after write_eof should raise TransportClosedError; it did "
                f"{len(late)} times of 2, and the reader got {len(got) - len(ask)} bytes more "
                "than were written before write_eof: a frame written after it went out. "
                "Refuse new frames for a peer once write_eof (or close) was called for it"
            )
        _expect_bytes(got, ask, "reader")
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
        if after_eof[0] > IDLE_READABLES:
            raise AssertionError(
                f"READABLE came {after_eof[0]} times after the reader had read the EOF "
                "(and everything before it): once the EOF is read, nothing waits, so "
                "nothing should be announced (a busy loop)"
            )


def check_half_close_client_first(make: Maker) -> None:
    """The client sends, then write_eof while most of the message is still queued;
    the server reads it all and the EOF, replies on a later turn, then write_eof:
    both get everything, in order before the EOF, then CLOSED(EOF), and no READABLE
    storm once the EOF was read. (A framing layer's ``half_close`` switch, if it
    has one, is turned on.)"""
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
    every byte and a clean EOF, no event but our CLOSED comes after the close
    (no DRAINED once the queue went out), and that CLOSED says OK."""
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
        client, peer = lab.client(take=False)
        late: list[TransportClosedError] = []
        closed_at: list[int] = []

        def close_then_write() -> None:
            closed_at.append(len(client.events))
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
        received = server.received(server_peer)
        if not late and len(received) > len(payload):
            raise AssertionError(
                "resume_write after close(peer) did not raise TransportClosedError, and the "
                f"peer got {len(received) - len(payload)} bytes more than were written before "
                "the close: the frame written after it went out too. Refuse new frames for "
                "a peer once close(peer) (or write_eof) was called for it"
            )
        _expect_bytes(received, payload, "the peer")
        if server_peer not in server.eof and server.closed[server_peer].status is not IOStatus.EOF:
            raise AssertionError("the peer never read a clean EOF")
        _expect_clean(client.closed[peer], (IOStatus.OK,), "the side that closed")
        if not late:
            raise AssertionError("resume_write after close(peer) did not raise")
        _expect_only_closed_after(client, peer, closed_at[0])


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
            why = ""
            if "write" in dispatched:
                why = (
                    ": the socket's WRITABLE is still watched with nothing left to send. "
                    "Once the queue is empty, tell the transport below you are done "
                    "(inner.suspend_write(peer)), or it keeps waking you on every turn"
                )
            raise AssertionError(
                f"an idle connection kept the loop busy: {len(dispatched)} dispatches "
                f"({sorted(set(dispatched))}) and {len(new)} events "
                f"({sorted({e.kind.name for e in new})}) in 50 turns{why}"
            )


def check_fd_closed_and_reused_within_a_turn(make: Maker) -> None:
    """In one loop turn, peer A becomes writable and, before its turn comes, a
    callback aborts A and starts a connect that gets A's descriptor number (to a
    listener whose backlog is full, so it cannot finish). A's stale readiness
    must not reach the new peer: no CONNECTED for it. A's own CLOSED comes."""
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
            server.take = False  # A's bytes pile up: A's writes block
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
            if a not in client.closed:
                raise AssertionError(
                    "abort(peer) was never followed by that peer's CLOSED: CLOSED comes "
                    "once for every peer, on a later turn, whatever ended it"
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


def check_suspend_read_holds_readable_back(make: Maker) -> None:
    """An owner that calls suspend_read on its first READABLE, with messages
    waiting, hears no more READABLE for 20 turns; its next read resumes reading
    and gets every message, in order."""
    messages = [b"held %d" % i for i in range(5)]
    with _ContractLab(make) as lab:
        server = lab.server
        server.take = False  # quiet: the first READABLE is answered with suspend_read
        client, peer = lab.client()
        for payload in messages:
            client.send(peer, payload)
        lab.run_until(
            lambda: any(e.kind is EventKind.READABLE for e in server.events), "a READABLE"
        )
        for _ in range(20):
            lab.ew.run_once(0.005)
        readable = [e for e in server.events if e.kind is EventKind.READABLE]
        if len(readable) > 1:
            raise AssertionError(
                f"READABLE came {len(readable)} times although the owner called "
                "suspend_read(peer) on the first: after suspend_read, no READABLE comes "
                "for that peer until it reads again"
            )
        (server_peer,) = server.opened
        want = b"".join(messages)

        def read_all() -> bool:
            server.read(server_peer)  # resume_read: resumes reading, and reads
            return len(server.received(server_peer)) >= len(want)

        lab.run_until(read_all, "the held messages, once the owner read again")
        _expect_bytes(server.received(server_peer), want, "the owner that read again")


def check_closed_tells_the_truth_and_counters_answer(make: Maker) -> None:
    """Two peers send a message each: one then ends cleanly, one resets. The first
    ends with CLOSED(EOF) or OK, the reset one with CLOSED(ERROR) carrying a
    ConnectionBrokenError, and in each CLOSED callback counters(peer) still
    answers, with every byte that peer sent counted."""
    message = b"counted " * 512
    with _ContractLab(make) as lab:
        server = lab.server
        counted: dict[Peer, Any] = {}
        closing: set[Peer] = set()

        def on_server(event: IOEvent) -> None:
            p = event.peer
            if event.kind is EventKind.CLOSED:
                try:
                    counted[p] = server.transport.counters(p)
                except Exception as exc:  # (what it raised is the finding)
                    counted[p] = exc
            elif p in server.eof and p not in server.closed and p not in closing:
                closing.add(p)  # its end, read: we close too (a byte stream stays open)
                server.transport.close(p)

        server.on_event = on_server
        wire = len(message).to_bytes(4, "big") + message if server.messages else message
        clean, resetting = RawPeer(lab.address), RawPeer(lab.address)
        try:
            lab.run_until(lambda: len(server.opened) == 2, "2 connections")
            for raw in (clean, resetting):
                raw.send(wire)
            lab.run_until(
                lambda: all(len(server.received(p)) >= len(message) for p in server.opened),
                "both messages",
            )
            clean.half_close()
            resetting.reset()
            lab.run_until(lambda: len(server.closed) == 2, "a CLOSED for each peer")
        finally:
            clean.close()
            resetting.close()
        first, second = server.opened  # (in the order they connected: clean, resetting)
        _expect_clean(server.closed[first], (IOStatus.EOF, IOStatus.OK), "a peer that ended")
        broken = server.closed[second]
        if broken.status is not IOStatus.ERROR or not isinstance(
            broken.error, ConnectionBrokenError
        ):
            raise AssertionError(
                "a peer that reset the connection should end with CLOSED(ERROR, "
                f"ConnectionBrokenError), got {broken}: CLOSED tells the truth"
            )
        for p, who in ((first, "the clean peer"), (second, "the peer that reset")):
            answer = counted.get(p)
            if answer is None or isinstance(answer, Exception):
                raise AssertionError(
                    f"counters({who}) in its CLOSED callback raised {answer!r}: a peer's "
                    "counters answer until its CLOSED has been delivered, in the CLOSED "
                    "callback too"
                )
            if answer.bytes_received < len(wire):
                raise AssertionError(
                    f"counters({who}) in its CLOSED callback counted "
                    f"{answer.bytes_received} bytes received; it sent {len(wire)}"
                )


#: The interface's contract, for message and byte transports alike. Kept apart
#: from :data:`CHECKS` (the framing suite), which a byte transport cannot pass.
#: ``run_checks(make, levels=("contract",))`` runs them; the exercise's
#: self-check asks for them with the framing suite; the two marked
#: ``also_in=("errors",)`` run in a default ``run_checks`` too.
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
        also_in=("errors",),
    ),
    Check(
        "no busy loop after a drain",
        check_no_busy_loop_after_a_drain,
        "contract",
        also_in=("errors",),
    ),
    Check(
        "an fd closed and reused within one turn",
        check_fd_closed_and_reused_within_a_turn,
        "contract",
    ),
    Check("one message per READABLE", check_one_message_per_readable, "contract"),
    Check("suspend_read holds READABLE back", check_suspend_read_holds_readable_back, "contract"),
    Check(
        "CLOSED tells a reset from a clean end, and counters answer in it",
        check_closed_tells_the_truth_and_counters_answer,
        "contract",
        plain_wire=True,
    ),
]
