"""Hostile and broken peers over real loopback sockets.

Each test pins one promise of issue 4: a bad peer costs bounded memory, is
reported with a typed error that names it, is closed alone (the others carry
on), and nothing escapes the event loop.
"""

from __future__ import annotations

import errno
import inspect
import socket
import struct
import tracemalloc
from collections.abc import Callable

import pytest

from barknet import (
    ConnectFailedError,
    ConnectionBrokenError,
    EventKind,
    EventWatcher,
    FramedTransport,
    FrameTimeoutError,
    FrameTooLargeError,
    IOEvent,
    IOStatus,
    TcpTransport,
    TruncatedFrameError,
    encode_frame,
)
from barknet.cli import build_parser
from barknet.course.hostile import MiB, slow_reader
from barknet.testing.faults import RawPeer
from barknet.testing.harness import Endpoint

pytestmark = pytest.mark.usefixtures("no_leaks")


# ------------------------------------------------------------------ helpers
def read_dispatches(ew: EventWatcher) -> Callable[[], int]:
    """Count the read callbacks the loop runs from now on."""
    count = [0]

    def tracer(kind: str, _callback: object) -> None:
        if kind == "read":
            count[0] += 1

    ew.tracer = tracer
    return lambda: count[0]


def turns(ew: EventWatcher, n: int) -> None:
    for _ in range(n):
        ew.run_once(0.005)


# ------------------------------------------------------------ oversized prefix
def test_oversized_prefix_closes_only_that_peer_with_a_named_error(ew, stage):
    server = stage.server(max_frame_size=1 * MiB)
    good = stage.connected(server.address)
    good.round_trip(b"before")
    raw, peer = server.raw()
    raw.send(b"\xff\xff\xff\xff")
    event = server.close_of(peer)
    assert event.status is IOStatus.ERROR
    error = event.error
    assert isinstance(error, FrameTooLargeError)
    assert (error.peer, error.size, error.limit) == (peer, 0xFFFFFFFF, 1 * MiB)
    assert repr(peer) in str(error) and "4294967295" in str(error) and "1048576" in str(error)
    good.round_trip(b"after")
    assert good.closed() == []
    raw.poll()
    assert raw.eof  # the server hung up on it


def _peak_while(
    ew: EventWatcher, server: Endpoint, header: bytes, until: Callable[[], bool]
) -> int:
    """Peak Python memory allocated while the server handles ``header``."""
    raw, peer = server.raw()
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        raw.send(header)
        ew.run_until(lambda: until(peer), timeout=10)
        return tracemalloc.get_traced_memory()[1] - baseline
    finally:
        tracemalloc.stop()
        raw.close()


def test_oversized_prefix_is_refused_before_any_body_buffer_exists(ew, stage):
    server = stage.server(max_frame_size=1 * MiB)
    declared = 512 * MiB
    peak = _peak_while(
        ew, server, struct.pack("!I", declared), lambda peer: bool(server.closed(peer))
    )
    assert isinstance(server.events[-1].error, FrameTooLargeError)
    assert peak < 1 * MiB  # far below the 512 MiB announced (and below the limit)


def test_memory_measure_does_see_a_body_buffer_being_allocated(ew, stage):
    # The control for the test above: a 16 MiB prefix under a 32 MiB limit, then
    # 1 MiB of its payload: the body grows with those bytes, and the same measure
    # sees it (bodies grow as bytes arrive; they are no longer allocated up front).
    # While growing, a doubled body and the one it replaces are both alive: about
    # 4x the bytes in, at worst, and far from the 16 MiB announced.
    server = stage.server(max_frame_size=32 * MiB)
    peak = _peak_while(
        ew,
        server,
        struct.pack("!I", 16 * MiB) + bytes(1 * MiB),
        lambda peer: server.transport.snapshot(peer).recv_received >= 1 * MiB,
    )
    assert 1 * MiB <= peak < 5 * MiB


@pytest.mark.parametrize("form", ["one buffer", "list of buffers"])
def test_oversized_send_fails_at_the_call_and_writes_nothing(ew, stage, form):
    server = stage.server(max_frame_size=1000)
    client = stage.connected(server.address, max_frame_size=1000)
    client.round_trip(b"warm-up")
    transport, peer = client.transport, client.peer
    sent_before = transport.counters(peer).bytes_sent
    frames_before = transport.counters(peer).frames_sent
    data = bytes(1001) if form == "one buffer" else [bytes(500), bytes(501)]
    with pytest.raises(FrameTooLargeError) as caught:
        transport.resume_write(data, peer)
    assert (caught.value.size, caught.value.limit) == (1001, 1000)
    assert transport.counters(peer).bytes_sent == sent_before
    assert transport.counters(peer).frames_sent == frames_before
    assert transport.write_buffer_size(peer) == 0
    client.round_trip(bytes(1000))  # exactly the limit is fine, and the stream is intact
    assert server.frames[server.accepted()[0]] == [b"warm-up", bytes(1000)]


