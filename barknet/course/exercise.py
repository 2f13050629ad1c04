"""The exercise notebook: the blank a learner opens, their own copy, and friendly failures.

Theory of operation
-------------------
The exercise exists in two forms, kept in step by a test:

* the **reference** (``tests/solutions/06_exercise_framing.ipynb``), where the
  parts a learner is meant to write sit between two marker lines::

      def feed(self, data):
          ### BEGIN SOLUTION
          ...the reference code...
          ### END SOLUTION

  It lives under ``tests/`` so that someone opening the course in order never
  stumbles on it; the tests run it and prove that it passes the self-check.
* the **blank** (``notebooks/06_exercise_framing.ipynb``), made from the
  reference by :func:`strip_notebook` and then run top to bottom, so its
  stored outputs show what an unfinished exercise prints. nbval compares them,
  which proves on every run that the blank fails the self-check, and says why.

:func:`strip_solutions` replaces each region, markers included, by a
``# YOUR CODE HERE`` comment and ``raise NotImplementedError("your code here")``
at the indentation of the ``### BEGIN SOLUTION`` line, so the ``def`` line and
the docstring above it stay and the cell still compiles.

:func:`make_exercises` (``make exercises``) writes the learner's own copy of
each blank exercise to ``notebooks/my_work/`` (ignored by git and by the nbval
run): outputs cleared, the "how to work on it" cell replaced by one that says
this *is* the copy, and links to other notebooks pointed one folder up
(``../``) so they still open. It never overwrites a copy that exists, since
that copy holds the learner's work, unless you pass ``force=True``
(``--force``). ``--blank REFERENCE`` remakes the blank from the reference.

:func:`explore` is for the exercise's exploratory cells: code there calls the
learner's unfinished or wrong functions, and an exception would stop "Run All"
before the self-check. It prints what went wrong, in the learner's own lines,
and lets the notebook go on.

This module uses the standard library only: a notebook is JSON.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..testing.conformance import explain_exception

__all__ = [
    "BEGIN",
    "END",
    "PLACEHOLDER",
    "REFERENCE",
    "explore",
    "has_solutions",
    "is_exercise",
    "learners_copy",
    "make_blank",
    "make_exercises",
    "strip_notebook",
    "strip_solutions",
]

BEGIN = "### BEGIN SOLUTION"
#: How to replace a copy that exists, from the repository root (``make exercises``
#: passes no options through, so the hint names the module itself).
FORCE_COMMAND = ".venv/bin/python -m barknet.course.exercise --force"
END = "### END SOLUTION"
PLACEHOLDER = 'raise NotImplementedError("your code here")'

_ROOT = Path(__file__).resolve().parents[2]
_NOTEBOOKS = _ROOT / "notebooks"
#: The reference solution, out of a learner's way.
REFERENCE = _ROOT / "tests" / "solutions" / "06_exercise_framing.ipynb"

#: The heading of the cell that tells a learner how to get their own copy; the
#: copy replaces that cell by :data:`COPY_NOTE`.
HOWTO_HEADING = "## How to work on it"
COPY_NOTE = """## How to work on it

This is **your copy** of the exercise: edit it freely, it is yours (git ignores
`notebooks/my_work/`). Fill in each `raise NotImplementedError("your code here")` from top to
bottom, running the cell below each part to try it, then run the self-check at the end.
The cells that *try* your code (those that start `with explore():`, and the self-check) catch
what it raises, print what went wrong and let `Run All` go on. A cell that *defines* your code
cannot: a syntax error, or a misspelled name at the top level of a `def` or `class` cell, stops
`Run All` at that cell with Python's own message. Fix it there, then run on from that cell
(*Run → Run Selected Cell and All Below*).

Only the parts that teach framing are left to you. The rest of the transport (attaching to the
loop, binding, connecting, passing events along, closing, half-closing, and saying `READABLE`
again while frames wait) is written out, so you can read it and see where your parts plug in.
"""

# A relative link to a sibling notebook: ](03_partial_io.ipynb) or ](05_x.ipynb#part).
_SIBLING_LINK = re.compile(r"\]\((?![a-z]+:|/|#|\.\./)([^)\s]+\.ipynb(?:#[^)\s]*)?)\)")


def _source(cell: dict[str, Any]) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def has_solutions(notebook: dict[str, Any]) -> bool:
    """Whether any code cell of ``notebook`` holds a solution region."""
    return any(
        cell.get("cell_type") == "code" and BEGIN in _source(cell)
        for cell in notebook.get("cells", [])
    )


def strip_solutions(source: str) -> str:
    """``source`` with every solution region replaced by a placeholder.

    Raises ``ValueError`` for an unclosed or nested region rather than guessing,
    because a half-stripped cell would hand the learner part of the answer.
    """
    out: list[str] = []
    inside = False
    for line in source.splitlines(keepends=True):
        stripped = line.strip()
        if stripped == BEGIN:
            if inside:
                raise ValueError(f"nested {BEGIN!r}")
            inside = True
            indent = line[: len(line) - len(line.lstrip())]
            newline = "\n" if line.endswith("\n") else ""
            out.append(f"{indent}# YOUR CODE HERE\n{indent}{PLACEHOLDER}{newline}")
        elif stripped == END:
            if not inside:
                raise ValueError(f"{END!r} without {BEGIN!r}")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"{BEGIN!r} without {END!r}")
    return "".join(out)


def _as_lines(text: str) -> list[str]:
    # nbformat stores sources as lists of lines; keep that shape for tidy diffs.
    return text.splitlines(keepends=True)


def strip_notebook(notebook: dict[str, Any]) -> dict[str, Any]:
    """A learner's copy of ``notebook`` (the argument is not changed)."""
    copy = json.loads(json.dumps(notebook))
    for cell in copy.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        source = _source(cell)
        if BEGIN in source or END in source:
            cell["source"] = _as_lines(strip_solutions(source))
        cell["outputs"] = []
        cell["execution_count"] = None
    # Saved widget state would show stale sliders in a never-run copy.
    copy.get("metadata", {}).pop("widgets", None)
    return copy


