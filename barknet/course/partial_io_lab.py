"""Notebook 03: short sends and reads on demand, and Nagle's trap.

Every experiment returns a result whose ``summary()`` holds only facts that come
out the same on every run, and a ``details()`` with the counts that vary."""

from __future__ import annotations

import hashlib
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..events import EventKind, IOCounters, IOEvent, IOStatus, Peer, WriteResult
from ..framing import DEFAULT_MAX_FRAME_SIZE, FrameDecoder, encode_frame
from ..interfaces import ITransport, WriteData
from ..layer import TransportLayer
from ..reactor import EventWatcher
from ..tcp import TcpTransport
from ..testing.trace import Trace, TracingTransport
from .common import (
    KiB,
    MiB,
    closing,
    human_size,
    size_slider,
    slider_app,
    yes,
)

__all__ = [
    "SPIN_LIMIT",
    "NagleResult",
    "PartialIOResult",
    "SenderSpins",
    "nagle_trap",
    "offer_the_rest",
    "partial_io",
    "partial_io_widget",
    "plot_partial_io",
]


@dataclass
class PartialIOResult:
    """One big message pushed through a small socket buffer, call by call."""

    size: int
    sndbuf: int | None
    rcvbuf: int | None
    intact: bool
    sender: IOCounters
    receiver: IOCounters
    trace: Trace
    elapsed: float
    #: Why the run was cut short (a sender that would never have returned), or None.
    stopped: str | None = None

    @property
    def first_send(self) -> tuple[int, int]:
        r = next(r for r in self.trace.records if r.direction == "out")
        return r.asked, r.returned

    def summary(self) -> str:
        """Only what is the same on every run."""
        asked, took = self.first_send
        reads = self.receiver.recv_calls - self.receiver.recv_eagain
        return "\n".join(
            [
                f"size={self.size} B sndbuf={self.sndbuf} B",
                f"arrived intact: {yes(self.intact)}",
                f"first send asked for {asked} B; the kernel took fewer: {yes(took < asked)}",
                f"short sends: {yes(self.sender.short_sends > 0)}",
                f"the message came in more than one read: {yes(reads > 1)}",
                *([f"stopped: {self.stopped}"] if self.stopped else []),
            ]
        )

    def details(self) -> str:
        """Exact counts: these vary a little from run to run."""
        s, r = self.sender, self.receiver
        return "\n".join(
            [
                f"size={self.size} B sndbuf={self.sndbuf} B  intact: {yes(self.intact)}",
                f"sender:   {s.send_calls} send calls, {s.short_sends} short, "
                f"{s.send_eagain} EAGAIN",
                f"receiver: {r.recv_calls} recv calls, {r.short_recvs} short, "
                f"{r.recv_eagain} EAGAIN",
                f"took {self.elapsed * 1e3:.1f} ms",
            ]
        )


def offer_the_rest(tx: ITransport, message: bytes) -> Callable[[IOEvent], None]:
    """The sender's owner: keep what was not sent and offer it again on WRITABLE.

    Notebook 03 writes this same function in a cell, where you can change it;
    :func:`partial_io` uses this copy when it is given none.
    """
    sent = 0

    def on_event(event: IOEvent) -> None:
        nonlocal sent
        if event.kind in (EventKind.CONNECTED, EventKind.WRITABLE):
            while sent < len(message):
                result = tx.resume_write(memoryview(message)[sent:], event.peer)
                sent += result.sent
                if result.status is not IOStatus.OK:
                    return  # WRITABLE will call us again
            tx.suspend_write(event.peer)  # all sent: stop the WRITABLE events

    return on_event


#: How many WOULD_BLOCK answers one call of the sender's callback may get
#: from ``resume_write`` before :func:`partial_io` stops it. A correct sender gets
#: one and returns; one that keeps offering instead would spin for ever, since the
#: receiver, on the same loop, cannot read (and so make room) while it waits.
SPIN_LIMIT = 1000


class SenderSpins(RuntimeError):
    """The sender's callback kept writing after WOULD_BLOCK and never returned."""


class _SpinGuard(TransportLayer):
    """The sender's transport in :func:`partial_io`, plus a bound: a callback that
    hears WOULD_BLOCK :data:`SPIN_LIMIT` times without returning is stopped with
    :class:`SenderSpins`, so that every run of the experiment ends by itself."""

    def __init__(self, inner: ITransport) -> None:
        super().__init__(inner)
        self.refused = 0  # WOULD_BLOCKs since the callback was last called

    def _on_inner_event(self, event: IOEvent) -> None:
        self.refused = 0
        self._emit(event)

    def resume_write(self, data: WriteData, peer: Peer) -> WriteResult:
        result = self.inner.resume_write(data, peer)
        if result.status is IOStatus.WOULD_BLOCK:
            self.refused += 1
            if self.refused >= SPIN_LIMIT:
                raise SenderSpins(
                    f"the sender's callback got WOULD_BLOCK {SPIN_LIMIT} times in one call "
                    "and never returned to the loop; the receiver, on the same loop, could "
                    "not read meanwhile, so it would have spun for ever"
                )
        return result