# ------------------------------------------------------------------ EOF mid-frame
@pytest.mark.parametrize("k", [1, 2, 3])
def test_eof_after_k_header_bytes_is_a_truncated_header(ew, stage, k):
    server = stage.server()
    raw, peer = server.raw()
    raw.send(struct.pack("!I", 50)[:k])
    raw.half_close()
    error = server.close_of(peer).error
    assert isinstance(error, TruncatedFrameError)
    assert (error.part, error.received, error.expected, error.peer) == ("header", k, 4, peer)
    assert repr(peer) in str(error)


def test_eof_mid_payload_is_a_truncated_payload(ew, stage):
    server = stage.server()
    raw, peer = server.raw()
    raw.send(encode_frame(b"whole") + struct.pack("!I", 300) + b"y" * 120)
    raw.half_close()
    error = server.close_of(peer).error
    assert isinstance(error, TruncatedFrameError)
    assert (error.part, error.received, error.expected, error.peer) == ("payload", 120, 300, peer)
    assert server.frames[peer] == [b"whole"]  # the complete frame before it was delivered


def test_eof_mid_large_payload_received_into_its_own_body(ew, stage):
    server = stage.server()
    raw, peer = server.raw()
    raw.send(struct.pack("!I", 1 * MiB) + bytes(200_000))
    raw.half_close()
    error = server.close_of(peer).error
    assert isinstance(error, TruncatedFrameError)
    assert (error.part, error.received, error.expected) == ("payload", 200_000, 1 * MiB)


@pytest.mark.parametrize("frames", [0, 3])
def test_clean_close_between_frames_is_eof_not_an_error(ew, stage, frames):
    server = stage.server()
    raw, peer = server.raw()
    payloads = [f"frame {i}".encode() for i in range(frames)]
    raw.send(b"".join(encode_frame(p) for p in payloads))
    raw.half_close()
    event = server.close_of(peer)
    assert (event.status, event.error) == (IOStatus.EOF, None)
    assert server.frames.get(peer, []) == payloads
    raw.poll()
    assert raw.data == b"".join(encode_frame(p) for p in payloads)  # echoes sent before close


@pytest.mark.parametrize("ending", ["clean", "mid-header", "mid-payload"])
def test_no_read_callbacks_after_eof(ew, stage, ending):
    server = stage.server()
    raw, peer = server.raw()
    fd = server.transport.inner.socket_of(peer).fileno()
    raw.send({"clean": b"", "mid-header": b"\x00", "mid-payload": b"\x00\x00\x00\x09abc"}[ending])
    raw.half_close()
    server.close_of(peer)
    reads = read_dispatches(ew)
    turns(ew, 20)
    assert reads() == 0
    assert not ew.is_watching(fd)


def test_raw_transport_stops_watching_a_peer_after_its_eof(ew):
    # The owner reads EOF and does nothing else (it does not close the peer):
    # the loop must still stop waking it, or it would spin at 100% CPU.
    tcp = TcpTransport()
    statuses: list[IOStatus] = []

    def on_event(event: IOEvent) -> None:
        if event.kind is EventKind.READABLE:
            while (r := tcp.resume_read(event.peer)).status is IOStatus.OK:
                pass
            statuses.append(r.status)

    try:
        tcp.attach(ew, on_event)
        raw = RawPeer(tcp.bind())
        try:
            raw.send(b"abc")
            raw.half_close()
            ew.run_until(lambda: IOStatus.EOF in statuses, timeout=5)
            (peer,) = tcp.peers
            fd = tcp.socket_of(peer).fileno()
            reads = read_dispatches(ew)
            turns(ew, 20)
            assert reads() == 0 and not ew.is_watching(fd)
            assert statuses.count(IOStatus.EOF) == 1
        finally:
            raw.close()
    finally:
        tcp.close()


