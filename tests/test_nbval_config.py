"""The command a teacher types, ``pytest --nbval notebooks/``, needs no Makefile.

The sanitizer, the kernel and the cell timeout come from ``notebooks/conftest.py``;
this runs the plain command, from the repository root, on the notebooks whose
output needs the sanitizer (ports, timings) and fails without it.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS_CONFTEST = ROOT / "notebooks" / "conftest.py"

# Each printed a port, an address or a timing that only the sanitizer masks.
NEEDS_SANITIZER = ["00_start_here.ipynb", "02_the_reactor.ipynb"]


def test_plain_pytest_nbval_from_the_root_passes_the_notebooks() -> None:
    pytest.importorskip("nbval")
    pytest.importorskip("ipykernel")
    paths = [f"notebooks/{name}" for name in NEEDS_SANITIZER]
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval", *paths, "-q", "-p", "no:cacheprovider"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "failed" not in result.stdout


def test_the_notebook_settings_fill_in_only_what_was_not_given() -> None:
    spec = importlib.util.spec_from_file_location("notebooks_conftest", NOTEBOOKS_CONFTEST)
    assert spec is not None and spec.loader is not None
    notebooks_conftest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(notebooks_conftest)
    assert Path(notebooks_conftest.SANITIZER).exists()
    assert notebooks_conftest.collect_ignore == ["my_work"]

    class Option:
        nbval_sanitize_with = "mine.cfg"
        nbval_current_env = False
        nbval_cell_timeout = 2000

    class Config:
        option = Option()

    notebooks_conftest.pytest_configure(Config())  # type: ignore[arg-type]
    assert Config.option.nbval_sanitize_with == "mine.cfg"
    assert Config.option.nbval_current_env is True
    assert Config.option.nbval_cell_timeout == 120
