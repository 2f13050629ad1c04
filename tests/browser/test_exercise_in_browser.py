"""The exercise as a learner meets it: their copy, a wrong solution, Run All, the verdict.

Theory of operation
-------------------
The served folder (a temp copy, see conftest.py) gets ``my_work/06_exercise_framing.ipynb``
made as ``make exercises`` makes it, with the gaps filled in by a known-wrong solution: the
reference with a little-endian header on both sides (tests/solutions/mutants.py), which
talks to itself happily and used to pass every check. JupyterLab opens it and runs all
cells. Every cell must run (a wrong solution must not stop Run All before the
self-check), and the self-check's output must name the check that catches this mistake,
with a message about byte order.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from browserkit import ROOT
from test_widget_notebooks import RUN_FINISHED, check_cells, open_and_run_all

from barknet.course.exercise import BEGIN, END, REFERENCE, learners_copy

sys.path.insert(0, str(ROOT / "tests" / "solutions"))
from mutants import MUTANTS, apply

pytestmark = pytest.mark.browser

LITTLE_ENDIAN = next(m for m in MUTANTS if m.caught_by == "wire format and byte order")
RUN_ALL_TIMEOUT_MS = 90_000


def wrong_solution_copy(target: Path) -> Path:
    """The learner's copy, with the gaps filled by the little-endian mutant."""
    notebook = json.loads(REFERENCE.read_text(encoding="utf-8"))
    for cell in notebook["cells"]:
        if cell["cell_type"] != "code":
            continue
        text = "".join(cell["source"])
        if 'HEADER = struct.Struct("!I")' in text:
            text = apply(text, LITTLE_ENDIAN)
        kept = [
            line for line in text.splitlines(keepends=True) if line.strip() not in (BEGIN, END)
        ]
        cell["source"] = kept
    copy = learners_copy(notebook)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(copy, indent=1), encoding="utf-8")
    return target


def test_a_wrong_solution_runs_to_the_self_check_which_names_the_failing_check(
    lab_server, page, artifacts_dir: Path
) -> None:
    path = wrong_solution_copy(lab_server.root / "my_work" / "06_exercise_framing.ipynb")
    try:
        open_and_run_all(page, lab_server, "my_work/06_exercise_framing.ipynb")
        page.wait_for_function(RUN_FINISHED, arg=None, timeout=RUN_ALL_TIMEOUT_MS, polling=200)
        check_cells(page, path, "after Run All with a little-endian header")
        outputs = page.locator(".jp-Notebook .jp-OutputArea-output").all_inner_texts()
        report = next((text for text in outputs if "checks passed" in text), "")
        assert "FAIL  wire format and byte order" in report, "\n---\n".join(outputs[-3:])
        assert "little-endian" in report and "big-endian" in report, report
        assert "PASS  single message" in report, report  # it talks to itself happily
    except BaseException:
        page.screenshot(path=str(artifacts_dir / "06-wrong-solution-failed.png"))
        raise
