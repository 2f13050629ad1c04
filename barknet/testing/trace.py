"""Watching transports and the reactor work: a tracing decorator and its renderings.

Theory of operation
-------------------
:class:`TracingTransport` is an :class:`~barknet.interfaces.ITransport` that wraps
another one and passes every call straight through, noting on the way what each
``resume_read`` and ``resume_write`` asked for and what came back. Because it *is*
a transport, it slots anywhere in a stack without the layers around it noticing::

    FramedTransport(TracingTransport(TcpTransport(), trace, side="client"))

Placed right above ``TcpTransport`` like this, each record is one system call
(``send``, ``sendmsg``, ``recv`` or ``recv_into``). That is the layering idea of
the course used for a practical end: observing a layer costs one more layer,
and nothing else changes.

Several tracing transports can share one :class:`Trace` (say, a client's and a
server's), so their records interleave on one clock. A trace also follows the
byte stream of each peer and direction with a small 4-byte length-prefix
scanner, so every record knows where frame headers begin and frames end inside
the bytes it moved, even when a header is split across two calls.

Renderings: :meth:`Trace.table` (text), :func:`plot_timeline` (matplotlib),
:func:`hex_view` (HTML, the header bytes marked). :class:`LoopTrace` does the
same for the reactor itself, through ``EventWatcher.tracer``.

matplotlib and IPython are imported inside the functions that draw, so
``import barknet.testing.trace`` needs only the standard library.
"""

from __future__ import annotations

import contextlib
import html
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..events import IOStatus, Peer, ReadResult, WriteResult
from ..framing import HEADER_SIZE
from ..interfaces import ITransport, WriteData
from ..layer import TransportLayer

if TYPE_CHECKING:
    from ..reactor import EventWatcher

__all__ = [
    "HexView",
    "LoopRecord",
    "LoopTrace",
    "Trace",
    "TraceRecord",
    "TracingTransport",
    "hex_view",
    "plot_loop_timeline",
    "plot_timeline",
]


# ------------------------------------------------------------------ records
@dataclass(frozen=True)
class TraceRecord:
    """One ``resume_read`` or ``resume_write`` call as the layer below answered it.

    ``asked`` is what the caller offered (write) or had room for (read);
    ``returned`` is what moved. ``headers`` are ``(start, end)`` spans of
    frame-header bytes inside this call's bytes, ``frame_ends`` the offsets
    just past each frame that finished here. ``data`` holds the first bytes
    moved (up to the trace's ``capture`` limit), for hex views.
    """

    seq: int
    t: float  # seconds since the trace started
    side: str
    peer: str  # "client.1": the side, and the peer's number on that side
    call: str  # send / sendmsg / recv / recv_into
    asked: int
    returned: int
    status: IOStatus
    offset: int  # stream position of the first byte moved (per peer and direction)
    headers: tuple[tuple[int, int], ...] = ()
    frame_ends: tuple[int, ...] = ()
    data: bytes = b""

    @property
    def direction(self) -> str:
        return "out" if self.call.startswith("send") else "in"

    @property
    def short(self) -> bool:
        """Moved something, but less than asked: partial I/O."""
        return 0 < self.returned < self.asked

    @property
    def would_block(self) -> bool:
        """Nothing moved: the kernel said EAGAIN."""
        return self.status is IOStatus.WOULD_BLOCK and self.returned == 0


class _LengthScanner:
    """Follows a byte stream of 4-byte-length-prefixed frames, chunk by chunk.

    It only needs the header bytes; payload bytes are skipped by counting.
    """

    __slots__ = ("frames", "header", "remaining")

    def __init__(self) -> None:
        self.header = bytearray()
        self.remaining = 0  # payload bytes still to come in the current frame
        self.frames = 0

    def feed(self, chunk: Any) -> tuple[list[tuple[int, int]], list[int]]:
        view = memoryview(chunk).cast("B")
        n = len(view)
        pos = 0
        spans: list[tuple[int, int]] = []
        ends: list[int] = []
        while pos < n:
            if self.remaining:
                take = min(self.remaining, n - pos)
                pos += take
                self.remaining -= take
                if not self.remaining:
                    ends.append(pos)
                continue
            take = min(HEADER_SIZE - len(self.header), n - pos)
            spans.append((pos, pos + take))
            self.header += view[pos : pos + take]
            pos += take
            if len(self.header) == HEADER_SIZE:
                self.remaining = int.from_bytes(self.header, "big")
                self.header.clear()
                self.frames += 1
                if not self.remaining:
                    ends.append(pos)  # an empty frame ends with its header
        return spans, ends