# ---------------------------------------------------------- reset, broken pipe
def test_reset_peer_gives_exactly_one_error_event_and_others_carry_on(ew, stage):
    server = stage.server()
    good = stage.connected(server.address)
    good.round_trip(b"before")
    raw, peer = server.raw()
    raw.send(encode_frame(b"ping"))
    ew.run_until(lambda: len(raw.poll()) == 8, timeout=5)
    raw.reset()
    event = server.close_of(peer)  # run_until returning at all: nothing escaped the loop
    turns(ew, 10)
    assert server.closed(peer) == [event]
    assert event.status is IOStatus.ERROR
    assert isinstance(event.error, ConnectionBrokenError)
    assert event.error.errno == errno.ECONNRESET and event.error.peer == peer
    assert isinstance(event.error.__cause__, OSError)
    good.round_trip(b"after")
    assert good.closed() == []


@pytest.mark.parametrize("server_reads", [True, False])
def test_peer_vanishing_during_a_big_write_gives_one_error_event(ew, stage, server_reads):
    server = stage.server()
    good = stage.connected(server.address)
    good.round_trip(b"before")
    raw, peer = server.raw()
    if not server_reads:
        server.transport.suspend_read(peer)  # only the write path can notice
    big = bytes(8 * MiB)  # twice: more than any socket buffers hold
    server.transport.resume_write(big, peer)
    server.transport.resume_write(big, peer)
    turns(ew, 3)
    assert server.transport.write_buffer_size(peer) > 0  # the write is still in progress
    raw.close()  # unread data in its receive buffer: the kernel answers with RST
    event = server.close_of(peer)
    turns(ew, 10)
    assert server.closed(peer) == [event]
    assert isinstance(event.error, ConnectionBrokenError)
    assert event.error.errno in (errno.ECONNRESET, errno.EPIPE)
    good.round_trip(b"after")


def test_client_sees_one_error_when_its_server_resets(ew, stage):
    server = stage.server()
    client = stage.connected(server.address)
    client.round_trip(b"hi")
    (server_peer,) = server.accepted()
    sock = server.transport.inner.socket_of(server_peer)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    server.transport.abort(server_peer)  # close(peer) would linger: abort resets
    ew.run_until(lambda: bool(client.closed()), timeout=5)
    turns(ew, 10)
    (event,) = client.closed()
    assert event.status is IOStatus.ERROR and isinstance(event.error, ConnectionBrokenError)


def test_connecting_to_a_closed_port_is_a_refused_connection(ew, stage):
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    address = probe.getsockname()
    probe.close()
    client = stage.connected(address)
    ew.run_until(lambda: bool(client.closed()), timeout=5)
    turns(ew, 5)
    (event,) = client.closed()
    assert event.status is IOStatus.ERROR and event.peer == client.peer
    assert isinstance(event.error, ConnectFailedError)
    assert event.error.errno == errno.ECONNREFUSED
    assert f"127.0.0.1:{address[1]}" in str(event.error)


# ----------------------------------------------------- slow reader, backpressure
def test_slow_reader_never_lets_the_queue_pass_high_water_plus_one_frame():
    total = 50 * MiB
    outcome = slow_reader(total, frame_size=64 * 1024, nap_every=2 * MiB, nap=0.002, timeout=60)
    facts = outcome.facts
    assert facts["max_queued"] <= facts["bound"] == 64 * 1024 + 4 + 64 * 1024
    assert facts["pauses"] >= 1 and facts["resumes"] >= 1
    assert facts["naps"] >= 20  # the reader really did stop, many times
    assert (facts["bytes_received"], facts["frames_received"]) == (total, 800)
    assert facts["digest_ok"]


def test_reader_taking_one_frame_per_turn_applies_backpressure():
    outcome = slow_reader(16 * MiB, reader="one_per_turn", timeout=60)
    facts = outcome.facts
    assert facts["max_queued"] <= facts["bound"]
    assert facts["pauses"] >= 1
    assert facts["digest_ok"] and facts["bytes_received"] == 16 * MiB


def test_water_marks_are_configurable():
    high, low, frame = 256 * 1024, 32 * 1024, 16 * 1024
    outcome = slow_reader(
        8 * MiB, frame_size=frame, high_water=high, low_water=low, nap_every=MiB, timeout=60
    )
    facts = outcome.facts
    assert facts["low_water"] == low
    assert facts["max_queued"] <= high + 4 + frame
    assert facts["max_queued"] > 64 * 1024  # more than the default mark would ever allow
    for kind, queued in facts["flow"]:
        if kind == "PAUSE_WRITING":
            assert queued > high
        else:
            assert queued <= low
    assert facts["digest_ok"]


