"""CompressedTransport: the conformance suite over it, and what a hostile peer can do."""

from __future__ import annotations

import contextlib
import socket
import zlib
from collections.abc import Callable, Iterator

import pytest

from barknet import (
    EventKind,
    EventWatcher,
    FramedTransport,
    FrameTooLargeError,
    IOStatus,
    TcpTransport,
    TransportClosedError,
    encode_frame,
)
from barknet.compress import COMPRESSED, STORED, CompressedTransport, CompressionError
from barknet.interfaces import ITransport
from barknet.testing.conformance import CHECKS, Check

pytestmark = pytest.mark.usefixtures("no_leaks")


def compressed_over_framed(inner: ITransport) -> ITransport:
    return CompressedTransport(FramedTransport(inner))


# Every check but those that speak plain frames from a raw socket: compressed payloads
# are not the bytes the raw socket sent or expects (the wire format check and its kin).
LAYERED = [c for c in CHECKS if not c.plain_wire]


@pytest.mark.parametrize("check", LAYERED, ids=[c.name for c in LAYERED])
def test_compressed_framed_stack_passes_check(check: Check) -> None:
    check.run(compressed_over_framed)


@pytest.fixture
def adopted(
    ew: EventWatcher, framed_endpoint: Callable[..., object]
) -> Iterator[Callable[..., tuple[object, object, socket.socket]]]:
    """``adopted(max_frame_size=...)``: a CompressedTransport over one end of a
    socketpair (recorded by ``framed_endpoint``) and the raw other end."""
    raw_ends: list[socket.socket] = []

    def make(**options: int) -> tuple[object, object, socket.socket]:
        mine, theirs = socket.socketpair()
        raw_ends.append(theirs)
        transport = CompressedTransport(FramedTransport(TcpTransport()), **options)
        endpoint = framed_endpoint(transport)
        peer = transport.adopt(mine)
        return endpoint, peer, theirs

    yield make
    for sock in raw_ends:
        sock.close()


def _received_frames(sock: socket.socket) -> list[bytes]:
    data = b""
    sock.settimeout(5)
    while True:
        data += sock.recv(65536)
        frames, rest = [], data
        while len(rest) >= 4 and len(rest) >= 4 + int.from_bytes(rest[:4], "big"):
            size = int.from_bytes(rest[:4], "big")
            frames.append(rest[4 : 4 + size])
            rest = rest[4 + size :]
        if not rest:
            return frames


def test_compressible_message_is_sent_compressed_and_smaller(ew, adopted) -> None:
    endpoint, peer, theirs = adopted()
    message = b"the same line again\n" * 500
    endpoint.transport.resume_write(message, peer)
    ew.run_until(lambda: endpoint.transport.counters().bytes_sent > 0, timeout=5)
    (frame,) = _received_frames(theirs)
    assert frame[0] == COMPRESSED == 0x01  # the wire format, not just the module's name for it
    assert len(frame) < len(message) // 10
    assert zlib.decompress(frame[1:]) == message
    assert endpoint.transport.bytes_in == len(message)
    assert endpoint.transport.bytes_out == len(frame)


def test_incompressible_and_empty_messages_are_stored_with_one_flag_byte(ew, adopted) -> None:
    endpoint, peer, theirs = adopted()
    noise = bytes(range(7, 250, 3))  # too short and varied for zlib to win
    endpoint.transport.resume_write(noise, peer)
    endpoint.transport.resume_write(b"", peer)
    assert _received_frames(theirs) == [b"\x00" + noise, b"\x00"]  # STORED is 0x00 on the wire
    assert endpoint.transport.bytes_in == len(noise)
    assert endpoint.transport.bytes_out == (1 + len(noise)) + 1  # one flag byte each


def test_a_message_of_exactly_the_limit_is_sent(ew, adopted) -> None:
    endpoint, peer, theirs = adopted(max_frame_size=1000)
    endpoint.transport.resume_write(bytes(1000), peer)  # the limit itself is allowed
    (frame,) = _received_frames(theirs)
    assert zlib.decompress(frame[1:]) == bytes(1000)


