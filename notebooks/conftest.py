"""nbval settings for the course notebooks, so the plain command is the whole story.

``pytest --nbval notebooks/``, typed from the repository root in the set-up venv,
behaves exactly like ``make test-notebooks``: pytest loads this file for any
notebook under ``notebooks/`` and it fills in what the Makefile used to pass on
the command line. An option you give yourself wins, except the cell timeout,
which is only lowered from nbval's default (2000 s, half an hour per cell).

* the sanitizer ``sanitize.cfg`` next to this file (ports, timings, object ids);
* the kernel of the venv pytest runs in (``--nbval-current-env``), so the
  notebooks import the barknet you are testing;
* 120 s per cell;
* ``my_work/``, the learner's own copies, is never collected.
"""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SANITIZER = HERE / "sanitize.cfg"
CELL_TIMEOUT = 120
NBVAL_DEFAULT_CELL_TIMEOUT = 2000

collect_ignore = ["my_work"]


def pytest_configure(config: pytest.Config) -> None:
    option = config.option
    if not getattr(option, "nbval_sanitize_with", None):
        option.nbval_sanitize_with = str(SANITIZER)
    option.nbval_current_env = True
    if int(getattr(option, "nbval_cell_timeout", CELL_TIMEOUT)) == NBVAL_DEFAULT_CELL_TIMEOUT:
        option.nbval_cell_timeout = CELL_TIMEOUT
