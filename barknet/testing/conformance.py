"""One suite of checks for every framing transport: ours, and the one you write.

Theory of operation
-------------------
Each check takes a *maker*, ``make(inner) -> ITransport``, which wraps a byte
transport in the framing transport under test, builds a server and clients on
loopback with it (a :class:`~barknet.testing.checks.Lab`), and raises
``AssertionError`` with a plain-English message when the transport misbehaves.
Every check is bounded (it gives up after a few seconds) and closes everything
it opened. :mod:`barknet.testing.checks` holds the lab, the :class:`Check`
record and the runner; this module holds the framing checks and their
registry, :data:`CHECKS`.

The same checks run

* in ``tests/test_conformance.py`` against :class:`~barknet.framed.FramedTransport`,
  directly over TCP and over a :class:`~barknet.testing.faults.ChunkingTransport`;
* the "contract" checks (the interface's promises beyond framing: close,
  half-close, re-entrancy, level-triggered ``READABLE``) live in
  :mod:`barknet.testing.contract` and run through the same :func:`run_checks`
  (``tests/test_contract.py`` runs them against every stack);
* in the exercise notebook against the learner's own framing, through
  :func:`run_checks`, which returns a readable :class:`Report` instead of raising.

The checks use only the :class:`~barknet.interfaces.ITransport` methods and
events, so any implementation that follows the event grammar can pass.

Some mistakes work on every small example and fail only at scale or under
concurrency, so three checks look for them on purpose: the bytes on the wire
against an independent encoder (a little-endian header on both sides talks to
itself happily), many peers whose partial frames interleave (one receive
buffer shared by all peers), and how the decoder's work grows with the number
of frames waiting behind the one it cuts off (``buffer = buffer[n:]`` copies
the rest for every frame). That last one counts bytes allocated, read from
:mod:`tracemalloc` line by line, never time: a count does not depend on how
busy the machine is.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import socket
import struct
import sys
import tracemalloc
from types import FrameType
from typing import Any

from ..errors import FrameTooLargeError, TransportClosedError, TruncatedFrameError
from ..events import IOStatus, Peer
from .checks import (
    Check,
    CheckResult,
    Lab,
    Maker,
    Report,
    Side,
    checks_for,
    explain_exception,
    run_checks,
)
from .checks import hex_bytes as _hex
from .faults import RawPeer

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


def _frame(payload: bytes) -> bytes:
    """An independent encoder: the length as 4 bytes, most significant first."""
    return len(payload).to_bytes(4, "big") + payload


def _payloads(count: int, max_size: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(rng.randint(0, max_size)) for _ in range(count)]


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


# ---------------------------------------------------------------- the checks
def _echo_round_trip(make: Maker, payloads: list[bytes], **lab_options: Any) -> Lab:
    lab = Lab(make, **lab_options)
    try:
        client, peer = lab.client()
        for payload in payloads:
            client.transport.resume_write(payload, peer)
        try:
            lab.run_until(
                lambda: len(client.frames[peer]) >= len(payloads) or peer in client.closed,
                f"{len(payloads)} echoed frames",
            )
        except AssertionError as exc:
            if lab.written(client):
                raise
            raise AssertionError(
                f"{exc}\nThe client put nothing on the wire. Its first resume_write came "
                "before the connection was up, so the inner transport took 0 bytes "
                "(WOULD_BLOCK): what it does not take must stay queued, and go on WRITABLE."
            ) from None
        if peer in client.closed:
            raise AssertionError(
                f"the connection closed early: {client.closed[peer]}\n{lab.describe()}"
            )
        _same(client.frames[peer], payloads, "echo")
    except BaseException:
        lab.close()
        raise
    return lab


def check_single_message(make: Maker) -> None:
    """One frame goes to an echo server and comes back whole."""
    _echo_round_trip(make, [b"hello, barknet"]).close()


def check_zero_length_frame(make: Maker) -> None:
    """An empty payload is a valid frame, distinct from "no frame"."""
    try:
        _echo_round_trip(make, [b"", b"x", b"", b""]).close()
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}\nAn empty payload is a frame of its own, its header alone "
            "(00 00 00 00): it is whole as soon as those 4 bytes are in."
        ) from None


def check_frames_in_order(make: Maker) -> None:
    """Many frames of varied sizes arrive whole and in the order they were sent."""
    _echo_round_trip(make, _payloads(200, 3000, seed=1)).close()


def check_rapid_fire_small_messages(make: Maker) -> None:
    """Thousands of tiny frames sent in one burst: none lost, merged or reordered."""
    payloads = [struct.pack("!I", i) * (i % 5) for i in range(5000)]
    with Lab(make, echo=False) as lab:
        client, peer = lab.client()
        for payload in payloads:
            client.transport.resume_write(payload, peer)
        try:
            lab.run_until(
                lambda: lab.server.opened and len(lab.server.frames[lab.server.opened[0]]) >= 5000,
                "5000 frames at the server",
            )
        except AssertionError as exc:
            wire = sum(len(p) + 4 for p in payloads)
            if lab.received(lab.server) < wire:
                raise
            raise AssertionError(
                f"{exc}\nThe server read all {wire:,} bytes, every frame's, yet its owner "
                "did not get them all: one read brings many frames, and every whole one "
                "must be cut out of it, not only the first."
            ) from None
        _same(lab.server.frames[lab.server.opened[0]], payloads, "server")


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
    with Lab(make) as lab:
        clients = [lab.client() for _ in range(50)]
        sent = {}
        for i, (side, peer) in enumerate(clients):
            sent[peer] = _payloads(5, 2000, seed=100 + i)
            for payload in sent[peer]:
                side.transport.resume_write(payload, peer)
        lab.run_until(
            lambda: all(len(side.frames[peer]) >= 5 for side, peer in clients),
            "every client's echoes",
        )
        for side, peer in clients:
            _same(side.frames[peer], sent[peer], f"client {peer}")


def check_survives_chunking(make: Maker) -> None:
    """Reads of at most 7 bytes, writes of at most 5, a third of calls "would block"."""
    chunking = {"max_read": 7, "max_write": 5, "would_block": 0.3}
    _echo_round_trip(make, [*_payloads(30, 300, seed=3), b""], chunking=chunking).close()


def check_survives_one_byte_io(make: Maker) -> None:
    """Every read and every write moves a single byte: frames still arrive whole."""
    chunking = {"max_read": 1, "max_write": 1}
    try:
        _echo_round_trip(make, [b"a", b"", b"bcdefgh" * 10], chunking=chunking).close()
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}\nHere every read moves one byte, so a header takes four reads: the "
            "bytes a read leaves short of a whole header or payload must wait in that "
            "peer's buffer for the next read."
        ) from None


def check_clean_close_is_eof(make: Maker) -> None:
    """A client that closes between frames: the server gets every frame, then CLOSED(EOF)."""
    payloads = _payloads(20, 500, seed=4)
    with Lab(make, echo=False) as lab:
        client, peer = lab.client()
        for payload in payloads:
            client.transport.resume_write(payload, peer)
        client.transport.close(peer)
        lab.run_until(lambda: lab.server.closed, "the server to see the close")
        (server_peer, event) = next(iter(lab.server.closed.items()))
        _same(lab.server.frames[server_peer], payloads, "server")
        if event.status is not IOStatus.EOF or event.error is not None:
            raise AssertionError(f"a clean close should be CLOSED(EOF), got {event}")


def _expect_framing_error(
    make: Maker, raw: bytes, error_type: type[Exception], what: str
) -> BaseException:
    """Send ``raw`` from a raw socket, then close it; a framed client on the same
    server must keep working. Returns the error the server reported."""
    with Lab(make) as lab:
        good, good_peer = lab.client()
        good.transport.resume_write(b"before", good_peer)
        lab.run_until(lambda: good.frames[good_peer], "the good client's first echo")
        bad = _raw_client(lab.address)
        try:
            bad.sendall(raw)
            # The bad peer ends its side too, so a transport that closes it
            # gracefully (lingering until the peer's EOF) is not kept waiting.
            bad.shutdown(socket.SHUT_WR)
            lab.run_until(lambda: lab.server.closed, f"the server to close the peer that {what}")
        except (AssertionError, NotImplementedError):
            raise  # (an unwritten part speaks for itself)
        except Exception as exc:
            fix = (
                "Catch it where you read"
                if isinstance(exc, error_type)
                else f"Raise {error_type.__name__} where the bytes are decoded, catch it where "
                "you read"
            )
            raise AssertionError(
                f"a peer that {what} should be closed with CLOSED(ERROR, "
                f"{error_type.__name__}); instead {type(exc).__name__} escaped from your "
                f"code into the event loop, where no owner can catch it. {fix}, and close "
                "that peer alone with it:\n" + explain_exception(exc)
            ) from exc
        finally:
            bad.close()
        (_, event) = next(iter(lab.server.closed.items()))
        if event.status is not IOStatus.ERROR or not isinstance(event.error, error_type):
            raise AssertionError(
                f"a peer that {what} should be CLOSED(ERROR, {error_type.__name__}), got {event}"
            )
        good.transport.resume_write(b"after", good_peer)
        lab.run_until(lambda: len(good.frames[good_peer]) >= 2, "the good client's second echo")
        _same(good.frames[good_peer], [b"before", b"after"], "the other client")
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
    with Lab(make) as lab:
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
    with Lab(make) as lab:
        client, peer = lab.client()
        lab.run_until(lambda: lab.server.opened, "the connection")
        limit = getattr(client.transport, "max_frame_size", None)
        if limit is None:
            raise AssertionError("the transport should expose its max_frame_size")
        try:
            client.transport.resume_write(bytes(limit + 1), peer)
        except FrameTooLargeError:
            pass
        except NotImplementedError:
            raise  # (an unwritten part speaks for itself)
        except Exception as exc:
            raise AssertionError(
                "an oversized payload should be refused at the call with FrameTooLargeError"
                f"(size, limit, sending=True); it raised {type(exc).__name__} instead:\n"
                + explain_exception(exc)
            ) from exc
        else:
            raise AssertionError("an oversized payload was accepted")
        client.transport.resume_write(b"fine", peer)
        lab.run_until(lambda: client.frames[peer], "the echo after the refused frame")
        _same(client.frames[peer], [b"fine"], "client")


def check_frame_at_the_limit(make: Maker) -> None:
    """A payload of exactly max_frame_size is within the limit: it is sent, received and
    sent back whole. Only a frame *larger* than the limit is refused, on either side."""
    with Lab(make, echo=False) as lab:
        client, peer = lab.client()
        lab.run_until(lambda: lab.server.opened, "the connection")
        server, server_peer = lab.server, lab.server.opened[0]
        limit = getattr(client.transport, "max_frame_size", None)
        if limit is None:
            raise AssertionError("the transport should expose its max_frame_size")
        payload = bytes(range(256)) * (limit // 256) + bytes(limit % 256)
        what = f"a payload of exactly max_frame_size ({limit:,} bytes)"
        _one_way(lab, payload, what, (client, peer), (server, server_peer), "the server")
        _one_way(lab, payload, what, (server, server_peer), (client, peer), "the client")


def _one_way(
    lab: Lab,
    payload: bytes,
    what: str,
    sender: tuple[Side, Peer],
    receiver: tuple[Side, Peer],
    name: str,
) -> None:
    """``sender`` writes ``payload``; ``receiver`` (called ``name``) must get it whole."""
    (side, to), (other, on) = sender, receiver
    try:
        side.transport.resume_write(payload, to)
    except FrameTooLargeError as error:
        raise AssertionError(
            f"{what} was refused at the send ({error}); only a payload larger "
            "than the limit should be (size > max_frame_size, not >=)"
        ) from None
    lab.run_until(lambda: other.frames[on] or on in other.closed, f"{what} to reach {name}")
    if on in other.closed:
        raise AssertionError(
            f"the receiver refused {what}: {name} got {other.closed[on]}. A length prefix "
            "equal to the limit is allowed (size > max_frame_size, not >=)"
        )
    _same(other.frames[on], [payload], name)


def check_wire_format(make: Maker) -> None:
    """The bytes on the wire match an independent encoder: a 4-byte big-endian length, then
    the payload, in both directions (two wrong byte orders still understand each other)."""
    payloads = [b"hello", b"", bytes(range(256)) + b"!" * 44]  # lengths 5, 0 and 300
    wire = b"".join(_frame(p) for p in payloads)
    # Sending: your transport writes to a plain socket, which reads the raw bytes.
    with Lab(make, echo=False) as lab, socket.create_server(("127.0.0.1", 0)) as listener:
        client, peer = lab.client(listener.getsockname())
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
                    + _byte_order_hint(got[:4], 5, sent_by_you=True)
                )
    # Receiving: a plain socket sends frames made by the independent encoder.
    with Lab(make) as lab:
        sender = RawPeer(lab.address)
        try:
            sender.send(wire)
            lab.run_until(
                lambda: (
                    lab.server.opened
                    and (
                        len(lab.server.frames[lab.server.opened[0]]) >= len(payloads)
                        or lab.server.closed
                    )
                ),
                "3 frames sent by a plain socket",
            )
        finally:
            sender.close()
        got_frames = lab.server.frames[lab.server.opened[0]]
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


def _byte_order_hint(header: bytes | bytearray, size: int, *, sent_by_you: bool = False) -> str:
    """What the first header says. ``sent_by_you``: ``header`` is what the transport
    under test wrote for a ``size``-byte payload (else what a plain socket sent it)."""
    if len(header) < 4:
        return "(fewer than 4 bytes: not even a header)"
    big, little = int.from_bytes(header[:4], "big"), int.from_bytes(header[:4], "little")
    if sent_by_you and header[:4] == size.to_bytes(4, "big"):
        return (
            f"the first header, {_hex(header[:4])}, is right: compare the lines byte by byte "
            "after it (an empty payload is a frame too, its header alone: 00 00 00 00)"
        )
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
    with Lab(make) as lab:
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
                # Each payload starts with its peer's own letter four times (AAAA, BBBB...).
                mixed = any(
                    bytes([65 + j]) * 4 in got for i, _, got in wrong for j in range(8) if j != i
                )
                if mixed or not closed:
                    lines.append(
                        "does every peer have its own receive buffer? Bytes from one peer must "
                        "never meet another's."
                    )
                else:
                    lines.append(
                        "no peer got another's bytes: the server could not decode what each "
                        "peer sent. Run the checks 'wire format and byte order' and "
                        "'survives one-byte I/O' alone first."
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
    with Lab(make, echo=False) as lab:
        sender = RawPeer(lab.address)
        try:
            lab.run_until(lambda: lab.server.opened, "the connection")
            server_peer = lab.server.opened[0]
            sender.send(b"".join(_frame(p) for p in payloads))
            reads_before = lab.tcps[0].counters().recv_calls
            with _AllocationMeter() as meter:
                lab.run_until(
                    lambda: len(lab.server.frames[server_peer]) >= count or lab.server.closed,
                    f"{count} small frames sent in one write",
                )
            _same(lab.server.frames[server_peer], payloads, "server")
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
    Check("a frame of exactly max_frame_size", check_frame_at_the_limit, "errors"),
]
