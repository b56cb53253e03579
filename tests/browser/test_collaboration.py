"""Two people in one collaborative notebook, as each of them sees it in JupyterLab.

Every test opens its own notebook (the ``lab`` server and its rooms live for the module) on
the collaborative kernelspec, in one browser context per person, and asserts on what the lab
extension draws: the room bar in the notebook's toolbar (``.kc-room-bar``: kernel status, the
running cell, the queue's count opening its list ``.kc-queue-popup``), the collaborators' icons
next to it (``.kc-toolbar-user``), banners (``.kc-banner-*``), each cell's run mark
(``.kc-run-by``) and the collaborators' carets (``.kc-remote-caret``), plus JupyterLab's own
cells and outputs. The collaborators panel is ``test_presence``'s.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import watchfiles
from playwright.sync_api import Locator, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from tests.browser.conftest import UserPage
from tests.files import COLLAB_KERNELSPEC, write_notebook
from tests.jupyter_server_process import JupyterServer

People = Callable[[str], UserPage]

#: Longest wait for something a person should see (kernel start, a reconnect).
SEE_MS = 20_000


# --- what a person sees ----------------------------------------------------------------------


def cell(person: UserPage, index: int) -> Locator:
    """The notebook's cell at ``index`` in this person's page."""
    return person.page.locator(".jp-Notebook .jp-Cell").nth(index)


def source(person: UserPage, index: int) -> Locator:
    """The editor content of a cell."""
    return cell(person, index).locator(".cm-content")


#: A cell's editor text as the person reads it: its lines, without collaborators' caret labels.
EDITOR_TEXT = """(index) => {
    const cell = document.querySelectorAll('.jp-Notebook .jp-Cell')[index];
    const content = cell?.querySelector('.cm-content');
    if (!content) return null;
    const copy = content.cloneNode(true);
    copy.querySelectorAll('.kc-remote-caret').forEach(caret => caret.remove());
    return [...copy.querySelectorAll('.cm-line')].map(line => line.textContent).join('\\n');
}"""


def expect_source(person: UserPage, index: int, text: str, timeout: float = 5_000) -> None:
    """Wait until a cell's editor shows ``text`` (``to_have_text`` would see caret labels)."""
    try:
        person.page.wait_for_function(
            f"([index, text]) => ({EDITOR_TEXT})(index) === text", arg=[index, text],
            timeout=timeout,
        )  # fmt: skip
    except PlaywrightTimeoutError:
        actual = person.page.evaluate(EDITOR_TEXT, index)
        raise AssertionError(
            f"{person.user}'s cell {index} shows {actual!r}, not {text!r}, after {timeout} ms"
        ) from None


def outputs(person: UserPage, index: int) -> Locator:
    """The output area of a code cell."""
    return cell(person, index).locator(".jp-OutputArea")


def run_mark(person: UserPage, index: int) -> Locator:
    """The cell's run mark ("running · Alice", "ran by Bob at …"), its first child."""
    return cell(person, index).locator(":scope > .kc-run-by")


def room_bar(person: UserPage) -> Locator:
    return person.page.locator(".kc-room-bar")


def kernel_status(person: UserPage) -> Locator:
    return room_bar(person).locator(".kc-kernel-status")


def people_icons(person: UserPage, name: str | None = None) -> Locator:
    """The collaborators' icons in the notebook's toolbar (the others'), or ``name``'s."""
    icons = person.page.locator(".jp-NotebookPanel-toolbar .kc-toolbar-user")
    return icons if name is None else icons.and_(person.page.locator(f"[title^='{name} · ']"))


def queue_list(person: UserPage) -> Locator:
    """The queue's list, opened from the room bar's count (``open_queue``)."""
    return person.page.locator(".kc-queue-popup")


def open_queue(person: UserPage) -> None:
    """Click the queue's count in the room bar: its list opens under it."""
    room_bar(person).locator(".kc-queue").click()
    expect(queue_list(person)).to_be_visible()


def wait_for_stock_kernel(person: UserPage) -> None:
    """Wait until JupyterLab's own toolbar says the notebook's kernel is idle.

    Stock JupyterLab silently drops a run asked for before the session has a kernel (the
    prompt stays ``[ ]``), so a person waits for this before running a plain notebook's cell.
    """
    indicator = person.page.locator(".jp-NotebookPanel-toolbar .jp-Notebook-ExecutionIndicator")
    expect(indicator).to_have_attribute("data-status", "idle", timeout=SEE_MS)