class Trace:
    """A shared log of traced calls, on one clock.

    ``capture`` bounds how many bytes of each call are kept (for hex views);
    ``frames=False`` turns the length-prefix scanner off (for streams that are
    not framed, where it would read nonsense lengths).
    """

    def __init__(self, *, capture: int = 64, frames: bool = True) -> None:
        self.capture = capture
        self.frames = frames
        self.records: list[TraceRecord] = []
        self.t0 = time.perf_counter()
        self._names: dict[tuple[str, Peer], str] = {}
        self._per_side: dict[str, int] = {}
        self._offsets: dict[tuple[str, Peer, str], int] = {}
        self._scanners: dict[tuple[str, Peer, str], _LengthScanner] = {}

    def peer_name(self, side: str, peer: Peer) -> str:
        """A stable name: peers are numbered per side in the order first seen,
        so the same experiment prints the same names on every run."""
        key = (side, peer)
        name = self._names.get(key)
        if name is None:
            number = self._per_side.get(side, 0) + 1
            self._per_side[side] = number
            name = self._names[key] = f"{side}.{number}"
        return name

    def add(
        self,
        side: str,
        peer: Peer,
        call: str,
        asked: int,
        moved: Any,
        status: IOStatus,
        started: float,
    ) -> TraceRecord:
        """Record one call that moved the bytes ``moved`` (a bytes-like object)."""
        direction = "out" if call.startswith("send") else "in"
        key = (side, peer, direction)
        view = memoryview(moved).cast("B") if moved is not None else memoryview(b"")
        offset = self._offsets.get(key, 0)
        self._offsets[key] = offset + len(view)
        spans: list[tuple[int, int]] = []
        ends: list[int] = []
        if self.frames and len(view):
            scanner = self._scanners.get(key)
            if scanner is None:
                scanner = self._scanners[key] = _LengthScanner()
            spans, ends = scanner.feed(view)
        record = TraceRecord(
            seq=len(self.records),
            t=started - self.t0,
            side=side,
            peer=self.peer_name(side, peer),
            call=call,
            asked=asked,
            returned=len(view),
            status=status,
            offset=offset,
            headers=tuple(spans),
            frame_ends=tuple(ends),
            data=bytes(view[: self.capture]),
        )
        self.records.append(record)
        return record

    def clear(self) -> None:
        """Forget the records (peer names and stream positions are kept)."""
        self.records.clear()

    # ----------------------------------------------------------- questions
    def select(
        self, side: str | None = None, direction: str | None = None, peer: str | None = None
    ) -> list[TraceRecord]:
        return [
            r
            for r in self.records
            if (side is None or r.side == side)
            and (direction is None or r.direction == direction)
            and (peer is None or r.peer == peer)
        ]

    def stream(
        self, side: str, direction: str, peer: str | None = None
    ) -> tuple[bytes, list[int]]:
        """The bytes one side moved in one direction, and where each call ended.

        Raises ``ValueError`` if some call moved more than ``capture`` bytes,
        because then the stream cannot be put back together.
        """
        data = bytearray()
        cuts: list[int] = []
        for r in self.select(side, direction, peer):
            if not r.returned:
                continue
            if len(r.data) < r.returned:
                raise ValueError(
                    f"call #{r.seq} moved {r.returned} bytes but only {len(r.data)} were "
                    "captured: make the trace with a larger capture="
                )
            data += r.data
            cuts.append(len(data))
        return bytes(data), cuts

    def table(self, *, times: bool = False, limit: int | None = None) -> str:
        """The records as a text table. Times are left out unless asked for,
        so a table of a deterministic experiment prints the same every run."""
        # Times go last: masked by a notebook sanitizer, they must not shift other columns.
        head = ["#", "peer", "call", "asked", "got", "status", "frame headers at"]
        if times:
            head.append("t (ms)")
        rows = [head]
        records = self.records if limit is None else self.records[:limit]
        for r in records:
            status = "EAGAIN" if r.would_block else ("short" if r.short else r.status.value)
            marks = ", ".join(f"{a}-{b - 1}" if b - a > 1 else str(a) for a, b in r.headers)
            row = [str(r.seq), r.peer, r.call, str(r.asked), str(r.returned), status, marks]
            if times:
                row.append(f"{r.t * 1e3:.3f}")
            rows.append(row)
        widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
        lines = [
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in rows
        ]
        if limit is not None and len(self.records) > limit:
            lines.append(f"... {len(self.records) - limit} more")
        return "\n".join(lines)

    def summary(self) -> dict[str, dict[str, int]]:
        """Per side and direction: calls, short calls, EAGAINs, bytes, frames completed."""
        out: dict[str, dict[str, int]] = {}
        for r in self.records:
            s = out.setdefault(
                f"{r.side} {r.direction}",
                {"calls": 0, "short": 0, "eagain": 0, "bytes": 0, "frames": 0},
            )
            s["calls"] += 1
            s["short"] += r.short
            s["eagain"] += r.would_block
            s["bytes"] += r.returned
            s["frames"] += len(r.frame_ends)
        return out

    def __len__(self) -> int:
        return len(self.records)

    def __repr__(self) -> str:
        return f"<Trace {len(self.records)} records>"


