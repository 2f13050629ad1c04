"""The stored notebooks are what a reader sees and what nbval compares: check
they were run top to bottom, hold no accidental errors, import barknet rather
than paste it, and are the ones the README and the browser tests know about.

nbval itself re-runs them (``make test``); these checks catch what a re-run
cannot: a notebook saved half-run, run out of order, or never run at all
(a cell with no stored run is silently not compared).
"""

from __future__ import annotations

import inspect
import json
import re
import sys
from pathlib import Path

import pytest

import barknet
import barknet.course

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
sys.path.insert(0, str(ROOT / "tests" / "browser"))
from browserkit import notebooks_with_widgets  # noqa: E402


def code_cells(path: Path) -> list[dict]:
    notebook = json.loads(path.read_text())
    return [c for c in notebook["cells"] if c["cell_type"] == "code"]


def source(cell: dict) -> str:
    text = cell["source"]
    return text if isinstance(text, str) else "".join(text)


def test_the_course_has_its_ten_numbered_notebooks() -> None:
    names = [p.name for p in NOTEBOOKS]
    assert len(names) == 10
    assert all(re.fullmatch(r"\d\d_[a-z0-9_]+\.ipynb", n) for n in names), names
    assert [n[:2] for n in names] == [f"{i:02d}" for i in range(10)]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_was_run_top_to_bottom(path: Path) -> None:
    counts = [c["execution_count"] for c in code_cells(path) if source(c).strip()]
    assert None not in counts, f"{path.name}: a code cell has no stored run"
    assert counts == list(range(1, len(counts) + 1)), f"{path.name}: run out of order: {counts}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_per_cell_timing_metadata_to_churn_diffs(path: Path) -> None:
    timed = [c for c in code_cells(path) if "execution" in c.get("metadata", {})]
    assert not timed, f"{path.name}: re-run it with `make run-notebooks NB={path}`"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_errors_only_where_a_cell_is_marked_as_raising(path: Path) -> None:
    for cell in code_cells(path):
        raises = "raises-exception" in cell.get("metadata", {}).get("tags", [])
        errors = [o for o in cell.get("outputs", []) if o["output_type"] == "error"]
        if raises:
            # nbval passes a marked cell that does not raise unless the error is stored.
            assert errors, f"{path.name}: a cell tagged as raising has no stored error"
        else:
            assert not errors, f"{path.name}: a stored error in an untagged cell"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_nbval_markers_are_cell_tags_not_comments_in_the_learners_code(path: Path) -> None:
    for cell in code_cells(path):
        assert not re.search(r"#\s*NBVAL_", source(cell)), (
            f"{path.name}: use a cell tag (nbval-ignore-output, raises-exception, ...) "
            "instead of an NBVAL_ comment"
        )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_listings_of_private_or_core_code_are_not_compared(path: Path) -> None:
    """A listing of code that other work changes would break nbval at every edit."""
    listing = re.compile(
        r"getsource\([\w.]*\b_[a-z]\w*|getsource\((EventWatcher|TcpTransport|"
        r"FramedTransport|[\w.]*RawPeer)\."
    )
    for cell in code_cells(path):
        if listing.search(source(cell)):
            tags = cell.get("metadata", {}).get("tags", [])
            assert "nbval-ignore-output" in tags, f"{path.name}: {source(cell)[:80]!r}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_only_listings_and_widgets_skip_the_comparison(path: Path) -> None:
    """What varies is masked in sanitize.cfg; a whole cell goes uncompared only
    when it lists code that other work changes (tested above, and against the
    code by the next test), or draws a widget, whose output is cleared and
    redrawn (nbval then meets output it cannot compare: "Unexpected output
    fields")."""
    for cell in code_cells(path):
        if "nbval-ignore-output" in cell.get("metadata", {}).get("tags", []):
            text = source(cell)
            assert "getsource(" in text or re.search(r"\w+_widget\(", text), (
                f"{path.name}: an uncompared cell that neither lists code nor draws a "
                f"widget; mask what varies in sanitize.cfg instead: {text[:80]!r}"
            )


def test_every_sanitizer_pattern_masks_something_a_notebook_prints() -> None:
    """A pattern that matches nothing is dead weight that could one day hide a
    regression it was never meant for."""
    config = (ROOT / "notebooks" / "sanitize.cfg").read_text(encoding="utf-8")
    patterns = re.findall(r"^regex: (.*)$", config, flags=re.MULTILINE)
    outputs = "\n".join(
        "".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/plain", ""))
        for path in NOTEBOOKS
        for cell in code_cells(path)
        for o in cell.get("outputs", [])
    )
    assert patterns
    unused = [p for p in patterns if not re.search(p, outputs)]
    assert not unused, f"sanitize.cfg patterns that match no stored output: {unused}"


