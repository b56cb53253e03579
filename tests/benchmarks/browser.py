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
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
from playwright.sync_api import Page, sync_playwright

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


def run_sync(system: System, ctx: Context, rec: Recorder) -> None:
    """Both browser workloads for one system (blocking: Playwright's sync API)."""
    plan = ctx.plan
    ours = not isinstance(system, JupyterCollaboration)
    kernel = "python3-collab" if ours else "python3"
    base = ctx.scratch / "browser" / system.name
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
            typist, watcher = _lab_page(browser, server), _lab_page(browser, server)
            for p in (typist, watcher):
                p.evaluate("(path) => window.jupyterapp.commands.execute('docmanager:open', "
                           "{path, factory: 'Notebook'}).then(w => w.context.ready)",
                           "typing.ipynb")
                p.locator(".jp-Notebook .jp-Cell .cm-content").first.wait_for()
            watcher.evaluate(WATCH_JS)
            typist.evaluate(SEND_JS)
            typist.locator(".jp-Notebook .jp-Cell .cm-content").first.click()
            typist.keyboard.press("End")
            keys = plan.latency_edits // 2
            for i in range(plan.latency_warmup + keys):
                typist.keyboard.press(KEY)
                watcher.wait_for_function(f"() => window.__arrivals.length > {i}",
                                          timeout=30_000)
            sent = typist.evaluate("() => window.__sent")
            arrived = watcher.evaluate("() => window.__arrivals")
            for s, a in list(zip(sent, arrived, strict=False))[plan.latency_warmup:]:
                rec.add("browser.keystroke", (a - s) / 1e3)
        finally:
            browser.close()
    rec.info.setdefault("browser", {})["chromium"] = CHROMIUM


async def browser_workload(system: System, ctx: Context, rec: Recorder) -> None:
    """Run the browser workloads for ``system`` in a worker thread."""
    if not await anyio.Path(CHROMIUM).exists():
        raise RuntimeError(f"{CHROMIUM} is missing: tests/benchmarks/run.sh installs Debian's "
                           "chromium with apt")
    print(f"         browser: {system.name} in {CHROMIUM}", file=sys.stderr, flush=True)
    await anyio.to_thread.run_sync(run_sync, system, ctx, rec)
