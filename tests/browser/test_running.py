"""Running cells together in the browser: input() to the right person, interrupt by another,
and Notebook 7's own notebook page."""

from __future__ import annotations

from urllib.parse import quote

from playwright.sync_api import expect

from tests.browser.test_collaboration import (
    SEE_MS,
    People,
    alice_and_bob,
    collaborative_notebook,
    expect_seen,
    outputs,
    room_bar,
    run,
    run_mark,
)
from tests.jupyter_server_process import JupyterServer


def test_input_prompts_only_the_person_who_ran_the_cell(
    lab: JupyterServer, user_page: People
) -> None:
    collaborative_notebook(lab, "ask.ipynb", ["name = input('your name? ')\nprint('hi', name)"])
    alice, bob = alice_and_bob(user_page, "ask.ipynb")

    run(alice, 0)
    prompt = alice.page.locator(".jp-Dialog")
    expect(prompt).to_contain_text("your name?", timeout=SEE_MS)
    # Bob is told who the kernel waits for, and is not asked.
    expect_seen(bob, ".kc-banner-input", timeout=SEE_MS)
    expect(bob.page.locator(".kc-banner-input")).to_contain_text("Alice")
    expect(bob.page.locator(".jp-Dialog")).to_have_count(0)
    alice.screenshot("prompted")
    bob.screenshot("waiting")
    prompt.locator("input").fill("Zed")
    prompt.locator(".jp-mod-accept").click()
    for person in (alice, bob):
        expect(outputs(person, 0)).to_have_text("hi Zed\n", timeout=SEE_MS)
        expect(person.page.locator(".kc-banner-input")).to_have_count(0)


def test_interrupt_by_another_person_stops_the_cell_and_the_queue(
    lab: JupyterServer, user_page: People
) -> None:
    collaborative_notebook(lab, "long.ipynb", [
        "import time\nprint('started', flush=True)\ntime.sleep(60)",
        "print('never printed')",
    ])  # fmt: skip
    alice, bob = alice_and_bob(user_page, "long.ipynb")

    run(alice, 0)
    expect(outputs(bob, 0)).to_have_text("started\n", timeout=SEE_MS)
    run(alice, 1)
    expect(run_mark(bob, 1)).to_contain_text("queued #1 · Alice")
    bob.page.locator(".jp-NotebookPanel-toolbar [data-command='notebook:interrupt-kernel']").click()
    for person in (alice, bob):
        expect(room_bar(person).locator(".kc-last-event")).to_contain_text(
            "Interrupted by Bob", timeout=SEE_MS)  # fmt: skip
        expect(outputs(person, 0)).to_contain_text("KeyboardInterrupt")
        expect(run_mark(person, 0)).to_contain_text("ran by Alice")
        expect(run_mark(person, 1)).to_have_count(0)  # cancelled: never ran
        expect(room_bar(person).locator(".kc-queue")).to_have_attribute("data-length", "0")
    expect(outputs(alice, 1)).not_to_contain_text("never printed")
    bob.screenshot("interrupted")


def test_notebook_7_opens_the_same_shared_notebook(lab: JupyterServer, user_page: People) -> None:
    collaborative_notebook(lab, "nb7.ipynb", ["print('from Notebook 7')"])
    carol = user_page("carol")
    carol.page.goto(f"{lab.url}/notebooks/{quote('nb7.ipynb')}")
    expect(room_bar(carol).locator(".kc-kernel-status")).to_have_attribute(
        "data-status", "idle", timeout=SEE_MS)  # fmt: skip
    run(carol, 0)
    expect(outputs(carol, 0)).to_have_text("from Notebook 7\n", timeout=SEE_MS)
    expect(run_mark(carol, 0)).to_contain_text("ran by Carol")
    carol.screenshot()