# --------------------------------------------------------------- decorator
class TracingTransport(TransportLayer):
    """Passes everything to ``inner`` and records each read and write in ``trace``.

    ``side`` names this end in the records ("client", "server"). Events from the
    inner transport go to the owner untouched; so do the results, so the layer
    above behaves exactly as it would without the tracer.
    """

    def __init__(self, inner: ITransport, trace: Trace | None = None, side: str = "t") -> None:
        super().__init__(inner)
        self.trace = trace if trace is not None else Trace()
        self.side = side

    def resume_read(
        self,
        peer: Peer,
        buffer: bytearray | memoryview | None = None,
        offset: int = 0,
        max_len: int | None = None,
    ) -> ReadResult:
        if buffer is None:
            call = "recv"
            asked = max_len or getattr(self.inner, "read_size", 0)
        else:
            call = "recv_into"
            room = memoryview(buffer).nbytes - offset
            asked = room if max_len is None else min(room, max_len)
        started = time.perf_counter()
        result = self.inner.resume_read(peer, buffer, offset, max_len)
        moved = result.data if result.status is IOStatus.OK else b""
        self.trace.add(self.side, peer, call, asked or 0, moved, result.status, started)
        return result

    def resume_write(self, data: WriteData, peer: Peer) -> WriteResult:
        if isinstance(data, (bytes, bytearray, memoryview)):
            call, buffers = "send", [data]
        else:
            call, buffers = "sendmsg", list(data)
        views = [memoryview(b).cast("B") for b in buffers]
        asked = sum(len(v) for v in views)
        started = time.perf_counter()
        result = self.inner.resume_write(data, peer)
        moved = _first_bytes(views, result.sent)
        self.trace.add(self.side, peer, call, asked, moved, result.status, started)
        return result

    def __repr__(self) -> str:
        return f"<TracingTransport {self.side!r} over {self.inner!r}, {len(self.trace)} records>"


def _first_bytes(views: list[memoryview], sent: int) -> Any:
    # The scanner must see every byte that left to follow the frame lengths. One
    # buffer is passed as a view (no copy); a sendmsg's buffers are joined, which
    # costs one copy of what was sent: fine for the course's experiment sizes.
    if sent == 0:
        return b""
    if len(views) == 1:
        return views[0][:sent]
    out = bytearray()
    left = sent
    for v in views:
        if not left:
            break
        out += v[:left]
        left -= min(left, len(v))
    return out


