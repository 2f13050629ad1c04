"""ChunkingTransport (partial I/O and would-block on demand) and the staged
faults that notebook 08 prints, each checked for what it claims to show."""

from __future__ import annotations

import contextlib
import hashlib
import random
import socket
from collections.abc import Callable, Iterator
from typing import Any

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
)
from barknet.course import hostile
from barknet.framing import encode_frame
from barknet.testing.faults import ChunkingTransport
from barknet.testing.harness import Stage

pytestmark = pytest.mark.usefixtures("no_leaks")


# --------------------------------------------------------------- fixtures
class _Pair:
    """A ChunkingTransport over one end of a socketpair, recorded (not read) by the
    harness; the other end is a raw socket the test drives by hand."""

    def __init__(self, stage: Stage, **chunking: Any) -> None:
        self.ew = stage.ew
        self.tcp = TcpTransport()
        self.chunk = ChunkingTransport(self.tcp, **chunking)
        self.endpoint = stage.endpoint(self.chunk, take=False)
        self.events = self.endpoint.events
        a, self.other = socket.socketpair()
        self.other.setblocking(False)
        self.peer = self.chunk.adopt(a)

    def writable_events(self) -> int:
        return sum(e.kind is EventKind.WRITABLE for e in self.events)

    def drain_other(self) -> bytes:
        got = bytearray()
        while True:
            try:
                chunk = self.other.recv(65536)
            except BlockingIOError:
                return bytes(got)
            if not chunk:
                return bytes(got)
            got += chunk


@pytest.fixture
def pair(stage: Stage) -> Iterator[Callable[..., _Pair]]:
    made: list[_Pair] = []

    def make(**chunking: Any) -> _Pair:
        made.append(_Pair(stage, **chunking))
        return made[-1]

    yield make
    for p in made:  # the stage closes the transports
        p.other.close()


def turns(ew: EventWatcher, n: int) -> None:
    for _ in range(n):
        ew.run_once(0.005)


# ----------------------------------------------------------- the caps
def test_every_write_is_capped_at_max_write(pair):
    p = pair(max_write=7)
    data = bytes(range(100))
    sent = 0
    sizes = []
    while sent < len(data):
        result = p.chunk.resume_write(data[sent:], p.peer)
        sizes.append(result.sent)
        sent += result.sent
    assert max(sizes) == 7
    assert p.drain_other() == data
    assert p.chunk.injected["capped_writes"] == len(sizes) - 1  # the last 2 bytes fit
    assert p.tcp.counters(p.peer).send_calls == len(sizes)


def test_capped_write_of_several_buffers_keeps_their_order(pair):
    p = pair(max_write=5)
    buffers = [b"ab", b"cdefg", b"", b"hij", memoryview(b"klmnop")]
    whole = b"".join(bytes(b) for b in buffers)
    sent = 0
    while sent < len(whole):
        # Offer what is left, as the same list of buffers a framing layer would.
        left, skip = [], sent
        for b in buffers:
            n = len(b)
            if skip >= n:
                skip -= n
                continue
            left.append(memoryview(b)[skip:])
            skip = 0
        result = p.chunk.resume_write(left, p.peer)
        assert result.sent <= 5
        sent += result.sent
    assert p.drain_other() == whole


def test_every_read_is_capped_at_max_read(pair, ew):
    p = pair(max_read=3)
    p.other.sendall(b"0123456789")
    ew.run_until(lambda: any(e.kind is EventKind.READABLE for e in p.events), timeout=5)
    reads = []
    while (r := p.chunk.resume_read(p.peer)).status is IOStatus.OK:
        reads.append(bytes(r.data))
    assert reads == [b"012", b"345", b"678", b"9"]
    buffer = bytearray(10)
    p.other.sendall(b"abcdef")
    ew.run_until(lambda: p.tcp.socket_of(p.peer).recv(1, socket.MSG_PEEK) == b"a", timeout=5)
    r = p.chunk.resume_read(p.peer, buffer, 2)
    assert bytes(r.data) == b"abc" and buffer[2:5] == b"abc"


def test_per_peer_limit_overrides_the_transport_caps(pair):
    p = pair(max_write=100)
    p.chunk.limit(p.peer, max_write=2)
    assert p.chunk.resume_write(b"abcdef", p.peer).sent == 2
    p.chunk.limit(p.peer)  # no caps at all for this peer now
    assert p.chunk.resume_write(b"cdef", p.peer).sent == 4
    assert p.drain_other() == b"abcdef"
    with pytest.raises(ValueError):
        p.chunk.limit(p.peer, max_read=0)


