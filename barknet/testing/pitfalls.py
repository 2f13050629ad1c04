"""The checks for framing mistakes that pass every small example.

Theory of operation
-------------------
A framing layer can echo "hello" to itself and still be wrong, in ways that
show only against another implementation, under concurrency, or at scale:

* a wrong byte order on both sides understands itself: :func:`check_wire_format`
  compares the bytes with an independent encoder (:func:`~barknet.testing.checks.plain_frame`),
  in both directions;
* one receive buffer shared by all peers works while peers take turns:
  :func:`check_interleaved_partial_frames` makes eight peers' half frames
  arrive between each other's;
* ``buffer = buffer[n:]`` copies what is left for every frame, which nobody
  notices with ten frames: :func:`check_decoder_scales_linearly` compares the
  bytes allocated per frame when 1,000 and 8,000 frames wait at once. It counts
  allocations, read from :mod:`tracemalloc` line by line, never time: a count
  does not depend on how busy the machine is;
* the same mistake inside one large frame (``frame = frame[sent:]`` after every
  short write, ``buffer = buffer + data`` for every read) costs nothing with a
  frame that fits in one write: :func:`check_large_frame_scales_linearly`
  compares the bytes allocated per byte of one 8 KiB and one 32 KiB frame
  sent, then received, in 128-byte pieces, and says which side grew.

They are registered with the other framing checks in
:data:`barknet.testing.conformance.CHECKS` (level "core", ``plain_wire``: they
send and expect plain frames on a raw socket).
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import struct
import sys
import tracemalloc
from types import FrameType
from typing import Any

from .checks import Lab, Maker, plain_frame, same_frames
from .checks import hex_bytes as _hex
from .faults import RawPeer

__all__ = [
    "check_decoder_scales_linearly",
    "check_interleaved_partial_frames",
    "check_large_frame_scales_linearly",
    "check_wire_format",
]


def check_wire_format(make: Maker) -> None:
    """The bytes on the wire match an independent encoder: a 4-byte big-endian length, then
    the payload, in both directions (two wrong byte orders still understand each other)."""
    payloads = [b"hello", b"", bytes(range(256)) + b"!" * 44]  # lengths 5, 0 and 300
    wire = b"".join(plain_frame(p) for p in payloads)
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
                    frame = plain_frame(payload)
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
            wanted = [plain_frame(p) for p in payloads]
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
                decoded = sum(len(frames) for frames in lab.server.frames.values())
                if not closed and decoded and not lab.written(lab.server):
                    # Frames came in and nothing went out: the echoes are stuck on
                    # the send side, and every receive buffer may well be fine.
                    lines.append(
                        f"the server decoded {decoded} frame(s) but put no byte on the wire: "
                        "its echoes were queued and never sent. A write goes out at once, as "
                        "far as the inner transport takes it; only the rest waits for WRITABLE."
                    )
                elif mixed or not closed:
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

    def __init__(self, *, per_call: bool = False, leave_out: tuple[str, ...] = ()) -> None:
        #: Sample as each Python function is called and returns (``sys.setprofile``)
        #: instead of at every line: many times cheaper, and enough where each
        #: allocation to find is made once per call (a read, a write), since a
        #: copy and its release within one call still raise the peak.
        self.per_call = per_call
        #: Files whose allocations are not counted: the test's own harness (the
        #: TCP transport under the one checked asks the kernel for 64 KiB per
        #: read, whatever arrives), which would hide the checked layer's work.
        self.leave_out = leave_out
        self.total = 0
        self._counted = True
        self._base = 0
        self._started = False
        self._previous: Any = None

    def __enter__(self) -> _AllocationMeter:
        self._started = not tracemalloc.is_tracing()
        if self._started:
            tracemalloc.start()
        self._base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        if self.per_call:
            self._previous = sys.getprofile()
            sys.setprofile(self._trace)
        else:
            self._previous = sys.gettrace()
            sys.settrace(self._trace)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.per_call:
            sys.setprofile(self._previous)
        else:
            sys.settrace(self._previous)
        self._sample()
        if self._started:
            tracemalloc.stop()

    def _sample(self) -> None:
        current, peak = tracemalloc.get_traced_memory()
        grown = max(0, peak - self._base)
        if self._counted:
            self.total += grown
        tracemalloc.reset_peak()
        self._base = current

    def _trace(self, frame: FrameType, event: str, arg: object) -> Any:
        if self.per_call:
            # What ran since the last event: the caller, up to a call; the function
            # itself, up to its return (C functions count as their caller's work).
            if event == "call" and frame.f_back is not None:
                self._at(frame.f_back)
            elif event != "return":
                return self._trace
            else:
                self._at(frame)
            self._sample()
            return self._trace
        self._sample()  # what the last line allocated, in the frame that ran it
        self._at(frame)  # (the next line runs here)
        return self._trace

    def _at(self, frame: FrameType) -> None:
        self._counted = not frame.f_code.co_filename.endswith(self.leave_out)


def _decode_cost(make: Maker, count: int) -> tuple[int, int]:
    """Bytes allocated while ``count`` 8-byte frames, sent in one write, are decoded;
    and how many reads the server needed."""
    payloads = [struct.pack("!Q", i) for i in range(count)]
    with Lab(make, echo=False) as lab:
        sender = RawPeer(lab.address)
        try:
            lab.run_until(lambda: lab.server.opened, "the connection")
            server_peer = lab.server.opened[0]
            sender.send(b"".join(plain_frame(p) for p in payloads))
            reads_before = lab.tcps[0].counters().recv_calls
            with _AllocationMeter() as meter:
                lab.run_until(
                    lambda: len(lab.server.frames[server_peer]) >= count or lab.server.closed,
                    f"{count} small frames sent in one write",
                )
            same_frames(lab.server.frames[server_peer], payloads, "server")
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


#: The size of every read and write while one large frame crosses (see below).
PIECE = 128
#: What runs around the transport checked (its allocations are not that transport's):
#: the loop (whose epoll asks for room for 1,023 events per turn), the TCP
#: transport under it, and this test bench.
_HARNESS = tuple(
    os.path.join("barknet", *parts)
    for parts in (
        ("reactor.py",),
        ("tcp.py",),
        ("testing", "faults.py"),
        ("testing", "checks.py"),
        ("testing", "harness.py"),
        ("testing", "pitfalls.py"),
    )
)


def _large_frame_cost(make: Maker, size: int, sending: bool) -> int:
    """Bytes the transport allocated while it sent (``sending``) or received one frame
    of ``size`` bytes to or from a plain socket, every write or read cut to ``PIECE``."""
    payload = bytes(range(256)) * (size // 256)
    wire = plain_frame(payload)
    what = (
        f"one frame of {size:,} bytes {'sent' if sending else 'received'} in {PIECE}-byte pieces"
    )
    with Lab(make, echo=False, chunking={"max_read": PIECE, "max_write": PIECE}) as lab:
        raw = RawPeer(lab.address)
        try:
            lab.run_until(lambda: lab.server.opened, "the connection")
            server, peer = lab.server, lab.server.opened[0]
            with _AllocationMeter(per_call=True, leave_out=_HARNESS) as meter:
                if sending:
                    server.transport.resume_write(payload, peer)
                    lab.run_until(lambda: len(raw.poll()) >= len(wire), what)
                else:
                    raw.send(wire)
                    lab.run_until(lambda: server.frames[peer] or server.closed, what)
            if sending:
                if raw.poll() != wire:
                    raise AssertionError(f"{what}: the plain socket got other bytes")
            else:
                same_frames(server.frames[peer], [payload], "server")
            return meter.total
        finally:
            raw.close()


def check_large_frame_scales_linearly(make: Maker) -> None:
    """One 32 KiB frame sent, or received, in 128-byte pieces costs about as much per
    byte as one of 8 KiB: counted in bytes allocated, so copying the unsent rest
    after every short write, or building a new buffer for every read, fails."""
    small_size, large_size = 8 * 1024, 32 * 1024
    for sending, advice in (
        (
            True,
            "After a short write, keep how far the frame got (an offset into it, and "
            "memoryview(frame)[offset:] for the next write) instead of slicing off the "
            "rest (frame = frame[sent:] copies all that is left, every time).",
        ),
        (
            False,
            "When bytes arrive, append them to one bytearray (buffer += data) instead of "
            "building a new one (buffer = buffer + data copies all that came so far, every "
            "time).",
        ),
    ):
        small = _large_frame_cost(make, small_size, sending) / small_size
        large = _large_frame_cost(make, large_size, sending) / large_size
        if large > 2 * small:
            doing = "sending" if sending else "receiving"
            raise AssertionError(
                f"{doing} one frame of {small_size // 1024} KiB in {PIECE}-byte pieces "
                f"allocated {small:.1f} bytes per byte; {doing} one of {large_size // 1024} KiB, "
                f"{large:.1f} per byte, "
                f"x{large / small:.1f}. The work per piece grows with the frame: something "
                f"copies the whole frame, or all that is left of it, for every piece. {advice}"
            )