# ---------------------------------------------------------------- hex view
@dataclass
class HexView:
    """Bytes shown in hex, with frame-header bytes marked and call boundaries cut.

    In a notebook it renders as HTML (headers highlighted, a bar where one
    system call ended and the next began); ``str()`` gives a text version where
    header bytes are in ``[brackets]`` and call boundaries are ``|``.
    """

    data: bytes
    headers: list[tuple[int, int]] = field(default_factory=list)
    cuts: list[int] = field(default_factory=list)
    width: int = 16
    title: str = ""

    def _marks(self) -> dict[int, tuple[int, bool, bool]]:
        """Header byte position -> (frame number, first byte?, last byte?)."""
        marks: dict[int, tuple[int, bool, bool]] = {}
        for frame, (a, b) in enumerate(self.headers):
            for i in range(a, b):
                marks[i] = (frame, i == a, i == b - 1)
        return marks

    def __str__(self) -> str:
        marks = self._marks()
        cuts = set(self.cuts)
        lines = [self.title] if self.title else []
        for start in range(0, len(self.data), self.width):
            parts = []
            for i in range(start, min(start + self.width, len(self.data))):
                if i in cuts and i != start:
                    parts.append("|")
                cell = f"{self.data[i]:02x}"
                if i in marks:
                    _, first, last = marks[i]
                    cell = ("[" if first else "") + cell + ("]" if last else "")
                parts.append(cell)
            lines.append(f"{start:08x}  " + " ".join(parts))
        return "\n".join(lines)

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        marks = self._marks()
        cuts = set(self.cuts)
        shades = ("#ffd27f", "#f5a540")  # neighbouring headers alternate
        out = ['<div class="barknet-hex" style="font-family:monospace;font-size:12px">']
        if self.title:
            out.append(f"<div><b>{html.escape(self.title)}</b></div>")
        out.append(
            '<div style="margin:2px 0"><span style="background:#ffd27f;padding:0 3px">'
            "header</span> = 4-byte length prefix; "
            '<span style="border-left:3px solid #c0392b;padding-left:3px">bar</span>'
            " = one call ended here</div>"
        )
        out.append('<table style="border-collapse:collapse">')
        for start in range(0, len(self.data), self.width):
            cells = [f'<td style="color:#888;padding-right:8px">{start:08x}</td>']
            text = []
            for i in range(start, min(start + self.width, len(self.data))):
                style = "padding:0 3px"
                cls = ""
                if i in marks:
                    style += f";background:{shades[marks[i][0] % 2]};font-weight:bold"
                    cls = ' class="hdr"'
                if i in cuts:
                    style += ";border-left:3px solid #c0392b"
                cells.append(f'<td{cls} style="{style}">{self.data[i]:02x}</td>')
                text.append(html.escape(chr(self.data[i])) if 32 <= self.data[i] < 127 else ".")
            cells.append(f'<td style="color:#555;padding-left:10px">{"".join(text)}</td>')
            out.append("<tr>" + "".join(cells) + "</tr>")
        out.append("</table></div>")
        return "".join(out)


def hex_view(
    source: bytes | Trace,
    side: str | None = None,
    direction: str = "out",
    *,
    peer: str | None = None,
    width: int = 16,
    limit: int = 512,
) -> HexView:
    """A :class:`HexView` of raw frame bytes, or of what one side of a trace moved.

    From bytes, the headers are found by scanning the length prefixes. From a
    trace, the stream is rebuilt from the records of ``side`` and ``direction``
    and the call boundaries are drawn too. Only the first ``limit`` bytes are shown.
    """
    if isinstance(source, Trace):
        if side is None:
            raise ValueError("say which side of the trace to show")
        data, cuts = source.stream(side, direction, peer)
        title = f"{side} {'wrote' if direction == 'out' else 'read'} {len(data)} bytes"
    else:
        data, cuts = bytes(source), []
        title = f"{len(data)} bytes"
    spans, _ = _LengthScanner().feed(data)
    data = data[:limit]
    spans = [(a, min(b, limit)) for a, b in spans if a < limit]
    cuts = [c for c in cuts if 0 < c < len(data)]
    return HexView(data, spans, cuts, width, title)


# ------------------------------------------------------------------ plots
_COLORS = {"full": "#2e86c1", "short": "#e67e22", "eagain": "#c0392b"}


