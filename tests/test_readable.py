"""Level-triggered READABLE: an owner that takes one message per READABLE gets them all.

The contract check (barknet.testing.contract) runs against FramedTransport directly, through a
ChunkingTransport, and with CompressedTransport over it; the other tests pin
what the interface promises around it (no busy loop, no extra work for an owner
that drains until WOULD_BLOCK, suspend_read stops the replays).
"""

from __future__ import annotations

from typing import Any

import pytest

from barknet import EventKind, EventWatcher, FramedTransport, IOStatus, TcpTransport, encode_frame
from barknet.compress import CompressedTransport
from barknet.errors import ConnectionBrokenError
from barknet.framing import HEADER_SIZE, PLAIN_READ_SIZE
from barknet.interfaces import ITransport
from barknet.testing.conformance import run_checks
from barknet.testing.contract import CONTRACT_CHECKS, check_one_message_per_readable
from barknet.testing.faults import ChunkingTransport


def framed(inner: ITransport) -> ITransport:
    return FramedTransport(inner)


def framed_over_chunking(inner: ITransport) -> ITransport:
    return FramedTransport(ChunkingTransport(inner, max_read=3, max_write=11, would_block=0.2))


def compressed_over_framed(inner: ITransport) -> ITransport:
    return CompressedTransport(FramedTransport(inner))


@pytest.mark.parametrize("make", [framed, framed_over_chunking, compressed_over_framed])
def test_an_owner_taking_one_frame_per_readable_gets_every_frame(make) -> None:
    check_one_message_per_readable(make)


def test_the_check_is_registered_as_a_contract_check() -> None:
    (check,) = [c for c in CONTRACT_CHECKS if c.run is check_one_message_per_readable]
    assert check.level == "contract"
    report = run_checks(framed, levels=("contract",), names=[check.name])
    assert report.passed, str(report)


@pytest.fixture
def pair():
    """A framed server (owner set by the test) and a framed client, connected."""
    ew = EventWatcher()
    server = FramedTransport(TcpTransport())
    client = FramedTransport(TcpTransport())
    seen: dict[str, Any] = {"readable": 0, "peer": None, "frames": []}
    try:
        yield ew, server, client, seen
    finally:
        client.close()
        server.close()
        for _ in range(3):
            ew.run_once(0)
        ew.close()


def _start(ew, server, client, seen, owner) -> Any:
    def on_server(event) -> None:
        if event.kind is EventKind.ACCEPTED:
            seen["peer"] = event.peer
        elif event.kind is EventKind.READABLE:
            seen["readable"] += 1
            owner(event.peer)

    server.attach(ew, on_server)
    client.attach(ew, lambda event: None)
    peer = client.connect(server.bind())
    ew.run_until(lambda: seen["peer"] is not None, timeout=5)
    return peer


def test_a_draining_owner_gets_one_readable_per_burst_and_nothing_while_idle(pair) -> None:
    ew, server, client, seen = pair

    def drain(p) -> None:
        while (r := server.resume_read(p)).status is IOStatus.OK:
            seen["frames"].append(bytes(r.data))

    peer = _start(ew, server, client, seen, drain)
    for i in range(50):
        client.resume_write(b"%d" % i, peer)
    ew.run_until(lambda: len(seen["frames"]) == 50, timeout=5)
    readable = seen["readable"]
    assert readable <= 2  # one burst, maybe split across two reads: no replays
    for _ in range(50):
        ew.run_once(0.001)
    assert seen["readable"] == readable
    assert not ew._ready  # nothing scheduled when nothing waits


def test_readable_stops_after_suspend_read_and_comes_back_after_resume_read(pair) -> None:
    ew, server, client, seen = pair

    def one(p) -> None:
        r = server.resume_read(p)
        if r.status is IOStatus.OK:
            seen["frames"].append(bytes(r.data))
        if len(seen["frames"]) == 2:
            server.suspend_read(p)

    peer = _start(ew, server, client, seen, one)
    for i in range(5):
        client.resume_write(b"%d" % i, peer)
    ew.run_until(lambda: len(seen["frames"]) == 2, timeout=5)
    readable = seen["readable"]
    for _ in range(20):
        ew.run_once(0.001)
    assert seen["readable"] == readable  # suspended: no READABLE however much waits
    r = server.resume_read(seen["peer"])  # resumes reading, and takes a frame
    assert (r.status, bytes(r.data)) == (IOStatus.OK, b"2")
    ew.run_until(lambda: len(seen["frames"]) == 4, timeout=5)
    assert seen["frames"] == [b"0", b"1", b"3", b"4"]


def test_an_unread_eof_is_replayed_until_the_owner_reads_it(stage) -> None:
    """With half_close=True the peer's EOF is news the owner must read: READABLE
    repeats turn after turn until resume_read says EOF, then stops (the grammar's
    "an unread EOF waits", for FramedTransport)."""
    server = stage.server(echo=False, take=False, half_close=True)
    raw, peer = server.raw()
    raw.half_close()
    stage.turns(10, timeout=0.01)
    readable = len(server.of_kind(EventKind.READABLE, peer))
    assert readable >= 5, f"READABLE came {readable} times for an unread EOF in 10 turns"
    assert server.transport.resume_read(peer).status is IOStatus.EOF
    stage.turns(10, timeout=0.01)
    assert len(server.of_kind(EventKind.READABLE, peer)) == readable
    assert server.closed(peer) == []  # half-close: still open for our writes


