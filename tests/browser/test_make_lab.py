"""`make lab` starts a JupyterLab whose file browser lists every course notebook.

Theory of operation
-------------------
This runs the very command a learner types, `make lab`, with LAB_ARGS adding a free port,
a token and --no-browser, in a process group of its own (make, then jupyter under it) and
with every Jupyter directory in a temp dir. Once the server answers with the token, a
headless Chromium opens /lab and reads the names in the file browser: every
notebooks/*.ipynb must be among them. The whole process group is then stopped.
"""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path

import pytest
from browserkit import ROOT, free_port, jupyter_env, running_server

pytestmark = pytest.mark.browser


def test_make_lab_serves_every_course_notebook(tmp_path: Path, page) -> None:
    make = shutil.which("make")
    assert make, "make not found"
    course = sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
    port, token = free_port(), secrets.token_hex(16)
    lab_args = (
        f"--port={port} --ServerApp.port_retries=0 --IdentityProvider.token={token} --no-browser"
    )
    env = jupyter_env(tmp_path)
    for name in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS"):  # a fresh make, as a learner runs it
        env.pop(name, None)
    env.pop("JUPYTERLAB_SETTINGS_DIR", None)  # `make lab` must turn the news off itself
    cmd = [make, "--no-print-directory", "lab", f"LAB_ARGS={lab_args}"]
    # Generous timeout: `make lab` first re-installs the venv if pyproject.toml changed.
    with running_server(
        cmd, cwd=ROOT, env=env, port=port, token=token, log=tmp_path / "make-lab.log",
        timeout=180.0,
    ) as base_url:  # fmt: skip
        page.goto(f"{base_url}/lab/workspaces/make-lab?reset&token={token}")
        page.locator(".jp-FileBrowser .jp-DirListing-content").wait_for(timeout=60_000)
        if course:
            page.locator(".jp-DirListing-item", has_text=course[-1]).first.wait_for(timeout=30_000)
        items = page.locator(".jp-FileBrowser .jp-DirListing-item .jp-DirListing-itemText")
        shown = {text.strip() for text in items.all_inner_texts()}
        page.wait_for_timeout(3000)  # the news question, when asked, pops up within a second
        news = page.locator(".Toastify__toast", has_text="news").count()
    assert news == 0, "`make lab` showed JupyterLab's news pop-up over the notebook"
    missing = [name for name in course if name not in shown]
    assert not missing, f"`make lab` file browser lacks {missing}; it shows {sorted(shown)}"