@pytest.mark.parametrize(
    "options", [{"max_read": 0}, {"max_write": 0}, {"would_block": 1.0}, {"would_block": -0.1}]
)
def test_nonsense_settings_are_refused(options):
    with pytest.raises(ValueError):
        ChunkingTransport(TcpTransport(), **options)


# ----------------------------------------------------- WRITABLE replay
def test_capped_write_replays_writable_until_suspended(pair, ew):
    p = pair(max_write=4)
    result = p.chunk.resume_write(b"0123456789", p.peer)
    assert (result.sent, result.status) == (4, IOStatus.WOULD_BLOCK)
    turns(ew, 2)
    assert p.writable_events() == 2  # once a turn, as a socket's, until suspend_write
    p.chunk.resume_write(b"456789", p.peer)
    p.chunk.suspend_write(p.peer)  # nothing more to send: cancel the promise
    turns(ew, 3)
    assert p.writable_events() == 2
    assert p.drain_other() == b"01234567"


def test_injected_would_block_touches_nothing_below(pair, ew):
    p = pair(would_block=0.5, seed=3)
    statuses = [p.chunk.resume_write(b"x", p.peer).status for _ in range(40)]
    blocked = statuses.count(IOStatus.WOULD_BLOCK)
    assert blocked == p.chunk.injected["would_block"] > 0
    assert p.tcp.counters(p.peer).send_calls == 40 - blocked
    assert p.drain_other() == b"x" * (40 - blocked)
    turns(ew, 2)
    assert p.writable_events() >= 1  # the refused writes promised a WRITABLE


@pytest.mark.parametrize("ending", ["close", "abort", "write_eof", "CLOSED"])
def test_no_fault_is_made_up_for_a_peer_that_is_not_yours_any_more(pair, ew, ending):
    """The layer keeps the contract it wraps: after close, abort, write_eof or the
    peer's CLOSED, a write raises as the transport below does (not a made-up
    WOULD_BLOCK, whatever the dice say), and no promised WRITABLE comes."""
    from barknet import TransportClosedError

    p = pair(would_block=0.99, seed=1)
    assert p.chunk.resume_write(b"x", p.peer).status is IOStatus.WOULD_BLOCK  # promised
    if ending == "CLOSED":
        p.other.close()  # the peer hangs up: our write then breaks, and CLOSED comes
        for _ in range(200):
            if any(e.kind is EventKind.CLOSED for e in p.events):
                break
            p.tcp.resume_write(b"y", p.peer)  # (below: no dice) until it breaks
            turns(ew, 1)
    else:
        getattr(p.chunk, ending)(p.peer)
    mark = len(p.events)
    for _ in range(20):
        with pytest.raises(TransportClosedError):
            p.chunk.resume_write(b"z", p.peer)
    turns(ew, 3)
    assert not [e for e in p.events[mark:] if e.kind is EventKind.WRITABLE]


def test_after_write_eof_reads_are_still_faulted(pair, ew):
    """A half-close ends your writes, not the peer's: its reads still meet the dice."""
    p = pair(would_block=0.99, seed=1)
    p.chunk.write_eof(p.peer)
    p.other.sendall(b"still coming")
    turns(ew, 2)
    before = p.chunk.injected["would_block"]
    statuses = {p.chunk.resume_read(p.peer).status for _ in range(20)}
    assert IOStatus.WOULD_BLOCK in statuses
    assert p.chunk.injected["would_block"] > before


@pytest.mark.parametrize("framed", [False, True], ids=["raw", "under FramedTransport"])
def test_a_read_after_suspend_read_always_resumes_reading_below(ew, framed):
    """A refused read does not reach the transport below, which watches the
    peer again only after a read: were the first read after ``suspend_read``
    refused, nothing would report the peer readable again. Here almost every
    read is refused, and an owner that takes one frame per READABLE (framing
    then suspends reading below whenever frames wait for it) still gets all."""
    chunk = ChunkingTransport(TcpTransport(), would_block=0.5, seed=11)
    transport: Any = FramedTransport(chunk) if framed else chunk
    got = bytearray()

    def owner(event: IOEvent) -> None:
        if event.kind is EventKind.READABLE:
            result = transport.resume_read(event.peer)  # one read per READABLE
            if result.status is IOStatus.OK:
                got.extend(result.data)

    transport.attach(ew, owner)
    a, other = socket.socketpair()
    try:
        peer = transport.adopt(a)
        transport.suspend_read(peer)
        for _ in range(20):  # resumed by a read, refused or not
            transport.resume_read(peer)
            transport.suspend_read(peer)
        transport.resume_read(peer)
        frames = [bytes([i]) * 1000 for i in range(200)]
        other.sendall(b"".join(encode_frame(f) for f in frames))
        want = b"".join(frames) if framed else b"".join(encode_frame(f) for f in frames)
        ew.run_until(lambda: len(got) >= len(want), timeout=10)
        assert bytes(got) == want
    finally:
        other.close()
        transport.close()


