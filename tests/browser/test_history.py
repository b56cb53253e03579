"""A collaborative notebook's history, as people see it in JupyterLab and Notebook 7: the History
button in the notebook's toolbar opens the versions with who made them, a slider steps back to
an earlier version (shown read-only, with what changed since, cell by cell), and a person who
may edit restores it for everyone. A reader sees no Restore button. jupyter-collaboration's own
timeline slider does not show on these notebooks.

Alice runs code, Bob edits, Carol reads (``tests.auth_roles.PeopleRoleAuthorizer``); the script
connects as Alice, named ``tidy-agent``.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import nbformat
import pytest
from playwright.sync_api import Locator, expect

from kernel_collab.client import connect_blocking
from tests.browser.conftest import UserPage
from tests.browser.test_collaboration import (
    SEE_MS,
    People,
    collaborative_notebook,
    expect_source,
    kernel_status,
    open_collaborative,
    type_at_end,
)
from tests.files import COLLAB_KERNELSPEC
from tests.jupyter_server_process import JupyterServer

AGENT = "tidy-agent"
#: A one-pixel PNG.
PIXEL = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5E"
         "rkJggg==")  # fmt: skip


def notebook_with_outputs(lab: JupyterServer, name: str) -> Path:
    """``a = 1``, ``b = 2``, ``c = 3``; the last with a stream, an HTML output with a plain
    text fallback, and an image."""
    cells = [nbformat.v4.new_code_cell(source, id=f"cell-{i}")
             for i, source in enumerate(["a = 1", "b = 2", "c = 3"])]  # fmt: skip
    cells[2].outputs = [
        nbformat.v4.new_output("stream", name="stdout", text="out\n"),
        nbformat.v4.new_output("display_data", data={
            "text/html": "<b id='kc-test-bold'>bold</b>", "text/plain": "plain fallback"}),
        nbformat.v4.new_output("display_data", data={"image/png": PIXEL}),
    ]  # fmt: skip
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = dict(COLLAB_KERNELSPEC)
    path = lab.root / name
    nbformat.write(nb, path)
    return path


@pytest.fixture(scope="module")
def lab_server_args() -> tuple[str, ...]:
    return ("--ServerApp.authorizer_class=tests.auth_roles.PeopleRoleAuthorizer",)


# --- what a person sees ----------------------------------------------------------------------


def history(person: UserPage) -> Locator:
    return person.page.locator(".kc-history")


def open_history(person: UserPage) -> None:
    """Click the History button in the notebook's toolbar, as a person does."""
    # Right-click the notebook: "Notebook History".
    person.page.locator(".jp-NotebookPanel .jp-Notebook").first.click(button="right")
    person.page.locator(".lm-Menu-item", has_text="Notebook History").click()
    expect(history(person)).to_be_visible()


def versions(person: UserPage) -> Locator:
    """The listed versions, newest first."""
    return history(person).locator(".kc-history-version")


def authors(person: UserPage) -> Locator:
    return versions(person).locator(".kc-history-author")


def shown_sources(person: UserPage) -> Locator:
    """The sources of the version shown, read-only."""
    return history(person).locator(".kc-history-cell .kc-history-source")


def step_to_oldest(person: UserPage) -> None:
    """Move the slider to the first version with the keyboard; wait until it is shown."""
    slider = history(person).locator(".kc-history-slider")
    slider.focus()
    person.page.keyboard.press("Home")
    expect(history(person).locator(".kc-history-position")).to_contain_text("Version 1 of")
    expect(history(person).locator(".kc-history-detail")).to_have_attribute("aria-busy", "false")


def restore_button(person: UserPage) -> Locator:
    return history(person).locator(".kc-history-restore")


# --- the tests -------------------------------------------------------------------------------


