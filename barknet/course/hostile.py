"""The "when things go wrong" notebook's cases, staged on loopback.

Theory of operation
-------------------
One function per case. Each builds a real ``FramedTransport`` server on its own
loop (a :class:`~barknet.testing.harness.Stage`, the harness the tests use),
makes one thing go wrong on purpose (often with
:class:`~barknet.testing.faults.RawPeer`, a plain socket that can send bytes no
framing layer would send, half-close, or reset), runs the loop until the server
has reacted, closes everything, and returns an :class:`Outcome`: what the
server's owner saw, as printable lines that stay the same from run to run, plus
the raw facts for tests.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import random
import socket
import struct
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..errors import FrameTooLargeError
from ..events import EventKind, IOEvent, IOStatus, Peer, ReadResult
from ..framed import FramedTransport
from ..framing import HEADER_SIZE, encode_frame
from ..reactor import EventWatcher
from ..tcp import TcpTransport
from ..testing.faults import RawPeer
from ..testing.harness import Endpoint, Stage, framed_over_tcp

__all__ = [
    "Outcome",
    "clean_close",
    "oversized_prefix",
    "oversized_send",
    "refused_connect",
    "reset_peer",
    "slow_reader",
    "stalled_peer",
    "truncated_frame",
]

MiB = 1024 * 1024
_OK = IOStatus.OK


@dataclass
class Outcome:
    """What one staged fault looked like to the program.

    ``lines`` read the same on every run (no ports, no timings that vary), so a
    notebook can print them and nbval can compare them; ``error`` is the typed
    error the server's owner got, ``events`` everything it got for the faulty
    peer, and ``facts`` the numbers a test wants to check.
    """

    case: str
    lines: list[str] = field(default_factory=list)
    events: list[IOEvent] = field(default_factory=list)
    error: BaseException | None = None
    facts: dict[str, Any] = field(default_factory=dict)

    def say(self, line: str) -> None:
        self.lines.append(line)

    def __str__(self) -> str:
        return "\n".join([self.case, *(f"  {line}" for line in self.lines)])


def _describe(event: IOEvent) -> str:
    text = f"{event.kind.name}({event.status.name}) for {event.peer!r}"
    if event.error is not None:
        text += f"\n    error: {type(event.error).__name__}: {event.error}"
    return text


@contextlib.contextmanager
def _staged(*, echo: bool = True, **server_options: Any) -> Iterator[tuple[Stage, Endpoint]]:
    """A private loop and an echoing ``FramedTransport`` server on it (see
    :class:`~barknet.testing.harness.Stage`), all closed when the block ends."""
    with Stage() as stage:
        yield stage, stage.server(echo=echo, **server_options)


class _Bystander:
    """A well-behaved framed client on the same server: it checks that a fault
    on one connection leaves the others alone."""

    def __init__(self, stage: Stage, server: Endpoint) -> None:
        assert server.address is not None
        self.stage = stage
        self.client = stage.client(server.address)
        self.peer = self.client.connect()
        self.got = self.client.frames[self.peer]
        self.say(b"before")

    def say(self, payload: bytes) -> None:
        count = len(self.got)
        self.client.transport.resume_write(payload, self.peer)
        self.stage.run_until(lambda: len(self.got) > count or bool(self.client.closed()))

    def verdict(self) -> str:
        self.say(b"after")
        closed = self.client.closed()
        ok = self.got == [b"before", b"after"] and not closed
        return "echoed before and after: yes" if ok else f"DISTURBED: {self.got} {closed}"


def _hex(data: bytes, limit: int = 16) -> str:
    shown = " ".join(f"{b:02x}" for b in data[:limit])
    return shown + (" ..." if len(data) > limit else "")


def _finish(outcome: Outcome, server: Endpoint, peer: Peer, raw: RawPeer | None = None) -> None:
    """Record the faulty peer's events and its CLOSED, and what its socket saw."""
    outcome.events = server.of(peer)
    closed = server.closed(peer)
    outcome.facts["closed_events"] = len(closed)
    if closed:
        outcome.error = closed[0].error
        outcome.say(f"the server's owner got: {_describe(closed[0])}")
    if raw is not None and raw.sock.fileno() >= 0:
        raw.poll()
        if raw.eof or raw.reset_seen:
            how = "closed" if raw.eof else "reset"
            outcome.say(f"on the misbehaving client's side: the server {how} the connection")