def test_messages_from_the_wire_are_inflated_in_order(ew, adopted) -> None:
    endpoint, peer, theirs = adopted()
    big = b"abc" * 10_000
    theirs.sendall(
        encode_frame(bytes((COMPRESSED,)) + zlib.compress(big))
        + encode_frame(bytes((STORED,)) + b"plain")
        + encode_frame(bytes((STORED,)))
    )
    ew.run_until(lambda: len(endpoint.frames[peer]) == 3, timeout=5)
    assert endpoint.frames[peer] == [big, b"plain", b""]


@pytest.mark.parametrize(
    ("frame", "error_type"),
    [
        (b"", CompressionError),
        (bytes((7,)) + b"what is this", CompressionError),
        (bytes((COMPRESSED,)) + b"not zlib at all", CompressionError),
        (bytes((COMPRESSED,)) + zlib.compress(b"x" * 1000)[:-3], CompressionError),
        (bytes((COMPRESSED,)) + zlib.compress(b"x" * 1000) + b"tail", CompressionError),
        (bytes((COMPRESSED,)) + zlib.compress(bytes(10_000_000)), FrameTooLargeError),
        (bytes((STORED,)) + bytes(1001), FrameTooLargeError),
    ],
    ids=["empty", "unknown flag", "corrupt", "cut short", "trailing bytes", "bomb", "stored 1001"],
)
def test_bad_frame_closes_the_peer_with_a_typed_error(ew, adopted, frame, error_type) -> None:
    endpoint, peer, theirs = adopted(max_frame_size=1000)
    theirs.sendall(encode_frame(frame))
    ew.run_until(lambda: endpoint.closed(peer), timeout=5)
    (event,) = endpoint.closed(peer)
    assert event.status is IOStatus.ERROR
    assert isinstance(event.error, error_type), event
    assert endpoint.frames[peer] == []


def test_bomb_is_not_inflated_past_the_limit(ew, adopted) -> None:
    endpoint, peer, theirs = adopted(max_frame_size=1000)
    theirs.sendall(encode_frame(bytes((COMPRESSED,)) + zlib.compress(bytes(50_000_000), 9)))
    ew.run_until(lambda: endpoint.closed(peer), timeout=5)
    (event,) = endpoint.closed(peer)
    assert isinstance(event.error, FrameTooLargeError)
    assert event.error.size == 1001  # inflating stopped one byte past the limit
    # Nothing announced 1,001 bytes: the message says what the peer did.
    assert "inflates past the limit (stopped at 1001 bytes)" in str(event.error)
    assert "announced" not in str(event.error)


def test_oversized_message_is_refused_before_compression(ew, adopted) -> None:
    endpoint, peer, _ = adopted(max_frame_size=1000)
    with pytest.raises(FrameTooLargeError):
        endpoint.transport.resume_write(bytes(1001), peer)  # would compress to a few bytes
    assert endpoint.transport.bytes_in == 0


@pytest.mark.parametrize("end", ["write_eof", "close"])
def test_a_message_the_layer_below_refuses_is_not_counted(ew, adopted, end) -> None:
    """bytes_in and bytes_out count what was sent: not a message refused below."""
    endpoint, peer, _ = adopted()
    getattr(endpoint.transport, end)(peer)
    with pytest.raises(TransportClosedError):
        endpoint.transport.resume_write(b"x" * 1000, peer)
    assert (endpoint.transport.bytes_in, endpoint.transport.bytes_out) == (0, 0)


def test_default_limit_leaves_room_for_the_flag_byte() -> None:
    transport = CompressedTransport(FramedTransport(TcpTransport(), max_frame_size=5000))
    assert transport.max_frame_size == 4999