def plot_timeline(trace: Trace, ax: Any = None, *, title: str = "system calls over time") -> Any:
    """One row per peer and direction; a mark per call, its size by bytes moved.

    Blue: moved all it asked. Orange: a short call. Red x: EAGAIN (nothing moved).
    A thin black tick marks a frame header seen in that call. Returns the figure.
    """
    from matplotlib.figure import Figure

    if ax is None:
        fig = Figure(figsize=(9, 3))
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    rows = sorted({(r.peer, r.direction) for r in trace.records})
    index = {row: i for i, row in enumerate(rows)}
    biggest = max((r.returned for r in trace.records), default=1) or 1
    for kind in ("full", "short", "eagain"):
        pts = [
            r
            for r in trace.records
            if ("eagain" if r.would_block else "short" if r.short else "full") == kind
        ]
        if not pts:
            continue
        xs = [r.t * 1e3 for r in pts]
        ys = [index[(r.peer, r.direction)] for r in pts]
        if kind == "eagain":
            ax.scatter(xs, ys, marker="x", color=_COLORS[kind], label="EAGAIN", zorder=3)
        else:
            sizes = [12 + 150 * r.returned / biggest for r in pts]
            label = "moved all it asked" if kind == "full" else "short"
            ax.scatter(xs, ys, s=sizes, color=_COLORS[kind], alpha=0.6, label=label, zorder=2)
    ticks = [(r.t * 1e3, index[(r.peer, r.direction)]) for r in trace.records if r.headers]
    if ticks:
        ax.scatter(
            *zip(*ticks, strict=True),
            marker="|",
            s=300,
            color="black",
            lw=0.8,
            label="frame header",
        )
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(
        [f"{p} {'send' if d == 'out' else 'recv'}" for p, d in rows],
        fontsize=8 if len(rows) > 8 else None,  # many rows: smaller labels, no overlap
    )
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.set_xlabel("time since start (ms)")
    ax.set_title(title)
    if trace.records:
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------- reactor trace
@dataclass(frozen=True)
class LoopRecord:
    """One callback the reactor dispatched: when, why (``kind``), and which."""

    t: float
    kind: str  # read / write / timer / soon
    name: str


class LoopTrace:
    """What an :class:`~barknet.reactor.EventWatcher` dispatched, in order.

    Use :meth:`watching` as a context manager: it installs itself as the
    watcher's ``tracer`` and restores the old one on the way out.
    """

    def __init__(self) -> None:
        self.records: list[LoopRecord] = []
        self.t0 = time.perf_counter()

    def __call__(self, kind: str, callback: Any) -> None:
        name = getattr(callback, "__name__", None) or type(callback).__name__
        self.records.append(LoopRecord(time.perf_counter() - self.t0, kind, name))

    @contextlib.contextmanager
    def watching(self, watcher: EventWatcher) -> Iterator[LoopTrace]:
        previous = watcher.tracer
        watcher.tracer = self
        self.t0 = time.perf_counter()
        try:
            yield self
        finally:
            watcher.tracer = previous

    def without(self, names: Iterable[str]) -> list[LoopRecord]:
        """The records, less the loop's own plumbing (e.g. ``_drain_wakeup``)."""
        skip = set(names)
        return [r for r in self.records if r.name not in skip]

    def table(self, *, times: bool = False) -> str:
        lines = []
        width = max((len(r.name) for r in self.records), default=0)
        for i, r in enumerate(self.records):
            # The time goes last, unpadded, so masking it shifts nothing else.
            when = f"  at {r.t * 1e3:.2f} ms" if times else ""
            lines.append(f"{i:>3}  {r.kind:<6} {r.name:<{width}}{when}".rstrip())
        return "\n".join(lines)


def plot_loop_timeline(trace: LoopTrace, ax: Any = None) -> Any:
    """Each dispatched callback as a mark on its own row, coloured by why it ran."""
    from matplotlib.figure import Figure

    if ax is None:
        fig = Figure(figsize=(9, 2.8))
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    names = list(dict.fromkeys(r.name for r in trace.records))
    colors = {"read": "#2e86c1", "write": "#27ae60", "timer": "#e67e22", "soon": "#8e44ad"}
    for kind, color in colors.items():
        pts = [r for r in trace.records if r.kind == kind]
        if pts:
            ax.scatter(
                [r.t * 1e3 for r in pts],
                [names.index(r.name) for r in pts],
                color=color,
                label=kind,
                s=40,
                zorder=2,
            )
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(names)
    ax.set_ylim(-0.7, len(names) - 0.3)
    ax.set_xlabel("time since start (ms)")
    ax.set_title("what the reactor ran, and when")
    ax.grid(axis="x", alpha=0.3)
    if trace.records:
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    fig.tight_layout()
    return fig
