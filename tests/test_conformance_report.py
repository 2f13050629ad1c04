"""How the self-check reports: as it goes, within its budget, in the learner's own lines.

A learner's broken transport must cost seconds, not a minute of silence: each result is
printed when its check ends, the whole run is bounded by ``budget`` (checks that no longer
fit are reported as not run), code that never returns to the loop is interrupted, and a
failure names what arrived on the wire and which events fired.
"""

from __future__ import annotations

import pytest

from barknet import FramedTransport
from barknet.interfaces import ITransport
from barknet.testing.checks import Lab, hex_bytes
from barknet.testing.conformance import CHECKS, checks_for, explain_exception, run_checks

pytestmark = pytest.mark.usefixtures("no_leaks")


class _SwallowsWrites(FramedTransport):
    """Accepts every frame and sends none: every echo wait runs out."""

    def resume_write(self, data, peer):  # type: ignore[no-untyped-def]
        from barknet.events import IOStatus, WriteResult

        return WriteResult(0, IOStatus.OK)


class _SpinsOnRead(FramedTransport):
    """A decoder that never consumes what it looks at: an endless loop on the first byte."""

    def _on_inner_event(self, event):  # type: ignore[no-untyped-def]
        from barknet.events import EventKind

        if event.kind is EventKind.READABLE:
            buffered = 1
            while buffered:  # the learner forgot to remove the bytes they used
                buffered += 0
        super()._on_inner_event(event)


def test_each_result_is_printed_as_soon_as_its_check_ends(
    capsys: pytest.CaptureFixture[str],
) -> None:
    seen_before_second: list[str] = []
    made = []

    def make(inner: ITransport) -> ITransport:
        made.append(inner)
        if len(made) == 3:  # the first check made a server and a client; this is check two
            seen_before_second.append(capsys.readouterr().out)
        return FramedTransport(inner)

    run_checks(make, names=["single message", "zero-length frame"], progress=True)
    assert "PASS  single message" in seen_before_second[0]
    rest = capsys.readouterr().out
    assert "PASS  zero-length frame" in rest and "2 of 2 checks passed" in rest


def test_a_run_that_uses_up_its_budget_reports_the_rest_as_not_run() -> None:
    report = run_checks(_SwallowsWrites, timeout=5, budget=0.5)
    assert len(report.results) == len(checks_for())
    skipped = [r for r in report.results if not r.ran]
    assert skipped, str(report)
    assert all("budget was spent" in r.message for r in skipped)
    assert "SKIP  " in str(report)


def test_a_timeout_says_what_was_written_and_which_events_fired() -> None:
    report = run_checks(_SwallowsWrites, names=["single message"], timeout=0.5)
    message = report.failures[0].message
    assert "waited 0.5 s for 1 echoed frames; it never came" in message
    assert "READABLE never fired" in message
    assert "ACCEPTED x1" in message  # the server's owner saw the connection, nothing else


def test_code_that_never_returns_to_the_loop_is_interrupted_and_shown() -> None:
    report = run_checks(_SpinsOnRead, names=["single message"], timeout=0.5, budget=1)
    message = report.failures[0].message
    assert "still running after" in message and "endless loop" in message
    assert "in _on_inner_event, line" in message and "while buffered:" in message
    assert "_OutOfTime" not in message


def test_an_exception_is_told_in_the_callers_frames_not_the_librarys() -> None:
    def learner() -> None:
        FramedTransport(None).resume_write(b"x", None)  # type: ignore[arg-type]

    try:
        learner()
    except Exception as exc:
        text = explain_exception(exc)
    assert "in learner, line" in text
    assert "barknet/framed.py" not in text


class _FailsToClose(FramedTransport):
    """A transport whose close raises: the check must still release every socket."""

    def close(self, peer=None):  # type: ignore[no-untyped-def]
        super().close(peer)
        raise RuntimeError("my close blew up")


def test_a_transport_that_raises_in_close_leaves_no_socket_behind() -> None:
    # The no_leaks fixture counts descriptors and threads after the test.
    report = run_checks(_FailsToClose, names=["single message"], timeout=1)
    assert "RuntimeError: my close blew up" in report.failures[0].message


def test_plain_wire_false_leaves_out_the_checks_that_speak_plain_frames() -> None:
    from barknet.compress import CompressedTransport

    plain = {c.name for c in CHECKS if c.plain_wire}
    report = run_checks(
        lambda inner: CompressedTransport(FramedTransport(inner)),
        names=[*plain, "single message"],
        plain_wire=False,
    )
    assert [r.check.name for r in report.results] == ["single message"], str(report)
    assert report.passed