#: Whether some element matching a selector is on screen and on top at its centre: what a
#: person sees (Playwright's ``to_be_visible`` accepts an element covered by another).
SEEN = """(selector) => [...document.querySelectorAll(selector)].some(element => {
    const box = element.getBoundingClientRect();
    if (box.width === 0 || box.height === 0) return false;
    const hit = document.elementFromPoint(box.left + box.width / 2, box.top + box.height / 2);
    return hit !== null && element.contains(hit);
})"""

#: What covers the first element matching a selector, for the failure message.
ON_TOP = """(selector) => {
    const element = document.querySelector(selector);
    if (!element) return 'no such element';
    const box = element.getBoundingClientRect();
    const hit = document.elementFromPoint(box.left + box.width / 2, box.top + box.height / 2);
    const parent = element.parentElement.getBoundingClientRect();
    return `box ${JSON.stringify(box)}, its container ${element.parentElement.className} is ` +
        `${parent.height}px high, on top at its centre: ${hit ? hit.className : 'nothing'}`;
}"""


def expect_seen(person: UserPage, selector: str, timeout: float = 5_000) -> None:
    """Wait until ``selector`` is on screen, not covered by anything."""
    try:
        person.page.wait_for_function(SEEN, arg=selector, timeout=timeout)
    except PlaywrightTimeoutError:
        where = person.page.evaluate(ON_TOP, selector)
        raise AssertionError(f"{person.user} does not see {selector}: {where}") from None


def open_collaborative(person: UserPage, path: str) -> None:
    """Open a collaborative notebook and wait until its kernel is idle in the room bar."""
    person.open_notebook(path)
    expect(kernel_status(person)).to_have_attribute("data-status", "idle", timeout=SEE_MS)


def alice_and_bob(user_page: People, path: str) -> tuple[UserPage, UserPage]:
    """Alice and Bob, each with ``path`` open and its kernel idle."""
    alice, bob = user_page("alice"), user_page("bob")
    open_collaborative(alice, path)
    open_collaborative(bob, path)
    return alice, bob


def run(person: UserPage, index: int) -> None:
    """Put the caret in a cell and press Shift+Enter, as a person runs it."""
    source(person, index).click()
    person.page.keyboard.press("Shift+Enter")


def type_at_end(person: UserPage, index: int, text: str) -> None:
    """Click into a cell's editor, go to its end and type ``text``."""
    source(person, index).click()
    person.page.keyboard.press("Control+End")
    person.page.keyboard.type(text)


def collaborative_notebook(lab: JupyterServer, name: str, sources: list[str]) -> Path:
    """A notebook on the collaborative kernelspec in the server's root."""
    return write_notebook(lab.root / name, sources, kernelspec=COLLAB_KERNELSPEC)


def wait_for_file(path: Path, predicate: Callable[[], bool], timeout: float = 15) -> None:
    """Return once ``predicate()`` holds, re-checking whenever ``path``'s folder changes."""
    deadline = time.monotonic() + timeout

    def holds() -> bool:
        try:
            return predicate()
        except (OSError, ValueError, KeyError, IndexError):
            return False  # absent or being replaced: not yet

    if holds():
        return
    for _ in watchfiles.watch(path.parent, debounce=20, step=5, rust_timeout=200,
                              yield_on_timeout=True):  # fmt: skip
        if holds():
            return
        if time.monotonic() > deadline:
            break
    raise AssertionError(f"{path} did not reach the expected state within {timeout} s:\n"
                         + (path.read_text() if path.exists() else "(missing)"))  # fmt: skip


def file_cells(path: Path) -> list[dict[str, Any]]:
    cells: list[dict[str, Any]] = json.loads(path.read_text())["cells"]
    return cells


def stream_text(nb_cell: dict[str, Any]) -> str:
    return "".join(
        "".join(o["text"]) if isinstance(o["text"], list) else o["text"]
        for o in nb_cell.get("outputs", [])
        if o.get("output_type") == "stream"
    )


# --- the tests -------------------------------------------------------------------------------