def _quiet_after_close(outcome: Outcome, stage: Stage) -> None:
    """After CLOSED, the loop should not wake up for that socket again."""
    reads: list[str] = []
    stage.ew.tracer = lambda kind, _callback: reads.append(kind) if kind == "read" else None
    try:
        stage.turns(10)
    finally:
        stage.ew.tracer = None
    outcome.facts["reads_after_close"] = len(reads)
    outcome.say(f"read callbacks in the next 10 loop turns: {len(reads)}")


@contextlib.contextmanager
def _traced_memory() -> Iterator[dict[str, int]]:
    """Peak Python memory allocated inside the block, above what was there before."""
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    tracemalloc.reset_peak()
    baseline = tracemalloc.get_traced_memory()[0]
    result = {"peak": 0}
    try:
        yield result
    finally:
        result["peak"] = tracemalloc.get_traced_memory()[1] - baseline
        if started:
            tracemalloc.stop()


# ----------------------------------------------------------------- the cases
def oversized_prefix(prefix: int = 0xFFFF_FFFF, *, max_frame_size: int = 1 * MiB) -> Outcome:
    """A peer sends only a 4-byte length prefix announcing ``prefix`` bytes.

    The server must refuse it from those 4 bytes alone: no buffer for the body
    is ever allocated, so the peak memory the loop allocates meanwhile (traced
    with :mod:`tracemalloc`) stays far below what was announced.
    """
    outcome = Outcome(
        f"Case: a peer announces a {prefix}-byte frame (limit {max_frame_size} bytes)"
    )
    with _staged(max_frame_size=max_frame_size) as (stage, server):
        bystander = _Bystander(stage, server)
        with _traced_memory() as memory:
            raw, peer = server.raw()
            header = struct.pack("!I", prefix)
            raw.send(header)
            stage.run_until(lambda: bool(server.closed(peer)))
        outcome.facts["peak_bytes"] = memory["peak"]
        outcome.say(f"the peer sent: {_hex(header)} ({len(header)} bytes, nothing else)")
        _finish(outcome, server, peer, raw)
        if isinstance(outcome.error, FrameTooLargeError):
            error = outcome.error
            outcome.say(f"error fields: size={error.size} limit={error.limit}")
        budget = 1 * MiB
        verdict = "under" if memory["peak"] < budget else "OVER"
        outcome.say(
            f"extra memory the server allocated meanwhile: {verdict} {budget // MiB} MiB "
            f"(it was asked for {prefix / MiB:.0f} MiB)"
        )
        outcome.say(f"another client on the same server: {bystander.verdict()}")
    return outcome


def oversized_send(*, max_frame_size: int = 1 * MiB) -> Outcome:
    """You try to send a payload one byte over the limit: refused at the call,
    with nothing queued and nothing written, and the connection stays usable."""
    outcome = Outcome(f"Case: you send {max_frame_size + 1} bytes (limit {max_frame_size} bytes)")
    with _staged(max_frame_size=max_frame_size) as (stage, server):
        assert server.address is not None
        owner = stage.client(server.address, max_frame_size=max_frame_size)
        client: FramedTransport = owner.transport  # type: ignore[assignment]
        peer = client.connect()
        got = owner.frames[peer]
        stage.run_until(lambda: bool(server.accepted()))
        before = client.counters(peer).bytes_sent
        try:
            client.resume_write(bytes(max_frame_size + 1), peer)
        except FrameTooLargeError as error:
            outcome.error = error
            outcome.say(f"resume_write raised: {type(error).__name__}: {error}")
        else:
            outcome.say("resume_write accepted it (it should not have)")
        after = client.counters(peer).bytes_sent
        outcome.facts.update(
            bytes_sent_before=before, bytes_sent_after=after, queued=client.write_buffer_size(peer)
        )
        outcome.say(f"bytes written to the socket: {before} before, {after} after")
        outcome.say(f"bytes queued for the peer: {client.write_buffer_size(peer)}")
        client.resume_write(b"still fine", peer)
        stage.run_until(lambda: bool(got))
        outcome.say(f"the next frame on the same connection echoes: {got[0]!r}")
    return outcome


