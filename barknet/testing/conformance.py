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
concurrency; the three checks that look for them on purpose (byte order
against an independent encoder, peers whose partial frames interleave, and
decoder work that grows with the frames waiting) live in
:mod:`barknet.testing.pitfalls` and are registered here with the others.

A failing check says what the condition it set up demands (one-byte reads, an
empty payload, many frames in one read), when the bytes all arrived and the
frames did not, so that the message points at the mistake, not only at the
timeout.
"""

from __future__ import annotations

import functools
import random
import socket
import struct
from collections.abc import Callable
from typing import Any

from ..errors import FrameTooLargeError, TransportClosedError, TruncatedFrameError
from ..events import EventKind, IOStatus, Peer
from .checks import (
    Check,
    CheckResult,
    Lab,
    Maker,
    Report,
    Side,
    checks_for,
    closed_text,
    explain_exception,
    hex_bytes,
    plain_frame,
    run_checks,
    same_frames,
)
from .pitfalls import (
    check_decoder_scales_linearly,
    check_interleaved_partial_frames,
    check_large_frame_scales_linearly,
    check_wire_format,
)

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


def _payloads(count: int, max_size: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(rng.randint(0, max_size)) for _ in range(count)]


def _raw_client(address: tuple[str, int]) -> socket.socket:
    """A plain blocking socket, for sending bytes a framing layer would never send."""
    sock = socket.create_connection(address, timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


# ---------------------------------------------------------------- the checks
def _echo_round_trip(
    make: Maker,
    payloads: list[bytes],
    hint: Callable[[Lab, Side, Peer], str] | None = None,
    **lab_options: Any,
) -> Lab:
    """Send ``payloads`` from a client to an echo server and check they come back.

    ``hint(lab, client, peer)``, if given, adds the check's own advice to a
    failure, once the client did put bytes on the wire (a client that put none
    gets the advice for that instead: its first write came before the connection).
    """
    lab = Lab(make, **lab_options)
    try:
        client, peer = lab.client()
        for payload in payloads:
            client.transport.resume_write(payload, peer)
        try:
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
            same_frames(client.frames[peer], payloads, "echo")
        except AssertionError as exc:
            if hint is None or not lab.written(client):
                raise
            raise AssertionError(f"{exc}\n{hint(lab, client, peer)}") from None
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
            server = lab.server
            got = len(server.frames[server.opened[0]])
            reads = lab.tcps[0].counters().recv_calls
            if got > reads:
                # More frames than reads: the decoder does cut every frame out of a
                # read; what stopped is the announcing of those still waiting.
                readables = sum(e.kind is EventKind.READABLE for e in server.events)
                raise AssertionError(
                    f"{exc}\nThe server read all {wire:,} bytes in {reads} read(s), and its "
                    f"owner got {got:,} frames from {readables} READABLE(s), then no more "
                    "READABLE: READABLE is level-triggered, it must come again (on a later "
                    "turn) while frames wait."
                ) from None
            raise AssertionError(
                f"{exc}\nThe server read all {wire:,} bytes, every frame's, yet its owner "
                "did not get them all: one read brings many frames, and every whole one "
                "must be cut out of it, not only the first."
            ) from None
        same_frames(lab.server.frames[lab.server.opened[0]], payloads, "server")


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
            same_frames(side.frames[peer], sent[peer], f"client {peer}")


def check_survives_chunking(make: Maker) -> None:
    """Reads of at most 7 bytes, writes of at most 5, a third of calls "would block"."""
    chunking = {"max_read": 7, "max_write": 5, "would_block": 0.3}
    _echo_round_trip(make, [*_payloads(30, 300, seed=3), b""], chunking=chunking).close()


def check_survives_one_byte_io(make: Maker) -> None:
    """Every read and every write moves a single byte: frames still arrive whole."""
    payloads = [b"a", b"", b"bcdefgh" * 10]
    chunking = {"max_read": 1, "max_write": 1}
    _echo_round_trip(make, payloads, _one_byte_hint(payloads), chunking=chunking).close()


def _interleaved(wrote: bytes, frames: list[bytes]) -> bool:
    """Are ``wrote``'s bytes the start of ``frames`` merged, each frame's bytes in
    order but frames mixed (a frame begun before the one before it ended), rather
    than the frames one after another? (The bytes of a frame sent again from its
    start are not such a merge, unless they happen to look like one.)"""
    if wrote == b"".join(frames)[: len(wrote)]:
        return False
    frames = frames[: len(wrote)]  # (no more frames can have begun than bytes went out)

    @functools.cache
    def fits(at: int, positions: tuple[int, ...]) -> bool:
        if at == len(wrote):
            return True
        for k, got in enumerate(positions):
            if got < len(frames[k]) and frames[k][got] == wrote[at]:
                # A frame begins only after the one before it began.
                if got == 0 and k and positions[k - 1] == 0:
                    continue
                if fits(at + 1, (*positions[:k], got + 1, *positions[k + 1 :])):
                    return True
        return False

    return fits(0, (0,) * len(frames))


def _one_byte_hint(payloads: list[bytes]) -> Callable[[Lab, Side, Peer], str]:
    """Which side of one-byte I/O went wrong. The client sends the frames and the
    server echoes the same frames, so both put the same bytes on the wire: where
    one side's bytes are not the frames, its writes are wrong; where both are,
    its reads are."""

    def hint(lab: Lab, client: Side, peer: Peer) -> str:
        frames = b"".join(plain_frame(p) for p in payloads)
        for side, name in ((client, "client"), (lab.server, "server")):
            wire = lab.wires[lab.sides.index(side)]
            for each, kept in wire.written.items():
                wrote, total = bytes(kept), wire.written_total[each]
                if wrote != frames[: len(wrote)]:
                    seen = (
                        f"The {name}'s bytes on the wire, {hex_bytes(wrote, 12, total)}, are "
                        f"not the frames, {hex_bytes(frames, 12)}. Here every write takes one "
                        "byte"
                    )
                    if _interleaved(wrote, [plain_frame(p) for p in payloads]):
                        return (
                            f"{seen}, and they are the frames' bytes, each frame's in order, "
                            "but mixed: a new frame went out while the rest of an earlier one "
                            "still waited. New frames go behind what is queued: while a peer "
                            "waits for WRITABLE, resume_write only queues."
                        )
                    return (
                        f"{seen}: after a short write, the next one must go on from the "
                        "first byte not yet sent, not from the start of the frame."
                    )
        return (
            "Both sides put the frames on the wire as they should. Here every read moves "
            "one byte, so a header takes four reads: the bytes a read leaves short of a "
            "whole header or payload must wait in that peer's buffer for the next read."
        )

    return hint


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
        same_frames(lab.server.frames[server_peer], payloads, "server")
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
            why = ""
            if error_type is FrameTooLargeError:
                why = (
                    ". Check the announced size against max_frame_size as soon as the 4 "
                    "header bytes are in, before waiting for a payload that may never come "
                    "(this peer sends none: its stream ends first)"
                )
            raise AssertionError(
                f"a peer that {what} should be CLOSED(ERROR, {error_type.__name__}), got "
                f"{closed_text(event)}{why}"
            )
        good.transport.resume_write(b"after", good_peer)
        lab.run_until(lambda: len(good.frames[good_peer]) >= 2, "the good client's second echo")
        same_frames(good.frames[good_peer], [b"before", b"after"], "the other client")
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
        same_frames(client.frames[peer], [b"fine"], "client")


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


#: The limit :func:`check_a_limit_of_its_own` gives the transport: far below the
#: default, so a transport that checks the module's default instead is found out.
OWN_LIMIT = 1000


def check_a_limit_of_its_own(make: Maker) -> None:
    """The limit is the transport's own ``max_frame_size``, not the default: set to
    1,000 bytes (before any peer connects), a payload of 1,000 still goes both
    ways, 1,001 is refused at the call, and a peer announcing 1,001 is closed.
    The checks for the default limit, run again with this one."""

    def limited(inner: Any) -> Any:
        transport: Any = make(inner)
        transport.max_frame_size = OWN_LIMIT  # as max_frame_size=1000 would have set it
        return transport

    try:
        check_frame_at_the_limit(limited)
        check_oversized_send_refused(limited)
        _expect_framing_error(
            limited,
            struct.pack("!I", OWN_LIMIT + 1),
            FrameTooLargeError,
            f"announced {OWN_LIMIT + 1:,} bytes, one over its max_frame_size",
        )
    except AssertionError as exc:
        raise AssertionError(
            f"with max_frame_size set to {OWN_LIMIT:,} on the transport: {exc}\n"
            "Compare sizes with self.max_frame_size, the limit this transport was given, "
            "on both sides (the decoder of each peer gets it too), not with the module's "
            "MAX_FRAME_SIZE, which is only the default."
        ) from None


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
        refused = other.closed[on].error
        if isinstance(refused, FrameTooLargeError) and refused.size != len(payload):
            # Not the limit refused: a header read from the wrong place.
            raise AssertionError(
                f"{name} read a length prefix of {refused.size:,} bytes where "
                f"{len(payload):,} was sent ({refused}): it took 4 bytes from the middle "
                "of the stream for a header. This frame crosses the wire in many short "
                "reads and writes: the receiver must join a payload's reads until it is "
                "whole, and after a short write the sender must go on from the first byte "
                "not yet sent. The checks "
                "'large message, partial I/O' and 'survives one-byte I/O' show which."
            )
        raise AssertionError(
            f"the receiver refused {what}: {name} got {other.closed[on]}. A length prefix "
            "equal to the limit is allowed (size > max_frame_size, not >=)"
        )
    same_frames(other.frames[on], [payload], name)


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
    Check(
        "a large frame in pieces costs linear work",
        check_large_frame_scales_linearly,
        "core",
        plain_wire=True,
    ),
    Check("clean close is EOF", check_clean_close_is_eof, "errors"),
    Check("oversized length prefix", check_oversized_length_prefix, "errors"),
    Check("EOF mid-header", check_eof_mid_header, "errors"),
    Check("EOF mid-payload", check_eof_mid_payload, "errors"),
    Check("send after close raises", check_send_after_close_raises, "errors"),
    Check("oversized send refused", check_oversized_send_refused, "errors"),
    Check("a frame of exactly max_frame_size", check_frame_at_the_limit, "errors"),
    Check("a limit of its own", check_a_limit_of_its_own, "errors", plain_wire=True),
]