@pytest.mark.parametrize("then_close", [False, True], ids=["until CLOSED", "after close(peer)"])
def test_calls_for_a_peer_closed_for_an_error_answer_error_until_closed(ew, then_close) -> None:
    """As for a peer broken below (the README, "A bad peer"): until its CLOSED, calls
    for it answer ERROR or do nothing, since the owner closed nothing; after the
    owner's own close(peer) they raise."""
    mine, theirs = socket.socketpair()
    transport = CompressedTransport(FramedTransport(TcpTransport()))
    try:
        seen: list = []
        answers: list = []

        def owner(event) -> None:
            seen.append(event)
            if event.kind is not EventKind.READABLE or answers:
                return
            peer = event.peer
            answers.append(transport.resume_read(peer).status)
            if then_close:
                transport.close(peer)
            for call in (
                lambda: transport.resume_write(b"hello", peer).status,
                lambda: transport.resume_read(peer).status,
                lambda: transport.suspend_read(peer),
                lambda: transport.suspend_write(peer),
                lambda: transport.write_eof(peer),
            ):
                try:
                    answers.append(call())
                except TransportClosedError:
                    answers.append("raised")

        transport.attach(ew, owner)
        transport.adopt(mine)
        theirs.sendall(encode_frame(b"\x09"))
        ew.run_until(lambda: any(e.kind is EventKind.CLOSED for e in seen), timeout=5)
        if then_close:
            assert answers == [IOStatus.ERROR, *["raised"] * 5]
        else:
            assert answers == [IOStatus.ERROR] * 3 + [None] * 3
        (closed,) = [e for e in seen if e.kind is EventKind.CLOSED]
        assert isinstance(closed.error, CompressionError)
    finally:
        theirs.close()
        transport.close()


@pytest.mark.parametrize("level", [-2, 10])
def test_a_level_zlib_does_not_know_is_refused_at_once(level: int) -> None:
    with pytest.raises(ValueError, match="level"):
        CompressedTransport(FramedTransport(TcpTransport()), level=level)
    for fine in (-1, 0, 9):
        CompressedTransport(FramedTransport(TcpTransport()), level=fine)


def test_a_stored_message_of_exactly_the_limit_is_received(ew, adopted) -> None:
    endpoint, peer, theirs = adopted(max_frame_size=1000)
    theirs.sendall(encode_frame(bytes((STORED,)) + b"x" * 1000))
    ew.run_until(lambda: endpoint.frames[peer], timeout=5)
    assert endpoint.frames[peer] == [b"x" * 1000]


def test_reads_after_a_bad_message_say_error_until_closed_comes(ew) -> None:
    mine, theirs = socket.socketpair()
    try:
        transport = CompressedTransport(FramedTransport(TcpTransport()))
        seen: list = []
        statuses: list = []

        def owner(event) -> None:
            seen.append(event)
            if event.kind is EventKind.READABLE:  # read, and read again
                statuses.append(transport.resume_read(event.peer))
                statuses.append(transport.resume_read(event.peer))

        transport.attach(ew, owner)
        peer = transport.adopt(mine)
        theirs.sendall(encode_frame(bytes((7,)) + b"unknown flag"))
        ew.run_until(lambda: any(e.kind is EventKind.CLOSED for e in seen), timeout=5)
        assert statuses, "READABLE never came"
        assert all(r.status is IOStatus.ERROR for r in statuses[:2]), statuses
        assert isinstance(statuses[0].error, CompressionError)
        assert statuses[1].error is statuses[0].error
        assert [e.status for e in seen if e.kind is EventKind.CLOSED] == [IOStatus.ERROR]
        assert peer not in transport.peers
    finally:
        theirs.close()
        transport.close()


@pytest.fixture
def over_a_socket_pair() -> Iterator[tuple[CompressedTransport, socket.socket, socket.socket]]:
    """A CompressedTransport over framing over TCP, not attached, with the two ends of
    a socket pair: adopt the first, drive the second by hand. Closed after the test."""
    mine, theirs = socket.socketpair()
    transport = CompressedTransport(FramedTransport(TcpTransport()))
    try:
        yield transport, mine, theirs
    finally:
        theirs.close()
        transport.close()