def partial_io(
    size: int = 256 * KiB,
    sndbuf: int | None = 4 * KiB,
    rcvbuf: int | None = None,
    read_size: int = 64 * KiB,
    timeout: float = 30.0,
    sender: Callable[[ITransport, bytes], Callable[[IOEvent], None]] = offer_the_rest,
) -> PartialIOResult:
    """Send ``size`` bytes as one message over raw TCP and read them back in
    ``read_size`` reads.

    ``sender(tx, message)`` makes the sending side's owner (its event callback):
    by default :func:`offer_the_rest`, which offers the unsent rest each time the
    socket says WRITABLE. ``sndbuf`` is the sender's ``SO_SNDBUF`` and ``rcvbuf``
    the receiver's ``SO_RCVBUF`` (None: the kernel's default). Both ends are traced.
    A sender whose callback keeps writing after WOULD_BLOCK, never returning, is
    stopped after :data:`SPIN_LIMIT` refusals; the result says so in ``stopped``.
    """
    message = random.Random(size).randbytes(size)
    digest = hashlib.sha256()
    trace = Trace(frames=False)
    received = [0]
    start = time.perf_counter()
    stopped = None
    with EventWatcher() as ew:
        rx = TracingTransport(TcpTransport(rcvbuf=rcvbuf, read_size=read_size), trace, "receiver")
        tx = TracingTransport(TcpTransport(sndbuf=sndbuf), trace, "sender")
        with closing(tx, rx):

            def on_rx(ev: IOEvent) -> None:
                if ev.kind is EventKind.READABLE:
                    while (r := rx.resume_read(ev.peer)).status is IOStatus.OK:
                        digest.update(r.data)
                        received[0] += len(r.data)

            rx.attach(ew, on_rx)
            guarded = _SpinGuard(tx)
            guarded.attach(ew, sender(guarded, message))
            guarded.connect(rx.bind())
            try:
                ew.run_until(lambda: received[0] >= size, timeout=timeout)
            except SenderSpins as spinning:
                stopped = str(spinning)
            sent_counts, received_counts = tx.counters(), rx.counters()
    intact = received[0] == size and digest.digest() == hashlib.sha256(message).digest()
    return PartialIOResult(
        size,
        sndbuf,
        rcvbuf,
        intact,
        sent_counts,
        received_counts,
        trace,
        time.perf_counter() - start,
        stopped,
    )