def test_would_block_schedule_is_reproducible_from_the_seed(pair):
    def schedule(seed: int) -> list[IOStatus]:
        p = pair(would_block=0.3, seed=seed)
        out = []
        for _ in range(60):
            out.append(p.chunk.resume_write(b"y", p.peer).status)
            p.chunk.suspend_write(p.peer)
        return out

    assert schedule(11) == schedule(11)
    assert schedule(11) != schedule(12)


def test_framing_over_random_chunking_loses_and_reorders_nothing(ew):
    rng = random.Random(5)
    payloads = [rng.randbytes(rng.choice([0, 1, 3, 50, 700, 3000])) for _ in range(120)]
    got: list[bytes] = []
    server = FramedTransport(
        ChunkingTransport(TcpTransport(), max_read=13, max_write=29, would_block=0.2, seed=1)
    )
    client = FramedTransport(
        ChunkingTransport(TcpTransport(), max_read=17, max_write=61, would_block=0.3, seed=2)
    )
    try:

        def on_server(event: IOEvent) -> None:
            if event.kind is EventKind.READABLE:
                while (r := server.resume_read(event.peer)).status is IOStatus.OK:
                    server.resume_write(r.data, event.peer)

        def on_client(event: IOEvent) -> None:
            if event.kind is EventKind.READABLE:
                while (r := client.resume_read(event.peer)).status is IOStatus.OK:
                    got.append(bytes(r.data))

        server.attach(ew, on_server)
        client.attach(ew, on_client)
        peer = client.connect(server.bind())
        for payload in payloads:
            client.resume_write(payload, peer)
        ew.run_until(lambda: len(got) == len(payloads), timeout=30)
        digest = [hashlib.sha256(x).digest() for x in got]
        assert digest == [hashlib.sha256(x).digest() for x in payloads]
        assert server.inner.injected["would_block"] > 0
        assert client.inner.injected["capped_writes"] > 0
    finally:
        client.close()
        server.close()


# ------------------------------------------------- the staged faults (notebook 08)
def test_oversized_prefix_scenario_names_peer_size_and_limit():
    outcome = hostile.oversized_prefix()
    error = outcome.error
    assert isinstance(error, FrameTooLargeError)
    assert (error.size, error.limit) == (0xFFFFFFFF, hostile.MiB)
    assert str(error.peer) in str(error) and "4294967295" in str(error)
    assert outcome.facts["closed_events"] == 1
    assert outcome.facts["peak_bytes"] < hostile.MiB
    assert "echoed before and after: yes" in str(outcome)


def test_oversized_send_scenario_writes_nothing():
    outcome = hostile.oversized_send(max_frame_size=1000)
    assert isinstance(outcome.error, FrameTooLargeError)
    assert outcome.facts["bytes_sent_before"] == outcome.facts["bytes_sent_after"]
    assert outcome.facts["queued"] == 0
    assert "b'still fine'" in str(outcome)


@pytest.mark.parametrize(
    ("part", "received", "expected"), [("header", 2, 4), ("payload", 10, 100)]
)
def test_truncated_frame_scenarios_are_distinct_typed_errors(part, received, expected):
    outcome = hostile.truncated_frame(part)
    error = outcome.error
    assert isinstance(error, TruncatedFrameError)
    assert (error.part, error.received, error.expected) == (part, received, expected)
    assert outcome.facts["reads_after_close"] == 0
    with pytest.raises(ValueError):
        hostile.truncated_frame("trailer")


def test_clean_close_scenario_is_eof_not_an_error():
    outcome = hostile.clean_close(3)
    assert outcome.error is None
    assert outcome.events[-1].status is IOStatus.EOF
    assert outcome.facts["frames"] == [b"frame 0", b"frame 1", b"frame 2"]


@pytest.mark.parametrize("while_writing", [False, True])
def test_reset_scenarios_give_one_broken_connection_event(while_writing):
    outcome = hostile.reset_peer(while_writing=while_writing)
    assert isinstance(outcome.error, ConnectionBrokenError)
    assert outcome.facts["closed_events"] == 1
    assert "echoed before and after: yes" in str(outcome)
    if while_writing:
        assert outcome.facts["queued_before_reset"] > 0


