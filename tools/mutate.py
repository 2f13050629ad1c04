"""A small mutation pass over barknet's core: do the tests notice when the code is wrong?

    .venv/bin/python tools/mutate.py [--per-module N] [--seed S] [--jobs J] [MODULE ...]

Theory of operation
-------------------
A mutant is the package with one small, plausible bug planted: a comparison
turned round (``<`` for ``<=``), a condition negated, a constant off by one, a
call or an assignment left out, a ``return`` that returns early. The pass picks
mutants at random (seeded, so a run can be repeated), copies the package and its tests
into a temporary folder with the mutant planted, and runs the unit tests there
(the working directory, and ``PYTHONPATH``, put the copy ahead of the editable
install). A mutant the tests
fail on is *killed*; one they pass is a *survivor*: a bug the suite cannot see.
A hang counts as killed only because pytest-timeout turns it into a failure
with the test's name.

The score is killed / (killed + survived). Each survivor is printed with its
file, line and change, to be read: either a test is missing, or the change is
equivalent (it does not change behaviour) and says so.
"""

from __future__ import annotations

import argparse
import ast
import os
import random
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORE = ["reactor.py", "tcp.py", "framing.py", "framed.py", "compress.py", "layer.py"]
#: Tests that exercise the core; slow course, bench and notebook tests are left out.
TESTS = ["tests", "-x", "-q", "-p", "no:cacheprovider", "--timeout=60", "-m", "not slow"]
SKIP_TESTS = [
    "test_lab.py",
    "test_bench.py",
    "test_bench_tls.py",
    "test_exercise.py",
    "test_notebooks.py",
    "test_packaging.py",
    "test_tls.py",
    "test_tls_lab.py",
    "test_cli.py",
    "test_serve_hostile.py",
]

_SWAP = {
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
}
_OPS = {
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
    ast.Eq: "==",
    ast.NotEq: "!=",
    ast.Is: "is",
    ast.IsNot: "is not",
    ast.In: "in",
    ast.NotIn: "not in",
}


@dataclass(frozen=True)
class Mutant:
    module: str
    line: int
    col: int
    end_line: int
    end_col: int
    replacement: str
    what: str

    def apply(self, source: str) -> str:
        lines = source.splitlines(keepends=True)
        start = sum(len(x) for x in lines[: self.line - 1]) + _byte_to_char(
            lines[self.line - 1], self.col
        )
        end = sum(len(x) for x in lines[: self.end_line - 1]) + _byte_to_char(
            lines[self.end_line - 1], self.end_col
        )
        return source[:start] + self.replacement + source[end:]


def _byte_to_char(line: str, col: int) -> int:
    return len(line.encode()[:col].decode(errors="ignore"))


def _in_docstring_or_repr(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.FunctionDef) and node.name in ("__repr__", "__str__"):
            return True
    return False


def mutants_of(module: str) -> Iterator[Mutant]:
    """Every mutation point of one core module."""
    source = (ROOT / "barknet" / module).read_text()
    tree = ast.parse(source)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}

    def seg(node: ast.AST) -> str:
        return ast.get_source_segment(source, node) or ""

    for node in ast.walk(tree):
        if _in_docstring_or_repr(node, parents):
            continue
        where = getattr(node, "lineno", 0)
        if isinstance(node, ast.Compare) and len(node.ops) == 1:
            op = type(node.ops[0])
            if op in _SWAP:
                new = f"{seg(node.left)} {_OPS[_SWAP[op]]} {seg(node.comparators[0])}"
                yield _at(module, node, new, f"{_OPS[op]} -> {_OPS[_SWAP[op]]}")
        elif isinstance(node, ast.If) and not isinstance(node.test, ast.Constant):
            text = seg(node.test)
            yield _at(module, node.test, f"not ({text})", f"if {text[:40]} -> if not")
        elif isinstance(node, ast.BoolOp) and len(node.values) == 2:
            other = "or" if isinstance(node.op, ast.And) else "and"
            new = f"({seg(node.values[0])}) {other} ({seg(node.values[1])})"
            yield _at(module, node, new, f"{'and' if other == 'or' else 'or'} -> {other}")
        elif (
            isinstance(node, ast.Constant)
            and type(node.value) is int
            and not isinstance(parents.get(node), ast.Subscript)
        ):
            yield _at(module, node, str(node.value + 1), f"{node.value} -> {node.value + 1}")
        elif isinstance(node, ast.Constant) and type(node.value) is bool:
            yield _at(module, node, str(not node.value), f"{node.value} -> {not node.value}")
        elif isinstance(node, (ast.Expr, ast.Assign, ast.AugAssign)):
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
                continue  # a docstring
            yield _at(module, node, "pass", f"drop `{seg(node).splitlines()[0][:50]}`")
        elif isinstance(node, ast.Return) and node.value is not None and where:
            if isinstance(node.value, ast.Constant) and node.value.value is None:
                continue
            yield _at(module, node.value, "None", f"return {seg(node.value)[:40]} -> None")


def _at(module: str, node: ast.AST, replacement: str, what: str) -> Mutant:
    return Mutant(
        module,
        node.lineno,  # type: ignore[attr-defined]
        node.col_offset,  # type: ignore[attr-defined]
        node.end_lineno,  # type: ignore[attr-defined]
        node.end_col_offset,  # type: ignore[attr-defined]
        replacement,
        what,
    )


def run_one(mutant: Mutant) -> bool:
    """True if the tests kill ``mutant``."""
    with tempfile.TemporaryDirectory(prefix="barknet-mutant-") as tmp:
        package = Path(tmp) / "barknet"
        shutil.copytree(ROOT / "barknet", package, ignore=shutil.ignore_patterns("__pycache__"))
        # The tests run from the copy: ``python -m`` puts the working directory first
        # on sys.path, so run anywhere else and the unmutated package would be tested.
        shutil.copytree(
            ROOT / "tests", Path(tmp) / "tests", ignore=shutil.ignore_patterns("__pycache__")
        )
        shutil.copy(ROOT / "pyproject.toml", tmp)
        target = package / mutant.module
        mutated = mutant.apply(target.read_text())
        try:
            ast.parse(mutated)
        except SyntaxError:
            return True  # not a program: it cannot pass
        target.write_text(mutated)
        env = {**os.environ, "PYTHONPATH": tmp, "PYTHONDONTWRITEBYTECODE": "1"}
        ignores = [f"--ignore=tests/{name}" for name in SKIP_TESTS]
        done = subprocess.run(
            [sys.executable, "-m", "pytest", *TESTS, *ignores, "--ignore=tests/browser"],
            cwd=tmp,
            env=env,
            capture_output=True,
            timeout=900,
        )
        return done.returncode != 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tools/mutate.py")
    parser.add_argument("modules", nargs="*", default=CORE)
    parser.add_argument("--per-module", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    chosen: list[Mutant] = []
    for module in args.modules:
        points = list(mutants_of(module))
        chosen += rng.sample(points, min(args.per_module, len(points)))
    print(f"{len(chosen)} mutants over {', '.join(args.modules)} (seed {args.seed})", flush=True)
    survivors: list[Mutant] = []
    with ThreadPoolExecutor(args.jobs) as pool:
        for mutant, killed in zip(chosen, pool.map(run_one, chosen), strict=True):
            mark = "killed  " if killed else "SURVIVED"
            print(f"  {mark} {mutant.module}:{mutant.line}  {mutant.what}", flush=True)
            if not killed:
                survivors.append(mutant)
    killed = len(chosen) - len(survivors)
    print(f"score: {killed}/{len(chosen)} killed ({100 * killed / max(1, len(chosen)):.0f} %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