@pytest.mark.parametrize("then", ["waits for READABLE", "suspends, then reads"])
def test_a_message_refused_for_a_small_buffer_is_the_next_one_read(
    ew, over_a_socket_pair, then
) -> None:
    """BufferError refuses a read without losing the message: it is the next
    one read, READABLE keeps saying it waits, and suspend_read quiets that."""
    transport, mine, theirs = over_a_socket_pair
    log: list = []

    def owner(event) -> None:
        if event.kind is not EventKind.READABLE:
            return
        room = bytearray(100 if log else 10)
        try:  # one read per READABLE
            result = transport.resume_read(event.peer, room)
        except BufferError:
            log.append("refused")
            if then == "suspends, then reads":
                transport.suspend_read(event.peer)
            return
        if result.status is IOStatus.OK:
            log.append(bytes(result.data))

    transport.attach(ew, owner)
    peer = transport.adopt(mine)
    # One message only: nothing below still waits to announce it again.
    theirs.sendall(encode_frame(bytes((STORED,)) + b"A" * 50))
    if then == "waits for READABLE":
        ew.run_until(lambda: len(log) == 2, timeout=5)
        assert log == ["refused", b"A" * 50]
    else:
        ew.run_until(lambda: log == ["refused"], timeout=5)
        for _ in range(5):
            ew.run_once(0)
        assert log == ["refused"]  # suspended: no READABLE for the held message
        assert transport.resume_read(peer).data == b"A" * 50
    for _ in range(5):
        ew.run_once(0)
    assert transport.resume_read(peer).status is IOStatus.WOULD_BLOCK


def _refusing_owner(transport: CompressedTransport, log: list, *, reads_on: int) -> Callable:
    """An owner that offers too small a buffer on the first READABLE, ignores the
    next ones until the ``reads_on``-th, and reads with room enough then."""

    def owner(event) -> None:
        if event.kind is not EventKind.READABLE:
            return
        log.append(("READABLE", transport._watcher.turns))  # type: ignore[union-attr]
        readables = sum(1 for entry in log if entry[0] == "READABLE")
        if readables == 1:
            with pytest.raises(BufferError):
                transport.resume_read(event.peer, bytearray(10))
        elif readables == reads_on:
            log.append(bytes(transport.resume_read(event.peer, bytearray(100)).data))

    return owner


def test_a_held_message_is_announced_once_a_turn_until_it_is_read(ew) -> None:
    mine, theirs = socket.socketpair()
    transport = CompressedTransport(FramedTransport(TcpTransport()))
    try:
        log: list = []
        transport.attach(ew, _refusing_owner(transport, log, reads_on=4))
        transport.adopt(mine)
        theirs.sendall(encode_frame(bytes((STORED,)) + b"A" * 50))
        ew.run_until(lambda: b"A" * 50 in log, timeout=5)
        for _ in range(5):
            ew.run_once(0)
        turns = [entry[1] for entry in log if entry[0] == "READABLE"]
        assert len(turns) == 4  # refused, ignored twice, read: then no more
        assert len(set(turns)) == 4, f"more than one READABLE in a turn: {turns}"
    finally:
        theirs.close()
        transport.close()


def test_suspending_then_refusing_again_still_gives_one_readable_a_turn(ew) -> None:
    mine, theirs = socket.socketpair()
    transport = CompressedTransport(FramedTransport(TcpTransport()))
    try:
        turns: list[int] = []

        def owner(event) -> None:
            if event.kind is not EventKind.READABLE:
                return
            turns.append(ew.turns)
            if len(turns) == 1:
                with pytest.raises(BufferError):
                    transport.resume_read(event.peer, bytearray(10))
                transport.suspend_read(event.peer)
                with pytest.raises(BufferError):  # a read: reading resumes
                    transport.resume_read(event.peer, bytearray(10))

        transport.attach(ew, owner)
        transport.adopt(mine)
        theirs.sendall(encode_frame(bytes((STORED,)) + b"A" * 50))
        ew.run_until(lambda: len(turns) >= 4, timeout=5)
        assert len(set(turns)) == len(turns), f"more than one READABLE in a turn: {turns}"
    finally:
        theirs.close()
        transport.close()


@pytest.mark.parametrize("ending", ["close", "abort"])
def test_a_held_message_goes_with_the_peer_you_close(ew, ending) -> None:
    """After close(peer) the held message is not yours: no READABLE for it, and
    reads raise like every other call for a peer you closed."""
    mine, theirs = socket.socketpair()
    transport = CompressedTransport(FramedTransport(TcpTransport()))
    try:
        log: list = []
        transport.attach(ew, _refusing_owner(transport, log, reads_on=0))
        peer = transport.adopt(mine)
        theirs.sendall(encode_frame(bytes((STORED,)) + b"A" * 50))
        ew.run_until(lambda: log, timeout=5)
        getattr(transport, ending)(peer)
        for _ in range(10):
            ew.run_once(0)
        assert len(log) == 1, f"READABLE after {ending}(peer): {log}"
        with pytest.raises(TransportClosedError):
            transport.resume_read(peer)
    finally:
        theirs.close()
        transport.close()


