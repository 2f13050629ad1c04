"""Fixtures for the JupyterLab end-to-end tests: a private JupyterLab server and Chromium.

Theory of operation
-------------------
nbval cannot see widgets (their outputs are ignored), so these tests drive the same
JupyterLab a learner uses, in Debian's headless Chromium through Python Playwright.

* Gate. The tests run only when the pytest command line names ``tests/browser`` (that is
  what ``make test-browser`` does). A plain ``pytest tests`` (``make test``) leaves them out
  and says so in one line, because each notebook costs ~10 s and ``.ci/run`` runs them
  separately. When they are asked for but Chromium or Playwright is missing they skip,
  except under ``CI=true``, where a missing browser is a failure: CI must look.
* Server. One JupyterLab per session on 127.0.0.1, a free port and a random token, serving
  a temporary *copy* of the notebooks with their stored outputs removed (JupyterLab
  autosaves whatever it opens, the committed outputs belong to nbval, and what the browser
  then shows can only come from this run). browserkit.py keeps it off the user's Jupyter
  directories and stops it, kernels included.
* Notebooks. One test per notebook whose code mentions ipywidgets/interact, found anew at
  every collection, so a new widget notebook is covered without editing the tests.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from browserkit import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    NOTEBOOKS,
    free_port,
    jupyter_env,
    missing_browser,
    notebooks_with_widgets,
    root_flag,
    running_server,
    strip_outputs,
)

HERE = Path(__file__).resolve().parent
_LEFT_OUT = pytest.StashKey[int]()


def _browser_tests_requested(config: pytest.Config) -> bool:
    """True when a command-line path points into tests/browser (as `make test-browser` does)."""
    for arg in config.args:
        path = Path(config.invocation_params.dir, arg.split("::", 1)[0]).resolve()
        if path == HERE or HERE in path.parents:
            return True
    return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Outside `make test-browser` (e.g. `pytest tests`), leave the browser tests out."""
    if _browser_tests_requested(config):
        return
    ours = [item for item in items if HERE in item.path.parents]
    if ours:
        items[:] = [item for item in items if HERE not in item.path.parents]
        config.hook.pytest_deselected(items=ours)
        config.stash[_LEFT_OUT] = len(ours)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    left_out = config.stash.get(_LEFT_OUT, 0)
    if left_out:
        terminalreporter.write_line(
            f"{left_out} browser tests not run: they run via `make test-browser`"
            " (JupyterLab in headless chromium)"
        )


@pytest.fixture(scope="session", autouse=True)
def _browser_gate() -> None:
    """Asked for but impossible here: skip, or under CI=true fail (CI must look)."""
    missing = missing_browser()
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and the browser tests cannot run: {missing}", pytrace=False)
        pytest.skip(f"browser tests need a browser: {missing}")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """One test per notebook with widgets, found anew at each collection."""
    if "notebook" in metafunc.fixturenames:
        found = notebooks_with_widgets()
        params = [pytest.param(p, id=p.stem) for p in found] or [
            pytest.param(
                None, marks=pytest.mark.skip(reason=f"no notebook with widgets in {NOTEBOOKS}")
            )
        ]
        metafunc.parametrize("notebook", params)


@dataclass(frozen=True)
class LabServer:
    base_url: str
    token: str
    root: Path  # the served folder (a copy of the notebooks)

    def url(self, path: str) -> str:
        sep = "&" if "?" in path else "?"
        return f"{self.base_url}{path}{sep}token={self.token}"


@pytest.fixture(scope="session")
def lab_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabServer]:
    """JupyterLab on 127.0.0.1 serving an output-free temporary copy of the notebooks."""
    base = tmp_path_factory.mktemp("lab")
    served = base / "notebooks"
    shutil.copytree(NOTEBOOKS, served, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    for path in served.glob("*.ipynb"):
        strip_outputs(path)
    port, token = free_port(), secrets.token_hex(16)
    cmd = [
        sys.executable, "-m", "jupyterlab",
        f"--ServerApp.root_dir={served}",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        "--no-browser",
        *root_flag(),
    ]  # fmt: skip
    with running_server(
        cmd, cwd=served, env=jupyter_env(base), port=port, token=token,
        log=base / "jupyterlab.log",
    ) as base_url:  # fmt: skip
        yield LabServer(base_url, token, served)


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser) -> Iterator[object]:
    """A fresh browser context per test: no cookies, storage or open tabs carried over."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
