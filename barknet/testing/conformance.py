"""One suite of checks for every framing transport: ours, and the one you write.

Theory of operation
-------------------
A check is a function that takes a *maker*, ``make(inner) -> ITransport``,
which wraps a byte transport in the framing transport under test. The check
builds a server and clients on loopback with it, drives them on a private
:class:`~barknet.reactor.EventWatcher`, and raises ``AssertionError`` with a
plain-English message when the transport misbehaves. Every check is bounded
(it gives up after a few seconds) and closes everything it opened.

The same checks run

* in ``tests/test_conformance.py`` against :class:`~barknet.framed.FramedTransport`,
  directly over TCP and over a :class:`~barknet.testing.faults.ChunkingTransport`;
* the "contract" checks (the interface's promises beyond framing: close,
  half-close, re-entrancy, level-triggered ``READABLE``) live in
  :mod:`barknet.testing.contract` and run through the same :func:`run_checks`
  (``tests/test_contract.py`` runs them against every stack);
* in the exercise notebook against the learner's own framing, through
  :func:`run_checks`, which returns a readable :class:`Report` instead of raising.

The idea comes from trio's ``check_half_closeable_stream(maker)``: one set of
expectations, many implementations.

The checks use only the :class:`~barknet.interfaces.ITransport` methods and
events, so any implementation that follows the event grammar can pass.

A failing check should tell a learner what to fix, not only that something is
wrong. So every byte transport under test is wrapped in a small recorder
(:class:`_Wire`) that keeps the first bytes each peer wrote and read; when a
wait runs out, the message lists what was sent, what arrived (in hex), which
events each side's owner saw, and says so when ``READABLE`` never fired. An
exception from the code under test is reported with the frames of *that*
code (not the library's) and their source lines.

Some mistakes work on every small example and fail only at scale or under
concurrency, so three checks look for them on purpose: the bytes on the wire
against an independent encoder (a little-endian header on both sides talks to
itself happily), many peers whose partial frames interleave (one receive
buffer shared by all peers), and how the decoder's work grows with the number
of frames waiting behind the one it cuts off (``buffer = buffer[n:]`` copies
the rest for every frame). That last one counts bytes allocated, read from
:mod:`tracemalloc` line by line, never time: a count does not depend on how
busy the machine is.

:func:`run_checks` bounds a whole run (``budget``, 20 s by default): each wait
gets at most ``timeout`` seconds and never more than what is left, code that
never returns to the loop is interrupted by an alarm (in the main thread), and
checks that no longer fit are reported as not run.
"""

from __future__ import annotations

import contextlib
import hashlib
import linecache
import random
import signal
import socket
import struct
import sys
import threading
import time
import traceback
import tracemalloc
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from ..errors import FrameTooLargeError, TransportClosedError, TruncatedFrameError
from ..events import EventKind, IOEvent, IOStatus, Peer, ReadResult, WriteResult
from ..interfaces import ITransport, WriteData
from ..layer import TransportLayer
from ..reactor import EventWatcher
from ..tcp import TcpTransport
from .faults import ChunkingTransport, RawPeer

__all__ = [
    "CHECKS",
    "Check",
    "CheckResult",
    "Maker",
    "Report",
    "checks_for",
    "explain_exception",
    "run_checks",
]

Maker = Callable[[ITransport], ITransport]

#: How long one check may wait for the loop before it is declared stuck;
#: :func:`run_checks` can change it.
TIMEOUT = 10.0


#: The whole of one :func:`run_checks` call, in seconds (checks that no longer
#: fit are reported as not run).
BUDGET = 20.0

_limits: dict[str, float] = {"timeout": TIMEOUT, "deadline": float("inf")}

#: How many bytes of each direction :class:`_Wire` keeps per peer.
_WIRE_KEEP = 48


def _hex(data: bytes | bytearray, limit: int = 24) -> str:
    """``data`` as spaced hex, cut after ``limit`` bytes; ``(nothing)`` if empty."""
    if not data:
        return "(nothing)"
    text = bytes(data[:limit]).hex(" ")
    return text + (f" ... ({len(data)} bytes)" if len(data) > limit else "")


def _frame(payload: bytes) -> bytes:
    """An independent encoder: the length as 4 bytes, most significant first."""
    return len(payload).to_bytes(4, "big") + payload


def _flat(data: WriteData) -> bytes:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    return b"".join(bytes(part) for part in data)