def _reader_that_never_comes_back(server, loop, take):
    """A learner's edit of notebook 08's reader: it naps after the first frame, and
    forgets to come back (no timer)."""

    def on_event(event):
        if event.kind is EventKind.READABLE:
            result = server.resume_read(event.peer)
            if result.status is IOStatus.OK:
                take(result.data)
                server.suspend_read(event.peer)

    return on_event


def test_a_reader_that_never_reads_again_ends_the_run_with_a_report_not_a_hang():
    outcome = slow_reader(2 * MiB, reader=_reader_that_never_comes_back, stall=0.5, timeout=20)
    stopped = outcome.facts["stopped"]
    assert stopped is not None and "nothing arrived for 0.5 s" in stopped
    assert "resume_read" in stopped and stopped in str(outcome)
    assert outcome.facts["bytes_received"] < 2 * MiB
    # Not a checksum that differs (which would read as corruption): nothing to compare.
    assert "stopped early: not all of it, so no SHA-256 to compare" in str(outcome)
    assert "SHA-256 as sent" not in str(outcome)


def test_a_run_that_outlasts_its_timeout_says_how_far_it_got():
    def one_frame_a_nap(server, loop, take):
        def read_one(peer):
            if peer in server.peers:
                result = server.resume_read(peer)  # (also resumes reading)
                if result.status is IOStatus.OK:
                    take(result.data)
                server.suspend_read(peer)
                loop.call_later(0.05, read_one, peer)

        def on_event(event):
            if event.kind is EventKind.READABLE:
                read_one(event.peer)

        return on_event

    outcome = slow_reader(8 * MiB, reader=one_frame_a_nap, timeout=0.5, stall=5)
    stopped = outcome.facts["stopped"]
    assert stopped is not None and stopped.startswith("stopped after 0.5 s, with ")
    assert 0 < outcome.facts["bytes_received"] < 8 * MiB


def test_the_slow_reader_report_shows_what_the_readers_stops_did():
    # Notebook 08 invites the learner to change the reader: the report must say
    # something that depends on it, not only the pauses, which the small socket
    # buffers cause with any reader.
    napping = slow_reader(2 * MiB, nap_every=256 * 1024)
    never = slow_reader(2 * MiB, nap_every=4 * MiB)  # (never reaches a nap)
    assert napping.facts["stops"] == 8 and never.facts["stops"] == 0
    # Each stop but the last came back: the last nap starts with everything in.
    assert len(napping.facts["ahead_at_return"]) == 7
    assert "the reader called suspend_read 8 times" in str(napping)
    assert "not by all it had to send: yes" in str(napping)
    assert "the reader never called suspend_read" in str(never)
    assert "not by all it had to send" not in str(never)


def test_a_producer_that_ignores_pause_runs_ahead_of_a_napping_reader():
    # The bound the report checks is backpressure's doing: without it the
    # producer is far past the socket buffers when the reader comes back.
    outcome = slow_reader(4 * MiB, nap_every=MiB, respect_pause=False)
    facts = outcome.facts
    assert max(facts["ahead_at_return"]) > facts["room"]
    assert "not by all it had to send: NO" in str(outcome)


def test_a_run_that_completes_says_nothing_of_stopping():
    outcome = slow_reader(MiB, nap_every=256 * 1024)
    assert outcome.facts["stopped"] is None and "stopped" not in str(outcome)


def test_default_water_marks_are_64_and_16_kib():
    transport = FramedTransport(TcpTransport())
    assert (transport.high_water, transport.low_water) == (64 * 1024, 16 * 1024)
    assert FramedTransport(TcpTransport(), high_water=1000).low_water == 250
    with pytest.raises(ValueError):
        FramedTransport(TcpTransport(), high_water=100, low_water=200)


# -------------------------------------------------------------- stalled peers
@pytest.mark.parametrize(
    ("sent", "received", "expected"),
    [(struct.pack("!I", 100), 4, 104), (struct.pack("!I", 100) + b"z" * 30, 34, 104)],
    ids=["header only", "header and some payload"],
)
def test_peer_stalling_mid_frame_is_closed_with_a_timeout(ew, stage, sent, received, expected):
    server = stage.server(frame_timeout=0.2)
    good = stage.connected(server.address)
    raw, peer = server.raw()
    raw.send(sent)
    event = server.close_of(peer)
    error = event.error
    assert isinstance(error, FrameTimeoutError)
    assert (error.peer, error.timeout, error.received, error.expected) == (
        peer,
        0.2,
        received,
        expected,
    )
    assert repr(peer) in str(error)
    good.round_trip(b"unaffected")  # another peer, idle all along, is not touched


