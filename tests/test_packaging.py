"""Packaging invariants: the package is stdlib-only and the two dependency lists agree."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 gets the backport from the `test` extra
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "barknet"

# The library is every module directly in barknet/. The subpackages serve it: testing
# tools, the notebooks' experiments, the benchmark. They may import third-party modules
# (matplotlib, ipywidgets, IPython, uvloop, twisted) inside functions only, so that
# importing them still works with the standard library alone.
SERVING_SUBPACKAGES = {"testing", "course", "bench"}
ALLOWED_TOP_LEVEL = set(sys.stdlib_module_names) | {"barknet"}


def _pyproject() -> dict:
    with (ROOT / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)


def _normalize(requirement: str) -> str:
    """Project name of a PEP 508 / conda requirement, PEP 503-normalized."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert match, f"cannot parse requirement {requirement!r}"
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def _conda_dependencies(text: str) -> list[str]:
    """Top-level entries of `dependencies:` in environment.yml (no PyYAML needed).

    Nested lists (the `- pip:` block) are skipped; only plain `- name` items count.
    """
    deps: list[str] = []
    in_deps = False
    item_indent: int | None = None
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        if indent == 0:
            in_deps = line == "dependencies:"
            continue
        if not in_deps:
            continue
        stripped = line.strip()
        if not stripped.startswith("- "):
            continue
        if item_indent is None:
            item_indent = indent
        if indent != item_indent:
            continue  # entries of the nested pip: list
        value = stripped[2:].strip()
        if value.endswith(":"):
            continue  # `- pip:` sub-section header
        deps.append(value)
    return deps


def test_environment_yml_matches_test_and_notebook_extras() -> None:
    extras = _pyproject()["project"]["optional-dependencies"]
    wanted = {_normalize(r) for r in extras["test"] + extras["notebooks"]}

    conda = _conda_dependencies((ROOT / "environment.yml").read_text(encoding="utf-8"))
    got = {_normalize(d) for d in conda} - {"python", "pip"}

    assert got == wanted, (
        f"only in environment.yml: {sorted(got - wanted)}; "
        f"only in pyproject extras: {sorted(wanted - got)}"
    )


def test_environment_yml_installs_the_package() -> None:
    text = (ROOT / "environment.yml").read_text(encoding="utf-8")
    assert re.search(r"^\s*- pip:\s*$", text, re.MULTILINE)
    assert re.search(r"^\s*- -e \.\s*$", text, re.MULTILINE)


def test_core_package_has_no_runtime_dependencies() -> None:
    project = _pyproject()["project"]
    assert project.get("dependencies", []) == []
    assert "dependencies" not in project.get("dynamic", [])


def test_installed_metadata_has_no_unconditional_requirements() -> None:
    from importlib import metadata

    try:
        requires = metadata.requires("barknet") or []
    except metadata.PackageNotFoundError:
        pytest.skip("barknet is not installed (run `make test`)")
    unconditional = [r for r in requires if "extra ==" not in r]
    assert unconditional == []


class _ImportCollector(ast.NodeVisitor):
    """Collects top-level module names of absolute imports.

    With ``module_level_only`` it does not look inside function bodies (code there runs
    only when called). Imports under ``if TYPE_CHECKING:`` never run and are skipped.
    """

    def __init__(self, module_level_only: bool) -> None:
        self.module_level_only = module_level_only
        self.found: list[tuple[int, str]] = []

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.found.append((node.lineno, alias.name.split(".")[0]))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level == 0 and node.module:
            self.found.append((node.lineno, node.module.split(".")[0]))

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", None)
        if name == "TYPE_CHECKING":
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def _visit_function(self, node: ast.AST) -> None:
        if self.module_level_only:
            # Decorators and default values still run at import time.
            for child in [*node.decorator_list, node.args]:
                self.visit(child)
            return
        self.generic_visit(node)

    visit_FunctionDef = _visit_function
    visit_AsyncFunctionDef = _visit_function

    def visit_Lambda(self, node: ast.Lambda) -> None:
        if not self.module_level_only:
            self.generic_visit(node)


def _package_modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _library_modules() -> list[Path]:
    return sorted(PACKAGE.glob("*.py"))


def test_the_tree_shows_library_testing_course_and_bench() -> None:
    subpackages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert subpackages == SERVING_SUBPACKAGES
    assert {p.name for p in _library_modules()} >= {
        "reactor.py",
        "tcp.py",
        "framing.py",
        "framed.py",
        "interfaces.py",
        "events.py",
    }


