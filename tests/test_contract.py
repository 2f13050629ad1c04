"""The contract checks of barknet.testing.contract against every stack barknet ships.

Message stacks: FramedTransport, CompressedTransport over it, each directly over
TCP, through a ChunkingTransport and through a TracingTransport. Byte stacks (the
byte-level checks): TcpTransport, alone, chunked and traced. The half-close
checks need a framing layer that keeps a half-closed peer open
(``half_close=True``); the others run with the defaults.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from barknet import FramedTransport
from barknet.compress import CompressedTransport
from barknet.interfaces import ITransport
from barknet.testing.conformance import Check, run_checks
from barknet.testing.contract import CONTRACT_CHECKS
from barknet.testing.faults import ChunkingTransport
from barknet.testing.trace import TracingTransport

pytestmark = pytest.mark.usefixtures("no_leaks")

Wrap = Callable[[ITransport], ITransport]
BELOW: dict[str, Wrap] = {
    "tcp": lambda inner: inner,
    "chunked": lambda inner: ChunkingTransport(inner, max_read=1000, max_write=1500),
    "traced": lambda inner: TracingTransport(inner),
}
HALF_CLOSE = {"half-close, client first", "half-close, server first"}
CONTRACT = CONTRACT_CHECKS


def _framed(below: Wrap, **kw: object) -> Callable[[ITransport], ITransport]:
    return lambda inner: FramedTransport(below(inner), **kw)  # type: ignore[arg-type]


def _compressed(below: Wrap, **kw: object) -> Callable[[ITransport], ITransport]:
    return lambda inner: CompressedTransport(FramedTransport(below(inner), **kw))  # type: ignore[arg-type]


CASES = []
for name, below in BELOW.items():
    for check in CONTRACT:
        kw = {"half_close": True} if check.name in HALF_CLOSE else {}
        CASES.append(pytest.param(_framed(below, **kw), check, id=f"framed-{name}-{check.name}"))
        CASES.append(
            pytest.param(_compressed(below, **kw), check, id=f"compressed-{name}-{check.name}")
        )
        CASES.append(pytest.param(below, check, id=f"bytes-{name}-{check.name}"))


@pytest.mark.parametrize(("make", "check"), CASES)
def test_stack_keeps_the_contract(make, check: Check) -> None:
    check.run(make)


def test_every_contract_check_is_registered_and_documented() -> None:
    names = {check.name for check in CONTRACT}
    assert len(names) == 8
    assert all(check.doc for check in CONTRACT)


def test_run_checks_runs_the_contract_checks_by_level() -> None:
    report = run_checks(
        lambda inner: inner, levels=("contract",), names=["half-close, client first"]
    )
    assert [r.check.name for r in report.results] == ["half-close, client first"]
    assert report.passed, str(report)