def truncated_frame(part: str = "header") -> Outcome:
    """A peer stops in the middle of a frame and closes its sending side.

    ``part="header"`` sends 2 of the 4 header bytes; ``part="payload"`` a header
    announcing 100 bytes, then 10 of them. Each is its own typed error.
    """
    if part == "header":
        sent = b"\x00\x00"
    elif part == "payload":
        sent = struct.pack("!I", 100) + b"x" * 10
    else:
        raise ValueError('part is "header" or "payload"')
    outcome = Outcome(f"Case: the stream ends mid-{part}")
    with _staged() as (stage, server):
        bystander = _Bystander(stage, server)
        raw, peer = server.raw()
        raw.send(sent)
        raw.half_close()
        stage.run_until(lambda: bool(server.closed(peer)))
        outcome.say(f"the peer sent: {_hex(sent)} ({len(sent)} bytes), then closed its side")
        _finish(outcome, server, peer, raw)
        error = outcome.error
        if error is not None and hasattr(error, "part"):
            outcome.say(
                f"error fields: part={error.part!r} received={error.received} "  # type: ignore[attr-defined]
                f"expected={error.expected}"  # type: ignore[attr-defined]
            )
        _quiet_after_close(outcome, stage)
        outcome.say(f"another client on the same server: {bystander.verdict()}")
    return outcome


def clean_close(frames: int = 2) -> Outcome:
    """A peer sends whole frames, then closes between frames: not an error."""
    outcome = Outcome("Case: the peer closes between frames")
    with _staged(echo=False) as (stage, server):
        raw, peer = server.raw()
        raw.send(b"".join(encode_frame(f"frame {i}".encode()) for i in range(frames)))
        raw.half_close()
        stage.run_until(lambda: bool(server.closed(peer)))
        outcome.say(f"the peer sent {frames} whole frames, then closed its side")
        outcome.say(f"frames the server's owner received: {server.frames[peer]}")
        _finish(outcome, server, peer, raw)
        outcome.facts["frames"] = list(server.frames[peer])
        _quiet_after_close(outcome, stage)
    return outcome


#: How long :func:`reset_peer` waits for the server to see the peer go: past the
#: 5 s a close may spend sending the queue (``linger_timeout``), so a close that
#: the server must first finish sending to still shows how it ended.
VANISH_WAIT = 6.0


def reset_peer(
    *,
    while_writing: bool = False,
    vanish: Callable[[RawPeer], None] = RawPeer.reset,
    wait: float = VANISH_WAIT,
) -> Outcome:
    """A peer resets the connection (``SO_LINGER`` 0, so the kernel sends RST).

    ``while_writing=True``: the server is in the middle of a large write to
    that peer (two 8 MiB frames queued, more than any socket buffers hold; the
    peer not reading) when it vanishes. ``vanish(raw)`` is how the peer goes
    away; notebook 08 writes its own in a cell, this module's default is
    :meth:`RawPeer.reset`. If the server sees no end of the peer within
    ``wait`` seconds (a vanish that leaves the socket open, or half-closes it
    while the server, paused by its full queue, is not reading), the report
    says so.
    """
    when = "while the server is writing to it" if while_writing else "after one echo"
    # (Not "resets" in the heading: vanish is yours to rewrite, and the lines below
    # say what the server saw.)
    outcome = Outcome(f"Case: a peer goes away {when}")
    with _staged() as (stage, server):
        bystander = _Bystander(stage, server)
        raw, peer = server.raw()
        if while_writing:
            big = bytes(8 * MiB)
            transport: FramedTransport = server.transport  # type: ignore[assignment]
            transport.resume_write(big, peer)
            transport.resume_write(big, peer)
            stage.turns(3)
            queued = transport.write_buffer_size(peer)
            outcome.facts["queued_before_reset"] = queued
            outcome.say(
                "the server queued two 8 MiB frames for it; the peer reads nothing: "
                f"{'some' if queued else 'no'} bytes still queued"
            )
        else:
            raw.send(encode_frame(b"hello"))
            stage.run_until(lambda: len(raw.poll()) >= HEADER_SIZE + 5)
            outcome.say("the peer sent one frame and read its echo")
        vanish(raw)
        # What vanish did is for the server's side to show (the lines below): a
        # vanish you rewrote may have closed politely, and this line must not say
        # otherwise.
        outcome.say(f"then it went away: {getattr(vanish, '__name__', 'vanish')}(raw)")
        try:
            stage.run_until(lambda: bool(server.closed(peer)), timeout=wait)
        except TimeoutError:
            # A vanish that leaves the socket open, or only half-closes it while
            # the server still has bytes queued for it: no CLOSED yet, and that
            # is the lesson, not an error of the experiment.
            outcome.facts["closed_events"] = 0
            outcome.events = server.of(peer)
            outcome.say(
                f"the server's owner got no CLOSED for that peer within {wait:g} s: as far "
                "as the server knows, the connection is still open (a socket left open, or a "
                "half-close the server has not read yet, is not the end of it)"
            )
            outcome.say(f"another client on the same server: {bystander.verdict()}")
            return outcome
        stage.turns(5)
        if while_writing:
            closed = server.closed(peer)
            outcome.events = server.of(peer)
            outcome.facts["closed_events"] = len(closed)
            outcome.error = closed[0].error
            error = closed[0].error
            code = getattr(error, "errno", None)
            name = errno.errorcode.get(code, str(code)) if code is not None else "no errno"
            outcome.say(
                f"the server's owner got: CLOSED({closed[0].status.name}) with "
                f"{type(error).__name__} ({name})"
            )
        else:
            _finish(outcome, server, peer)
        outcome.say(f"CLOSED events for that peer: {outcome.facts['closed_events']}")
        outcome.say(f"another client on the same server: {bystander.verdict()}")
    return outcome


