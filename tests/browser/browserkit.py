"""Helpers shared by the browser tests: notebooks to drive, a JupyterLab process, Chromium.

Theory of operation
-------------------
A JupyterLab started by a test must not depend on, or write to, the user's Jupyter
directories, and must never outlive the test run. So every server runs with config,
runtime, workspace and settings directories inside a temp dir (the settings turn off the
news pop-up, which covers the page, and cell windowing, so every cell is in the DOM and a
screenshot shows the whole notebook), in a process group of its own, and is stopped with
terminate, wait, then kill of whatever is left in the group (kernels included).

This is a plain module, not conftest.py, so test modules can import it (pytest's default
"prepend" import mode puts this folder on sys.path).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# The course notebooks; BARKNET_BROWSER_NOTEBOOKS points the suite at another folder
# (used to try the suite on a throwaway or deliberately broken notebook).
NOTEBOOKS = Path(os.environ.get("BARKNET_BROWSER_NOTEBOOKS", ROOT / "notebooks")).resolve()
ARTIFACTS = ROOT / "artifacts" / "browser"

# JupyterLab user settings: no news/update pop-up, no cell windowing.
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {
        "windowingMode": "none",
    },
}


def missing_browser() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    if not CHROMIUM.exists():
        return f"{CHROMIUM} not found (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright not installed (pip install -e '.[browser]')"
    return None


def _code_sources(path: Path) -> list[str]:
    cells = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
    sources = []
    for cell in cells:
        if cell.get("cell_type") == "code":
            source = cell.get("source", "")
            sources.append("".join(source) if isinstance(source, list) else source)
    return sources


# Code that makes widgets: ipywidgets itself, interact, or a helper such as
# barknet.course.partial_io_widget() (the course's convention: widget makers end in `_widget`).
WIDGET_CODE = re.compile(r"ipywidgets|\binteract|\w_widget\s*\(")


def notebooks_with_widgets(folder: Path = NOTEBOOKS) -> list[Path]:
    """Notebooks whose code makes widgets (WIDGET_CODE): the ones to drive in a browser."""
    found = []
    for path in sorted(folder.glob("*.ipynb")):
        try:
            sources = _code_sources(path)
        except (ValueError, UnicodeDecodeError):
            found.append(path)  # unreadable: let the browser test say so, not collection
            continue
        if any(WIDGET_CODE.search(source) for source in sources):
            found.append(path)
    return found


def strip_outputs(path: Path) -> None:
    """Drop stored outputs, counts and widget state, so all the browser shows is fresh."""
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        return  # JupyterLab will report it when the test opens it
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
    nb.get("metadata", {}).pop("widgets", None)
    path.write_text(json.dumps(nb, indent=1), encoding="utf-8")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def jupyter_env(base: Path) -> dict[str, str]:
    """Environment that keeps every Jupyter directory inside `base` (created here)."""
    settings = base / "lab-settings"
    for name, value in LAB_SETTINGS.items():
        target = settings / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(value), encoding="utf-8")
    env = dict(os.environ)
    env.update(
        JUPYTERLAB_SETTINGS_DIR=str(settings),
        JUPYTERLAB_WORKSPACES_DIR=str(base / "lab-workspaces"),
        JUPYTER_CONFIG_DIR=str(base / "jupyter-config"),
        JUPYTER_RUNTIME_DIR=str(base / "jupyter-runtime"),
        PYTHONUNBUFFERED="1",
    )
    env.pop("JUPYTER_TOKEN", None)
    return env


def root_flag() -> list[str]:
    """jupyter refuses to start as root without --allow-root."""
    return ["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []


def wait_until_answers(
    url: str, token: str, proc: subprocess.Popen, log: Path, timeout: float = 60.0
) -> None:
    """Poll the REST API until the server answers with the token, or fail with its log.

    A server that announces itself on another address (our --port was not passed on, as
    when `make lab` ignores LAB_ARGS) fails at once instead of after the timeout."""
    deadline = time.monotonic() + timeout
    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    origin = url.split("/", 3)[2]  # host:port
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()}")
        announced = re.findall(r"is running at:\s*\n.*?https?://([^/\s]+)/", log.read_text())
        if announced and origin not in announced:
            raise RuntimeError(f"server runs at {announced}, not {origin}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    raise TimeoutError(f"no answer from {url} within {timeout} s:\n{log.read_text()}")


def stop_process_group(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    """terminate, wait, kill: the leader first, then whatever is left in its group."""
    pgid = proc.pid  # started with start_new_session=True: its pid is the group id
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)
    # Kernels and other children share the group; none may survive the run.
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        if time.monotonic() > deadline:
            os.killpg(pgid, signal.SIGKILL)
            deadline = time.monotonic() + timeout
        time.sleep(0.1)


@contextlib.contextmanager
def running_server(
    cmd: list[str],
    *,
    cwd: Path,
    env: dict[str, str],
    port: int,
    token: str,
    log: Path,
    timeout: float = 60.0,
) -> Iterator[str]:
    """Run `cmd` (a JupyterLab on 127.0.0.1:`port`) in its own process group; yield its URL
    once it answers, and stop the whole group afterwards."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        base_url = f"http://127.0.0.1:{port}"
        wait_until_answers(base_url + "/api/status", token, proc, log, timeout)
        yield base_url
    finally:
        stop_process_group(proc)