def is_exercise(notebook: dict[str, Any]) -> bool:
    """Whether ``notebook`` is a blank exercise: a code cell still to be written."""
    return any(
        cell.get("cell_type") == "code" and PLACEHOLDER in _source(cell)
        for cell in notebook.get("cells", [])
    )


def learners_copy(notebook: dict[str, Any]) -> dict[str, Any]:
    """The learner's own copy of a blank exercise, to live in ``notebooks/my_work/``.

    Outputs are cleared (the copy looks never run), the cell that says how to
    get a copy says that this is it, and links to sibling notebooks go one
    folder up so they still open from ``my_work/``.
    """
    copy = strip_notebook(notebook)
    for cell in copy["cells"]:
        if cell.get("cell_type") != "markdown":
            continue
        text = _source(cell)
        if text.startswith(HOWTO_HEADING):
            text = COPY_NOTE
        cell["source"] = _as_lines(_SIBLING_LINK.sub(r"](../\1)", text))
    return copy


def make_blank(reference: Path | str = REFERENCE, out: Path | str | None = None) -> Path:
    """Write the blank exercise from the reference: solutions stripped, not yet run.

    Run it afterwards (``make run-notebooks NB=...``) so that its stored outputs
    show what an unfinished exercise prints.
    """
    reference = Path(reference)
    target = Path(out) if out is not None else _NOTEBOOKS / reference.name
    notebook = json.loads(reference.read_text(encoding="utf-8"))
    text = json.dumps(strip_notebook(notebook), indent=1, ensure_ascii=False)
    target.write_text(text + "\n", encoding="utf-8")
    return target


def make_exercises(
    source_dir: Path | str = _NOTEBOOKS,
    out_dir: Path | str | None = None,
    *,
    force: bool = False,
) -> dict[Path, str]:
    """Write the learner's copy of every blank exercise in ``source_dir``.

    Returns what happened to each copy: ``"written"`` or ``"kept"`` (it existed
    and ``force`` was false).
    """
    source_dir = Path(source_dir)
    out = Path(out_dir) if out_dir is not None else source_dir / "my_work"
    results: dict[Path, str] = {}
    for path in sorted(source_dir.glob("*.ipynb")):
        notebook = json.loads(path.read_text(encoding="utf-8"))
        if not is_exercise(notebook):
            continue
        target = out / path.name
        if target.exists() and not force:
            results[target] = "kept"
            continue
        out.mkdir(parents=True, exist_ok=True)
        text = json.dumps(learners_copy(notebook), indent=1, ensure_ascii=False)
        target.write_text(text + "\n", encoding="utf-8")
        results[target] = "written"
    return results


@contextmanager
def explore(hint: str | Callable[[], str] = "") -> Iterator[None]:
    """Run an exploratory cell's code; if it fails, say what happened and go on.

    ``hint`` (a string, or a function called only on failure, so it can show
    what had arrived by then) is printed after the error. A part you have not
    written yet is named as such. Only ``Exception`` is caught: an interrupt
    (the stop button) still stops the notebook.
    """
    try:
        yield
    except Exception as exc:
        if isinstance(exc, NotImplementedError):
            print("Not written yet:", explain_exception(exc).replace("\n", "\n  "))
            print("Fill in that part, then run this cell again.")
            return
        print("This cell did not finish:", explain_exception(exc).replace("\n", "\n  "))
        text = hint() if callable(hint) else hint
        if text:
            print(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m barknet.course.exercise",
        description="Write your own copy of the exercise notebooks.",
    )
    parser.add_argument(
        "--source", type=Path, default=_NOTEBOOKS, help="folder of the course notebooks"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="where to write them (default: notebooks/my_work)"
    )
    parser.add_argument(
        "--force", action="store_true", help="overwrite copies that exist (your work is lost)"
    )
    parser.add_argument(
        "--blank",
        type=Path,
        metavar="REFERENCE",
        help="for the course's authors: remake notebooks/<name> from the reference solution",
    )
    args = parser.parse_args(argv)
    if args.blank is not None:
        target = make_blank(args.blank, args.out)
        print(f"written: {target} (now run it: make run-notebooks NB={target})")
        return 0
    results = make_exercises(args.source, args.out, force=args.force)
    if not results:
        print(f"no notebook in {args.source} is an exercise", file=sys.stderr)
        return 1
    for target, what in results.items():
        note = f" (exists; to start over, losing it: {FORCE_COMMAND})" if what == "kept" else ""
        print(f"{what}: {target}{note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
