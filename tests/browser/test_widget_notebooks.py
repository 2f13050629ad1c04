"""Every notebook with widgets runs cleanly in JupyterLab and its sliders drive the experiment.

Theory of operation
-------------------
For each notebook whose code makes widgets (ipywidgets, interact, or a `*_widget(...)`
helper such as barknet.course.partial_io_widget; found at collection time, so a new notebook
is covered without editing this file): open a fresh, output-free copy, wait for the kernel
to be idle, Run All Cells from the menu (what a learner does), and wait until every code
cell has an execution count (or Run All stopped at an error). Then no cell may show a
traceback and no widget may say "Error displaying widget"; at least one slider must
render (with the widget extension missing, only their text representation shows).

Then every slider is moved one step with the keyboard, and the experiment must answer:
the text of the widget output belonging to the slider (the `Output`/interact output in
the slider's cell, else any widget output in the notebook) must change and show the
slider's new readout, and a plot drawn there must be redrawn (its image changes). The
readout counts as shown when it appears verbatim, or as a number equal to it within the
readout's precision, also after unit conversion: readout "512 KiB" is matched by
``size=524288 B``, readout "3" by ``clients=3``. Errors in the output fail at once.

A screenshot of the whole notebook after the interaction goes to
artifacts/browser/<notebook>.png (and <notebook>-failed.png when the test fails), with
the page's console log in <notebook>-console.log.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

KERNEL_START_TIMEOUT_MS = 60_000
RUN_ALL_TIMEOUT_MS = 180_000
SLIDER_ANSWER_TIMEOUT_MS = 30_000
NOTEBOOK_CELLS = ".jp-NotebookPanel .jp-Notebook .jp-Cell"

# Shared JavaScript: cell states, error detection and readout matching, run in the page.
JS_HELPERS = r"""
const H = {
  cells() { return [...document.querySelectorAll(__CELLS__)]; },
  // Code cells Run All executes: an empty one is skipped by JupyterLab and keeps "[ ]:".
  runnable(cell) {
    if (!cell.classList.contains('jp-CodeCell')) return false;
    const editor = cell.querySelector('.jp-InputArea-editor .cm-content');
    return !editor || editor.innerText.trim() !== '';
  },
  prompt(cell) {
    const p = cell.querySelector('.jp-InputArea-prompt');
    return p ? p.textContent.trim() : '';
  },
  errors(root) {
    const found = [];
    for (const out of root.querySelectorAll(
        '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')) {
      const text = out.innerText;
      // A traceback, or (SyntaxError) an error line under a "Cell In[..]" location; a
      // plain line on stderr that merely names an error class is a log, not a failure.
      if (/Traceback/.test(text) || (/^\s*\w+(Error|Exception|Interrupt)\b/m.test(text)
          && /Cell In\[|File "/.test(text))) found.push(text);
    }
    for (const out of root.querySelectorAll('.jp-OutputArea-output')) {
      if (out.innerText.includes('Error displaying widget')) found.push(out.innerText);
    }
    return found;
  },
  norm(s) { return s.replace(/[,_\u202f\u00a0]/g, '').replace(/\s+/g, ' ').trim(); },
  // Does the output text show the slider's readout? Either the readout verbatim, or a
  // number equal to it within the readout's precision ("4.1e+03" ~ 4096), also after
  // converting a size unit ("4 KiB" ~ 4096).
  shows(readout, text) {
    const r = H.norm(readout), t = H.norm(text);
    if (!r) return false;
    const m = r.match(/^(-?)(\d+)(?:\.(\d+))?(?:e([-+]?\d+))?\s*(B|KiB|MiB|GiB|kB|KB|MB|GB)?$/);
    if (!m || m[5]) { if (t.includes(r)) return true; }  // a bare number needs a token match
    if (!m) return false;
    const units = {B: 1, KiB: 1024, MiB: 1048576, GiB: 1073741824,
                   kB: 1e3, KB: 1e3, MB: 1e6, GB: 1e9};
    const scale = m[5] ? units[m[5]] : 1;
    const exp = m[4] ? parseInt(m[4], 10) : 0;
    const decimals = m[3] ? m[3].length : 0;
    const mantissa = parseFloat(`${m[2]}.${m[3] || '0'}`) * (m[1] ? -1 : 1);
    const want = mantissa * 10 ** exp;
    const tol = 0.5 * 10 ** (exp - decimals) * (1 + 1e-9);
    const tokens = (t.match(/-?\d+(?:\.\d+)?(?:e[-+]?\d+)?/gi) || []).map(parseFloat);
    return tokens.some(n => Math.abs(n - want) <= tol)
      || (scale !== 1 && tokens.some(n => Math.abs(n - want * scale) <= tol * scale));
  },
  sliders() { return [...document.querySelectorAll('.jp-Notebook .widget-slider')]; },
  outputsFor(slider) {
    const cell = slider.closest('.jp-Cell');
    const own = cell ? [...cell.querySelectorAll('.widget-output')] : [];
    return own.length ? own : [...document.querySelectorAll('.jp-Notebook .widget-output')];
  },
  observe(i) {
    const slider = H.sliders()[i];
    const outs = H.outputsFor(slider);
    const imgs = outs.flatMap(o => [...o.querySelectorAll('img')]).map(img => img.src);
    const readout = slider.querySelector('.widget-readout');
    return {
      readout: readout ? (readout.innerText || readout.value || '').trim() : '',
      text: outs.map(o => o.innerText).join('\n'),
      images: imgs,
    };
  },
};
""".replace("__CELLS__", json.dumps(NOTEBOOK_CELLS))


def _js(body: str) -> str:
    return "(arg) => {" + JS_HELPERS + body + "}"


RUN_FINISHED = _js(
    """
    const code = H.cells().filter(H.runnable);
    const prompts = code.map(H.prompt);
    if (code.length === 0 || prompts.some(p => p.includes('*'))) return false;
    return prompts.every(p => /\\[\\d+\\]/.test(p)) || H.errors(document).length > 0;
    """
)
CELL_REPORT = _js(
    """
    return H.cells().map((c, i) => ({
      index: i,
      code: H.runnable(c),
      prompt: H.prompt(c),
      errors: H.errors(c),
    }));
    """
)
SLIDER_ANSWERED = _js(
    """
    const errors = H.outputsFor(H.sliders()[arg.index]).flatMap(o => H.errors(o));
    if (errors.length) return {errors};  // fail at once, not after the timeout
    const now = H.observe(arg.index);
    if (now.readout === arg.before.readout || now.text === arg.before.text) return false;
    if (!H.shows(now.readout, now.text)) return false;
    if (arg.before.images.length === 0) return {errors: []};
    const redrawn = now.images.length > 0
      && now.images.join('|') !== arg.before.images.join('|');
    return redrawn ? {errors: []} : false;
    """
)
OBSERVE = _js("return H.observe(arg.index);")
# Widget buttons whose label does not fit (the browser clips it: "Run the quick ben...").
CUT_BUTTONS = _js(
    """
    return [...document.querySelectorAll('.jp-Notebook button.jupyter-button')]
      .filter(b => b.scrollWidth > b.clientWidth + 1)
      .map(b => b.innerText.trim());
    """
)
SLIDER_COUNT = _js("return H.sliders().length;")
WIDGET_COUNT = _js("return document.querySelectorAll('.jp-Notebook .jupyter-widgets').length;")
NOTEBOOK_HEIGHT = _js(
    """
    const outer = document.querySelector('.jp-NotebookPanel .jp-WindowedPanel-outer')
      || document.querySelector('.jp-NotebookPanel .jp-Notebook');
    return outer ? outer.scrollHeight : 0;
    """
)


def expected_error_cells(notebook: Path) -> set[int]:
    """Cells allowed to show an error: those tagged as raising on purpose."""
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    allowed = set()
    for i, cell in enumerate(cells):
        tags = cell.get("metadata", {}).get("tags", [])
        if "raises-exception" in tags:
            allowed.add(i)
    return allowed


def open_and_run_all(page, lab, name: str) -> None:
    # A workspace of its own per notebook, reset: only this notebook is open.
    stem = re.sub(r"\W", "-", Path(name).stem)
    page.goto(lab.url(f"/lab/workspaces/t-{stem}/tree/{name}?reset"))
    page.locator(".jp-NotebookPanel .jp-Notebook").first.wait_for(
        state="visible", timeout=KERNEL_START_TIMEOUT_MS
    )
    page.locator("#jp-main-statusbar >> text=Idle").wait_for(timeout=KERNEL_START_TIMEOUT_MS)
    page.locator(".lm-MenuBar-item", has_text="Run").first.click()
    page.locator(".lm-Menu-item:visible", has_text=re.compile(r"^Run All Cells$")).click()
    page.wait_for_function(RUN_FINISHED, arg=None, timeout=RUN_ALL_TIMEOUT_MS, polling=200)
    page.locator("#jp-main-statusbar >> text=Idle").wait_for(timeout=RUN_ALL_TIMEOUT_MS)


def check_cells(page, notebook: Path, when: str) -> None:
    allowed = expected_error_cells(notebook)
    problems = []
    for cell in page.evaluate(CELL_REPORT, None):
        if cell["index"] in allowed:
            continue
        if cell["code"] and not re.search(r"\[\d+\]", cell["prompt"]):
            problems.append(
                f"cell {cell['index']} did not run (prompt {cell['prompt']!r}; Run All stops"
                " at the first error: tag deliberate errors `raises-exception`)"
            )
        problems += [f"cell {cell['index']} shows an error:\n{e}" for e in cell["errors"]]
    assert not problems, f"{notebook.name} {when}:\n" + "\n".join(problems)


def wait_for_widgets(page, notebook: Path) -> int:
    """Wait until the widget views have rendered and their number stopped changing."""
    count, stable_polls = -1, 0
    for _ in range(100):  # ~ 20 s
        now = page.evaluate(WIDGET_COUNT, None)
        stable_polls = stable_polls + 1 if now == count else 0
        count = now
        if count > 0 and stable_polls >= 3:
            break
        page.wait_for_timeout(200)
    assert count > 0, f"{notebook.name}: no widget rendered (widget extension missing or failing?)"
    return count


def move_slider(page, notebook: Path, index: int) -> str:
    """Move slider `index` one step; return its new readout once the experiment answered."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    before = page.evaluate(OBSERVE, {"index": index})
    handle = page.locator(".jp-Notebook .widget-slider").nth(index).locator(".noUi-handle")
    handle = handle.first
    handle.scroll_into_view_if_needed()
    for key in ("ArrowRight", "ArrowLeft"):  # at the maximum, ArrowRight does nothing
        handle.focus()
        handle.press(key)
        try:
            page.wait_for_function(
                _js("return H.observe(arg.index).readout !== arg.readout;"),
                arg={"index": index, "readout": before["readout"]},
                timeout=2_000,
                polling=100,
            )
            break
        except PlaywrightTimeout:  # try the other direction
            continue
    else:
        pytest.fail(f"{notebook.name}: slider {index} did not move (readout {before['readout']})")
    try:
        answer = page.wait_for_function(
            SLIDER_ANSWERED,
            arg={"index": index, "before": before},
            timeout=SLIDER_ANSWER_TIMEOUT_MS,
            polling=200,
        ).json_value()
    except PlaywrightTimeout:
        answer = None  # reported below, with what the page shows
    after = page.evaluate(OBSERVE, {"index": index})
    if answer is None or answer["errors"]:
        pytest.fail(
            f"{notebook.name}: slider {index} moved {before['readout']} -> {after['readout']} "
            "but the experiment did not answer with it"
            + (" (timed out)" if answer is None else "")
            + ".\n"
            + "".join(f"error in its output:\n{e}\n" for e in (answer or {}).get("errors", []))
            + f"output before: {before['text']!r}\noutput after: {after['text']!r}\n"
            f"plots before/after: {len(before['images'])}/{len(after['images'])}, "
            f"changed: {before['images'] != after['images']}",
            pytrace=False,
        )
    return page.evaluate(OBSERVE, {"index": index})["readout"]


def full_screenshot(page, path: Path) -> None:
    height = page.evaluate(NOTEBOOK_HEIGHT, None)
    page.set_viewport_size({"width": 1280, "height": max(900, min(height + 200, 12_000))})
    page.evaluate(
        "() => document.querySelectorAll('.jp-NotebookPanel .jp-WindowedPanel-outer')"
        ".forEach(e => { e.scrollTop = 0; })"
    )
    page.wait_for_timeout(300)  # let the layout settle after the resize
    page.screenshot(path=str(path))


def test_widget_notebook_runs_and_sliders_drive_the_experiment(
    notebook: Path, lab_server, page, artifacts_dir: Path
) -> None:
    """`notebook` is parametrized by conftest.pytest_generate_tests (one per widget notebook)."""
    done_png = artifacts_dir / f"{notebook.stem}.png"
    failed_png = artifacts_dir / f"{notebook.stem}-failed.png"
    for stale in (done_png, failed_png):  # one from an earlier run would mislead
        stale.unlink(missing_ok=True)
    console = []
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
    try:
        open_and_run_all(page, lab_server, notebook.name)
        check_cells(page, notebook, "after Run All")
        wait_for_widgets(page, notebook)
        cut = page.evaluate(CUT_BUTTONS, None)
        assert not cut, f"{notebook.name}: button labels cut off: {cut}"
        sliders = page.evaluate(SLIDER_COUNT, None)
        assert sliders > 0, f"{notebook.name}: it makes widgets but no slider rendered"
        for index in range(sliders):
            move_slider(page, notebook, index)
        check_cells(page, notebook, "after moving the sliders")
        full_screenshot(page, done_png)
    except BaseException:
        page.screenshot(path=str(failed_png))
        raise
    finally:
        (artifacts_dir / f"{notebook.stem}-console.log").write_text(
            "\n".join(console) + "\n", encoding="utf-8"
        )