def refused_connect() -> Outcome:
    """Connecting to a port where nobody listens: a refused connect, as an event."""
    outcome = Outcome("Case: connecting to a closed port")
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    address = probe.getsockname()[:2]
    probe.close()  # the port was free a moment ago, and nobody listens on it now
    with Stage() as stage:
        client = stage.client(address)
        peer = client.transport.connect()
        outcome.say("connect() returned a peer at once (it does not block)")
        stage.run_until(lambda: bool(client.closed(peer)))
    outcome.events = client.of(peer)
    closed = client.closed(peer)
    outcome.facts["closed_events"] = len(closed)
    outcome.error = closed[0].error
    outcome.say(f"then the owner got: {_describe(closed[0])}")
    return outcome


def stalled_peer(
    mode: str = "stall", *, frame_timeout: float = 0.25, payload: int = 12, gap: float = 0.05
) -> Outcome:
    """A deadline for incomplete frames, against three kinds of peer.

    * ``"stall"``: sends a header and 5 payload bytes, then nothing: closed with
      ``FrameTimeoutError`` after ``frame_timeout``.
    * ``"drip"``: sends the rest of the frame one byte every ``gap`` seconds;
      slow but making progress, so it is *not* timed out.
    * ``"idle"``: sends a whole frame, stays silent for two deadlines, then
      sends another: silence between frames is not a stall.

    Returns once the server closed the peer or got the frames it expected.
    """
    if mode not in ("stall", "drip", "idle"):
        raise ValueError('mode is "stall", "drip" or "idle"')
    frame = encode_frame(bytes(range(payload)))
    outcome = Outcome(f"Case: frame_timeout={frame_timeout} s and a peer that does {mode!r}")
    with _staged(frame_timeout=frame_timeout, echo=False) as (stage, server):
        raw, peer = server.raw()
        got = server.frames[peer]
        if mode == "stall":
            raw.send(frame[: HEADER_SIZE + 5])
            outcome.say(
                f"the peer sent a {HEADER_SIZE}-byte header announcing {payload} bytes, "
                f"then 5 of them ({HEADER_SIZE + 5} of the frame's {len(frame)} bytes, "
                "header included), then nothing"
            )
            stage.run_until(lambda: bool(server.closed(peer)), timeout=frame_timeout + 5)
        elif mode == "drip":
            left = list(frame)

            def drip() -> None:
                if left and raw.sock.fileno() >= 0:
                    raw.send(bytes([left.pop(0)]))
                    if left:
                        stage.ew.call_later(gap, drip)

            raw.send(bytes(left[: HEADER_SIZE + 1]))
            del left[: HEADER_SIZE + 1]
            stage.ew.call_later(gap, drip)
            outcome.say(
                f"the peer sends the rest of a {len(frame)}-byte frame one byte every {gap:g} s, "
                f"more slowly than the {frame_timeout:g} s deadline allows for the whole frame"
            )
            stage.run_until(lambda: bool(got) or bool(server.closed(peer)), timeout=30)
        else:
            raw.send(frame)
            stage.run_until(lambda: bool(got))
            idle = 2 * frame_timeout
            stage.ew.call_later(idle, raw.send, frame)
            outcome.say(f"the peer sent a whole frame, was silent for {idle:g} s, sent another")
            stage.run_until(lambda: len(got) == 2 or bool(server.closed(peer)), timeout=idle + 5)
        outcome.facts["frames"] = len(got)
        if server.closed(peer):
            _finish(outcome, server, peer, raw)
        else:
            outcome.events = server.of(peer)
            outcome.facts["closed_events"] = 0
            outcome.say(f"frames received: {len(got)}; the connection is still open")
    return outcome


