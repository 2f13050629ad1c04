"""Each deliberately wrong solution of the exercise is caught by a named check.

The mutants (``tests/solutions/mutants.py``) are the mistakes that used to pass
the whole self-check. Each test makes one from the reference solution, runs
the self-check, and asserts that the check named for that mistake fails with a
message that says what is wrong, and that the unmutated reference passes the
same check (so the failure is the mutant's, not the check's).

Two promises of the plumbing the exercise gives (an EOF that arrives alone is
announced; resume_read after suspend_read reads again) are pinned at the end,
each with the break of the plumbing that makes it fail.
"""

from __future__ import annotations

import json
import socket
import struct
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from barknet import EventKind, EventWatcher, IOEvent, IOStatus, Peer, TcpTransport
from barknet.testing.conformance import checks_for, run_checks

SOLUTIONS = Path(__file__).resolve().parent / "solutions"
sys.path.insert(0, str(SOLUTIONS))
from mutants import MUTANTS, Mutant, apply  # noqa: E402

REFERENCE = SOLUTIONS / "06_exercise_framing.ipynb"
#: The levels the notebook's self-check runs (tests/test_exercise.py checks its cell).
LEVELS = ("core", "errors", "contract")

pytestmark = pytest.mark.usefixtures("no_leaks")


def _source(cell: dict[str, Any]) -> str:
    source = cell["source"]
    return "".join(source) if isinstance(source, list) else source


def reference_code() -> list[str]:
    """The cells that define the exercise: the imports cell, then each cell that
    starts with a top-level ``def`` or ``class``."""
    notebook = json.loads(REFERENCE.read_text(encoding="utf-8"))
    code = [_source(c) for c in notebook["cells"] if c["cell_type"] == "code"]
    return [code[0], *(c for c in code if c.startswith(("def ", "class ")))]


def transport_class(cells: list[str]) -> type:
    namespace: dict[str, Any] = {"__name__": "exercise"}
    for i, cell in enumerate(cells):
        exec(compile(cell, f"<cell {i}>", "exec"), namespace)
    return namespace["MyFramedTransport"]


def mutated(mutant: Mutant) -> type:
    joined = "\n# ---- cell ----\n".join(reference_code())
    return transport_class(apply(joined, mutant).split("\n# ---- cell ----\n"))


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: m.name)
def test_the_reference_passes_the_check_that_catches_each_mutant(mutant: Mutant) -> None:
    report = run_checks(
        transport_class(reference_code()), levels=LEVELS, names=[mutant.caught_by], timeout=5
    )
    assert report.passed, str(report)


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: m.name)
def test_a_named_check_catches_the_wrong_solution(mutant: Mutant) -> None:
    report = run_checks(mutated(mutant), levels=LEVELS, names=[mutant.caught_by], timeout=2)
    assert [r.check.name for r in report.failures] == [mutant.caught_by], str(report)
    assert mutant.says in report.failures[0].message, str(report)
    if mutant.not_says is not None:
        assert mutant.not_says not in report.failures[0].message, str(report)


def test_every_mutant_still_applies_to_the_reference() -> None:
    joined = "\n".join(reference_code())
    for mutant in MUTANTS:
        apply(joined, mutant)  # raises if an edit no longer matches exactly once


def test_the_self_check_runs_every_check_that_catches_a_mutant() -> None:
    graded = {check.name for check in checks_for(LEVELS)}  # what the notebook runs
    assert {mutant.caught_by for mutant in MUTANTS} <= graded


# ------------------------------------------------- the given plumbing's promises
# Two promises of the plumbing the exercise gives that no contract check isolates
# (the checks' owners read until WOULD_BLOCK and never resume after suspending).
# Each is pinned on the reference, and shown to fail when the plumbing breaks it.
def _frame(payload: bytes) -> bytes:
    return struct.pack("!I", len(payload)) + payload


def _run_until(
    ew: EventWatcher, condition: Callable[[], object], what: str, timeout: float
) -> None:
    try:
        ew.run_until(condition, timeout)
    except TimeoutError:
        raise AssertionError(f"gave up after {timeout:g} s waiting for {what}") from None