def plot_partial_io(result: PartialIOResult) -> Any:
    """Bytes moved by each send and each recv, in call order. EAGAINs in red."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(9, 3.4))
    axes = fig.subplots(1, 2)
    for ax, side, verb in zip(axes, ("sender", "receiver"), ("send", "recv"), strict=True):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # call 3, never call 2.5
        recs = result.trace.select(side)
        xs = range(len(recs))
        moved = [r.returned for r in recs]
        colors = ["#e67e22" if r.short else "#2e86c1" for r in recs]
        if len(recs) <= 60:
            ax.bar(xs, moved, width=1.0, color=colors, edgecolor="white", linewidth=0.5)
        else:  # a hundred bars and more merge into a comb: one dot per call reads better
            moving = [i for i, r in enumerate(recs) if not r.would_block]
            ax.scatter(
                moving,
                [moved[i] for i in moving],
                s=14 if len(recs) < 500 else 4,
                c=[colors[i] for i in moving],
                linewidths=0,
            )
            ax.set_ylim(bottom=0, top=max(moved, default=1) * 1.15)
        eagain = [i for i, r in enumerate(recs) if r.would_block]
        if eagain:
            # Above the axis, not on it, and drawn last: a call that moved nothing is a
            # mark you must be able to see, not a gap.
            top = max(moved, default=1) or 1
            ax.scatter(
                eagain,
                [top * 0.04] * len(eagain),
                marker="x",
                s=36,
                linewidths=1.5,
                color="#c0392b",
                label=f"EAGAIN ({len(eagain)})",
                zorder=5,
                clip_on=False,
            )
            ax.legend(fontsize=8, loc="center right")
        ax.set_xlabel(f"{verb} call number")
        ax.set_ylabel("bytes moved")
        ax.set_title(f"{side}: {len(recs)} {verb} calls")
    fig.suptitle(
        f"one {human_size(result.size)} message, SO_SNDBUF "
        f"{human_size(result.sndbuf) if result.sndbuf else 'default'} (orange: short)"
    )
    fig.tight_layout()
    return fig


@dataclass
class NagleResult:
    """Median round trips of a small request sent in different ways."""

    rounds: int
    payload: int
    medians: dict[str, float] = field(default_factory=dict)
    samples: dict[str, list[float]] = field(default_factory=dict)

    SLOW = 0.010  # a delayed ACK costs tens of milliseconds; a round trip on loopback, µs

    def summary(self) -> str:
        lines = []
        width = max(len(k) for k in self.medians)
        for name, median in self.medians.items():
            verdict = "slow: over 10 ms" if median >= self.SLOW else "fast: well under 10 ms"
            lines.append(f"{name:<{width}}  {verdict}")
        return "\n".join(lines)

    def details(self) -> str:
        return "\n".join(f"{k}: median {_duration(v)}" for k, v in self.medians.items())


def _duration(seconds: float) -> str:
    """Milliseconds with one decimal from 1 ms up, whole microseconds below: a
    delayed ACK reads as "43.9 ms", not as a five-digit count of microseconds."""
    if seconds >= 1e-3:
        return f"{seconds * 1e3:,.1f} ms"
    return f"{seconds * 1e6:.0f} µs"


NAGLE_VARIANTS = {
    "two writes, Nagle on": (False, True),
    "one sendmsg, Nagle on": (False, False),
    "two writes, TCP_NODELAY": (True, True),
}


def nagle_trap(rounds: int = 12, payload: int = 100, warmup: int = 4) -> NagleResult:
    """Ping-pong a framed request ``rounds`` times in each way of
    :data:`NAGLE_VARIANTS`: header and payload as two ``send`` calls or as one
    ``sendmsg``, with Nagle's algorithm on or off (``TCP_NODELAY``).

    The first ``warmup`` round trips are not counted: Linux acknowledges at once
    while a connection is new ("quick ACK"), which hides the trap at first.
    """
    result = NagleResult(rounds, payload)
    body = bytes(payload)
    header = encode_frame(body)[:4]
    for name, (nodelay, split) in NAGLE_VARIANTS.items():
        samples = _ping_pong(header, body, nodelay=nodelay, split=split, count=rounds + warmup)
        result.samples[name] = samples[warmup:]
        result.medians[name] = statistics.median(samples[warmup:])
    return result


def _ping_pong(
    header: bytes, body: bytes, *, nodelay: bool, split: bool, count: int
) -> list[float]:
    """``count`` round trips of one frame to an echo server; the time of each."""
    samples: list[float] = []
    with EventWatcher() as ew:
        server = TcpTransport(nodelay=nodelay)
        client = TcpTransport(nodelay=nodelay)
        with closing(client, server):
            decoders: dict[Peer, FrameDecoder] = {}
            client_decoder = FrameDecoder(DEFAULT_MAX_FRAME_SIZE)
            sent_at = [0.0]

            def on_server(ev: IOEvent) -> None:
                if ev.kind is EventKind.READABLE:
                    dec = decoders.setdefault(ev.peer, FrameDecoder(DEFAULT_MAX_FRAME_SIZE))
                    while (r := server.resume_read(ev.peer)).status is IOStatus.OK:
                        for frame in dec.feed(r.data):
                            server.resume_write(encode_frame(frame), ev.peer)  # one write

            def request(peer: Peer) -> None:
                sent_at[0] = time.perf_counter()
                if split:
                    client.resume_write(header, peer)
                    client.resume_write(body, peer)
                else:
                    client.resume_write([header, body], peer)

            def on_client(ev: IOEvent) -> None:
                if ev.kind is EventKind.CONNECTED:
                    request(ev.peer)
                elif ev.kind is EventKind.READABLE:
                    while (r := client.resume_read(ev.peer)).status is IOStatus.OK:
                        for _ in client_decoder.feed(r.data):
                            samples.append(time.perf_counter() - sent_at[0])
                            if len(samples) < count:
                                request(ev.peer)

            server.attach(ew, on_server)
            client.attach(ew, on_client)
            client.connect(server.bind())
            ew.run_until(lambda: len(samples) >= count, timeout=20)
    return samples


# -------------------------------------------------- 04: framing strategies


def partial_io_widget(size: int = 256 * KiB, sndbuf: int = 4 * KiB) -> Any:
    """Sliders for message size (1 KiB - 4 MiB) and SO_SNDBUF (2 KiB - 1 MiB).

    The size stops at 4 MiB: through a few-KiB buffer every send waits for the
    receiver's (delayed) acknowledgements, and 16 MiB would take seconds.
    """
    return slider_app(
        {
            "size": size_slider("message size", KiB, 4 * MiB, size),
            "sndbuf": size_slider("SO_SNDBUF", 2 * KiB, MiB, sndbuf),
        },
        partial_io,
        plot_partial_io,
        PartialIOResult.details,
    )