def test_an_owner_taking_one_frame_per_readable_gets_closed_eof_after_the_last(stage) -> None:
    """Frames then a clean EOF: an owner that takes one frame per READABLE gets
    every frame, then CLOSED(EOF) (half_close=False: the peer is done)."""
    server = stage.server(echo=False, take=False)
    raw, peer = server.raw()
    taken: list[bytes] = []

    def one_per_readable(event) -> None:  # type: ignore[no-untyped-def]
        if event.kind is EventKind.READABLE:
            result = server.transport.resume_read(event.peer)
            if result.status is IOStatus.OK:
                taken.append(bytes(result.data))

    server.on_event = one_per_readable
    raw.send(b"".join(encode_frame(b"frame %d" % i) for i in range(3)))
    raw.half_close()
    server.close_of(peer)
    assert taken == [b"frame 0", b"frame 1", b"frame 2"]
    assert [e.status for e in server.closed(peer)] == [IOStatus.EOF]


def _frames_filling_one_plain_read() -> list[bytes]:
    """Sixteen frames of exactly PLAIN_READ_SIZE bytes on the wire: the plain read
    that takes them comes back full, so the same pump reads again at once, and
    meets whatever followed them (an RST, in the test below)."""
    size = PLAIN_READ_SIZE // 16 - HEADER_SIZE
    return [bytes([65 + i]) * size for i in range(16)]


@pytest.mark.parametrize("reader", ["resume_read", "read_frames(limit=1)"])
def test_frames_that_came_before_a_reset_reach_an_owner_taking_one_per_readable(
    stage, reader: str
) -> None:
    """ "Take one message per READABLE or read until the status is not OK: both
    get everything" (README), also when the peer resets right behind its
    frames: they are handed out first, then CLOSED(ERROR), once. (The read that
    meets the reset is in the same pump as the frames: before the fix the
    CLOSED(ERROR) came that turn and the frames still waiting were dropped.)"""
    server = stage.server(echo=False, take=False)
    raw, peer = server.raw()
    transport = server.transport
    taken: list[bytes] = []
    writes: list[IOStatus] = []

    def one_per_readable(event) -> None:  # type: ignore[no-untyped-def]
        if event.kind is not EventKind.READABLE:
            return
        if reader == "resume_read":
            result = transport.resume_read(event.peer)
            got = [result.data] if result.status is IOStatus.OK else []
        else:
            got = transport.read_frames(event.peer, limit=1)
        for frame in got:
            taken.append(bytes(frame))
            writes.append(transport.resume_write(b"reply", event.peer).status)

    server.on_event = one_per_readable
    frames = _frames_filling_one_plain_read()
    raw.send(b"".join(encode_frame(f) for f in frames))
    raw.reset()
    closed = server.close_of(peer)
    assert [f[:1] for f in taken] == [f[:1] for f in frames]
    assert taken == frames
    assert closed.status is IOStatus.ERROR
    assert isinstance(closed.error, ConnectionBrokenError)
    assert len(server.closed(peer)) == 1
    # A reply to a frame taken after the reset is refused with the error, not raised.
    assert writes[-1] is IOStatus.ERROR
    assert peer not in transport.peers


@pytest.mark.parametrize("make", [framed, framed_over_chunking, compressed_over_framed])
def test_a_read_after_suspend_read_resumes_reading_even_while_messages_are_still_here(
    make,
) -> None:
    """interfaces.py: suspend_read lasts until you call resume_read, and a read
    keeps watching the peer. Here the read that ends the pause is served from
    the messages already here, with more of them left: reading below must
    start again once those are taken, so the peer's later messages arrive."""
    import socket

    ew = EventWatcher()
    server = make(TcpTransport())
    got: list[bytes] = []
    paused: list[Any] = []

    def owner(event) -> None:  # one message per READABLE
        if event.kind is not EventKind.READABLE:
            return
        result = server.resume_read(event.peer)
        if result.status is IOStatus.OK:
            got.append(bytes(result.data))
        if len(got) == 1 and not paused:
            server.suspend_read(event.peer)
            paused.append(event.peer)

    server.attach(ew, owner)
    frame = (
        (lambda m: encode_frame(b"\x00" + m)) if make is compressed_over_framed else encode_frame
    )
    raw = socket.create_connection(server.bind())
    try:
        raw.sendall(b"".join(frame(b"m%d" % i) for i in range(3)))
        ew.run_until(lambda: paused, timeout=5)
        for _ in range(3):
            ew.run_once(0.01)
        assert got == [b"m0"]  # suspended: nothing announced
        result = server.resume_read(paused[0])  # served from what is here (over
        if result.status is IOStatus.OK:  # 3-byte reads, maybe not yet whole)
            got.append(bytes(result.data))
        ew.run_until(lambda: len(got) == 3, timeout=5)
        raw.sendall(b"".join(frame(b"m%d" % i) for i in range(3, 6)))
        ew.run_until(lambda: len(got) == 6, timeout=5)
        assert got == [b"m%d" % i for i in range(6)]
    finally:
        raw.close()
        server.close()
        for _ in range(3):
            ew.run_once(0)
        ew.close()