def eof_alone_is_announced(transport_class: type, timeout: float = 5) -> None:
    """With half_close=True, a peer's EOF that arrives by itself (no frame with it)
    is news: READABLE says it, resume_read answers EOF, the peer stays open for
    the reply, and after write_eof both directions are over: CLOSED(EOF)."""
    events: list[IOEvent] = []
    frames: list[bytes] = []
    replied: list[Peer] = []
    with EventWatcher() as ew:
        server = transport_class(TcpTransport(), half_close=True)

        def on_event(event: IOEvent) -> None:
            events.append(event)
            if event.kind is EventKind.READABLE:
                while (result := server.resume_read(event.peer)).status is IOStatus.OK:
                    frames.append(bytes(result.data))
                if result.status is IOStatus.EOF and not replied:
                    replied.append(event.peer)
                    server.resume_write(b"reply", event.peer)
                    server.write_eof(event.peer)

        server.attach(ew, on_event)
        raw = socket.create_connection(server.bind())
        try:
            raw.sendall(_frame(b"hello"))
            _run_until(ew, lambda: frames, "the first frame", timeout)
            raw.shutdown(socket.SHUT_WR)  # the EOF, alone
            closed = lambda: [e for e in events if e.kind is EventKind.CLOSED]  # noqa: E731
            _run_until(ew, closed, "CLOSED after the peer's EOF", timeout)
            raw.settimeout(timeout)
            got = b""
            while chunk := raw.recv(4096):
                got += chunk
        finally:
            raw.close()
            server.close()
    assert frames == [b"hello"]
    assert got == _frame(b"reply"), got
    assert [e.status for e in closed()] == [IOStatus.EOF]


def reads_again_after_suspend_read(transport_class: type, timeout: float = 5) -> None:
    """An owner that calls suspend_read on its first READABLE and resume_read later
    gets what arrived meanwhile, and READABLE again for what comes after."""
    frames: list[bytes] = []
    readable: list[Peer] = []
    with EventWatcher() as ew:
        server = transport_class(TcpTransport())

        def take(peer: Peer) -> None:
            while (result := server.resume_read(peer)).status is IOStatus.OK:
                frames.append(bytes(result.data))

        def on_event(event: IOEvent) -> None:
            if event.kind is EventKind.READABLE:
                readable.append(event.peer)
                if len(readable) == 1:
                    server.suspend_read(event.peer)  # busy: later
                else:
                    take(event.peer)

        server.attach(ew, on_event)
        raw = socket.create_connection(server.bind())
        try:
            raw.sendall(_frame(b"one"))
            _run_until(ew, lambda: readable, "the first READABLE", timeout)
            raw.sendall(_frame(b"two"))  # arrives while reading is suspended
            for _ in range(5):
                ew.run_once(0.01)
            assert len(readable) == 1, "READABLE came while reading was suspended"
            take(readable[0])
            raw.sendall(_frame(b"three"))
            _run_until(ew, lambda: len(frames) == 3, "the frames after resume_read", timeout)
        finally:
            raw.close()
            server.close()
    assert frames == [b"one", b"two", b"three"]


PROMISES = {
    "eof_alone_is_announced": (
        eof_alone_is_announced,
        (
            "        return bool(recv.frames) or (recv.eof and peer not in self._told_eof)",
            "        return bool(recv.frames)",
        ),
    ),
    "reads_again_after_suspend_read": (
        reads_again_after_suspend_read,
        (
            "        if peer in self._paused and recv.error is None:\n"
            "            self._paused.discard(peer)\n",
            "        if False:\n",
        ),
    ),
}


@pytest.mark.parametrize("name", PROMISES)
def test_the_given_plumbing_keeps_its_promise(name: str) -> None:
    promise, _ = PROMISES[name]
    promise(transport_class(reference_code()))


@pytest.mark.parametrize("name", PROMISES)
def test_the_promise_fails_when_the_plumbing_breaks_it(name: str) -> None:
    promise, edit = PROMISES[name]
    broken = mutated(Mutant(name, (edit,), caught_by="", says=""))
    with pytest.raises(AssertionError, match="gave up after"):
        promise(broken, timeout=1)


def test_the_shared_buffer_hint_comes_only_when_peers_got_each_others_bytes() -> None:
    # A wrong byte order on the server also fails the interleaved check, but no
    # peer's bytes reach another: the hint must point at decoding, not at buffers.
    (little_endian,) = [m for m in MUTANTS if m.name == "little-endian header on both sides"]
    name = "many peers, interleaved partial frames"
    report = run_checks(mutated(little_endian), levels=LEVELS, names=[name], timeout=2)
    message = report.failures[0].message
    assert "no peer got another's bytes" in message, message
    assert "own receive buffer" not in message, message