@pytest.mark.parametrize("path", _library_modules(), ids=lambda p: p.name)
def test_library_never_imports_the_serving_subpackages(path: Path) -> None:
    """The library must stand alone: a learner reading barknet/ never meets course code."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            parts = module.split(".")
            if node.level == 1 and parts[0] in SERVING_SUBPACKAGES:
                bad.append(f"line {node.lineno}: from .{module}")
            if node.level == 1 and not module:
                names = {a.name for a in node.names}
                bad += [
                    f"line {node.lineno}: from . import {n}" for n in names & SERVING_SUBPACKAGES
                ]
            absolute = node.level == 0 and parts[0] == "barknet" and len(parts) > 1
            if absolute and parts[1] in SERVING_SUBPACKAGES:
                bad.append(f"line {node.lineno}: from {module}")
    if path.name == "cli.py":  # the command line may start the benchmark, lazily
        bad = [b for b in bad if "bench" not in b]
    assert not bad, f"{path.name} imports a serving subpackage: {bad}"


@pytest.mark.parametrize(
    "path",
    _package_modules(),
    ids=lambda p: p.relative_to(ROOT).as_posix(),
)
def test_module_imports_only_stdlib(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    helper = path.parent.name in SERVING_SUBPACKAGES
    collector = _ImportCollector(module_level_only=helper)
    collector.visit(tree)
    bad = [
        f"line {line}: {name}" for line, name in collector.found if name not in ALLOWED_TOP_LEVEL
    ]
    where = "at module level" if helper else "anywhere"
    assert not bad, f"{path.name} imports non-stdlib modules {where}: {bad}"


#: Modules allowed to run past about 600 lines, and why: each is one transport (one
#: class and its per-peer state) that a learner reads top to bottom, and cutting it
#: would scatter one state machine over two files. Anything else that grows past
#: the limit is split where its jobs part (as conformance.py was into checks.py,
#: conformance.py and contract.py), or joins this list with its reason.
LONG_MODULES = {
    "barknet/framed.py": (
        "FramedTransport: its reads, writes, water marks, close and half-close all act on "
        "one peer's state (the state classes are in framed_state.py, the codec in framing.py)"
    ),
    "barknet/tls.py": "TlsTransport: handshake, records both ways, close_notify",
    "barknet/course/hostile.py": (
        "notebook 08's cases, one function each with the report it prints (the slow "
        "reader's watches your reader to say what its stops did); split, a case's report "
        "would sit away from the experiment it describes"
    ),
    "barknet/framing.py": (
        "the sans-I/O codec's header, limits and FrameDecoder, one state machine over the "
        "scratch, the body and plain reads, under the theory notebook 04 cites (the sending "
        "half is frame_queue.py)"
    ),
    "barknet/tcp.py": (
        "TcpTransport: connect, accept and its errors, reads, writes, the lingering close "
        "and a broken peer's last turn, each on the one per-socket state (_Conn)"
    ),
}
ABOUT_600 = 630


def test_no_module_runs_past_about_600_lines_unless_it_says_why() -> None:
    lengths = {
        p.relative_to(ROOT).as_posix(): len(p.read_text(encoding="utf-8").splitlines())
        for p in _package_modules()
    }
    too_long = {name: n for name, n in lengths.items() if n > ABOUT_600}
    assert set(too_long) <= set(LONG_MODULES), (
        f"over {ABOUT_600} lines without a reason in LONG_MODULES: "
        f"{ {n: v for n, v in too_long.items() if n not in LONG_MODULES} }"
    )


def test_the_readme_names_every_library_module_in_its_package_table() -> None:
    """The README's "The package" table says what each module of barknet/ is: a
    module split off another (as frame_queue.py from framing.py) is named there too."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index("## The package")
    table = readme[start : readme.index("\n\n", readme.index("| module |", start))]
    missing = [
        p.name
        for p in _library_modules()
        if p.name not in {"__init__.py", "__main__.py"} and f"{p.name}`" not in table
    ]
    assert not missing, f"README's package table leaves out {missing}"


def test_the_readmes_conda_commands_are_what_the_make_targets_run() -> None:
    """Conda users run by hand what ``make lab``, ``make test`` and ``make
    exercises`` run in ``.venv``: the README's commands must stay those."""
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    lab = "--notebook-dir=notebooks --ServerApp.ip=127.0.0.1"
    assert lab in " ".join(makefile.split()) and f"`jupyter lab {lab}`" in readme
    nbval = re.search(r"^NBVAL_FLAGS := (.+)$", makefile, re.M)
    assert nbval is not None
    assert f"`python -m pytest {nbval.group(1)} notebooks/`" in readme
    assert "$(PY) -m pytest tests\n" in makefile and "`python -m pytest tests`" in readme
    exercise = re.search(r"^exercises:.*\n\t\$\(PY\) -m (\S+)", makefile, re.M)
    assert exercise is not None and f"`python -m {exercise.group(1)}`" in readme