def test_step_back_see_what_changed_and_restore(lab: JupyterServer, user_page: People) -> None:
    notebook_with_outputs(lab, "history.ipynb")
    alice, bob, carol = (user_page(name) for name in ("alice", "bob", "carol"))
    for person in (alice, bob, carol):
        open_collaborative(person, "history.ipynb")

    # jupyter-collaboration's timeline is there, and hidden on this notebook.
    timeline = alice.page.locator("#jp-slider-status-bar")
    expect(timeline).to_have_count(1)
    expect(timeline).to_be_hidden()

    # Bob types in the first cell; a script changes the second.
    type_at_end(bob, 0, "0")
    expect_source(alice, 0, "a = 10")
    with connect_blocking(lab.url, "history.ipynb", token="alice", name=AGENT) as nb:
        nb.cells[1].source = "b = 20"
        nb.sync()
    expect_source(alice, 1, "b = 20")

    # The versions say who made them.
    open_history(alice)
    expect(authors(alice).filter(has_text="Bob").first).to_be_visible(timeout=SEE_MS)
    expect(authors(alice).filter(has_text=f"{AGENT} (script)").first).to_be_visible()
    expect(versions(alice).last.locator(".kc-history-kind")).to_have_text("Opened")
    # The newest version is the notebook now: nothing to restore.
    expect(history(alice).locator(".kc-history-position")).to_contain_text("(now)")
    expect(restore_button(alice)).to_be_disabled()

    # Back to the first version: its cells read-only, and what changed since.
    step_to_oldest(alice)
    expect(shown_sources(alice)).to_have_text(["a = 1", "b = 2", "c = 3"])
    # Outputs as text and images only, through rendermime: no HTML from the document.
    shown = history(alice).locator(".kc-history-cell").nth(2).locator(".kc-history-output")
    expect(shown).to_have_count(3)
    expect(shown.nth(0)).to_have_text("out")
    expect(shown.nth(1)).to_have_text("plain fallback")
    expect(shown.nth(2).locator("img")).to_have_attribute("src", f"data:image/png;base64,{PIXEL}")
    expect(history(alice).locator("#kc-test-bold")).to_have_count(0)
    editable = history(alice).locator(".cm-editor, [contenteditable='true'], textarea")
    expect(editable).to_have_count(0)
    changes = history(alice).locator(".kc-history-change")
    expect(changes).to_have_count(2)
    expect(changes.nth(0)).to_have_attribute("data-status", "modified")
    expect(changes.nth(0).locator(".kc-diff-del")).to_have_text("-a = 1")
    expect(changes.nth(0).locator(".kc-diff-add")).to_have_text("+a = 10")
    expect(changes.nth(1).locator(".kc-diff-add")).to_have_text("+b = 20")
    expect(history(alice).locator(".kc-history-note", has_text="1 cell unchanged")).to_be_visible()
    alice.screenshot("first-version")

    # A reader steps back too, and has no Restore button.
    open_history(carol)
    expect(versions(carol).first).to_be_visible()
    step_to_oldest(carol)
    expect(shown_sources(carol)).to_have_text(["a = 1", "b = 2", "c = 3"])
    expect(restore_button(carol)).to_be_hidden()

    # Alice restores it: both pages get the old sources back, and a new version says so.
    restore_button(alice).click()
    alice.page.locator(".jp-Dialog .jp-mod-accept").click()
    for person in (alice, bob):
        expect_source(person, 0, "a = 1", timeout=SEE_MS)
        expect_source(person, 1, "b = 2")
        expect_source(person, 2, "c = 3")
    newest = versions(alice).first
    expect(newest.locator(".kc-history-kind")).to_have_text("Restored", timeout=SEE_MS)
    expect(newest.locator(".kc-history-author")).to_have_text("Alice")
    expect(history(alice).locator(".kc-history-position")).to_contain_text("(now)")
    # Carol's view lists the restore too, by itself.
    expect(versions(carol).first.locator(".kc-history-kind")).to_have_text(
        "Restored", timeout=SEE_MS)  # fmt: skip


def test_notebook_7_has_the_history_too(lab: JupyterServer, user_page: People) -> None:
    collaborative_notebook(lab, "nb7-history.ipynb", ["x = 1"])
    alice = user_page("alice")
    alice.page.goto(f"{lab.url}/notebooks/{quote('nb7-history.ipynb')}")
    expect(kernel_status(alice)).to_have_attribute("data-status", "idle", timeout=SEE_MS)
    type_at_end(alice, 0, "0")
    expect_source(alice, 0, "x = 10")
    open_history(alice)  # in the right side panel
    expect(authors(alice).filter(has_text="Alice").first).to_be_visible(timeout=SEE_MS)
    step_to_oldest(alice)
    expect(shown_sources(alice)).to_have_text(["x = 1"])
    expect(restore_button(alice)).to_be_enabled()
    alice.screenshot()
