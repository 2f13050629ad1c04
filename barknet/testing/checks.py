"""What every check stands on: the :class:`Check` record, the lab, and the runner.

Theory of operation
-------------------
A check is a function that takes a *maker*, ``make(inner) -> ITransport``,
which wraps a byte transport in the transport under test, and raises
``AssertionError`` with a plain-English message when that transport
misbehaves. Two suites of checks build on this module: the framing suite in
:mod:`barknet.testing.conformance` and the interface's contract in
:mod:`barknet.testing.contract`. The idea comes from trio's
``check_half_closeable_stream(maker)``: one set of expectations, many
implementations.

Each check builds a :class:`Lab`: a server and clients on loopback, each a
:class:`Side` (an :class:`~barknet.testing.harness.Owner` of one transport
made by ``make`` over TCP) on a private
:class:`~barknet.testing.harness.Stage`, which closes everything the check
opened whatever happens.

A failing check should tell a learner what to fix, not only that something is
wrong. So every byte transport under test is wrapped in a small recorder
(:class:`_Wire`) that keeps the first bytes each peer wrote and read; when a
wait runs out, the message lists what was sent, what arrived (in hex), which
events each side's owner saw, and says so when ``READABLE`` never fired. An
exception from the code under test is reported with the frames of *that*
code (not the library's) and their source lines.

:func:`run_checks` bounds a whole run (``budget``, 20 s by default): each wait
gets at most ``timeout`` seconds and never more than what is left, code that
never returns to the loop is interrupted by an alarm (in the main thread), and
checks that no longer fit are reported as not run.
"""

from __future__ import annotations

import contextlib
import hashlib
import linecache
import signal
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from ..events import IOEvent, IOStatus, Peer, ReadResult, WriteResult
from ..framed import FramedTransport
from ..interfaces import ITransport, WriteData
from ..layer import TransportLayer
from ..tcp import TcpTransport
from .faults import ChunkingTransport
from .harness import IDLE_READABLES, Owner, Stage

