"""Each deliberately wrong solution of the exercise is caught by a named check.

The mutants (``tests/solutions/mutants.py``) are the mistakes that used to pass
the whole self-check. Each test makes one from the reference solution, runs
the self-check, and asserts that the check named for that mistake fails with a
message that says what is wrong, and that the unmutated reference passes the
same check (so the failure is the mutant's, not the check's).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

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


def test_every_mutant_still_applies_to_the_reference() -> None:
    joined = "\n".join(reference_code())
    for mutant in MUTANTS:
        apply(joined, mutant)  # raises if an edit no longer matches exactly once


def test_the_self_check_runs_every_check_that_catches_a_mutant() -> None:
    graded = {check.name for check in checks_for(LEVELS)}  # what the notebook runs
    assert {mutant.caught_by for mutant in MUTANTS} <= graded
