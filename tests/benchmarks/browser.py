"""Browser workloads: JupyterLab in Debian's chromium (Playwright), ours vs jupyter-collaboration.

Each system runs as people use it: a JupyterLab server (ours: kernel_collab's extension, the
notebook on "Python 3 (collaborative)"; theirs: jupyter-collaboration 5 from its own venv, the
notebook on "Python 3") and pages in one headless chromium.

- **open** (same trigger for both): in an already loaded JupyterLab page, time from
  ``docmanager:open`` of a 1,000-cell notebook to its document being synced (the document
  context is ready: both providers resolve it once the room's state is in) and to the first
  cell being editable (a ``contenteditable`` CodeMirror in the DOM). The first open is cold
  (ours starts the kernel and its sidecar before syncing; theirs loads the file into a room
  and starts the kernel beside it); the tab is then closed (once its kernel is connected) and
  the notebook reopened (warm: both keep the room).
- **keystroke**: two people on a 10-cell notebook; one types single characters into the first
  cell, the other's page times each one's arrival in its editor's DOM (a MutationObserver).
  Both pages share the machine's clock (``performance.timeOrigin + now()``), so keydown →
  arrival is measured across pages, one keystroke at a time (the first cell's text is
  ``x = 0``; the typed key is a digit it does not contain).
- **keystroke, 1,000 cells**: the same on the 1,000-cell notebook of the open rows, in two new
  pages once both have every cell's editor (JupyterLab's default windowing, contentVisibility,
  renders them all on idle: ~25 s for the two pages on 2 cores, untimed, recorded as
  ``info.browser.rendered_1000_s``). The typist's caret is published in awareness as in real
  use (JupyterLab's editor, a Yjs relative position) and drawn by the other page in its first
  cell (checked). Typing alone does not change it: a relative position names the character
  after the caret (or the text's end), which stays the same while one types before it, so the
  other page gets no caret change per key (counted: ``info.browser.caret_changes``).
- **keystroke, 1,000 cells, caret moved**: in the same pages, the typist presses ← before each
  key, so the caret moves in awareness at every key (checked: at least one change per key at
  the other page) and each change there goes through the caret plugin of every editor
  (theirs: one per editor) or of the editors it concerns (ours: one hub per notebook). Timed
  as before: the typed key's keydown → its arrival.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
from playwright.sync_api import Page, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.jupyter_server_process import JupyterServer, running_server

from .systems import JupyterCollaboration, System
from .workloads import Context, Recorder

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--disable-quic",
    "--no-first-run", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--disable-renderer-backgrounding",
    "--disable-background-timer-throttling", "--disable-backgrounding-occluded-windows",
]  # fmt: skip
OPEN_CELLS = 1_000
TYPE_CELLS = 10

OPEN_JS = """async (path) => {
  const app = window.jupyterapp;
  const t0 = performance.now();
  const widget = await app.commands.execute('docmanager:open', {path, factory: 'Notebook'});
  await widget.context.ready;
  const synced = performance.now() - t0;
  await new Promise(resolve => {
    const check = () => widget.node.querySelector('.jp-Cell .cm-content[contenteditable="true"]')
      ? resolve() : requestAnimationFrame(check);
    check();
  });
  const editable = performance.now() - t0;
  const cells = widget.content.model.cells.length;
  // Closed once its kernel is connected, as a person's tab would be: closed at once, the tab's
  // kernel connection was still being made during the next open, and timed with it.
  await widget.context.sessionContext.ready;
  widget.dispose();
  return {synced, editable, cells};
}"""

# The typed key is a "7": the cell's text has none, and collaborators' caret labels (inside
# the editor's DOM, with both systems) are names without digits.
KEY = "7"
WATCH_JS = """() => {
  window.__arrivals = [];
  const node = document.querySelector('.jp-Notebook .jp-Cell .cm-content');
  const count = () => node.textContent.split('7').length - 1;
  let last = count();
  new MutationObserver(() => {
    const now = performance.timeOrigin + performance.now();
    const seen = count();
    for (; last < seen; last++) window.__arrivals.push(now);
  }).observe(node, {subtree: true, childList: true, characterData: true});
}"""

SEND_JS = """() => {
  window.__sent = [];
  document.addEventListener('keydown', event => {
    if (event.key === '7') window.__sent.push(performance.timeOrigin + performance.now());
  }, true);
}"""

# A notebook opened in a typing page: synced, its kernel connected (its start is over before
# any key is timed); then every cell's editor rendered, as JupyterLab's settings do it.
OPEN_TAB_JS = """async (path) => {
  const widget = await window.jupyterapp.commands.execute(
    'docmanager:open', {path, factory: 'Notebook'});
  await widget.context.ready;
  await widget.context.sessionContext.ready;
  return widget.content.model.cells.length;
}"""
RENDERED_JS = """(cells) => document.querySelectorAll(
  '.jp-Notebook .jp-Cell .cm-editor').length >= cells"""

# The other people's carets the watching page has received in awareness (both systems: the
# ``cursors`` field, Yjs relative positions) and the carets it draws in the first cell (ours:
# ``.kc-remote-caret``, theirs: ``.jp-remote-cursor``).
CARETS_JS = """() => {
  window.__caretUpdates = 0;
  const awareness = window.jupyterapp.shell.currentWidget.context.model.sharedModel.awareness;
  awareness.on('change', ({added, updated}) => {
    for (const id of [...added, ...updated]) {
      if (id !== awareness.clientID && Array.isArray(awareness.getStates().get(id)?.cursors)) {
        window.__caretUpdates++;
      }
    }
  });
}"""
CARET_DRAWN_JS = """() => document.querySelector('.jp-Notebook .jp-Cell')
  .querySelectorAll('.kc-remote-caret, .jp-remote-cursor').length > 0"""


def write_notebook(path: Path, cells: int, kernel: str) -> Path:
    """A notebook of ``cells`` short code cells on kernelspec ``kernel``."""
    nb = {
        "cells": [{"cell_type": "code", "id": f"c{i}", "metadata": {}, "outputs": [],
                   "execution_count": None, "source": f"x = {i}"}
                  for i in range(cells)],
        "metadata": {"kernelspec": {"name": kernel, "display_name": kernel,
                                    "language": "python"}},
        "nbformat": 4, "nbformat_minor": 5,
    }  # fmt: skip
    path.write_text(json.dumps(nb))
    return path


@contextmanager
def lab_server(system: System, base: Path) -> Iterator[JupyterServer]:
    """The system's JupyterLab server on a fresh root under ``base``."""
    root, runtime, config = base / "root", base / "runtime", base / "config"
    settings = config / "lab" / "user-settings" / "@jupyterlab" / "apputils-extension"
    for folder in (root, runtime, settings):
        folder.mkdir(parents=True, exist_ok=True)
    (settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    env = {"JUPYTER_CONFIG_DIR": str(config),
           "JUPYTERLAB_SETTINGS_DIR": str(config / "lab" / "user-settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(config / "lab" / "workspaces")}
    # jupyter-collaboration's store (installed beside ours too) out of the working directory.
    args = ["--LabApp.expose_app_in_browser=True", f"--SQLiteYStore.db_path={base / 'ystore.db'}"]
    command = None
    if isinstance(system, JupyterCollaboration):
        command = [str(system.venv / "bin" / "jupyter-server")]
        env["PYTHONPATH"] = ""  # nothing of ours in their server
    with running_server(root, runtime, *args, env=env, command=command) as server:
        yield server


def _lab_page(browser: Any, server: JupyterServer) -> Page:
    page: Page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    page.goto(f"{server.url}/lab?reset&token={server.token}")
    page.wait_for_function("() => window.jupyterapp && window.jupyterapp.started", timeout=60_000)
    page.evaluate("() => window.jupyterapp.restored")
    return page


def _open(page: Page, path: str) -> dict[str, float]:
    result: dict[str, float] = page.evaluate(OPEN_JS, path)
    if result["cells"] != OPEN_CELLS:
        raise RuntimeError(f"opened {result['cells']} cells of {OPEN_CELLS}")
    return result


@contextmanager
def _two_people(browser: Any, server: JupyterServer, path: str,
                cells: int) -> Iterator[tuple[Page, Page, float]]:
    """Two people on ``path`` (``cells`` cells), each in a page of their own, once both pages
    have every cell's editor: the typist with its caret at the end of the first cell, the
    watcher stamping each ``KEY`` arriving there. Yields them and the seconds from the open
    to every editor rendered in both."""
    typist, watcher = _lab_page(browser, server), _lab_page(browser, server)
    try:
        t0 = time.monotonic()
        for p in (typist, watcher):  # both open at once: rendered side by side
            p.evaluate("(path) => { window.__opened = null; "
                       f"({OPEN_TAB_JS})(path).then(n => {{ window.__opened = n; }}); }}", path)
        for p in (typist, watcher):
            p.wait_for_function("() => window.__opened !== null", timeout=120_000)
            opened = p.evaluate("() => window.__opened")
            if opened != cells:
                raise RuntimeError(f"{path}: opened {opened} cells of {cells}")
            p.wait_for_function(RENDERED_JS, arg=cells, polling=250, timeout=180_000)
        rendered = time.monotonic() - t0
        watcher.evaluate(WATCH_JS)
        watcher.evaluate(CARETS_JS)
        typist.evaluate(SEND_JS)
        typist.locator(".jp-Notebook .jp-Cell .cm-content").first.click()
        typist.keyboard.press("End")
        yield typist, watcher, rendered
    finally:
        typist.context.close()
        watcher.context.close()


def _type(typist: Page, watcher: Page, keys: int, warmup: int,
          move: str | None = None) -> tuple[list[float], int]:
    """The typist presses ``KEY`` ``warmup + keys`` times, one at a time (the next once the
    watcher has the last), each right after ``move`` (a key moving the caret) if given.
    Returns keydown → arrival at the watcher of the last ``keys`` (seconds) and how many
    changes of the typist's caret the watcher received meanwhile. Raises if the watcher does
    not draw the typist's caret."""
    arrived0: int = watcher.evaluate("() => window.__arrivals.length")
    sent0: int = typist.evaluate("() => window.__sent.length")
    carets0: int = watcher.evaluate("() => window.__caretUpdates")
    for i in range(warmup + keys):
        if move:
            typist.keyboard.press(move)
        typist.keyboard.press(KEY)
        watcher.wait_for_function(f"() => window.__arrivals.length > {arrived0 + i}",
                                  timeout=30_000)
    sent = typist.evaluate("() => window.__sent")[sent0:]
    arrived = watcher.evaluate("() => window.__arrivals")[arrived0:]
    try:
        watcher.wait_for_function(CARET_DRAWN_JS, timeout=10_000)
    except PlaywrightTimeout:
        raise RuntimeError("the typist's caret is not drawn in the other page (not published "
                           "in awareness?)") from None
    carets: int = watcher.evaluate("() => window.__caretUpdates") - carets0
    times = [(a - s) / 1e3 for s, a in list(zip(sent, arrived, strict=True))[warmup:]]
    return times, carets


def run_sync(system: System, ctx: Context, rec: Recorder) -> None:
    """Both browser workloads for one system (blocking: Playwright's sync API)."""
    plan = ctx.plan
    ours = not isinstance(system, JupyterCollaboration)
    kernel = "python3-collab" if ours else "python3"
    base = ctx.scratch / "browser" / system.name
    info = rec.info.setdefault("browser", {})
    with lab_server(system, base) as server, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            write_notebook(server.root / "big.ipynb", OPEN_CELLS, kernel)
            write_notebook(server.root / "typing.ipynb", TYPE_CELLS, kernel)
            page = _lab_page(browser, server)
            first = _open(page, "big.ipynb")
            rec.add("browser.open.cold.synced", first["synced"] / 1e3)
            rec.add("browser.open.cold.editable", first["editable"] / 1e3)
            for _ in range(plan.warm_n):
                again = _open(page, "big.ipynb")
                rec.add("browser.open.warm.synced", again["synced"] / 1e3)
                rec.add("browser.open.warm.editable", again["editable"] / 1e3)
            carets = info.setdefault("caret_changes", {})  # at the watcher, per row
            with _two_people(browser, server, "typing.ipynb", TYPE_CELLS) as (typist, watcher, _):
                times, carets["browser.keystroke"] = _type(
                    typist, watcher, plan.latency_edits // 2, plan.latency_warmup)
            for t in times:
                rec.add("browser.keystroke", t)
            # Fewer keys: rendering 1,000 editors in both pages is most of these rows' time.
            keys = plan.latency_edits // 4
            with _two_people(browser, server, "big.ipynb", OPEN_CELLS) as (typist, watcher,
                                                                           rendered):
                info["rendered_1000_s"] = round(rendered, 1)
                for key, warmup, move in ((f"browser.keystroke.{OPEN_CELLS}",
                                           plan.latency_warmup, None),
                                          (f"browser.keystroke.{OPEN_CELLS}.moving",
                                           plan.latency_warmup // 2, "ArrowLeft")):
                    times, carets[key] = _type(typist, watcher, keys, warmup, move)
                    if move and carets[key] < keys:  # the caret moved in awareness each time
                        raise RuntimeError(f"{key}: the other page got {carets[key]} changes "
                                           f"of the typist's caret for {warmup + keys} moves")
                    for t in times:
                        rec.add(key, t)
        finally:
            browser.close()
    info["chromium"] = CHROMIUM


async def browser_workload(system: System, ctx: Context, rec: Recorder) -> None:
    """Run the browser workloads for ``system`` in a worker thread."""
    if not await anyio.Path(CHROMIUM).exists():
        raise RuntimeError(f"{CHROMIUM} is missing: tests/benchmarks/run.sh installs Debian's "
                           "chromium with apt")
    print(f"         browser: {system.name} in {CHROMIUM}", file=sys.stderr, flush=True)
    await anyio.to_thread.run_sync(run_sync, system, ctx, rec)
