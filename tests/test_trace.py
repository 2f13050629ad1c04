"""Tests for barknet.trace: the tracing transport, its renderings, and reactor traces."""

from __future__ import annotations

from barknet import EventWatcher


def test_a_timer_is_traced_once_as_a_timer_not_also_as_a_soon_callback() -> None:
    seen: list[tuple[str, str]] = []

    def due() -> None:
        pass

    with EventWatcher() as ew:
        ew.tracer = lambda kind, what: seen.append((kind, getattr(what, "__name__", "?")))
        ew.call_later(0.0, due)
        ew.run_once(1.0)
    assert seen == [("timer", "due")]
