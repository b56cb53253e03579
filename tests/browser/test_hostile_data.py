"""Hostile data is shown as text: names, colours, cell ids, run records and prompts that look
like HTML or ``javascript:`` URLs run nothing and break no layout in what the lab extension
draws (the room bar and collaborators' icons in the toolbar, the collaborators panel, banners,
run marks, per-cell agent marks, collaborators' carets).

Everything a peer controls is hostile here. People's identities come from the server's
identity provider (this module's ``HostileIdentityProvider``: the same people and login tokens
as ``tests.browser.identity``, with hostile names, initials and colours); the sidecar stamps
them on each person's awareness. Carol is a script (``connect_blocking``) with a very long
name, who adds a cell whose id is HTML; the notebook's file carries run records by an HTML
"name" and by a 10,000 character one; the cell Alice runs asks ``input()`` with an HTML prompt.

Carol's name is 10,000 characters: the server cuts each field of a person's identity to 256
characters before it reaches the sidecar (it travels in one HTTP header), so she can join.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import nbformat
import pytest
from jupyter_server.auth.identity import User
from playwright.sync_api import Dialog, Locator, ViewportSize, expect

from kernel_collab.client import connect_blocking
from tests.browser import conftest
from tests.browser.conftest import UserPage
from tests.browser.identity import TOKENS, NamedUsersIdentityProvider
from tests.browser.test_collaboration import (
    SEE_MS,
    People,
    cell,
    collaborative_notebook,
    open_collaborative,
    outputs,
    room_bar,
    run,
    run_mark,
    source,
)
from tests.jupyter_server_process import JupyterServer

IMG = "<img src=x onerror=window.__kc_pwned=1>"
ALICE_NAME = '"><img src=x onerror="window.__kc_pwned=1">'
BOB_NAME = "javascript:window.__kc_pwned=1"
#: A 10,000 character name, with a few spaces (a name may wrap as well as overflow).
LONG_NAME = " ".join(["Mallory" + "W" * 993] * 10)[:10_000]
#: Carol's name: as long as the sidecar takes in a person's identity today (see above).
CAROL_NAME = " ".join(["Carol" + "W" * 995] * 10)[:10_000]
CAROL_SHOWN = CAROL_NAME[:256]
"""The server cuts each identity field to 256 characters (``MAX_IDENTITY_FIELD``)."""
#: The name Carol's script connects with (``connect_blocking``'s default).
SCRIPT_NAME = "kernel_collab client"
HOSTILE_COLOR = "red;background:url(javascript:window.__kc_pwned=1)"
#: Cell ids may hold anything a peer writes (nbformat's pattern is not the sidecar's rule).
HOSTILE_CELL_ID = IMG
#: The colour drawn for a colour that is not accepted (``NEUTRAL_COLOR`` in state.ts).
NEUTRAL = "rgb(136, 136, 136)"
VIEWPORT: ViewportSize = {"width": 1024, "height": 800}

HOSTILE_PEOPLE: dict[str, User] = {
    "alice": User(username="alice", name=ALICE_NAME, display_name=ALICE_NAME,
                  initials=ALICE_NAME, color=HOSTILE_COLOR),
    "bob": User(username="bob", name=BOB_NAME, display_name=BOB_NAME,
                initials=BOB_NAME, color="#1f77b4"),
    "carol": User(username="carol", name="Carol", display_name=CAROL_NAME,
                  initials=IMG, color=ALICE_NAME),  # out of a style="…" attribute
    "dave": User(username="dave", name="Dave", display_name=LONG_NAME, initials="D",
                 color="#9467bd"),
}  # fmt: skip
assert TOKENS.keys() <= HOSTILE_PEOPLE.keys()


class HostileIdentityProvider(NamedUsersIdentityProvider):
    """``tests.browser.identity``'s people and tokens, with hostile names and colours.

    The login cookie holds the username only: a 10,000 character name does not fit in one.
    """

    async def get_user_token(self, handler: Any) -> User | None:
        person = HOSTILE_PEOPLE.get(self.get_token(handler) or "")
        return person if person is not None else await super().get_user_token(handler)

    def user_to_cookie(self, user: User) -> str:
        return user.username

    def user_from_cookie(self, cookie_value: str) -> User | None:
        return HOSTILE_PEOPLE.get(cookie_value)


@pytest.fixture(scope="module")
def lab_server_args() -> Iterator[tuple[str, ...]]:
    """This module's server knows people by ``HostileIdentityProvider`` (it imports it).

    The provider is one of the ``lab`` fixture's own arguments (``LAB_ARGS``), which a server
    takes once: it is swapped there while this module's server starts and runs.
    """
    ours = f"--ServerApp.identity_provider_class={__name__}.HostileIdentityProvider"
    args = tuple(ours if a.startswith("--ServerApp.identity_provider_class=") else a
                 for a in conftest.LAB_ARGS)  # fmt: skip
    assert ours in args
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(conftest, "LAB_ARGS", args)
        yield ()


# --- what must hold in every page ------------------------------------------------------------

#: What ran or was injected: the flag, HTML elements made from data, URLs and styles from data.
INJECTED = """() => {
    const OURS = ['.kc-room-bar', '.kc-banners', '.kc-run-by', '.kc-clients-here',
                  '.kc-remote-caret', '.kc-remote-selection', '.kc-toolbar-users',
                  '.kc-collaborators', '.kc-queue-popup'];
    return {
    pwned: typeof window.__kc_pwned,
    images: [...document.querySelectorAll(
        `img[src="x"], [onerror], ${OURS.map(c => `${c} img`).join(', ')}`)]
        .map(e => `${e.parentElement?.className}: ${e.outerHTML.slice(0, 200)}`),
    urls: [...document.querySelectorAll(
        `[href^="javascript" i], [src^="javascript" i], ${OURS.map(c => `${c} a`).join(', ')}`)]
        .map(e => e.outerHTML.slice(0, 200)),
    styles: [...document.querySelectorAll('[style]')]
        .map(e => e.getAttribute('style')).filter(s => /javascript|url\\(/i.test(s)),
    };
}"""

#: The room bar's box at this viewport, whether the notebook scrolls sideways, the widest
#: name and the tallest cell mark.
LAYOUT = """() => {
    const bar = document.querySelector('.kc-room-bar');
    const box = bar.getBoundingClientRect();
    const notebook = document.querySelector('.jp-NotebookPanel .jp-WindowedPanel-outer');
    const largest = (selector, size) => Math.max(0, ...[...document.querySelectorAll(selector)]
        .map(e => e.getBoundingClientRect()[size]));
    return {
        viewport: window.innerWidth, height: box.height, right: box.right,
        scrollWidth: bar.scrollWidth, clientWidth: bar.clientWidth,
        notebookOverflow: notebook.scrollWidth - notebook.clientWidth,
        widestName: largest(
            '.kc-person, .kc-name, .kc-remote-caret-name, .kc-agent-name, '
            + '.kc-collaborator-name, .kc-collaborator-detail', 'width'),
        tallestMark: largest('.kc-run-by, .kc-clients-here', 'height'),
    };
}"""


def assert_safe(person: UserPage, dialogs: list[str]) -> None:
    """Nothing ran, nothing was injected, the bar fits, no error or dialog in this page."""
    injected = person.page.evaluate(INJECTED)
    assert injected == {"pwned": "undefined", "images": [], "urls": [], "styles": []}, (
        f"{person.user}'s page: {injected}"
    )
    layout = person.page.evaluate(LAYOUT)
    assert layout["viewport"] == VIEWPORT["width"], layout
    assert 0 < layout["height"] < 100, f"{person.user}'s room bar: {layout}"
    assert layout["scrollWidth"] <= layout["clientWidth"] + 1, f"{person.user}: {layout}"
    assert layout["right"] <= layout["viewport"] + 1, f"{person.user}: {layout}"
    assert layout["notebookOverflow"] <= 1, f"{person.user}'s notebook scrolls: {layout}"
    assert layout["widestName"] < 400, f"{person.user}: a name is not clipped: {layout}"
    assert layout["tallestMark"] < 40, f"{person.user}: a cell mark wraps: {layout}"
    errors = [line for line in person.console if line.startswith("[pageerror]")]
    assert not errors, errors
    assert not dialogs, f"{person.user}'s page opened dialogs: {dialogs}"


def texts(locator: Locator) -> list[str]:
    """The exact text of each element (Playwright's ``to_have_text`` normalises spaces)."""
    result: list[str] = locator.evaluate_all("nodes => nodes.map(n => n.textContent)")
    return result


def join(person: str, user_page: People, path: str) -> tuple[UserPage, list[str]]:
    """A person with ``path`` open at a 1,024 px wide viewport, and their page's dialogs."""
    page = user_page(person)
    page.page.set_viewport_size(VIEWPORT)
    dialogs: list[str] = []

    def on_dialog(dialog: Dialog) -> None:
        dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    page.page.on("dialog", on_dialog)
    open_collaborative(page, path)
    return page, dialogs


# --- the test --------------------------------------------------------------------------------


def test_hostile_names_ids_records_and_prompts_are_shown_as_text(
    lab: JupyterServer, user_page: People
) -> None:
    path = collaborative_notebook(lab, "hostile.ipynb", ["x = 1", "y = 2", ""])
    # Run records in the file, "by" someone whose name is HTML and by someone whose name is
    # 10,000 characters long.
    nb = nbformat.read(path, as_version=4)
    for nb_cell, name in zip(nb.cells, (IMG, LONG_NAME), strict=False):
        nb_cell.metadata["kernel_collab"] = {"last_run": {
            "by": {"username": "mallory", "name": name}, "start": 1.7e9, "end": 1.7e9 + 1,
            "status": "ok",
        }}  # fmt: skip
    nbformat.write(nb, path)
    alice, alice_dialogs = join("alice", user_page, "hostile.ipynb")
    bob, bob_dialogs = join("bob", user_page, "hostile.ipynb")
    people = ((alice, alice_dialogs), (bob, bob_dialogs))
    for person in (alice, bob):
        assert person.identity()["name"] == HOSTILE_PEOPLE[person.user].name
        expect(run_mark(person, 0)).to_have_text(re.compile(rf"^ran by {re.escape(IMG)} at "))
        expect(run_mark(person, 1)).to_have_text(re.compile(r"^ran by MalloryW+ "))
        (mark,) = texts(run_mark(person, 1))
        assert re.fullmatch(rf"ran by {re.escape(LONG_NAME)} at \S.*", mark), mark[-100:]

    # Carol, a script, adds a cell with an HTML id that asks input() with an HTML prompt.
    with connect_blocking(lab.url, "hostile.ipynb", token="carol") as notebook:

        def add_hostile_cell() -> None:
            target = notebook._target
            ynb = target._ynb
            content: dict[str, Any] = {
                "id": HOSTILE_CELL_ID, "cell_type": "code", "metadata": {}, "outputs": [],
                "execution_count": None,
                "source": f"answer = input({IMG!r})\nprint('got', answer)",
            }  # fmt: skip
            ynb.ycells.insert(2, ynb.create_ycell(content))
            target._transport.touched(HOSTILE_CELL_ID)

        notebook._portal.call(add_hostile_cell)
        for person in (alice, bob):
            expect(person.page.locator(".jp-Notebook .jp-Cell")).to_have_count(4)
            # Carol's script at its cell: the name it connected with, as Carol.
            here = cell(person, 2).locator(":scope > .kc-clients-here")
            expect(here).to_have_count(1)
            expect(here.locator(".kc-agent-name")).to_have_text(SCRIPT_NAME)
            (agent,) = here.locator(".kc-agent").evaluate_all("ns => ns.map(n => n.title)")
            assert agent == f"{SCRIPT_NAME} · script · as {CAROL_SHOWN}", agent[-100:]
            assert re.fullmatch(f"{SCRIPT_NAME} (edited|here)", texts(here)[0]), texts(here)
            # Everyone in the collaborators panel, by name.
            names = person.page.locator(".kc-collaborators .kc-collaborator-name")
            expect(names).to_have_count(3)
            assert sorted(texts(names)) == sorted([ALICE_NAME, BOB_NAME, SCRIPT_NAME])
            icons = person.page.locator(".kc-toolbar-user")
            expect(icons).to_have_count(2)
        for person, dialogs in people:
            assert_safe(person, dialogs)
        # With the collaborators panel open the toolbar is narrower: nothing overflows still.
        for person, dialogs in people:
            person.page.locator(".kc-toolbar-collaborators").click()
            expect(person.page.locator(".kc-collaborators")).to_be_visible()
            assert_safe(person, dialogs)

        # Carets: each sees the other's name; Alice's colour is not accepted.
        source(bob, 0).click()
        expect(source(alice, 0).locator(".kc-remote-caret-name")).to_have_text(BOB_NAME)
        source(alice, 1).click()
        caret = source(bob, 1).locator(".kc-remote-caret")
        expect(caret.locator(".kc-remote-caret-name")).to_have_text(ALICE_NAME)
        expect(caret).to_have_css("border-left-color", NEUTRAL)
        alice_icon = bob.page.locator(".kc-toolbar-user .kc-avatar[data-kind=person]")
        expect(alice_icon).to_have_css("background-color", NEUTRAL)
        bob_icon = alice.page.locator(".kc-toolbar-user .kc-avatar[data-kind=person]")
        expect(bob_icon).to_have_css("background-color", "rgb(31, 119, 180)")
        # Initials that are HTML: two characters of text.
        expect(bob_icon).to_have_text(BOB_NAME[:2].upper())

        # Alice runs the HTML-id cell: the prompt, the banner, the bar and the mark show text.
        run(alice, 2)
        prompt = alice.page.locator(".jp-Dialog")
        expect(prompt).to_contain_text(IMG, timeout=SEE_MS)
        expect(bob.page.locator(".kc-banner-input")).to_have_text(
            f"The kernel is waiting for input from {ALICE_NAME}.", timeout=SEE_MS)  # fmt: skip
        for person in (alice, bob):
            running = room_bar(person).locator(".kc-running")
            expect(running).to_have_text(f"Running cell 3 for {ALICE_NAME}")
            expect(run_mark(person, 2)).to_have_text(f"running · {ALICE_NAME}")
        for person, dialogs in people:
            assert_safe(person, dialogs)
        alice.screenshot("prompted")
        bob.screenshot("waiting")

        prompt.locator("input").fill("fine")
        prompt.locator(".jp-mod-accept").click()
        for person in (alice, bob):
            expect(outputs(person, 2)).to_have_text("got fine\n", timeout=SEE_MS)
            expect(run_mark(person, 2)).to_have_text(
                re.compile(rf"^ran by {re.escape(ALICE_NAME)} at "))  # fmt: skip
            expect(person.page.locator(".kc-banner-input")).to_have_count(0)
        for person, dialogs in people:
            assert_safe(person, dialogs)
