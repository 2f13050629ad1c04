"""`make lab` and `make setup` talk to a beginner: no pop-ups, no warnings that read as errors.

What is silenced is named exactly, so that real errors still print.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAKEFILE = (ROOT / "Makefile").read_text(encoding="utf-8")


def test_every_editable_install_silences_only_setuptools_editable_warning() -> None:
    assert "PIP_INSTALL :=" in MAKEFILE
    recipes = [line for line in MAKEFILE.splitlines() if line.startswith("\t") and "-e '." in line]
    assert recipes and all("$(PIP_INSTALL)" in line for line in recipes), recipes
    definition = MAKEFILE[MAKEFILE.index("PIP_INSTALL :=") :].split("\n\n")[0]
    (spec,) = re.findall(r"PYTHONWARNINGS='([^']*)'", definition)
    assert spec == "ignore:Editable installation"  # a message filter, not a category
    assert "2>" not in definition and "/dev/null" not in definition  # errors still print


def test_the_filter_hides_that_warning_and_no_other() -> None:
    action, message = "ignore", "Editable installation"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.filterwarnings(action, message=message)
        warnings.warn("Editable installation.\n!!\n  Please be careful...", UserWarning, 2)
        warnings.warn("Something else went wrong", UserWarning, 2)
    assert [str(w.message) for w in caught] == ["Something else went wrong"]


def test_make_lab_runs_jupyterlab_with_the_news_turned_off() -> None:
    lab = MAKEFILE[MAKEFILE.index("\nlab:") :].split("\n\n")[0]
    assert "JUPYTERLAB_SETTINGS_DIR=$(abspath $(LAB_SETTINGS))" in lab
    assert "$(LAB_QUIET)" in lab.splitlines()[1]  # a prerequisite: written before the start
    rule = MAKEFILE[MAKEFILE.index("$(LAB_QUIET): ") :].split("\n\n")[0]
    assert '{"fetchNews": "false", "checkForUpdates": false}' in rule