__all__ = [
    "BUDGET",
    "TIMEOUT",
    "Check",
    "CheckResult",
    "Lab",
    "Maker",
    "Report",
    "Side",
    "checks_for",
    "explain_exception",
    "hex_bytes",
    "plain_frame",
    "run_checks",
    "same_frames",
    "wait_limit",
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


def wait_limit() -> float:
    """How long one wait may take: the per-wait timeout, or what is left of the run."""
    left = _limits["deadline"] - time.monotonic()
    return max(0.1, min(_limits["timeout"], left))


def hex_bytes(data: bytes | bytearray, limit: int = 24, total: int | None = None) -> str:
    """``data`` as spaced hex, cut after ``limit`` bytes; ``(nothing)`` if empty.

    ``total`` is how many bytes there were in all, when ``data`` is only the
    first of them (a recording keeps the first few): a cut says how many of
    how many it shows, so that the count is never mistaken for the total."""
    total = len(data) if total is None else total
    if not total:
        return "(nothing)"
    shown = bytes(data[:limit])
    if total <= len(shown):
        return shown.hex(" ")
    return f"{shown.hex(' ')} ... (the first {len(shown)} of {total:,} bytes)"


def plain_frame(payload: bytes) -> bytes:
    """A frame made by an independent encoder (not barknet's codec): the length as 4
    bytes, most significant first, then the payload."""
    return len(payload).to_bytes(4, "big") + payload


def same_frames(got: list[bytes], want: list[bytes], who: str) -> None:
    """Fail, saying where, unless ``who`` got exactly the frames ``want``."""
    if got == want:
        return
    for i, (g, w) in enumerate(zip(got, want, strict=False)):
        if g != w:
            raise AssertionError(
                f"{who}: frame {i} differs: expected {len(w)} bytes "
                f"(sha1 {hashlib.sha1(w).hexdigest()[:8]}) starting {hex_bytes(w, 12)}, "
                f"got {len(g)} bytes (sha1 {hashlib.sha1(g).hexdigest()[:8]}) "
                f"starting {hex_bytes(g, 12)}"
            )
    raise AssertionError(f"{who}: got {len(got)} frames, expected {len(want)}")


def _flat(data: WriteData) -> bytes:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    return b"".join(bytes(part) for part in data)


def closed_text(event: IOEvent) -> str:
    """A CLOSED event as a learner reads it: ``CLOSED(ERROR, TypeName: message)``."""
    error = f", {type(event.error).__name__}: {event.error}" if event.error is not None else ""
    return f"CLOSED({event.status.name}{error})"


class _Wire(TransportLayer):
    """Records the first bytes each peer wrote and read, and how many in all,
    for failure messages."""

    def __init__(self, inner: ITransport) -> None:
        super().__init__(inner)
        self.written: dict[Peer, bytearray] = {}
        self.read: dict[Peer, bytearray] = {}
        self.written_total: Counter[Peer] = Counter()
        self.read_total: Counter[Peer] = Counter()
        #: Peers whose end of stream a read below has met.
        self.ended: set[Peer] = set()

    def resume_write(self, data: WriteData, peer: Peer) -> WriteResult:
        result = self.inner.resume_write(data, peer)
        kept = self.written.setdefault(peer, bytearray())
        self.written_total[peer] += result.sent
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
        if result.status is IOStatus.OK:
            self.read_total[peer] += len(result.data)
            if len(kept) < _WIRE_KEEP:
                kept += bytes(result.data[: _WIRE_KEEP - len(kept)])
        elif result.status is IOStatus.EOF:
            self.ended.add(peer)
        return result


# ------------------------------------------------------------------- the lab
class Side(Owner):
    """One transport under test and what its owner saw, as the checks ask about it."""

    @property
    def closed(self) -> dict[Peer, IOEvent]:
        """Each peer's ``CLOSED`` event (one per peer: a second one fails the check)."""
        return self.ended

    def describe(self, name: str, wire: _Wire | None) -> list[str]:
        """What this side's owner saw, and its first bytes on the wire, in a few lines."""
        kinds = Counter(event.kind.name for event in self.events)
        seen = ", ".join(f"{kind} x{n}" for kind, n in kinds.items()) or "no event at all"
        lines = [f"{name}: its owner saw {seen}"]
        if not kinds.get("READABLE"):
            lines[-1] += " (READABLE never fired)"
        got = sum(len(frames) for frames in self.frames.values())
        lines[-1] += f"; {got} whole frame(s) received" if self.messages else f"; {got} read(s)"
        for peer, count in self.readable_after_eof.most_common(1):
            if count > IDLE_READABLES:
                lines.append(
                    f"  {peer}: READABLE came {count:,} times after resume_read said EOF: "
                    "the transport still holds something for its owner. Does resume_read "
                    "hand out every frame that waits before it says EOF?"
                )
        for peer, event in list(self.closed.items())[:3]:
            lines.append(f"  {peer}: {closed_text(event)}")
        if len(self.closed) > 3:
            lines.append(f"  (and {len(self.closed) - 3} more peers closed)")
        if wire is not None and self.messages and self.take:
            silent = wire.ended - self.eof - self.paused - set(self.closed)
            for peer in sorted(silent, key=str)[:1]:
                lines.append(
                    f"  {peer}: the transport below met the end of its stream, but "
                    "resume_read never said EOF (and no CLOSED came). Once the frames that "
                    "came before it are taken, resume_read must answer EOF"
                )
        if wire is not None:
            for peer in sorted(set(wire.written) | set(wire.read), key=str)[:2]:
                written = hex_bytes(wire.written.get(peer, b""), total=wire.written_total[peer])
                read = hex_bytes(wire.read.get(peer, b""), total=wire.read_total[peer])
                lines.append(f"  {peer} wrote on the wire: {written}")
                lines.append(f"  {peer} read from the wire: {read}")
        return lines


class Lab:
    """A bound server and any number of clients, each a :class:`Side` of a transport
    made by ``make`` over TCP, on a private :class:`~barknet.testing.harness.Stage`.

    ``echo``: the server sends every message back. ``quiet``: every side answers
    the wake-ups it has no use for (see :class:`~barknet.testing.harness.Owner`).
    ``tcp_options`` (``sndbuf``, ``rcvbuf``) go to every TCP transport,
    ``server_tcp`` and ``client_tcp`` to the server's or the clients' only.
    ``chunking``: every side's TCP goes through a
    :class:`~barknet.testing.faults.ChunkingTransport` with these options.
    """

    def __init__(
        self,
        make: Maker,
        *,
        echo: bool = True,
        quiet: bool = False,
        chunking: dict[str, Any] | None = None,
        server_tcp: dict[str, Any] | None = None,
        client_tcp: dict[str, Any] | None = None,
        **tcp_options: Any,
    ) -> None:
        self.make = make
        self.quiet, self.chunking = quiet, chunking
        self.client_tcp = {**tcp_options, **(client_tcp or {})}
        self.stage = Stage()
        self.ew = self.stage.ew
        self.tcps: list[TcpTransport] = []
        self.wires: list[_Wire] = []
        self.sides: list[Side] = []
        try:
            self.server = self._side({**tcp_options, **(server_tcp or {})}, echo=echo)
            self.address = self.server.bind()
        except BaseException:
            self.close()
            raise

    @property
    def closing(self) -> bool:
        """True once :meth:`close` began: timers a check set can stop re-arming."""
        return self.stage.closing

    def _side(self, tcp_options: dict[str, Any], **options: Any) -> Side:
        tcp = self.stage.own(TcpTransport(**tcp_options))
        self.tcps.append(tcp)
        wire = _Wire(tcp)
        self.wires.append(wire)
        inner: ITransport = wire
        if self.chunking is not None:  # (over the recorder: it sees what the socket moved)
            inner = ChunkingTransport(wire, seed=len(self.tcps), **self.chunking)
        side = self.stage.add(Side(self.ew, self.make(inner), quiet=self.quiet, **options))
        self.sides.append(side)
        return side

    def client(self, address: tuple[str, int] | None = None, **options: Any) -> tuple[Side, Peer]:
        """A client of the transport under test, connecting to ``address`` (by default
        the server's), and its peer; ``options`` are those of
        :class:`~barknet.testing.harness.Owner`."""
        side = self._side(self.client_tcp, **options)
        return side, side.transport.connect(address or self.address)

    def run_until(self, condition: Callable[[], object], what: str) -> None:
        """Run the loop until ``condition`` holds; if it never does, fail the check
        with what each side saw."""
        timeout = wait_limit()
        try:
            self.ew.run_until(condition, timeout)
        except TimeoutError:
            raise AssertionError(
                f"waited {timeout:g} s for {what}; it never came.\n" + self.describe()
            ) from None

    def written(self, side: Side) -> int:
        """How many bytes ``side``'s transport put on the wire, to all its peers."""
        return sum(self.wires[self.sides.index(side)].written_total.values())

    def received(self, side: Side) -> int:
        """How many bytes ``side``'s transport took off the wire, from all its peers."""
        return sum(self.wires[self.sides.index(side)].read_total.values())

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
        # The transports under test first, then the TCP below them, then the loop,
        # each even if an earlier one raised (see Stage.close).
        self.stage.close()

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is None:
            self.close()
            return
        # The check failed already, and its message says why. The transport under
        # test is broken, so closing it may raise too: that must not replace the
        # message (it would, raised from here).
        with contextlib.suppress(Exception):
            self.close()


# ------------------------------------------------------------ the registry
@dataclass(frozen=True)
class Check:
    name: str
    run: Callable[[Maker], None]
    #: "core" checks cover the framing the chapter's exercise asks for; "errors"
    #: the error cases; "contract" the interface's promises beyond framing
    #: (run_checks leaves those out unless asked; the exercise asks for them).
    level: str
    #: True when the check talks to the transport with plain sockets that send or
    #: expect payloads exactly as given, in the 4-byte length-prefix format. A stack
    #: that changes payloads on the wire (compression) cannot pass such a check,
    #: and is not meant to: run it with the others only.
    plain_wire: bool = False
    #: Other levels the check also belongs to. Two contract checks are mistakes a
    #: framing layer makes too (a busy loop after a drain, writes accepted after
    #: close), so a run of levels "core" and "errors" alone includes them.
    also_in: tuple[str, ...] = ()

    @property
    def doc(self) -> str:
        return (self.run.__doc__ or "").strip()


def checks_for(levels: tuple[str, ...] = ("core", "errors")) -> list[Check]:
    """The checks :func:`run_checks` runs for ``levels``, in order: each check whose
    level, or one of whose :attr:`Check.also_in`, is among them."""
    # Both suites build on this module, so they are imported here, when the
    # registry is first asked for, not at the top.
    from .conformance import CHECKS
    from .contract import CONTRACT_CHECKS
    from .queueing import QUEUEING_CHECKS

    return [
        check
        for check in CHECKS + CONTRACT_CHECKS + QUEUEING_CHECKS
        if check.level in levels or any(level in levels for level in check.also_in)
    ]


# ---------------------------------------------------------------- the runner
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
    #: The classes of barknet's own that the checks built where the maker's
    #: transport should be (one that *is* ``FramedTransport``, or a subclass of
    #: it): the report then graded the library, not new code, and says so.
    library_classes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def failures(self) -> list[CheckResult]:
        return [r for r in self.results if not r.passed]

    def summary(self) -> str:
        ok = sum(r.passed for r in self.results)
        line = f"{ok} of {len(self.results)} checks passed"
        if self.library_classes:
            # An exercise's self-check must not be passed by handing it the answer.
            graded = " and ".join(self.library_classes)
            line += (
                f". Note: what was graded is {graded}; these results are about barknet's "
                "code, not yours"
            )
        return line

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
    built: set[type] = set()

    def making(inner: ITransport) -> ITransport:
        transport = make(inner)
        built.add(type(transport))
        return transport

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
                result = _run_one(check, making)
            report.results.append(result)
            if progress:
                print(result, flush=True)
    finally:
        _limits["timeout"], _limits["deadline"] = TIMEOUT, float("inf")
    report.library_classes = _library_framing(built)
    if progress:
        print(report.summary(), f"in {time.monotonic() - started:.0f} s", flush=True)
    return report


def _library_framing(classes: set[type]) -> list[str]:
    """The names of the ``classes`` that are barknet's ``FramedTransport`` or
    derive from it (``MyFramedTransport = FramedTransport`` passes every check)."""
    return sorted(
        "barknet's own FramedTransport"
        if cls is FramedTransport
        else f"{cls.__qualname__}, a subclass of barknet's FramedTransport"
        for cls in classes
        if issubclass(cls, FramedTransport)
    )


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
