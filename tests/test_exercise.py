"""The exercise workflow: stripping solutions, and the self-check that grades them.

The key promise of the exercise is two-sided: the reference solution
(``tests/solutions/``, out of a learner's way) passes the conformance
self-check, and the blank notebook a learner opens from ``notebooks/`` (each
solution replaced by ``raise NotImplementedError``) fails it, loudly and for
that reason. Both sides are run here on the notebooks' own cells, executed into
a fresh namespace; the blank is also the reference stripped, cell for cell.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from barknet.course.exercise import (
    BEGIN,
    END,
    FORCE_COMMAND,
    PLACEHOLDER,
    REFERENCE,
    explore,
    learners_copy,
    main,
    make_exercises,
    strip_notebook,
    strip_solutions,
)
from barknet.testing.conformance import checks_for, run_checks
from barknet.testing.contract import CONTRACT_CHECKS

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
EXERCISE = NOTEBOOKS / "06_exercise_framing.ipynb"

pytestmark = pytest.mark.usefixtures("no_leaks")

#: The levels the notebook's self-check runs: every check that applies to the
#: exercise's transport, which has no water marks (so not "queueing"); a test
#: below reads them in the notebook's cell.
LEVELS = ("core", "errors", "contract")
#: The interface's promises beyond framing (issue #9), one contract check each.
CONTRACT = [
    "close delivers everything while the peer keeps sending",
    "half-close, client first",
    "half-close, server first",
    "a callback that re-enters the loop",
    "writes after close(peer) while data is queued",
    "no busy loop after a drain",
    "an fd closed and reused within one turn",
    "one message per READABLE",
    "suspend_read holds READABLE back",
    "CLOSED tells a reset from a clean end, and counters answer in it",
]


def _source(cell: dict[str, Any]) -> str:
    source = cell["source"]
    return "".join(source) if isinstance(source, list) else source


def _code_cell(source: str, outputs: list[Any] | None = None) -> dict[str, Any]:
    return {
        "cell_type": "code",
        "execution_count": 3,
        "metadata": {"tags": ["keep-me"]},
        "outputs": outputs or [{"output_type": "stream", "name": "stdout", "text": ["hi\n"]}],
        "source": source.splitlines(keepends=True),
    }


# ------------------------------------------------------------------ stripping
def test_region_becomes_placeholder_at_the_markers_indentation() -> None:
    source = (
        "def f(x):\n"
        '    """Doc stays."""\n'
        f"    {BEGIN}\n"
        "    y = x * 2\n"
        "    if y:\n"
        "        return y\n"
        f"    {END}\n"
        "\n"
        "def g():\n"
        f"        {BEGIN}\n"
        "        return 1\n"
        f"        {END}\n"
    )
    assert strip_solutions(source) == (
        "def f(x):\n"
        '    """Doc stays."""\n'
        "    # YOUR CODE HERE\n"
        f"    {PLACEHOLDER}\n"
        "\n"
        "def g():\n"
        "        # YOUR CODE HERE\n"
        f"        {PLACEHOLDER}\n"
    )
    compile(strip_solutions(source), "<cell>", "exec")


def test_source_without_markers_is_unchanged() -> None:
    source = "x = 1\n    # not a marker: ### BEGIN SOLUTIONS\n"
    assert strip_solutions(source) == source


@pytest.mark.parametrize(
    "source",
    [f"{BEGIN}\nx = 1\n", f"x = 1\n{END}\n", f"{BEGIN}\n{BEGIN}\n{END}\n{END}\n"],
    ids=["unclosed", "stray end", "nested"],
)
def test_malformed_regions_are_refused_not_half_stripped(source: str) -> None:
    with pytest.raises(ValueError):
        strip_solutions(source)


def test_notebook_copy_clears_outputs_and_leaves_other_cells_alone() -> None:
    markdown = {"cell_type": "markdown", "metadata": {}, "source": [f"Prose naming {BEGIN}\n"]}
    plain = _code_cell("print('hi')\n")
    task = _code_cell(f"def f():\n    {BEGIN}\n    return 42\n    {END}\n")
    notebook = {
        "cells": [markdown, plain, task],
        "metadata": {"widgets": {"state": {}}, "kernelspec": {"name": "python3"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    before = json.dumps(notebook, sort_keys=True)
    copy = strip_notebook(notebook)
    assert json.dumps(notebook, sort_keys=True) == before  # the original is untouched
    md, code, stripped = copy["cells"]
    assert md == markdown
    assert _source(code) == "print('hi')\n"
    assert code["metadata"] == {"tags": ["keep-me"]}
    assert _source(stripped) == f"def f():\n    # YOUR CODE HERE\n    {PLACEHOLDER}\n"
    for cell in (code, stripped):
        assert cell["outputs"] == []
        assert cell["execution_count"] is None
    assert copy["metadata"] == {"kernelspec": {"name": "python3"}}


def _regions(source: str) -> list[str]:
    regions, current = [], None
    for line in source.splitlines(keepends=True):
        if line.strip() == BEGIN:
            current = []
        elif line.strip() == END:
            regions.append("".join(current))
            current = None
        elif current is not None:
            current.append(line)
    return regions


def test_the_blank_notebook_is_the_reference_stripped_cell_for_cell() -> None:
    reference = strip_notebook(json.loads(REFERENCE.read_text(encoding="utf-8")))
    blank = json.loads(EXERCISE.read_text(encoding="utf-8"))
    # (nbconvert drops a cell's final newline when it runs the notebook)
    assert [(c["cell_type"], _source(c).rstrip()) for c in blank["cells"]] == [
        (c["cell_type"], _source(c).rstrip()) for c in reference["cells"]
    ], "remake it: python -m barknet.course.exercise --blank tests/solutions/06_...ipynb"


def test_the_notebook_a_learner_opens_holds_no_solution() -> None:
    text = EXERCISE.read_text(encoding="utf-8")
    assert BEGIN not in text and END not in text
    for telltale in ["del buffer[:end]", "HEADER.pack(size)", "recv.frames.popleft()"]:
        assert telltale not in text


def test_reference_copy_holds_no_solution() -> None:
    notebook = json.loads(REFERENCE.read_text(encoding="utf-8"))
    copy = strip_notebook(notebook)
    regions = [r for cell in notebook["cells"] for r in _regions(_source(cell))]
    assert len(regions) >= 6, "the exercise notebook should hold its solution regions"
    text = "".join(_source(c) for c in copy["cells"] if c["cell_type"] == "code")
    assert BEGIN not in text and END not in text
    for region in regions:
        assert region not in text
    for telltale in ["del buffer[:end]", "HEADER.pack(size)", "recv.frames.popleft()"]:
        assert telltale not in text
    assert text.count(PLACEHOLDER) == len(regions)
    assert len(copy["cells"]) == len(notebook["cells"])


# ----------------------------------------------------------------- make_exercises
def test_make_exercises_writes_copies_and_keeps_existing_work(tmp_path: Path) -> None:
    out = tmp_path / "my_work"
    assert make_exercises(NOTEBOOKS, out) == {out / EXERCISE.name: "written"}
    target = out / EXERCISE.name
    written = json.loads(target.read_text(encoding="utf-8"))
    assert any(PLACEHOLDER in _source(cell) for cell in written["cells"])
    target.write_text("my own work", encoding="utf-8")
    assert make_exercises(NOTEBOOKS, out) == {target: "kept"}
    assert target.read_text(encoding="utf-8") == "my own work"
    assert make_exercises(NOTEBOOKS, out, force=True) == {target: "written"}
    assert json.loads(target.read_text(encoding="utf-8"))["cells"]


def test_cli_reports_what_it_did(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--out", str(tmp_path)]) == 0
    assert f"written: {tmp_path / EXERCISE.name}" in capsys.readouterr().out
    assert main(["--out", str(tmp_path)]) == 0
    assert f"to start over, losing it: {FORCE_COMMAND}" in capsys.readouterr().out
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["--source", str(empty), "--out", str(tmp_path)]) == 1


# ------------------------------------------------------------ the self-check
def _definitions(notebook: dict[str, Any]) -> dict[str, Any]:
    """Run the cells that define the exercise (the imports cell, then every cell that
    starts with a top-level ``def`` or ``class``) into a fresh namespace."""
    code = [c for c in notebook["cells"] if c["cell_type"] == "code"]
    chosen = [code[0], *(c for c in code if _source(c).startswith(("def ", "class ")))]
    namespace: dict[str, Any] = {"__name__": "exercise"}
    for i, cell in enumerate(chosen):
        exec(compile(_source(cell), f"<cell {i}>", "exec"), namespace)
    return namespace


def _self_check_cell(notebook: dict[str, Any]) -> str:
    (cell,) = [
        _source(c)
        for c in notebook["cells"]
        if c["cell_type"] == "code" and _source(c).startswith("report = run_checks(")
    ]
    return cell


@pytest.mark.parametrize("path", [REFERENCE, EXERCISE], ids=["reference", "blank"])
def test_the_notebooks_self_check_runs_the_contract_checks_too(path: Path) -> None:
    cell = _self_check_cell(json.loads(path.read_text(encoding="utf-8")))
    assert "MyFramedTransport" in cell and f"levels={LEVELS!r}".replace("'", '"') in cell, cell
    graded = [check.name for check in checks_for(LEVELS)]
    assert [check.name for check in CONTRACT_CHECKS] == CONTRACT
    assert set(CONTRACT) <= set(graded)


def test_self_check_passes_on_the_reference_solution() -> None:
    namespace = _definitions(json.loads(REFERENCE.read_text(encoding="utf-8")))
    transport_class = namespace["MyFramedTransport"]
    report = run_checks(lambda inner: transport_class(inner), levels=LEVELS, budget=120)
    assert report.passed, str(report)
    # Every check there is ran, in order: the framing suite, then the contract.
    assert [r.check.name for r in report.results] == [c.name for c in checks_for(LEVELS)]
    results = {r.check.name: r for r in report.results}
    for name in CONTRACT:
        result = results[name]
        assert result.check.level == "contract" and result.ran and result.passed, str(result)


def test_self_check_fails_on_the_blank_notebook() -> None:
    namespace = _definitions(json.loads(EXERCISE.read_text(encoding="utf-8")))
    transport_class = namespace["MyFramedTransport"]
    report = run_checks(lambda inner: transport_class(inner), levels=LEVELS, timeout=1.0)
    assert not report.passed
    core = [r for r in report.results if r.check.level == "core"]
    assert core and all(not r.passed for r in core)
    for result in core:
        assert "NotImplementedError: your code here" in result.message, str(report)
    # The contract checks fail too, for the same reason: no frame can be sent yet.
    contract = [r for r in report.results if r.check.level == "contract"]
    assert [r.check.name for r in contract] == CONTRACT
    for result in contract:
        assert "NotImplementedError: your code here" in result.message, str(report)


def test_learners_copy_is_a_valid_notebook(tmp_path: Path) -> None:
    nbformat = pytest.importorskip("nbformat")
    make_exercises(NOTEBOOKS, tmp_path)
    copy = nbformat.read(tmp_path / EXERCISE.name, as_version=4)
    nbformat.validate(copy)
    assert all(c.execution_count is None for c in copy.cells if c.cell_type == "code")


# --------------------------------------------------------------- the learner's copy
def test_learners_copy_says_it_is_the_copy_and_its_links_go_one_folder_up(
    tmp_path: Path,
) -> None:
    make_exercises(NOTEBOOKS, tmp_path / "my_work")
    copy = json.loads((tmp_path / "my_work" / EXERCISE.name).read_text(encoding="utf-8"))
    markdown = "".join(_source(c) for c in copy["cells"] if c["cell_type"] == "markdown")
    assert "make exercises" not in markdown and "own copy" not in markdown
    assert "This is **your copy**" in markdown
    links = re.findall(r"\]\(([^)\s]+\.ipynb)[^)]*\)", markdown)
    assert links and all(link.startswith("../") for link in links), links
    for link in links:  # each resolves to a notebook of the course
        assert (tmp_path / "my_work" / link).resolve().name in {
            p.name for p in NOTEBOOKS.glob("*.ipynb")
        }
        assert (NOTEBOOKS / "my_work" / link).resolve().exists(), link


def test_learners_copy_leaves_absolute_and_anchor_links_alone() -> None:
    cell = {
        "cell_type": "markdown",
        "metadata": {},
        "source": [
            "[a](03_x.ipynb) [b](https://x.org/a.ipynb) [c](#part) "
            "[d](../04_y.ipynb#z) [e](05_z.ipynb#s)"
        ],
    }
    copy = learners_copy({"cells": [cell], "metadata": {}})
    assert _source(copy["cells"][0]) == (
        "[a](../03_x.ipynb) [b](https://x.org/a.ipynb) [c](#part) [d](../04_y.ipynb#z) "
        "[e](../05_z.ipynb#s)"
    )


# ------------------------------------------------------------------ explore
def test_explore_names_an_unwritten_part_and_lets_the_notebook_go_on(
    capsys: pytest.CaptureFixture[str],
) -> None:
    def encode_frame() -> None:
        raise NotImplementedError("your code here")

    with explore("never shown"):
        encode_frame()
    out = capsys.readouterr().out
    assert "Not written yet: NotImplementedError: your code here" in out
    assert "in encode_frame, line" in out and "never shown" not in out


def test_explore_prints_the_hint_made_at_failure_time(capsys: pytest.CaptureFixture[str]) -> None:
    got: list[bytes] = []
    with explore(lambda: f"{len(got)} of 3 echoes came back"):
        got.append(b"one")
        raise TimeoutError("no more")
    out = capsys.readouterr().out
    assert "This cell did not finish: TimeoutError: no more" in out
    assert "1 of 3 echoes came back" in out


def test_explore_does_not_swallow_an_interrupt() -> None:
    with pytest.raises(KeyboardInterrupt), explore():
        raise KeyboardInterrupt


def test_the_notebook_and_readme_give_the_start_over_command_the_cli_names() -> None:
    # `make exercises --force` is not a thing (make takes no such option): the
    # advice must be the module's own command, the same everywhere.
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    assert FORCE_COMMAND in readme
    for path in (EXERCISE, REFERENCE):
        text = "".join(
            "".join(cell["source"])
            for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]
            if cell["cell_type"] == "markdown"
        )
        assert FORCE_COMMAND in text, path
        assert "add `--force`" not in text, path