@pytest.mark.parametrize("ending", ["close", "abort"])
def test_reads_raise_after_you_close_a_peer_that_broke_the_rules(ew, ending) -> None:
    """Until its CLOSED, a peer that sent a bad message answers reads with ERROR;
    once you closed it, reads raise, as for any peer you closed."""
    mine, theirs = socket.socketpair()
    transport = CompressedTransport(FramedTransport(TcpTransport()))
    try:
        statuses: list = []

        def owner(event) -> None:
            if event.kind is EventKind.READABLE and not statuses:
                statuses.append(transport.resume_read(event.peer).status)
                getattr(transport, ending)(event.peer)
                with pytest.raises(TransportClosedError):
                    transport.resume_read(event.peer)
                statuses.append("raised")

        transport.attach(ew, owner)
        transport.adopt(mine)
        theirs.sendall(encode_frame(bytes((7,)) + b"unknown flag"))
        ew.run_until(lambda: len(statuses) == 2, timeout=5)
        assert statuses == [IOStatus.ERROR, "raised"]
    finally:
        theirs.close()
        transport.close()


def test_a_refused_message_is_announced_again_after_a_reminder_callback_that_raised(
    ew, over_a_socket_pair
) -> None:
    """The message a small buffer refused is held here, and only this layer's reminder
    says it waits: an owner whose callback for that reminder raised once must still
    hear of it, or the message is never read."""
    transport, mine, theirs = over_a_socket_pair
    log: list = []

    def owner(event) -> None:
        if event.kind is not EventKind.READABLE:
            return
        if not log:
            with contextlib.suppress(BufferError):
                transport.resume_read(event.peer, bytearray(10))
            log.append("refused")
        elif log == ["refused"]:
            log.append("raised")
            raise RuntimeError("a bug in the owner")
        else:
            log.append(bytes(transport.resume_read(event.peer).data))

    transport.attach(ew, owner)
    transport.adopt(mine)
    theirs.sendall(encode_frame(bytes((STORED,)) + b"A" * 50))
    for _ in range(200):
        if len(log) == 3:
            break
        with contextlib.suppress(RuntimeError):  # the owner's bug, let out once
            ew.run_once(0.01)
    assert log == ["refused", "raised", b"A" * 50]


@pytest.mark.parametrize("b_first", [False, True], ids=["B later", "B already here"])
@pytest.mark.parametrize("refused_again", [False, True], ids=["read", "refused again, then read"])
def test_a_read_after_suspend_read_resumes_reading_even_when_a_held_message_serves_it(
    ew, over_a_socket_pair, refused_again: bool, b_first: bool
) -> None:
    """interfaces.py: a read resumes reading. A held message (refused for a small
    buffer) can serve that read without a read below, where FramedTransport
    stays suspended: the messages after it must still be announced and read."""
    transport, mine, theirs = over_a_socket_pair
    got: list[bytes] = []
    readables = [0]
    transport.attach(ew, lambda event: readables.__setitem__(0, readables[0] + 1))
    peer = transport.adopt(mine)
    theirs.sendall(encode_frame(bytes((STORED,)) + b"A" * 50))
    ew.run_until(lambda: readables[0], timeout=5)
    with pytest.raises(BufferError):
        transport.resume_read(peer, bytearray(10))  # held here now
    transport.suspend_read(peer)
    if b_first:  # (then the read below the held message finds B at once)
        theirs.sendall(encode_frame(bytes((STORED,)) + b"B" * 50))
        for _ in range(3):
            ew.run_once(0.01)
    if refused_again:
        with pytest.raises(BufferError):
            transport.resume_read(peer, bytearray(10))
    seen = readables[0]
    got.append(bytes(transport.resume_read(peer).data))
    if not b_first:
        theirs.sendall(encode_frame(bytes((STORED,)) + b"B" * 50))
    ew.run_until(lambda: readables[0] > seen, timeout=5)  # announced ...
    got.append(bytes(transport.resume_read(peer).data))  # ... and read
    assert got == [b"A" * 50, b"B" * 50]