class _Borrowed(FramedTransport):
    """A learner's class that is barknet's own, renamed."""


def test_a_report_on_barknets_own_framing_says_whose_code_it_graded() -> None:
    names = ["single message"]
    own = run_checks(FramedTransport, names=names)
    assert own.passed and own.library_classes == ["barknet's own FramedTransport"]
    assert "what was graded is barknet's own FramedTransport" in own.summary()
    # However it is handed over: a subclass, through a lambda.
    sub = run_checks(lambda inner: _Borrowed(inner), names=names)
    assert "_Borrowed, a subclass of barknet's FramedTransport" in sub.summary()
    # A stack of another class (even one with barknet's framing inside) is not flagged.
    from barknet.compress import CompressedTransport

    other = run_checks(lambda inner: CompressedTransport(FramedTransport(inner)), names=names)
    assert other.passed and other.library_classes == []
    assert other.summary() == "1 of 1 checks passed"


def test_a_cut_hex_dump_says_how_many_bytes_it_shows_of_how_many() -> None:
    assert hex_bytes(b"abc") == "61 62 63"
    assert hex_bytes(b"", total=0) == "(nothing)"
    assert hex_bytes(b"a" * 30, 4) == "61 61 61 61 ... (the first 4 of 30 bytes)"
    # A recording that kept 24 bytes of 60,000 says 60,000, not 24.
    assert hex_bytes(b"a" * 24, 24, total=60_000).endswith("(the first 24 of 60,000 bytes)")
    # The lab's recorder keeps the first bytes, and counts them all.
    with Lab(FramedTransport) as lab:
        client, peer = lab.client()
        client.transport.resume_write(b"x" * 100, peer)
        lab.run_until(lambda: client.frames[peer], "the echo")
        assert lab.written(client) == lab.received(lab.server) == 104
        assert lab.describe().count("(the first 24 of 104 bytes)") == 4  # both ways, both sides


class _EchoesAltered(FramedTransport):
    """Frames the peers it accepted get back have their first payload byte changed:
    a send bug that only the server's side (the echo) shows."""

    def resume_write(self, data, peer):  # type: ignore[no-untyped-def]
        if peer in self._accepted and len(data):
            data = bytes([data[0] ^ 0xFF]) + bytes(data[1:])
        return super().resume_write(data, peer)

    def _on_inner_event(self, event):  # type: ignore[no-untyped-def]
        from barknet.events import EventKind

        if event.kind is EventKind.ACCEPTED:
            self._accepted.add(event.peer)
        super()._on_inner_event(event)

    def __init__(self, inner: ITransport) -> None:
        super().__init__(inner)
        self._accepted: set[object] = set()


class _AnnouncesOnce(FramedTransport):
    """READABLE once per batch of new bytes, never again while frames wait
    (edge-triggered): the frames past a turn's worth are never announced."""

    def _announce(self, peer, recv, *, next_turn=False):  # type: ignore[no-untyped-def]
        self._replay(recv.readable)


class _ReadableAfterClose(FramedTransport):
    """Says READABLE on the next turn for a peer the owner just closed."""

    def close(self, peer=None):  # type: ignore[no-untyped-def]
        super().close(peer)
        if peer is not None:
            from barknet.events import EventKind, IOEvent

            self._watcher.call_soon(self._emit, IOEvent(EventKind.READABLE, peer))


@pytest.mark.parametrize(
    ("wrong", "check", "says", "not_says"),
    [
        # A send bug only the echoes show: the server's writes are named, not the reads.
        (
            _EchoesAltered,
            "survives one-byte I/O",
            "The server's bytes on the wire",
            "must wait in that peer's buffer",
        ),
        # Frames decoded but not announced: READABLE is blamed, not the decoder.
        (
            _AnnouncesOnce,
            "rapid fire of small messages",
            "READABLE is level-triggered",
            "not only the first",
        ),
        # A READABLE for a closed peer is named, not shown as the suite's own error.
        (
            _ReadableAfterClose,
            "clean close is EOF",
            "the only event still to come for it is its CLOSED",
            "harness.py",  # (the suite's own file: its read raising)
        ),
    ],
    ids=["echoes-altered", "announces-once", "readable-after-close"],
)
def test_a_failure_names_the_mistake_made_not_another(
    wrong: type, check: str, says: str, not_says: str
) -> None:
    report = run_checks(wrong, names=[check], timeout=5)
    (failure,) = report.failures
    assert says in failure.message, failure.message
    assert not_says not in failure.message, failure.message
