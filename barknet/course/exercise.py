"""Make the learner's copy of the exercise notebooks: solutions out, outputs cleared.

Theory of operation
-------------------
An exercise notebook is committed *with* its reference solution, so that
``pytest --nbval`` proves on every run that the solution passes the self-check.
The parts a learner is meant to write sit between two marker lines::

    def feed(self, data):
        ### BEGIN SOLUTION
        ...the reference code...
        ### END SOLUTION

:func:`strip_solutions` replaces each such region, markers included, by a
``# YOUR CODE HERE`` comment and ``raise NotImplementedError("your code here")``
at the indentation of the ``### BEGIN SOLUTION`` line, so the ``def`` line and
the docstring above it stay and the cell still compiles. Every code cell loses
its outputs and execution count, so the copy looks never run; cells without
markers are otherwise left exactly as they were.

:func:`make_exercises` does this for every notebook in a folder that has
markers and writes the copies to ``notebooks/my_work/`` (ignored by git and
by the nbval run). It never overwrites a copy that already exists, since that
copy holds the learner's work, unless you pass ``force=True`` (``--force``).

This module uses the standard library only: a notebook is JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = [
    "BEGIN",
    "END",
    "PLACEHOLDER",
    "has_solutions",
    "make_exercises",
    "strip_notebook",
    "strip_solutions",
]

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
PLACEHOLDER = 'raise NotImplementedError("your code here")'

_NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


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


def make_exercises(
    source_dir: Path | str = _NOTEBOOKS,
    out_dir: Path | str | None = None,
    *,
    force: bool = False,
) -> dict[Path, str]:
    """Write the learner's copy of every notebook in ``source_dir`` with solutions.

    Returns what happened to each copy: ``"written"`` or ``"kept"`` (it existed
    and ``force`` was false).
    """
    source_dir = Path(source_dir)
    out = Path(out_dir) if out_dir is not None else source_dir / "my_work"
    results: dict[Path, str] = {}
    for path in sorted(source_dir.glob("*.ipynb")):
        notebook = json.loads(path.read_text(encoding="utf-8"))
        if not has_solutions(notebook):
            continue
        target = out / path.name
        if target.exists() and not force:
            results[target] = "kept"
            continue
        out.mkdir(parents=True, exist_ok=True)
        text = json.dumps(strip_notebook(notebook), indent=1, ensure_ascii=False)
        target.write_text(text + "\n", encoding="utf-8")
        results[target] = "written"
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m barknet.course.exercise",
        description="Write your own copy of the exercise notebooks, solutions removed.",
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
    args = parser.parse_args(argv)
    results = make_exercises(args.source, args.out, force=args.force)
    if not results:
        print(f"no notebook in {args.source} has solution markers", file=sys.stderr)
        return 1
    for target, what in results.items():
        note = " (exists: pass --force to replace it)" if what == "kept" else ""
        print(f"{what}: {target}{note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
