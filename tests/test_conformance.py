"""The conformance suite, run against barknet's own FramedTransport.

The same checks grade the learner's framing in the exercise notebook, so a
check that our transport cannot pass would be a broken exercise.
"""

from __future__ import annotations

import pytest

from barknet import FramedTransport
from barknet.interfaces import ITransport
from barknet.testing.conformance import CHECKS, Check, run_checks
from barknet.testing.faults import ChunkingTransport


def framed(inner: ITransport) -> ITransport:
    return FramedTransport(inner)


def framed_over_chunking(inner: ITransport) -> ITransport:
    """The whole suite again with 3-byte reads, 11-byte writes and injected EAGAINs."""
    return FramedTransport(ChunkingTransport(inner, max_read=3, max_write=11, would_block=0.2))


def framed_with_tiny_scratch(inner: ITransport) -> ITransport:
    """A 64-byte scratch buffer sends most frames down the exact-size body path."""
    return FramedTransport(inner, buffer_size=64)


# Every check against every stack, except three pairs over 3-byte reads: the 4 MiB
# partial-I/O check and the 8 MiB frame of exactly max_frame_size would take minutes
# (partial I/O is the whole point of the chunking stack anyway, and the limit is
# judged from the header alone), and the decoder-scaling check needs frames that
# arrive together, which 3-byte reads never do.
CASES = [
    pytest.param(make, check, id=f"{make.__name__}-{check.name}")
    for make in (framed, framed_over_chunking, framed_with_tiny_scratch)
    for check in CHECKS
    if not (
        make is framed_over_chunking
        and check.name
        in (
            "large message, partial I/O",
            "a frame of exactly max_frame_size",
            "decoder work grows linearly",
        )
    )
]


@pytest.mark.parametrize(("make", "check"), CASES)
def test_framed_transport_passes_check(make, check: Check) -> None:
    check.run(make)


class _ForgetsPartialWrites(FramedTransport):
    """A framing layer with the classic bug: it drops whatever a write did not send
    (here, everything written before the connect completed)."""

    def _flush(self, peer, send):  # type: ignore[no-untyped-def]
        result = super()._flush(peer, send)
        send.buffers.clear()
        send.frame_sizes.clear()
        send.queued = 0
        return result


def test_report_names_the_failing_checks_of_a_broken_transport() -> None:
    report = run_checks(
        lambda inner: _ForgetsPartialWrites(ChunkingTransport(inner, max_write=5)),
        names=["single message", "zero-length frame"],
        timeout=1.0,
    )
    assert not report.passed
    assert [r.check.name for r in report.failures] == ["single message", "zero-length frame"]
    text = str(report)
    assert "FAIL  single message" in text
    assert "waited 1 s for 1 echoed frames; it never came" in text
    assert "READABLE never fired" in text  # what the client's owner saw
    assert "0 of 2 checks passed" in text


def test_report_shows_where_an_unexpected_exception_came_from() -> None:
    def explodes(inner: ITransport) -> ITransport:
        raise ZeroDivisionError("my framing blew up")

    report = run_checks(explodes, names=["single message"])
    assert not report.passed
    assert "ZeroDivisionError: my framing blew up" in report.failures[0].message


def test_report_passes_for_framed_transport() -> None:
    report = run_checks(framed, levels=("core",), names=["single message", "frames in order"])
    assert report.passed, str(report)
    assert len(report.results) == 2