class _Wire(TransportLayer):
    """Records the first bytes each peer wrote and read, for failure messages."""

    def __init__(self, inner: ITransport) -> None:
        super().__init__(inner)
        self.written: dict[Peer, bytearray] = {}
        self.read: dict[Peer, bytearray] = {}

    def resume_write(self, data: WriteData, peer: Peer) -> WriteResult:
        result = self.inner.resume_write(data, peer)
        kept = self.written.setdefault(peer, bytearray())
        if result.sent and len(kept) < _WIRE_KEEP:
            kept += _flat(data)[: min(result.sent, _WIRE_KEEP - len(kept))]
        return result

    def resume_read(
        self,
        peer: Peer,
        buffer: bytearray | memoryview | None = None,
        offset: int = 0,
        max_len: int | None = None,
    ) -> ReadResult:
        result = self.inner.resume_read(peer, buffer, offset, max_len)
        kept = self.read.setdefault(peer, bytearray())
        if result.status is IOStatus.OK and len(kept) < _WIRE_KEEP:
            kept += bytes(result.data[: _WIRE_KEEP - len(kept)])
        return result


def _payloads(count: int, max_size: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(rng.randint(0, max_size)) for _ in range(count)]


class _Side:
    """One framing transport plus what its owner has seen, frame by frame.

    ``per_readable``: take at most that many frames per READABLE (None: all of
    them, until WOULD_BLOCK), as an asyncio- or trio-style owner does.
    """

    def __init__(
        self,
        ew: EventWatcher,
        transport: ITransport,
        *,
        echo: bool,
        per_readable: int | None = None,
    ) -> None:
        self.ew = ew
        self.transport = transport
        self.echo = echo
        self.per_readable = per_readable
        self.frames: dict[Peer, list[bytes]] = {}
        self.events: list[IOEvent] = []
        self.closed: dict[Peer, IOEvent] = {}
        self.opened: list[Peer] = []
        transport.attach(ew, self._on_event)

    def _on_event(self, event: IOEvent) -> None:
        self.events.append(event)
        kind, peer = event.kind, event.peer
        if kind is EventKind.READABLE:
            taken = 0
            while self.per_readable is None or taken < self.per_readable:
                taken += 1
                result = self.transport.resume_read(peer)
                if result.status is not IOStatus.OK:
                    break
                frame = bytes(result.data)
                self.frames.setdefault(peer, []).append(frame)
                if self.echo:
                    self.transport.resume_write(frame, peer)
        elif kind in (EventKind.ACCEPTED, EventKind.CONNECTED):
            self.opened.append(peer)
            self.frames.setdefault(peer, [])
        elif kind is EventKind.CLOSED:
            if peer in self.closed:
                raise AssertionError(f"CLOSED came twice for {peer}")
            self.closed[peer] = event

    def received(self, peer: Peer) -> list[bytes]:
        return self.frames.get(peer, [])

    def describe(self, name: str, wire: _Wire | None) -> list[str]:
        """What this side's owner saw, and its first bytes on the wire, in a few lines."""
        kinds = Counter(event.kind.name for event in self.events)
        seen = ", ".join(f"{kind} x{n}" for kind, n in kinds.items()) or "no event at all"
        lines = [f"{name}: its owner saw {seen}"]
        if not kinds.get("READABLE"):
            lines[-1] += " (READABLE never fired)"
        got = sum(len(frames) for frames in self.frames.values())
        lines[-1] += f"; {got} whole frame(s) received"
        for peer, event in list(self.closed.items())[:3]:
            error = f", {type(event.error).__name__}: {event.error}" if event.error else ""
            lines.append(f"  {peer} closed: {event.status.name}{error}")
        if len(self.closed) > 3:
            lines.append(f"  (and {len(self.closed) - 3} more peers closed)")
        if wire is not None:
            for peer in sorted(set(wire.written) | set(wire.read), key=str)[:2]:
                lines.append(f"  {peer} wrote on the wire: {_hex(wire.written.get(peer, b''))}")
                lines.append(f"  {peer} read from the wire: {_hex(wire.read.get(peer, b''))}")
        return lines