def test_edits_carets_and_people_are_shared(lab: JupyterServer, user_page: People) -> None:
    collaborative_notebook(lab, "edits.ipynb", ["x = 1", "y = 2"])
    alice, bob = alice_and_bob(user_page, "edits.ipynb")

    type_at_end(alice, 0, "  # typed by Alice")
    expect_source(bob, 0, "x = 1  # typed by Alice")
    caret = source(bob, 0).locator(".kc-remote-caret")
    expect(caret).to_have_count(1)
    expect(caret.locator(".kc-remote-caret-name")).to_have_text("Alice")
    # Drawn once: not also by jupyter-collaboration's cursors (.jp-remote-cursor).
    expect(cell(bob, 0).locator(".kc-remote-caret, .jp-remote-cursor")).to_have_count(1)
    # Each sees the other's icon in the notebook's toolbar (not their own).
    expect(people_icons(alice)).to_have_count(1)
    expect(people_icons(alice, "Bob")).to_have_count(1)
    expect(people_icons(bob)).to_have_count(1)
    expect(people_icons(bob, "Alice")).to_have_count(1)
    # Alice sees no caret of her own, and Bob's once he is in a cell.
    expect(alice.page.locator(".kc-remote-caret")).to_have_count(0)
    source(bob, 1).click()
    expect(source(alice, 1).locator(".kc-remote-caret-name")).to_have_text("Bob")
    alice.screenshot("two-people")
    bob.screenshot("two-people")


def test_one_queue_for_everyone(lab: JupyterServer, user_page: People) -> None:
    # Alice's cell prints a line every 0.4 s, and after the second one holds until the test
    # has looked at the queue (``go``, in the kernel's cwd: the notebook's folder; 20 s at most).
    go = lab.root / ".queue-go"
    collaborative_notebook(lab, "queue.ipynb", [
        "import os, time\n"
        "for i in range(1, 5):\n"
        "    print(f'alice {i}', flush=True)\n"
        "    time.sleep(0.4)\n"
        "    if i == 2:\n"
        "        for _ in range(400):\n"
        "            if os.path.exists('.queue-go'):\n"
        "                break\n"
        "            time.sleep(0.05)",
        "print('bob ran')",
        "",
    ])  # fmt: skip
    alice, bob = alice_and_bob(user_page, "queue.ipynb")

    run(alice, 0)
    for person in (alice, bob):
        expect(room_bar(person).locator(".kc-running")).to_contain_text("Alice")
    expect(outputs(bob, 0)).to_contain_text("alice 1")
    run(bob, 1)
    for person in (alice, bob):
        bar = room_bar(person)
        expect(bar.locator(".kc-running")).to_contain_text("Running cell 1 for Alice")
        expect(bar.locator(".kc-queue")).to_have_attribute("data-length", "1")
        expect(bar.locator(".kc-queue")).to_have_text("Queue: 1")
        expect(bar.locator(".kc-kernel-status")).to_have_attribute("data-status", "busy")
        for part in (".kc-kernel-status", ".kc-running", ".kc-queue"):
            expect(bar.locator(part)).to_be_visible()
        open_queue(person)
        expect(queue_list(person).locator(".kc-queue-entry")).to_have_text(["cell 2 · Bob"])
        expect(run_mark(person, 0)).to_have_text("running · Alice")
        expect(run_mark(person, 1)).to_have_text("queued #1 · Bob")
        expect(cell(person, 0).locator(".jp-InputPrompt")).to_have_text("[*]:")
    alice.screenshot("queued")
    bob.screenshot("queued")
    go.touch()

    for person in (alice, bob):
        expect(run_mark(person, 1)).to_have_text(re.compile(r"^ran by Bob at "), timeout=SEE_MS)
        expect(run_mark(person, 0)).to_have_text(re.compile(r"^ran by Alice at "))
        expect(outputs(person, 0)).to_have_text("alice 1\nalice 2\nalice 3\nalice 4\n")
        expect(outputs(person, 1)).to_have_text("bob ran\n")
        bar = room_bar(person)
        expect(bar.locator(".kc-kernel-status")).to_have_attribute("data-status", "idle")
        expect(bar.locator(".kc-running")).to_have_count(0)
        expect(bar.locator(".kc-queue")).to_have_attribute("data-length", "0")
        # The list, still open, follows the queue.
        expect(queue_list(person).locator(".kc-queue-entry")).to_have_count(0)
        expect(queue_list(person)).to_contain_text("Nothing is queued.")