def _listed(expression: str) -> object:
    """What a notebook's ``getsource(expression)`` lists: names from barknet and
    its modules, as the notebooks import them."""
    namespace: dict[str, object] = {"course": barknet.course}
    for module in (barknet, barknet.framing, barknet.reactor, barknet.tcp, barknet.framed):
        namespace.update(vars(module))
    return eval(expression, namespace)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_listings_show_the_code_as_it_is_now(path: Path) -> None:
    """A listing's stored output is what a reader sees without running the
    notebook (on GitHub, say), and nbval does not compare the listings of code
    that changes: so this does. After editing listed code, re-run the notebook."""
    for cell in code_cells(path):
        expressions = re.findall(r"getsource\(([\w.]+)\)", source(cell))
        stored = "".join(
            "".join(o.get("text", ""))
            for o in cell.get("outputs", [])
            if o["output_type"] == "stream"
        )
        for expression in expressions:
            assert inspect.getsource(_listed(expression)) in stored, (
                f"{path.name}: the stored listing of {expression} is out of date: "
                f"re-run it with `make run-notebooks NB=notebooks/{path.name}`"
            )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_imports_barknet_instead_of_pasting_it(path: Path) -> None:
    code = "\n".join(source(c) for c in code_cells(path))
    assert re.search(r"^\s*(from barknet\b|import barknet\b)", code, re.M), path.name
    for name in barknet.__all__:
        if name[0].isupper():
            assert not re.search(rf"^\s*class {name}\b", code, re.M), (
                f"{path.name} defines its own {name}: import it from barknet"
            )


def test_every_notebook_is_listed_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    for path in NOTEBOOKS:
        assert path.name in readme, f"README.md does not list {path.name}"


def test_the_live_experiments_are_covered_by_the_browser_tests() -> None:
    found = {p.name for p in notebooks_with_widgets(ROOT / "notebooks")}
    assert {"03_partial_io.ipynb", "07_live_lab.ipynb"} <= found, found


#: How a notebook asks the learner something before it shows the answer.
PROMPT = re.compile(r"\*\*(Think first|Try it)[^*]*\*\*")
ANSWER = "<summary>Answer"


@pytest.mark.parametrize(
    "path",
    [*NOTEBOOKS, ROOT / "tests" / "solutions" / "06_exercise_framing.ipynb"],
    ids=lambda p: f"{p.parent.name}/{p.stem}",
)
def test_every_folded_answer_answers_a_question_asked_before_it(path: Path) -> None:
    # An answer with no question before it means the question was lost (it once
    # was, from notebook 06, with the rules its self-check grades) or never written.
    asked = False
    notebook = json.loads(path.read_text())
    for number, cell in enumerate(notebook["cells"]):
        if cell["cell_type"] != "markdown":
            continue
        text = source(cell)
        marks = [(m.start(), "prompt") for m in PROMPT.finditer(text)]
        marks += [(m.start(), "answer") for m in re.finditer(re.escape(ANSWER), text)]
        for _, kind in sorted(marks):
            if kind == "answer":
                assert asked, f"{path.name}, cell {number}: an answer to no question"
            asked = kind == "prompt"


#: What the exercise in 06 asks the learner to write, as barknet writes it: the
#: framing layer's reading and writing methods, its queue and its decoder.
EXERCISE_ANSWERS = re.compile(
    r"getsource\((FramedTransport\.(_pump|_flush|_on_inner_event|resume_read|resume_write)"
    r"|FrameQueue\.\w+|FrameDecoder\.\w+|encode_frame)\b"
)


def test_no_notebook_before_the_exercise_lists_the_code_the_exercise_asks_for() -> None:
    """A learner reads 03 and 05 just before writing the framing in 06: a listing
    of barknet's own _pump or _flush there would be the answer before the try.
    They are listed in 07, after the exercise."""
    for path in NOTEBOOKS:
        number = int(path.name[:2])
        listed = [
            m.group(1)
            for cell in code_cells(path)
            for m in EXERCISE_ANSWERS.finditer(source(cell))
        ]
        if number < 6:
            assert not listed, f"{path.name} lists {listed}: 06 asks the learner to write them"
        if path.name == "07_live_lab.ipynb":
            assert {"FramedTransport._pump", "FramedTransport._flush"} <= set(listed), listed