class _Lab:
    """A server (echoing, unless told not to) and any number of clients."""

    def __init__(
        self,
        make: Maker,
        *,
        echo: bool = True,
        sndbuf: int | None = None,
        rcvbuf: int | None = None,
        chunking: dict[str, Any] | None = None,
        per_readable: int | None = None,
    ) -> None:
        self.make = make
        self.sndbuf, self.rcvbuf, self.chunking = sndbuf, rcvbuf, chunking
        self.ew = EventWatcher()
        self.tcps: list[TcpTransport] = []
        self.wires: list[_Wire] = []
        self.sides: list[_Side] = []
        try:
            self.server = self._side(echo=echo, per_readable=per_readable)
            self.address = self.server.transport.bind()
        except BaseException:
            self.close()
            raise

    def _side(self, *, echo: bool, seed: int = 0, per_readable: int | None = None) -> _Side:
        tcp = TcpTransport(sndbuf=self.sndbuf, rcvbuf=self.rcvbuf)
        self.tcps.append(tcp)
        wire = _Wire(tcp)
        self.wires.append(wire)
        inner: ITransport = wire
        if self.chunking is not None:
            inner = ChunkingTransport(tcp, seed=seed + len(self.tcps), **self.chunking)
        side = _Side(self.ew, self.make(inner), echo=echo, per_readable=per_readable)
        self.sides.append(side)
        return side

    def client(self) -> tuple[_Side, Peer]:
        return self.client_of(self.address)

    def client_of(self, address: tuple[str, int]) -> tuple[_Side, Peer]:
        """A client of the transport under test, connected to ``address``."""
        side = self._side(echo=False)
        peer = side.transport.connect(address)
        return side, peer

    def run_until(self, condition: Callable[[], object], what: str) -> None:
        timeout = _wait_limit()
        try:
            self.ew.run_until(condition, timeout)
        except TimeoutError:
            raise AssertionError(
                f"waited {timeout:g} s for {what}; it never came.\n" + self.describe()
            ) from None

    def describe(self) -> str:
        """Each side's events and first bytes on the wire (for a failure message)."""
        lines: list[str] = []
        for i, (side, wire) in enumerate(zip(self.sides, self.wires, strict=False)):
            name = "the server" if i == 0 else f"client {i}"
            if i > 3:
                lines.append(f"(and {len(self.sides) - 4} more clients)")
                break
            lines.extend(side.describe(name, wire))
        return "\n".join(lines)

    def close(self) -> None:
        # Each step runs even if an earlier one raised (a transport under test may fail
        # in close too): the sockets and the loop are released whatever happens.
        try:
            for side in self.sides:
                side.transport.close()
        finally:
            try:
                for tcp in self.tcps:
                    tcp.close()
            finally:
                # Let CLOSED events run so user callbacks see them, then release the loop.
                if not self.ew.closed:
                    try:
                        for _ in range(3):
                            self.ew.run_once(0)
                    finally:
                        self.ew.close()

    def __enter__(self) -> _Lab:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _raw_client(address: tuple[str, int]) -> socket.socket:
    """A plain blocking socket, for sending bytes a framing layer would never send."""
    sock = socket.create_connection(address, timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _same(got: list[bytes], want: list[bytes], who: str) -> None:
    if got == want:
        return
    for i, (g, w) in enumerate(zip(got, want, strict=False)):
        if g != w:
            raise AssertionError(
                f"{who}: frame {i} differs: expected {len(w)} bytes "
                f"(sha1 {hashlib.sha1(w).hexdigest()[:8]}) starting {_hex(w, 12)}, "
                f"got {len(g)} bytes (sha1 {hashlib.sha1(g).hexdigest()[:8]}) "
                f"starting {_hex(g, 12)}"
            )
    raise AssertionError(f"{who}: got {len(got)} frames, expected {len(want)}")


def _wait_limit() -> float:
    """How long one wait may take: the per-wait timeout, or what is left of the run."""
    left = _limits["deadline"] - time.monotonic()
    return max(0.1, min(_limits["timeout"], left))


# ---------------------------------------------------------------- the checks
def _echo_round_trip(make: Maker, payloads: list[bytes], **lab_options: Any) -> _Lab:
    lab = _Lab(make, **lab_options)
    try:
        client, peer = lab.client()
        for payload in payloads:
            client.transport.resume_write(payload, peer)
        lab.run_until(
            lambda: len(client.received(peer)) >= len(payloads) or peer in client.closed,
            f"{len(payloads)} echoed frames",
        )
        if peer in client.closed:
            raise AssertionError(f"the connection closed early: {client.closed[peer]}")
        _same(client.received(peer), payloads, "echo")
    except BaseException:
        lab.close()
        raise
    return lab


def check_single_message(make: Maker) -> None:
    """One frame goes to an echo server and comes back whole."""
    _echo_round_trip(make, [b"hello, barknet"]).close()


def check_zero_length_frame(make: Maker) -> None:
    """An empty payload is a valid frame, distinct from "no frame"."""
    _echo_round_trip(make, [b"", b"x", b"", b""]).close()


def check_frames_in_order(make: Maker) -> None:
    """Many frames of varied sizes arrive whole and in the order they were sent."""
    _echo_round_trip(make, _payloads(200, 3000, seed=1)).close()


def check_rapid_fire_small_messages(make: Maker) -> None:
    """Thousands of tiny frames sent in one burst: none lost, merged or reordered."""
    payloads = [struct.pack("!I", i) * (i % 5) for i in range(5000)]
    with _Lab(make, echo=False) as lab:
        client, peer = lab.client()
        for payload in payloads:
            client.transport.resume_write(payload, peer)
        lab.run_until(
            lambda: lab.server.opened and len(lab.server.received(lab.server.opened[0])) >= 5000,
            "5000 frames at the server",
        )
        _same(lab.server.received(lab.server.opened[0]), payloads, "server")


def check_large_message_partial_io(make: Maker) -> None:
    """A 4 MiB frame through 4 KiB socket buffers: many short reads and writes, one frame."""
    payload = random.Random(2).randbytes(4 * 1024 * 1024)
    lab = _echo_round_trip(make, [payload], sndbuf=4096, rcvbuf=4096)
    try:
        sent = sum(t.counters().short_sends for t in lab.tcps)
        received = sum(t.counters().short_recvs for t in lab.tcps)
        if sent == 0 or received == 0:
            raise AssertionError(
                f"expected partial I/O with 4 KiB buffers, saw {sent} short sends "
                f"and {received} short reads"
            )
    finally:
        lab.close()


def check_many_concurrent_connections(make: Maker) -> None:
    """50 clients at once, each with its own frames: each gets back exactly its own."""
    with _Lab(make) as lab:
        clients = [lab.client() for _ in range(50)]
        sent = {}
        for i, (side, peer) in enumerate(clients):
            sent[peer] = _payloads(5, 2000, seed=100 + i)
            for payload in sent[peer]:
                side.transport.resume_write(payload, peer)
        lab.run_until(
            lambda: all(len(side.received(peer)) >= 5 for side, peer in clients),
            "every client's echoes",
        )
        for side, peer in clients:
            _same(side.received(peer), sent[peer], f"client {peer}")


def check_survives_chunking(make: Maker) -> None:
    """Reads of at most 7 bytes, writes of at most 5, a third of calls "would block"."""
    chunking = {"max_read": 7, "max_write": 5, "would_block": 0.3}
    _echo_round_trip(make, [*_payloads(30, 300, seed=3), b""], chunking=chunking).close()


def check_survives_one_byte_io(make: Maker) -> None:
    """Every read and every write moves a single byte: frames still arrive whole."""
    chunking = {"max_read": 1, "max_write": 1}
    _echo_round_trip(make, [b"a", b"", b"bcdefgh" * 10], chunking=chunking).close()


def check_clean_close_is_eof(make: Maker) -> None:
    """A client that closes between frames: the server gets every frame, then CLOSED(EOF)."""
    payloads = _payloads(20, 500, seed=4)
    with _Lab(make, echo=False) as lab:
        client, peer = lab.client()
        for payload in payloads:
            client.transport.resume_write(payload, peer)
        client.transport.close(peer)
        lab.run_until(lambda: lab.server.closed, "the server to see the close")
        (server_peer, event) = next(iter(lab.server.closed.items()))
        _same(lab.server.received(server_peer), payloads, "server")
        if event.status is not IOStatus.EOF or event.error is not None:
            raise AssertionError(f"a clean close should be CLOSED(EOF), got {event}")


def _expect_framing_error(
    make: Maker, raw: bytes, error_type: type[Exception], what: str
) -> BaseException:
    """Send ``raw`` from a raw socket, then close it; a framed client on the same
    server must keep working. Returns the error the server reported."""
    with _Lab(make) as lab:
        good, good_peer = lab.client()
        good.transport.resume_write(b"before", good_peer)
        lab.run_until(lambda: good.received(good_peer), "the good client's first echo")
        bad = _raw_client(lab.address)
        try:
            bad.sendall(raw)
            # The bad peer ends its side too, so a transport that closes it
            # gracefully (lingering until the peer's EOF) is not kept waiting.
            bad.shutdown(socket.SHUT_WR)
            lab.run_until(lambda: lab.server.closed, f"the server to close the peer that {what}")
        finally:
            bad.close()
        (_, event) = next(iter(lab.server.closed.items()))
        if event.status is not IOStatus.ERROR or not isinstance(event.error, error_type):
            raise AssertionError(
                f"a peer that {what} should be CLOSED(ERROR, {error_type.__name__}), got {event}"
            )
        good.transport.resume_write(b"after", good_peer)
        lab.run_until(lambda: len(good.received(good_peer)) >= 2, "the good client's second echo")
        _same(good.received(good_peer), [b"before", b"after"], "the other client")
        return event.error


def check_oversized_length_prefix(make: Maker) -> None:
    """A length prefix of 0xFFFFFFFF closes that peer with FrameTooLargeError only."""
    error = _expect_framing_error(
        make, b"\xff\xff\xff\xff", FrameTooLargeError, "announced a 4 GiB frame"
    )
    if getattr(error, "size", None) != 0xFFFFFFFF:
        raise AssertionError(f"the error should carry the announced size, got {error!r}")


def check_eof_mid_header(make: Maker) -> None:
    """A stream that stops after 2 of 4 header bytes is a TruncatedFrameError (header)."""
    error = _expect_framing_error(make, b"\x00\x00", TruncatedFrameError, "stopped mid-header")
    if (getattr(error, "part", None), getattr(error, "received", None)) != ("header", 2):
        raise AssertionError(f"expected 2 of 4 header bytes in the error, got {error!r}")


def check_eof_mid_payload(make: Maker) -> None:
    """A stream that stops 10 bytes into a 100-byte payload is a TruncatedFrameError."""
    error = _expect_framing_error(
        make, struct.pack("!I", 100) + b"x" * 10, TruncatedFrameError, "stopped mid-payload"
    )
    got = (getattr(error, "part", None), error.received, error.expected)  # type: ignore[attr-defined]
    if got != ("payload", 10, 100):
        raise AssertionError(f"expected 10 of 100 payload bytes in the error, got {error!r}")


def check_send_after_close_raises(make: Maker) -> None:
    """Writing to a peer you closed is your bug: TransportClosedError, at the call."""
    with _Lab(make) as lab:
        client, peer = lab.client()
        lab.run_until(lambda: lab.server.opened, "the connection")
        client.transport.close(peer)
        try:
            client.transport.resume_write(b"too late", peer)
        except TransportClosedError:
            return
        raise AssertionError("resume_write after close(peer) did not raise TransportClosedError")


def check_oversized_send_refused(make: Maker) -> None:
    """A payload over the limit is refused at the call, and nothing reaches the wire."""
    with _Lab(make) as lab:
        client, peer = lab.client()
        lab.run_until(lambda: lab.server.opened, "the connection")
        limit = getattr(client.transport, "max_frame_size", None)
        if limit is None:
            raise AssertionError("the transport should expose its max_frame_size")
        try:
            client.transport.resume_write(bytes(limit + 1), peer)
        except FrameTooLargeError:
            pass
        else:
            raise AssertionError("an oversized payload was accepted")
        client.transport.resume_write(b"fine", peer)
        lab.run_until(lambda: client.received(peer), "the echo after the refused frame")
        _same(client.received(peer), [b"fine"], "client")


def check_wire_format(make: Maker) -> None:
    """The bytes on the wire match an independent encoder: a 4-byte big-endian length, then
    the payload, in both directions (two wrong byte orders still understand each other)."""
    payloads = [b"hello", b"", bytes(range(256)) + b"!" * 44]  # lengths 5, 0 and 300
    wire = b"".join(_frame(p) for p in payloads)
    # Sending: your transport writes to a plain socket, which reads the raw bytes.
    with _Lab(make, echo=False) as lab, socket.create_server(("127.0.0.1", 0)) as listener:
        client, peer = lab.client_of(listener.getsockname())
        listener.settimeout(5)
        raw, _ = listener.accept()
        with raw:
            raw.setblocking(False)
            got = bytearray()

            def arrived() -> bool:
                with contextlib.suppress(BlockingIOError):
                    got.extend(raw.recv(65536))
                return len(got) >= len(wire)

            for payload in payloads:
                client.transport.resume_write(payload, peer)
            try:
                lab.run_until(arrived, f"{len(wire)} bytes at a plain socket")
            except AssertionError as exc:
                if not got:
                    raise
                del exc  # a short answer is described below, with the bytes
            if bytes(got[: len(wire)]) != wire:
                raise AssertionError(
                    "your transport sent b'hello', b'' and a 300-byte payload; on the wire:\n"
                    f"  expected {_hex(wire, 20)}\n  got      {_hex(got, 20)}\n"
                    + _byte_order_hint(got[:4], 5)
                )
    # Receiving: a plain socket sends frames made by the independent encoder.
    with _Lab(make) as lab:
        sender = RawPeer(lab.address)
        try:
            sender.send(wire)
            lab.run_until(
                lambda: (
                    lab.server.opened
                    and (
                        len(lab.server.received(lab.server.opened[0])) >= len(payloads)
                        or lab.server.closed
                    )
                ),
                "3 frames sent by a plain socket",
            )
        finally:
            sender.close()
        got_frames = lab.server.received(lab.server.opened[0])
        if got_frames[: len(payloads)] != payloads:
            closed = next(iter(lab.server.closed.values()), None)
            why = f"; the server closed the peer: {closed.error}" if closed else ""
            raise AssertionError(
                f"a plain socket sent {_hex(wire, 13)} (b'hello' as 00 00 00 05, then the "
                f"payload); your server delivered {[_short(f) for f in got_frames]}{why}\n"
                + _byte_order_hint(wire[:4], 5)
            )


def _short(frame: bytes) -> str:
    return repr(frame) if len(frame) <= 12 else f"<{len(frame)} bytes>"


def _byte_order_hint(header: bytes | bytearray, size: int) -> str:
    if len(header) < 4:
        return "(fewer than 4 bytes: not even a header)"
    big, little = int.from_bytes(header[:4], "big"), int.from_bytes(header[:4], "little")
    if header[:4] == size.to_bytes(4, "little"):
        return (
            f"the header {_hex(header[:4])} is {size} in little-endian: the wire format is "
            'big-endian ("network order"), struct format "!I"'
        )
    return (
        f"the header {_hex(header[:4])} reads as {big} big-endian ({little} little-endian); "
        f'a frame of {size} bytes starts {_hex(size.to_bytes(4, "big"))} (struct "!I")'
    )


def check_interleaved_partial_frames(make: Maker) -> None:
    """Eight peers send their frames in three pieces each, taking turns, so every peer's
    bytes arrive between other peers' half frames: each must get its own frame back."""
    rng = random.Random(5)
    payloads = [bytes([65 + i]) * 4 + rng.randbytes(20 + 13 * i) for i in range(8)]
    with _Lab(make) as lab:
        peers = [RawPeer(lab.address) for _ in payloads]
        try:
            lab.run_until(lambda: len(lab.server.opened) == len(peers), "8 connections")
            server_tcp = lab.tcps[0]
            for piece in range(3):
                for raw, payload in zip(peers, payloads, strict=True):
                    frame = _frame(payload)
                    cuts = [0, 2, 4 + len(payload) // 2, len(frame)]
                    chunk = frame[cuts[piece] : cuts[piece + 1]]
                    until = server_tcp.counters().bytes_received + len(chunk)
                    raw.send(chunk)

                    def piece_read(until: int = until) -> bool:
                        return server_tcp.counters().bytes_received >= until or bool(
                            lab.server.closed
                        )

                    with contextlib.suppress(AssertionError):  # a closed peer reads no more
                        lab.run_until(piece_read, "the server to read a piece")
            wanted = [_frame(p) for p in payloads]
            with contextlib.suppress(AssertionError):  # described below, peer by peer
                lab.run_until(
                    lambda: all(
                        len(r.poll()) >= len(w) for r, w in zip(peers, wanted, strict=True)
                    ),
                    "every peer's echo",
                )
            wrong = [
                (i, w, r.poll())
                for i, (r, w) in enumerate(zip(peers, wanted, strict=True))
                if r.poll()[: len(w)] != w
            ]
            if wrong:
                lines = [
                    f"{len(wrong)} of 8 peers did not get their own frame back; the pieces "
                    "were: 2 header bytes, then the rest of the header and half the payload, "
                    "then the rest, each peer in turn:"
                ]
                for i, want, got in wrong[:3]:
                    lines.append(f"  peer {i} sent {_hex(want, 10)}")
                    lines.append(f"         got  {_hex(got, 10)}")
                closed = [e for e in lab.server.closed.values() if e.error is not None]
                if closed:
                    lines.append(
                        f"the server closed {len(closed)} peer(s), e.g. with "
                        f"{type(closed[0].error).__name__}: {closed[0].error}"
                    )
                lines.append(
                    "does every peer have its own receive buffer? Bytes from one peer must "
                    "never meet another's."
                )
                raise AssertionError("\n".join(lines))
        finally:
            for raw in peers:
                raw.close()


class _AllocationMeter:
    """Counts the bytes allocated while it is active, line by line.

    ``tracemalloc`` knows what is allocated *now* and the peak since the last
    reset, not a running total; a copy that is made and freed within one line
    (``buffer = buffer[n:]``) would leave no trace in "now". So a trace
    function samples at every line: the peak since the previous line minus
    what was allocated then is what that line allocated, at least.
    """

    def __init__(self) -> None:
        self.total = 0
        self._base = 0
        self._started = False
        self._previous: Any = None

    def __enter__(self) -> _AllocationMeter:
        self._started = not tracemalloc.is_tracing()
        if self._started:
            tracemalloc.start()
        self._base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        self._previous = sys.gettrace()
        sys.settrace(self._trace)
        return self

    def __exit__(self, *exc_info: object) -> None:
        sys.settrace(self._previous)
        self._sample()
        if self._started:
            tracemalloc.stop()

    def _sample(self) -> None:
        current, peak = tracemalloc.get_traced_memory()
        self.total += max(0, peak - self._base)
        tracemalloc.reset_peak()
        self._base = current

    def _trace(self, frame: FrameType, event: str, arg: object) -> Any:
        self._sample()
        return self._trace


def _decode_cost(make: Maker, count: int) -> tuple[int, int]:
    """Bytes allocated while ``count`` 8-byte frames, sent in one write, are decoded;
    and how many reads the server needed."""
    payloads = [struct.pack("!Q", i) for i in range(count)]
    with _Lab(make, echo=False) as lab:
        sender = RawPeer(lab.address)
        try:
            lab.run_until(lambda: lab.server.opened, "the connection")
            server_peer = lab.server.opened[0]
            sender.send(b"".join(_frame(p) for p in payloads))
            reads_before = lab.tcps[0].counters().recv_calls
            with _AllocationMeter() as meter:
                lab.run_until(
                    lambda: len(lab.server.received(server_peer)) >= count or lab.server.closed,
                    f"{count} small frames sent in one write",
                )
            _same(lab.server.received(server_peer), payloads, "server")
            return meter.total, lab.tcps[0].counters().recv_calls - reads_before
        finally:
            sender.close()


def check_decoder_scales_linearly(make: Maker) -> None:
    """Decoding 8,000 frames that arrive together costs about as much per frame as 1,000:
    counted in bytes allocated (not time), so copying what is left for each frame fails."""
    small, _ = _decode_cost(make, 1000)
    large, reads = _decode_cost(make, 8000)
    per_small, per_large = small / 1000, large / 8000
    if per_large > 2 * per_small:
        raise AssertionError(
            f"decoding 1000 small frames that arrived together allocated {per_small:,.0f} "
            f"bytes per frame; 8000 frames ({reads} reads) allocated {per_large:,.0f} bytes "
            f"per frame, x{per_large / per_small:.1f}. The work per frame grows with the "
            "frames waiting behind it: something copies the rest of the buffer for every "
            "frame (buffer = buffer[n:]? bytes += chunk?). Drop what you used with "
            "del buffer[:n] on a bytearray."
        )


@dataclass(frozen=True)
class Check:
    name: str
    run: Callable[[Maker], None]
    #: "core" checks cover what the chapter's exercise asks; "errors" the error
    #: cases; "contract" the interface's promises beyond the exercise (run_checks
    #: leaves those out unless asked).
    level: str
    #: True when the check talks to the transport with plain sockets that send or
    #: expect payloads exactly as given, in the 4-byte length-prefix format. A stack
    #: that changes payloads on the wire (compression) cannot pass such a check,
    #: and is not meant to: run it with the others only.
    plain_wire: bool = False
    #: Other levels the check also belongs to. Two contract checks are mistakes a
    #: framing layer makes too (a busy loop after a drain, writes accepted after
    #: close), so the exercise's self-check (levels "core" and "errors") runs them.
    also_in: tuple[str, ...] = ()

    @property
    def doc(self) -> str:
        return (self.run.__doc__ or "").strip()


CHECKS: list[Check] = [
    Check("single message", check_single_message, "core"),
    Check("zero-length frame", check_zero_length_frame, "core"),
    Check("frames in order", check_frames_in_order, "core"),
    Check("rapid fire of small messages", check_rapid_fire_small_messages, "core"),
    Check("large message, partial I/O", check_large_message_partial_io, "core"),
    Check("50 concurrent connections", check_many_concurrent_connections, "core"),
    Check("survives chunking and would-block", check_survives_chunking, "core"),
    Check("survives one-byte I/O", check_survives_one_byte_io, "core"),
    Check("wire format and byte order", check_wire_format, "core", plain_wire=True),
    Check(
        "many peers, interleaved partial frames",
        check_interleaved_partial_frames,
        "core",
        plain_wire=True,
    ),
    Check("decoder work grows linearly", check_decoder_scales_linearly, "core", plain_wire=True),
    Check("clean close is EOF", check_clean_close_is_eof, "errors"),
    Check("oversized length prefix", check_oversized_length_prefix, "errors"),
    Check("EOF mid-header", check_eof_mid_header, "errors"),
    Check("EOF mid-payload", check_eof_mid_payload, "errors"),
    Check("send after close raises", check_send_after_close_raises, "errors"),
    Check("oversized send refused", check_oversized_send_refused, "errors"),
]


@dataclass
class CheckResult:
    check: Check
    passed: bool
    message: str = ""
    seconds: float = 0.0
    #: False when the run's budget was spent before this check could start.
    ran: bool = True

    def __str__(self) -> str:
        mark = "PASS" if self.passed else ("FAIL" if self.ran else "SKIP")
        lines = [f"{mark}  {self.check.name}"]
        if not self.passed:
            lines.extend(f"      {line}" for line in self.message.splitlines())
        return "\n".join(lines)


@dataclass
class Report:
    """What :func:`run_checks` found; prints as a short table, one line per check."""

    results: list[CheckResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def failures(self) -> list[CheckResult]:
        return [r for r in self.results if not r.passed]

    def summary(self) -> str:
        ok = sum(r.passed for r in self.results)
        return f"{ok} of {len(self.results)} checks passed"

    def __str__(self) -> str:
        return "\n".join([*(str(r) for r in self.results), self.summary()])


class _OutOfTime(BaseException):
    """Raised by the alarm inside code that never went back to the loop.

    A ``BaseException`` so that an ``except Exception`` in the code under test
    cannot swallow it."""


_LIBRARY = str(Path(__file__).resolve().parents[1])


def explain_exception(exc: BaseException) -> str:
    """Where ``exc`` came from, told in the frames of the code under test.

    The library's own frames (``barknet/``) are what a learner cannot change, so
    they are left out when there are others; file names are left out too (a
    notebook cell's file name changes with every kernel), the function, the line
    number in its cell and the line itself are kept."""
    frames = traceback.extract_tb(exc.__traceback__)
    mine = [
        f
        for f in frames
        if not f.filename.startswith(_LIBRARY) and "/lib/python" not in f.filename
    ]
    if not mine:
        tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
        return "".join(tb[-3:]).rstrip()
    # An alarm's own exception says nothing; the frames say where the code was.
    lines = [] if isinstance(exc, _OutOfTime) else [f"{type(exc).__name__}: {exc}"]
    for f in mine[-3:]:
        text = (f.line or linecache.getline(f.filename, f.lineno or 0)).strip()
        where = "this cell" if f.name == "<module>" else f.name
        of = " of its cell" if "ipykernel_" in f.filename or f.filename.startswith("<") else ""
        lines.append(f"  in {where}, line {f.lineno}{of}: {text}".rstrip(": "))
    return "\n".join(lines)


def checks_for(levels: tuple[str, ...] = ("core", "errors")) -> list[Check]:
    """The checks :func:`run_checks` runs for ``levels``, in order: each check whose
    level, or one of whose :attr:`Check.also_in`, is among them."""
    # The contract checks' module builds on this one, so it is imported here,
    # when the registry is first asked for, not at the top.
    from .contract import CONTRACT_CHECKS

    return [
        check
        for check in CHECKS + CONTRACT_CHECKS
        if check.level in levels or any(level in levels for level in check.also_in)
    ]


def run_checks(
    make: Maker,
    *,
    levels: tuple[str, ...] = ("core", "errors"),
    names: list[str] | None = None,
    timeout: float = TIMEOUT,
    budget: float = BUDGET,
    progress: bool = False,
    plain_wire: bool = True,
) -> Report:
    """Run the checks against ``make`` and collect a report instead of raising.

    An ``AssertionError`` is reported as its message (what went wrong); any
    other exception as the frames of your code it passed through (where your
    code broke). ``timeout`` bounds each wait inside a check and ``budget`` the
    whole run, so a transport that hangs costs seconds, not your afternoon;
    checks that no longer fit in the budget are reported as ``SKIP``. With
    ``progress=True`` each result is printed as soon as its check finishes.
    ``plain_wire=False`` leaves out the checks that send or expect plain frames
    on a raw socket (:attr:`Check.plain_wire`): a layer that changes the bytes on
    purpose, such as compression, is not meant to pass them.
    """
    report = Report()
    started = time.monotonic()
    _limits["timeout"] = timeout
    _limits["deadline"] = started + budget
    try:
        for check in checks_for(levels):
            if names is not None and check.name not in names:
                continue
            if check.plain_wire and not plain_wire:
                continue
            if time.monotonic() >= _limits["deadline"]:
                result = CheckResult(
                    check,
                    False,
                    f"not run: the {budget:g} s budget was spent on the checks above. Fix "
                    f"those first, or run this one alone: names=[{check.name!r}]",
                    ran=False,
                )
            else:
                result = _run_one(check, make)
            report.results.append(result)
            if progress:
                print(result, flush=True)
    finally:
        _limits["timeout"], _limits["deadline"] = TIMEOUT, float("inf")
    if progress:
        print(report.summary(), f"in {time.monotonic() - started:.0f} s", flush=True)
    return report


def _run_one(check: Check, make: Maker) -> CheckResult:
    started = time.monotonic()
    alarm = _Alarm(max(1.0, _limits["deadline"] - started) + 1.0)
    try:
        with alarm:
            check.run(make)
    except AssertionError as exc:
        result = CheckResult(check, False, str(exc))
    except _OutOfTime as exc:
        result = CheckResult(
            check,
            False,
            f"your code was still running after {alarm.seconds:.0f} s without going back "
            f"to the event loop (an endless loop?):\n{explain_exception(exc)}",
        )
    except Exception as exc:
        result = CheckResult(check, False, explain_exception(exc))
    else:
        result = CheckResult(check, True)
    result.seconds = time.monotonic() - started
    return result


class _Alarm:
    """Interrupts code that never returns to the loop, by ``SIGALRM``.

    A wait in the loop is bounded by its own timeout; a ``while`` in the code
    under test that never ends is not. Signals reach only the main thread, and
    not every platform has ``SIGALRM``: elsewhere this does nothing."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._armed = hasattr(signal, "SIGALRM") and (
            threading.current_thread() is threading.main_thread()
        )
        self._previous: Any = None

    def _fire(self, signum: int, frame: FrameType | None) -> None:
        raise _OutOfTime()

    def __enter__(self) -> _Alarm:
        if self._armed:
            self._previous = signal.signal(signal.SIGALRM, self._fire)
            signal.setitimer(signal.ITIMER_REAL, self.seconds)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._armed:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self._previous)