class _WatchedReader(FramedTransport):
    """The slow reader's server: a ``FramedTransport`` that notes each time its
    owner stops reading (``suspend_read``) and how far the producer had got
    ahead of it when it reads again (``ahead()``, asked at that moment). The
    report can then say what the reader's stops did, whoever wrote the reader."""

    def __init__(self, inner: TcpTransport, ahead: Callable[[], int]) -> None:
        super().__init__(inner)
        self._ahead = ahead
        self._stopped = False
        #: How far ahead the producer was, once per stop, when reading resumed.
        self.ahead_at_return: list[int] = []
        self.stops = 0

    def suspend_read(self, peer: Peer | None = None) -> None:
        self.stops += 1
        self._stopped = True
        super().suspend_read(peer)

    def resume_read(self, peer: Peer, *args: Any, **kwargs: Any) -> ReadResult:
        if self._stopped:
            self._stopped = False
            self.ahead_at_return.append(self._ahead())
        return super().resume_read(peer, *args, **kwargs)


def _kernel_buffer(option: int, asked: int | None) -> int:
    """What the kernel makes of a socket buffer of ``asked`` bytes (Linux doubles
    it, for its own bookkeeping); 0 if none is asked for."""
    if asked is None:
        return 0
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, option, asked)
        return int(probe.getsockopt(socket.SOL_SOCKET, option))


def _run_while_arriving(
    stage: Stage, received: Callable[[], int], total: int, timeout: float, stall: float
) -> str | None:
    """Turn the loop until ``received()`` reaches ``total`` (None), or say why it
    stopped first: ``timeout`` seconds in all, or ``stall`` seconds with no new byte.

    A reader the learner wrote may stop reading for good; the producer, obeying
    the water marks, then waits for ever too. The report says so, where a bare
    ``TimeoutError`` would say only that a condition was not met.
    """
    clock = stage.ew.time
    deadline = clock() + timeout
    last, moved = received(), clock()
    while (got := received()) < total:
        now = clock()
        if got != last:
            last, moved = got, now
        if now - moved >= stall:
            return (
                f"stopped: nothing arrived for {stall:g} s, after {got} of {total} bytes: "
                f"a reader that naps longer than that, or one that stopped for good. A "
                "reader that calls suspend_read must read again later (resume_read "
                "resumes reading), say from a loop.call_later timer; until it does, the "
                "kernel's buffers stay full and the producer, paused, waits too"
            )
        if now >= deadline:
            return f"stopped after {timeout:g} s, with {got} of {total} bytes received"
        stage.ew.run_once(min(0.1, stall, deadline - now))
    return None