def test_slow_but_progressing_peer_is_not_timed_out(ew, stage):
    server = stage.server(frame_timeout=0.4)
    raw, peer = server.raw()
    frame = encode_frame(bytes(range(16)))
    left = list(frame)

    def drip() -> None:  # one byte every 50 ms: the frame takes 0.8 s, twice the deadline
        raw.send(bytes([left.pop(0)]))
        if left:
            ew.call_later(0.05, drip)

    drip()
    ew.run_until(lambda: bool(server.frames.get(peer)) or bool(server.closed(peer)), timeout=10)
    assert server.closed(peer) == []
    assert server.frames[peer] == [bytes(range(16))]


def test_idle_peer_between_frames_is_not_timed_out(ew, stage):
    server = stage.server(frame_timeout=0.1)
    raw, peer = server.raw()
    raw.send(encode_frame(b"one"))
    ew.run_until(lambda: bool(server.frames.get(peer)), timeout=5)
    ew.call_later(0.4, raw.send, encode_frame(b"two"))  # four deadlines of silence
    ew.run_until(lambda: len(server.frames[peer]) == 2 or bool(server.closed(peer)), timeout=5)
    assert server.closed(peer) == []
    assert server.frames[peer] == [b"one", b"two"]


def test_without_frame_timeout_a_stalled_peer_is_left_alone(ew, stage):
    server = stage.server()
    assert server.transport.frame_timeout is None  # off by default
    raw, peer = server.raw()
    raw.send(struct.pack("!I", 100))
    ew.run_until(lambda: server.transport.snapshot(peer).recv_part == "payload", timeout=5)
    turns(ew, 20)
    assert server.closed(peer) == []


# ------------------------------------------------------------- where we listen
def test_servers_bind_loopback_unless_told_otherwise(ew):
    assert inspect.signature(TcpTransport).parameters["host"].default == "127.0.0.1"
    assert build_parser().parse_args(["serve"]).host == "127.0.0.1"
    tcp = TcpTransport()
    framed = FramedTransport(TcpTransport())
    other = TcpTransport("127.0.0.2")  # told otherwise (still loopback, so still safe)
    try:
        for transport in (tcp, framed, other):
            transport.attach(ew, lambda event: None)
        assert tcp.bind()[0] == "127.0.0.1"
        assert framed.bind()[0] == "127.0.0.1"
        assert other.bind()[0] == "127.0.0.2"
    finally:
        for transport in (tcp, framed, other):
            transport.close()


def test_echo_server_survives_a_peer_that_sends_frames_then_resets(ew, stage):
    # The peer's frames are read, then its RST: the echo of the first frame
    # finds the connection broken, and the echoes of the others must not raise
    # out of the owner's callback (and so out of the loop).
    server = stage.server()
    good = stage.connected(server.address)
    good.round_trip(b"before")
    raw, peer = server.raw()
    raw.send(encode_frame(b"a") * 3)
    raw.reset()
    event = server.close_of(peer)
    turns(ew, 5)
    assert server.closed(peer) == [event]
    assert isinstance(event.error, ConnectionBrokenError)
    assert server.frames[peer] == [b"a"] * 3
    good.round_trip(b"after")


def test_calls_on_a_peer_found_broken_return_errors_until_its_closed_event(ew, stage):
    server = stage.server()
    server.echo = False
    raw, peer = server.raw()
    raw.reset()
    transport = server.transport
    first = transport.resume_write(b"x", peer)  # the loop has not noticed yet: send does
    assert first.status is IOStatus.ERROR
    assert isinstance(first.error, ConnectionBrokenError)
    again = transport.resume_write(b"y", peer)
    assert (again.status, again.error) == (IOStatus.ERROR, first.error)
    batch = transport.write_frames([b"z", b"w"], peer)  # the batch form answers the same
    assert (batch.status, batch.sent, batch.error) == (IOStatus.ERROR, 0, first.error)
    assert transport.resume_read(peer).status is IOStatus.ERROR
    transport.suspend_read(peer)
    transport.close(peer)  # closing a broken peer is allowed, and quiet
    event = server.close_of(peer)
    turns(ew, 5)
    assert server.closed(peer) == [event]
    assert (event.status, event.error) == (IOStatus.ERROR, first.error)