def test_output_keeps_coming_after_the_runner_leaves(
    lab: JupyterServer, user_page: People
) -> None:
    path = collaborative_notebook(lab, "leaves.ipynb", [
        "import time\nfor i in range(1, 9):\n    print(f'line {i}', flush=True)\n"
        "    time.sleep(0.5)",
        "",
    ])  # fmt: skip
    alice, bob = alice_and_bob(user_page, "leaves.ipynb")

    run(alice, 0)
    expect(outputs(alice, 0)).to_contain_text("line 1")
    expect(cell(bob, 0).locator(".jp-InputPrompt")).to_have_text("[*]:")
    alice.context.close()
    expect(people_icons(bob, "Alice")).to_have_count(0)
    expect(outputs(bob, 0)).to_contain_text("line 8", timeout=SEE_MS)
    prompt = cell(bob, 0).locator(".jp-InputPrompt")
    expect(prompt).to_have_text(re.compile(r"^\[\d+\]:$"))
    expect(run_mark(bob, 0)).to_have_text(re.compile(r"^ran by Alice at "))
    wait_for_file(path, lambda: "line 8" in stream_text(file_cells(path)[0]))


def test_edits_made_while_the_sidecar_is_down_arrive(
    lab: JupyterServer, user_page: People
) -> None:
    path = collaborative_notebook(lab, "cut.ipynb", ["a = 1", "b = 2"])
    alice, bob = alice_and_bob(user_page, "cut.ipynb")
    pid = lab.sidecar(path)["pid"]

    # The server is held still while Alice types, so nothing can start a new sidecar before
    # she is done (the sidecar is back within ~0.2 s of being restarted: a race otherwise).
    lab.proc.send_signal(signal.SIGSTOP)
    try:
        os.kill(pid, signal.SIGKILL)
        for person in (alice, bob):  # (whether it is on top: test_banners_are_seen_above_…)
            expect(person.page.locator(".kc-banner-reconnecting")).to_be_visible()
        type_at_end(alice, 1, "  # while cut")
        still_cut = alice.page.locator(".kc-banner-reconnecting").count() == 1
        alice.screenshot("cut")
    finally:
        lab.proc.send_signal(signal.SIGCONT)
    for person in (alice, bob):
        expect(person.page.locator(".kc-banner-reconnecting")).to_have_count(0, timeout=SEE_MS)
    assert lab.sidecar(path)["pid"] != pid, "the sidecar was not restarted"
    expect_source(bob, 1, "b = 2  # while cut")
    expect_source(alice, 1, "b = 2  # while cut")
    wait_for_file(path, lambda: "".join(file_cells(path)[1]["source"]) == "b = 2  # while cut")
    # Alice's typing must have happened during the cut, or this tested an ordinary edit.
    assert still_cut, "the sidecar was back before Alice finished typing"


def test_banners_are_seen_above_the_notebook(lab: JupyterServer, user_page: People) -> None:
    collaborative_notebook(lab, "banner.ipynb", ["c = 3"])
    alice = user_page("alice")
    open_collaborative(alice, "banner.ipynb")
    # The kernel shut down from elsewhere: the room stays open, "no kernel", while Alice is in.
    with httpx.Client(base_url=lab.url, headers={"Authorization": f"token {lab.token}"}) as http:
        sessions = http.get("/api/sessions").raise_for_status().json()
        (kernel_id,) = [s["kernel"]["id"] for s in sessions if s["path"] == "banner.ipynb"]
        http.delete(f"/api/kernels/{kernel_id}").raise_for_status()
    expect(kernel_status(alice)).to_have_attribute("data-status", "none", timeout=SEE_MS)
    banner = alice.page.locator(".kc-banner-kernel-none")
    expect(banner).to_have_text("No kernel is running for this notebook.")
    alice.screenshot()
    expect_seen(alice, ".kc-banner-kernel-none")


def test_html_and_javascript_outputs_render_for_everyone(
    lab: JupyterServer, user_page: People
) -> None:
    collaborative_notebook(lab, "rich.ipynb", [
        "from IPython.display import HTML, Javascript, display\n"
        "display(HTML('<b class=\"kc-test-html\">bold</b>'))\n"
        "display(Javascript('document.body.dataset.kcJs = "
        "(document.body.dataset.kcJs||\"\") + \"ran\"'))",
        "",
    ])  # fmt: skip
    alice, bob = alice_and_bob(user_page, "rich.ipynb")

    run(alice, 0)
    for person in (alice, bob):
        expect(outputs(person, 0).locator("b.kc-test-html")).to_have_text("bold")
        expect(person.page.locator("body")).to_have_attribute("data-kc-js", re.compile("ran"))
    # Each person's page ran the script once, not once per re-render.
    for person in (alice, bob):
        expect(person.page.locator("body")).to_have_attribute("data-kc-js", "ran")


