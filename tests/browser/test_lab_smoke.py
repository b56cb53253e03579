"""The harness itself: JupyterLab renders a notebook in chromium, and two people are two people."""

from __future__ import annotations

from collections.abc import Callable

from playwright.sync_api import expect

from tests.browser.conftest import UserPage
from tests.files import write_notebook
from tests.jupyter_server_process import JupyterServer

SOURCES = ["print('hello from the first cell')", "total = 1 + 2"]


def test_a_plain_notebook_shows_its_cells(
    lab: JupyterServer, user_page: Callable[[str], UserPage]
) -> None:
    write_notebook(lab.root / "plain.ipynb", SOURCES)  # kernelspec python3: not collaborative
    alice = user_page("alice")
    alice.open_notebook("plain.ipynb")
    expect(alice.page.locator(".jp-Notebook .jp-Cell .cm-content")).to_have_text(SOURCES)
    alice.screenshot()


def test_two_contexts_are_two_people(
    lab: JupyterServer, user_page: Callable[[str], UserPage]
) -> None:
    alice, bob = user_page("alice"), user_page("bob")
    for person in (alice, bob):
        person.open_lab()
    # What the server sees: the page's own requests carry the person's login cookie.
    assert alice.identity()["name"] == "Alice"
    assert bob.identity()["name"] == "Bob"
    # What JupyterLab sees: its requests send the server's token (page config) and the cookie.
    seen = {
        person.user: person.page.evaluate(
            "async () => { const user = window.jupyterapp.serviceManager.user;"
            " await user.ready; return user.identity; }"
        )
        for person in (alice, bob)
    }
    assert seen["alice"]["username"] == "alice"
    assert seen["bob"]["username"] == "bob"
    assert seen["alice"]["color"] != seen["bob"]["color"]
    # JupyterLab shows each person's initial in the top bar.
    expect(alice.page.locator("#jp-top-bar").get_by_text("A", exact=True)).to_be_visible()
    expect(bob.page.locator("#jp-top-bar").get_by_text("B", exact=True)).to_be_visible()