def _half_a_frame_then_suspend(ew, server):
    """A raw peer sends 10 of 100 payload bytes; the server's owner stops reading."""
    raw, peer = server.raw()
    raw.send(struct.pack("!I", 100) + b"a" * 10)
    ew.run_until(lambda: server.transport.snapshot(peer).recv_received == 10, timeout=5)
    server.transport.suspend_read(peer)
    return raw, peer


def test_frame_timeout_does_not_blame_a_peer_while_we_are_not_reading(ew, stage):
    # The rest of the frame waits in our kernel buffer because *we* stopped
    # reading: that is not the peer stalling.
    server = stage.server(frame_timeout=0.1)
    raw, peer = _half_a_frame_then_suspend(ew, server)
    raw.send(b"b" * 90)
    deadline = ew.time() + 0.4  # four deadlines with reading suspended
    ew.run_until(lambda: ew.time() >= deadline or bool(server.closed(peer)), timeout=5)
    assert server.closed(peer) == []
    result = server.transport.resume_read(peer)
    assert (result.status, bytes(result.data)) == (IOStatus.OK, b"a" * 10 + b"b" * 90)


def test_frame_timeout_still_catches_a_stall_after_reading_resumes(ew, stage):
    server = stage.server(frame_timeout=0.1)
    _raw, peer = _half_a_frame_then_suspend(ew, server)
    deadline = ew.time() + 0.3
    ew.run_until(lambda: ew.time() >= deadline or bool(server.closed(peer)), timeout=5)
    assert server.closed(peer) == []
    assert server.transport.resume_read(peer).status is IOStatus.WOULD_BLOCK
    error = server.close_of(peer).error  # the peer sends nothing more: now it is its fault
    assert isinstance(error, FrameTimeoutError) and error.received == 14


def test_frame_timeout_counts_from_when_reading_resumed_not_from_before_the_pause(ew, stage):
    # The pause outlasts the timeout: the peer still gets the whole timeout of
    # reading in silence after we resume, not what was left before the pause.
    server = stage.server(frame_timeout=0.1)
    _raw, peer = _half_a_frame_then_suspend(ew, server)
    resumed: list[tuple[float, IOStatus]] = []

    def resume() -> None:  # a timer, so the pause ends between two deadlines
        resumed.append((ew.time(), server.transport.resume_read(peer).status))

    ew.call_later(0.15, resume)
    closed_at: list[float] = []
    ew.run_until(lambda: bool(server.closed(peer)) and not closed_at.append(ew.time()), timeout=5)
    assert isinstance(server.close_of(peer).error, FrameTimeoutError)
    ((resumed_at, status),) = resumed
    assert status is IOStatus.WOULD_BLOCK
    assert closed_at[0] - resumed_at >= 0.1


def test_frame_timeout_does_not_blame_a_peer_whose_frames_wait_for_us(ew, stage):
    server = stage.server(frame_timeout=0.1)
    server.take = False  # the owner is busy: decoded frames wait, so reading stops
    raw, peer = server.raw()
    raw.send(encode_frame(b"first") + struct.pack("!I", 100) + b"a" * 10)
    ew.run_until(lambda: server.transport.snapshot(peer)[:4] == ("payload", 10, 100, 1), timeout=5)
    raw.send(b"b" * 90)
    deadline = ew.time() + 0.4
    ew.run_until(lambda: ew.time() >= deadline or bool(server.closed(peer)), timeout=5)
    assert server.closed(peer) == []
    frames = [bytes(server.transport.resume_read(peer).data) for _ in range(2)]
    assert frames == [b"first", b"a" * 10 + b"b" * 90]


def test_frame_timeout_behind_a_waiting_frame_delivers_that_frame_before_the_error(ew, stage):
    # The owner is busy, so a whole frame waits; the peer stalls mid-frame behind
    # it, and we kept reading (nothing more came), so this time the stall is the
    # peer's: the timeout aborts it. The frame that came whole is still the
    # owner's, and the CLOSED(ERROR) waits until the owner took it.
    server = stage.server(frame_timeout=0.1, echo=False)
    server.take = False
    raw, peer = server.raw()
    raw.send(encode_frame(b"first") + struct.pack("!I", 100) + b"a" * 10)
    ew.run_until(lambda: server.transport.snapshot(peer)[:4] == ("payload", 10, 100, 1), timeout=5)
    deadline = ew.time() + 0.3  # three timeouts, the owner still busy
    ew.run_until(lambda: ew.time() >= deadline, timeout=5)
    assert server.closed(peer) == []
    server.take = True
    error = server.close_of(peer).error
    assert isinstance(error, FrameTimeoutError) and error.received == 14
    assert server.frames[peer] == [b"first"]