def slow_reader(
    total: int = 8 * MiB,
    *,
    frame_size: int = 64 * 1024,
    high_water: int = 64 * 1024,
    low_water: int | None = None,
    reader: str | Callable[[FramedTransport, EventWatcher, Callable[[Any], None]], Any] = "naps",
    nap_every: int = 1 * MiB,
    nap: float = 0.005,
    sndbuf: int | None = 64 * 1024,
    rcvbuf: int | None = 64 * 1024,
    respect_pause: bool = True,
    timeout: float = 30.0,
    stall: float = 5.0,
) -> Outcome:
    """A producer sends ``total`` bytes to a reader that reads slowly.

    The producer writes frames until it gets ``PAUSE_WRITING`` and starts again
    on ``RESUME_WRITING``. The reader either takes naps (``reader="naps"``:
    after every ``nap_every`` bytes it calls ``suspend_read`` and resumes
    ``nap`` seconds later) or takes one frame per loop turn
    (``reader="one_per_turn"``, so the framing layer stops reading on its own
    until the owner catches up). Small socket buffers (``sndbuf``/``rcvbuf``)
    make the kernel's share small, so the pressure reaches the queue quickly.

    ``reader`` may also be your own: ``reader(server, loop, take)`` returns the
    server's event callback, which must hand every frame it reads to
    ``take(data)`` (notebook 08 writes a napping reader that way, in a cell).

    ``respect_pause=False`` plays a producer that ignores ``PAUSE_WRITING``:
    nothing is lost, but the queue grows to nearly everything it wrote.

    Every run ends by itself with its report: after ``timeout`` seconds, or once
    nothing has arrived for ``stall`` seconds (a reader of yours that stopped
    reading and never came back, or naps longer than that), the report says where
    it stopped instead of the loop waiting on.
    """
    if not callable(reader) and reader not in ("naps", "one_per_turn"):
        raise ValueError('reader is "naps", "one_per_turn" or your own function')
    count = -(-total // frame_size)
    block = random.Random(7).randbytes(4 * frame_size)
    sent_digest, got_digest = hashlib.sha256(), hashlib.sha256()
    listens = "listens" if respect_pause else "does not listen"
    outcome = Outcome(f"Case: a reader that falls behind, a producer that {listens}")
    facts = outcome.facts
    facts.update(frames_sent=0, frames_received=0, bytes_received=0, bytes_written=0, max_queued=0)
    flow: list[tuple[str, int]] = []  # (event, bytes queued when it came)

    with Stage() as stage:
        # The server's owner is written out below (it reads slowly), so the server
        # is a bare transport the stage closes, not a recording endpoint.
        server = stage.own(
            _WatchedReader(
                TcpTransport(sndbuf=sndbuf, rcvbuf=rcvbuf),
                ahead=lambda: facts["bytes_written"] - facts["bytes_received"],
            )
        )
        state = {"paused": False, "naps": 0, "since_nap": 0}

        def payload(i: int) -> bytes:
            size = min(frame_size, total - i * frame_size)
            start = (i * 4099) % (len(block) - frame_size)
            return struct.pack("!I", i)[:size] + block[start : start + max(0, size - 4)]

        def note_queue() -> None:
            facts["max_queued"] = max(facts["max_queued"], producer.write_buffer_size(peer))

        def produce() -> None:
            while (not state["paused"] or not respect_pause) and facts["frames_sent"] < count:
                data = payload(facts["frames_sent"])
                sent_digest.update(data)
                facts["frames_sent"] += 1
                facts["bytes_written"] += len(data)
                producer.resume_write(data, peer)
                note_queue()

        def on_producer(event: IOEvent) -> None:
            note_queue()
            if event.kind is EventKind.PAUSE_WRITING:
                state["paused"] = True
                flow.append(("PAUSE_WRITING", producer.write_buffer_size(peer)))
            elif event.kind is EventKind.RESUME_WRITING:
                state["paused"] = False
                flow.append(("RESUME_WRITING", producer.write_buffer_size(peer)))
                produce()
            elif event.kind is EventKind.CONNECTED:
                produce()

        def take(data: Any) -> None:
            got_digest.update(data)
            facts["frames_received"] += 1
            facts["bytes_received"] += len(data)
            state["since_nap"] += len(data)

        def wake(p: Peer) -> None:
            if p in server.peers:
                read_all(p)  # resume_read also resumes reading after suspend_read

        def read_all(p: Peer) -> None:
            while (r := server.resume_read(p)).status is IOStatus.OK:
                take(r.data)
                if state["since_nap"] >= nap_every:
                    state["since_nap"] = 0
                    state["naps"] += 1
                    server.suspend_read(p)
                    stage.ew.call_later(nap, wake, p)
                    return

        def one_frame(p: Peer) -> None:
            # One frame per READABLE: READABLE is level-triggered, so it comes again
            # next turn while frames wait.
            r = server.resume_read(p)
            if r.status is IOStatus.OK:
                take(r.data)

        def on_server(event: IOEvent) -> None:
            if event.kind is EventKind.READABLE:
                if reader == "naps":
                    read_all(event.peer)
                else:
                    one_frame(event.peer)

        server.attach(stage.ew, reader(server, stage.ew, take) if callable(reader) else on_server)
        address = server.bind()
        producer: FramedTransport = stage.own(
            framed_over_tcp(
                *address, sndbuf=sndbuf, rcvbuf=rcvbuf, high_water=high_water, low_water=low_water
            )
        )
        producer.attach(stage.ew, on_producer)
        peer = producer.connect()

        def received() -> int:
            return int(facts["bytes_received"])

        stopped = _run_while_arriving(stage, received, total, timeout, stall)

    low = producer.low_water
    bound = high_water + HEADER_SIZE + frame_size
    # What can sit between a stopped reader and the producer: the producer's
    # queue, the sender's and the receiver's socket buffers, and the frame the
    # reader's framing layer has partly read.
    kernel = _kernel_buffer(socket.SO_SNDBUF, sndbuf) + _kernel_buffer(socket.SO_RCVBUF, rcvbuf)
    room = bound + kernel + HEADER_SIZE + frame_size
    kinds = [kind for kind, _ in flow]
    facts.update(
        pauses=kinds.count("PAUSE_WRITING"),
        resumes=kinds.count("RESUME_WRITING"),
        naps=state["naps"],
        stops=server.stops,
        ahead_at_return=server.ahead_at_return,
        room=room,
        bound=bound,
        flow=flow,
        digest_ok=sent_digest.digest() == got_digest.digest(),
        low_water=low,
    )
    alternate = all(k == ("PAUSE_WRITING", "RESUME_WRITING")[i % 2] for i, k in enumerate(kinds))
    yes = {True: "yes", False: "NO"}
    outcome.say(
        f"producer: {count} frames of up to {frame_size} bytes ({total} bytes), "
        f"high_water={high_water}, low_water={low}"
    )
    if callable(reader):
        outcome.say(f"reader: yours ({getattr(reader, '__name__', 'reader')})")
    elif reader == "naps":
        outcome.say(f"reader: naps {nap * 1000:g} ms after every {nap_every} bytes")
    else:
        outcome.say("reader: takes one frame per loop turn")
    if not respect_pause:
        outcome.say("producer: ignores PAUSE_WRITING and writes everything at once")
    if stopped is not None:
        outcome.say(stopped)
    if server.stops:
        times = "once" if server.stops == 1 else f"{server.stops} times"
        outcome.say(f"the reader called suspend_read {times}")
        if server.ahead_at_return:
            outcome.say(
                "each time it read again, the producer was ahead of it by no more than the "
                f"queue, the socket buffers and one frame hold ({room // 1024} KiB), not by "
                f"all it had to send: {yes[max(server.ahead_at_return) <= room]}"
            )
    else:
        outcome.say(
            "the reader never called suspend_read (with socket buffers this small, the "
            "producer gets ahead of any reader on the same loop, and pauses all the same)"
        )
    facts["stopped"] = stopped
    outcome.say(f"first flow-control events: {', '.join(kinds[:4])}")
    outcome.say(f"PAUSE_WRITING came at least once: {yes[bool(kinds)]}")
    outcome.say(f"PAUSE_WRITING and RESUME_WRITING alternate: {yes[alternate]}")
    outcome.say(
        "each PAUSE_WRITING came with more than high_water queued: "
        + yes[all(q > high_water for k, q in flow if k == "PAUSE_WRITING")]
    )
    outcome.say(
        "each RESUME_WRITING came with at most low_water queued: "
        + yes[all(q <= low for k, q in flow if k == "RESUME_WRITING")]
    )
    outcome.say(
        f"queue never above high_water + one frame ({bound} bytes): "
        + yes[facts["max_queued"] <= bound]
    )
    if facts["max_queued"] > bound:
        outcome.say(f"largest queue: about {facts['max_queued'] / MiB:.0f} MiB")
    received_text = f"received: {facts['frames_received']} frames, {facts['bytes_received']} bytes"
    if stopped is None:
        outcome.say(f"{received_text}, same SHA-256 as sent: {yes[facts['digest_ok']]}")
    else:
        outcome.say(f"{received_text} (stopped early: not all of it, so no SHA-256 to compare)")
    return outcome