def test_a_reset_case_whose_vanish_closes_politely_does_not_report_a_reset():
    """Notebook 08 invites the learner to rewrite ``vanish``: the report says which
    function made the peer go, and the server's side shows what it did (a plain
    close is a clean end, CLOSED(EOF)), never a reset it did not make."""

    def close_politely(raw) -> None:  # type: ignore[no-untyped-def]
        raw.sock.close()

    outcome = hostile.reset_peer(vanish=close_politely)
    report = str(outcome)
    assert "then it went away: close_politely(raw)" in report
    assert "SO_LINGER" not in report and "reset" not in report.split("\n", 1)[1].lower()
    assert outcome.error is None and outcome.events[-1].status is IOStatus.EOF


@pytest.mark.parametrize("while_writing", [False, True])
def test_a_reset_case_whose_vanish_leaves_the_socket_open_reports_it_instead_of_raising(
    while_writing,
):
    """A learner's ``vanish`` that does nothing: the server sees no end, and the
    report says so (a bare TimeoutError from the wait would say nothing)."""
    outcome = hostile.reset_peer(vanish=lambda raw: None, while_writing=while_writing, wait=0.3)
    assert outcome.facts["closed_events"] == 0 and outcome.error is None
    assert "no CLOSED for that peer within 0.3 s" in str(outcome)
    assert "echoed before and after: yes" in str(outcome)


def test_refused_connect_scenario():
    outcome = hostile.refused_connect()
    assert isinstance(outcome.error, ConnectFailedError)
    assert "refused" in str(outcome.error).lower()


def test_stalled_peer_scenarios():
    stalled = hostile.stalled_peer("stall", frame_timeout=0.2)
    assert isinstance(stalled.error, FrameTimeoutError)
    assert (stalled.error.received, stalled.error.expected) == (9, 16)
    # FrameTimeoutError counts the whole frame; the report says so, in both units.
    assert "announcing 12 bytes, then 5 of them (9 of the frame's 16 bytes, header included)" in (
        str(stalled)
    )
    drip = hostile.stalled_peer("drip", frame_timeout=0.5, gap=0.02)
    assert (drip.error, drip.facts["frames"], drip.facts["closed_events"]) == (None, 1, 0)
    idle = hostile.stalled_peer("idle", frame_timeout=0.1)
    assert (idle.error, idle.facts["frames"], idle.facts["closed_events"]) == (None, 2, 0)
    with pytest.raises(ValueError):
        hostile.stalled_peer("dance")


def test_slow_reader_scenario_summary_is_deterministic_text():
    outcome = hostile.slow_reader(total=hostile.MiB, nap_every=256 * 1024)
    text = str(outcome)
    assert "NO" not in text
    assert "same SHA-256 as sent: yes" in text
    assert outcome.facts["naps"] == 4


def test_slow_reader_with_a_producer_that_ignores_pause_loses_nothing_but_queues_it_all():
    outcome = hostile.slow_reader(total=4 * hostile.MiB, respect_pause=False)
    facts = outcome.facts
    assert facts["max_queued"] > facts["bound"]  # the water marks are advice, not a cap
    assert facts["digest_ok"] and facts["bytes_received"] == 4 * hostile.MiB
    assert "does not listen" in str(outcome) and "largest queue: about" in str(outcome)


@pytest.mark.parametrize("owner_does", ["nothing", "raise"])
def test_a_promised_writable_repeats_each_turn_until_suspend_write(pair, ew, owner_does):
    """As a socket's: an owner that ignores a WRITABLE, or raises in it, is woken
    again on the next turn, until it calls suspend_write."""
    p = pair(max_write=3)
    seen: list[int] = []

    def owner(event: IOEvent) -> None:
        if event.kind is EventKind.WRITABLE:
            seen.append(ew.turns)
            if owner_does == "raise" and len(seen) == 1:
                raise RuntimeError("a bug in the owner")

    p.endpoint.on_event = owner
    assert p.chunk.resume_write(b"0123456789", p.peer).status is IOStatus.WOULD_BLOCK
    for _ in range(10):
        with contextlib.suppress(RuntimeError):
            ew.run_once(0.005)
    assert len(seen) >= 9 and len(set(seen)) == len(seen)
    p.chunk.suspend_write(p.peer)
    before = len(seen)
    turns(ew, 5)
    assert len(seen) == before