def test_widgets_render_for_everyone_and_latecomers(
    lab: JupyterServer, user_page: People
) -> None:
    collaborative_notebook(lab, "widgets.ipynb", [
        "import ipywidgets as w\ns = w.IntSlider(value=7)\ns",
        "",
    ])  # fmt: skip
    alice, bob = alice_and_bob(user_page, "widgets.ipynb")

    run(alice, 0)
    for person in (alice, bob):
        slider = outputs(person, 0).locator(".widget-slider")
        expect(slider).to_be_visible()
        expect(slider.locator(".widget-readout")).to_have_text("7")
    carol = user_page("carol")
    open_collaborative(carol, "widgets.ipynb")
    slider = outputs(carol, 0).locator(".widget-slider")
    expect(slider).to_be_visible()
    expect(slider.locator(".widget-readout")).to_have_text("7")
    carol.screenshot()


def test_changing_to_a_plain_kernel_reopens_the_notebook(
    lab: JupyterServer, user_page: People
) -> None:
    path = collaborative_notebook(lab, "change.ipynb", ["print('still here')"])
    alice = user_page("alice")
    open_collaborative(alice, "change.ipynb")
    page = alice.page
    panel = page.locator(".jp-NotebookPanel")
    panel.evaluate("node => { node.dataset.kcBefore = 'yes'; }")  # to tell the reopened one

    page.locator(".jp-NotebookPanel-toolbar .jp-KernelName").click()
    chooser = page.locator(".jp-Dialog")
    expect(chooser.locator(".jp-Dialog-header")).to_have_text("Select Kernel")
    chooser.locator("select").select_option(label="Python 3 (ipykernel)")
    accept = chooser.locator(".jp-Dialog-button.jp-mod-accept")
    expect(accept).to_have_text("Select")
    accept.click()

    dialog = page.locator(".jp-Dialog")
    expect(dialog.locator(".jp-Dialog-header")).to_have_text("Leaving the collaborative kernel")
    alice.screenshot("leaving")
    accept = dialog.locator(".jp-Dialog-button.jp-mod-accept")
    expect(accept).to_have_text("Ok")
    console_before = len(alice.console)
    accept.click()
    expect(dialog).to_have_count(0)
    # The notebook was closed and opened again, as an ordinary one.
    expect(page.locator(".jp-NotebookPanel[data-kc-before]")).to_have_count(0, timeout=SEE_MS)
    expect(panel).to_have_count(1)
    expect(panel.locator(".jp-KernelName")).to_have_text("Python 3 (ipykernel)")
    expect(source(alice, 0)).to_have_text("print('still here')")
    wait_for_stock_kernel(alice)
    run(alice, 0)
    expect(outputs(alice, 0)).to_have_text("still here\n", timeout=SEE_MS)
    expect(room_bar(alice)).to_have_count(0)
    expect(page.locator(".kc-collaborative, .kc-banners, .kc-run-by")).to_have_count(0)
    wait_for_file(path, lambda: json.loads(path.read_text())["metadata"]["kernelspec"]["name"]
                  == "python3")  # fmt: skip
    # Reopening asked the server how to open the notebook: no request of it failed.
    server_errors = [line for line in alice.console[console_before:] if line.startswith("[http 5")]
    assert not server_errors, server_errors


def test_a_plain_notebook_runs_the_stock_way(lab: JupyterServer, user_page: People) -> None:
    write_notebook(lab.root / "plain-run.ipynb", ["print(6 * 7)", ""])
    alice = user_page("alice")
    alice.open_notebook("plain-run.ipynb")
    # jupyter-collaboration fills the cells after the page shows them: read the source first.
    expect(source(alice, 0)).to_have_text("print(6 * 7)", timeout=SEE_MS)
    wait_for_stock_kernel(alice)

    run(alice, 0)
    expect(outputs(alice, 0)).to_have_text("42\n", timeout=SEE_MS)
    expect(cell(alice, 0).locator(".jp-InputPrompt")).to_have_text("[1]:")
    expect(room_bar(alice)).to_have_count(0)
    expect(alice.page.locator(".kc-banners, .kc-run-by")).to_have_count(0)
