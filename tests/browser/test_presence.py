"""Who is here and what they are doing, as each person sees it: the collaborators panel, the
collaborators' icons and the room bar in the notebook's toolbar, jumping to and following a
person, and a script (``kernel_collab.client``) seen where it edits and runs.

Three people, each allowed something else (``PresenceRoles``): Alice runs code, Bob edits,
Carol reads. The script connects as Alice, named ``tidy-agent``. jupyter-collaboration is
installed in this environment: its side panel gets this notebook's section, and no second
panel or second set of icons appears (``test_without_jupyter_collaboration_…`` turns it off
for one page).

``test_a_script_is_seen_where_it_edits_and_runs`` takes the README's pictures,
``presence-light.png`` and ``presence-dark.png``: into ``tests/browser/artifacts/``, or into
``docs/`` with ``KERNEL_COLLAB_DOCS_PICTURES=1`` (how the committed ones were made).
"""

from __future__ import annotations

import json
import os
import re
import time
from typing import Any
from urllib.parse import quote

import pytest
from jupyter_server.auth.identity import User
from playwright.sync_api import Locator, WebSocketRoute, expect

from kernel_collab.client import connect_blocking
from tests.auth_roles import RoleAuthorizer
from tests.browser.conftest import REPO, UserPage
from tests.browser.test_collaboration import (
    SEE_MS,
    People,
    cell,
    collaborative_notebook,
    expect_source,
    kernel_status,
    open_collaborative,
    outputs,
    room_bar,
    run_mark,
    source,
)
from tests.jupyter_server_process import JupyterServer

#: The role of each person of ``tests.browser.identity`` in this module.
ROLES = {"alice": "runner", "bob": "editor", "carol": "reader"}
#: What each person may do, as the collaborators panel says it.
SHOWN_ROLE = {"Alice": "run", "Bob": "edit", "Carol": "read", "tidy-agent": "run"}
AGENT = "tidy-agent"
#: How long a cell an agent edited stays highlighted, and a margin (``AGENT_HIGHLIGHT_MS``).
HIGHLIGHT_MS = 4_000
#: y-protocols drops a peer it has not heard of for 30 s, checking every 3 s.
AWARENESS_TIMEOUT_MS = 30_000 + 3_000
DOCS = REPO / "docs" if os.environ.get("KERNEL_COLLAB_DOCS_PICTURES") else REPO / "tests" / (
    "browser/artifacts")  # fmt: skip


class PresenceRoles(RoleAuthorizer):
    """Alice runs code, Bob edits, Carol reads (``ROLES``); anyone else only reads."""

    def is_authorized(self, handler: Any, user: User, action: str, resource: str) -> bool:
        role = User(username=ROLES.get(user.username, "reader"))
        return super().is_authorized(handler, role, action, resource)


@pytest.fixture(scope="module")
def lab_server_args() -> tuple[str, ...]:
    return (f"--ServerApp.authorizer_class={__name__}.PresenceRoles",)


# --- what a person sees ----------------------------------------------------------------------


def panel(person: UserPage) -> Locator:
    """The collaborators panel's section for the current notebook."""
    return person.page.locator(".kc-collaborators")


def rows(person: UserPage) -> Locator:
    return panel(person).locator(".kc-collaborator")


def row(person: UserPage, name: str) -> Locator:
    """The panel's row of the collaborator called ``name``."""
    name_node = person.page.locator(".kc-collaborator-name", has_text=re.compile(f"^{name}$"))
    return rows(person).filter(has=name_node)


def toolbar_icons(person: UserPage) -> Locator:
    """The collaborators' icons in the notebook's toolbar (others only, as UsersItem)."""
    return person.page.locator(".jp-NotebookPanel-toolbar .kc-toolbar-user")


def open_panel(person: UserPage) -> None:
    """Open the collaborators panel from the toolbar, as a person does."""
    person.page.locator(".jp-NotebookPanel-toolbar .kc-toolbar-collaborators").click()
    expect(panel(person)).to_be_visible()


def texts(locator: Locator) -> list[str]:
    result: list[str] = locator.evaluate_all("nodes => nodes.map(n => n.textContent)")
    return result


def panel_table(person: UserPage) -> dict[str, tuple[str, str]]:
    """Name → (what they are, role), as this person's panel lists them."""
    names = texts(rows(person).locator(".kc-collaborator-name"))
    details = texts(rows(person).locator(".kc-collaborator-detail"))
    roles = texts(rows(person).locator(".kc-role"))
    return {n: (d, r) for n, d, r in zip(names, details, roles, strict=True)}


#: Whether an element is inside its notebook's visible area (scrolled into view).
IN_VIEW = """(element) => {
    const frame = element.closest('.jp-WindowedPanel-outer').getBoundingClientRect();
    const box = element.getBoundingClientRect();
    return box.height > 0 && box.top >= frame.top - 1 && box.bottom <= frame.bottom + 1;
}"""


def expect_in_view(locator: Locator, timeout: float = 5_000) -> None:
    """Wait until the element is scrolled into its notebook's visible area."""
    handle = locator.element_handle(timeout=timeout)
    assert handle is not None
    locator.page.wait_for_function(IN_VIEW, arg=handle, timeout=timeout)


def in_view(locator: Locator) -> bool:
    result: bool = locator.evaluate(IN_VIEW)
    return result


def remote_caret(person: UserPage, index: int, name: str) -> Locator:
    """A collaborator's caret in a cell, by the name on it."""
    return (
        source(person, index)
        .locator(".kc-remote-caret")
        .filter(has=person.page.locator(".kc-remote-caret-name", has_text=re.compile(f"^{name}$")))
    )


def carets_of(person: UserPage, name: str) -> Locator:
    """A collaborator's carets in all of the notebook's cells, by the name on them."""
    return person.page.locator(".jp-Notebook .kc-remote-caret").filter(
        has=person.page.locator(".kc-remote-caret-name", has_text=re.compile(f"^{name}$"))
    )


#: Whether a caret is on the last line of its editor, after all of its text.
AT_LINE_END = """(caret) => {
    const line = caret.closest('.cm-line');
    const strip = node => {
        node.querySelectorAll('.kc-remote-caret').forEach(c => c.remove());
        return node.textContent;
    };
    const range = document.createRange();
    range.setStart(line, 0);
    range.setEndBefore(caret);
    const before = strip(range.cloneContents());
    return line === line.parentElement.lastElementChild
        && before === strip(line.cloneNode(true));
}"""


def agent_mark(person: UserPage, index: int) -> Locator:
    """The line saying which agents are at a cell and what they just did."""
    return cell(person, index).locator(":scope > .kc-clients-here")


def sources(count: int) -> list[str]:
    return [f"value_{i} = {i}" for i in range(count)]


@pytest.fixture
def everyone(lab: JupyterServer, user_page: People) -> tuple[UserPage, ...]:
    """Alice, Bob and Carol with ``people.ipynb`` (40 cells) open, the kernel idle."""
    collaborative_notebook(lab, "people.ipynb", sources(40))
    people = tuple(user_page(name) for name in ("alice", "bob", "carol"))
    for person in people:
        open_collaborative(person, "people.ipynb")
    return people


# --- the tests -------------------------------------------------------------------------------


def test_everyone_sees_everyone_with_their_role(
    lab: JupyterServer, everyone: tuple[UserPage, ...]
) -> None:
    alice, bob, carol = everyone
    source(bob, 3).click()
    with connect_blocking(lab.url, "people.ipynb", token="alice", name=AGENT):
        for person in everyone:
            open_panel(person)
            expect(rows(person)).to_have_count(4)
            me = person.user.title()
            table = panel_table(person)
            assert table == {
                name: ("you" if name == me else "script · as Alice" if name == AGENT else "",
                       role)
                for name, role in SHOWN_ROLE.items()
            }, f"{person.user}'s panel: {table}"  # fmt: skip
            # This page's person first, then people by name, then agents.
            assert texts(rows(person).locator(".kc-collaborator-name"))[0] == me
            assert texts(rows(person).locator(".kc-collaborator-name"))[-1] == AGENT
            # The others' icons in the toolbar, with their names and roles as tooltips.
            icons = toolbar_icons(person)
            expect(icons).to_have_count(3)
            titles = icons.evaluate_all("nodes => nodes.map(n => n.title)")
            others = sorted(n for n in SHOWN_ROLE if n != me)
            assert sorted(t.split(" · ")[0] for t in titles) == others, titles
            expect(icons.filter(has=person.page.locator(".kc-avatar[data-kind=script]"))
                   ).to_have_count(1)  # fmt: skip
        # Bob's cell, as the others see it.
        for person in (alice, carol):
            expect(row(person, "Bob").locator(".kc-collaborator-cell")).to_have_text("cell 4")
        # Shown once: jupyter-collaboration's side panel holds this notebook's section, no
        # second panel; no second set of icons in the toolbar.
        for person in everyone:
            page = person.page
            expect(page.locator(".kc-collaborators")).to_have_count(1)
            expect(page.locator("#jp-collaboration-panel .kc-collaborators")).to_have_count(1)
            expect(page.locator("#kc-collaborators-panel")).to_have_count(0)
            expect(page.locator(".kc-toolbar-users")).to_have_count(1)
            expect(page.locator(".jp-NotebookPanel .jp-toolbar-users-item")).to_have_count(0)
        # The room bar is in the notebook's toolbar, laid out in one line at 1,024 px.
        alice.page.set_viewport_size({"width": 1024, "height": 800})
        alice.page.locator(".jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current").click()
        expect(panel(alice)).to_be_hidden()
        expect_room_bar_fits(alice)


#: The toolbar's items and the room bar's box: nothing 0 px high, nothing past the toolbar.
TOOLBAR_LAYOUT = """() => {
    const toolbar = document.querySelector('.jp-NotebookPanel-toolbar');
    const bar = toolbar.querySelector('.kc-room-bar');
    const users = toolbar.querySelector('.kc-toolbar-users');
    const box = e => e ? e.getBoundingClientRect().toJSON() : null;
    return {
        viewport: window.innerWidth, toolbar: box(toolbar), bar: box(bar), users: box(users),
        barScroll: bar ? bar.scrollWidth - bar.clientWidth : null,
        toolbarScroll: toolbar.scrollWidth - toolbar.clientWidth,
        parts: [...(bar ? bar.children : [])].map(e => [e.className, box(e).height]),
    };
}"""


def expect_room_bar_fits(person: UserPage) -> dict[str, Any]:
    """The room bar and the icons are in the toolbar, visible, in one line, not overflowing."""
    expect(person.page.locator(".jp-NotebookPanel-toolbar .kc-room-bar")).to_be_visible()
    expect(person.page.locator(".jp-NotebookPanel-toolbar .kc-toolbar-users")).to_be_visible()
    layout: dict[str, Any] = person.page.evaluate(TOOLBAR_LAYOUT)
    toolbar, bar, users = layout["toolbar"], layout["bar"], layout["users"]
    assert 16 <= bar["height"] <= toolbar["height"], layout
    assert all(height > 0 for _, height in layout["parts"]), layout
    assert layout["barScroll"] <= 1 and layout["toolbarScroll"] <= 1, layout
    for item in (bar, users):
        assert toolbar["left"] <= item["left"] and item["right"] <= toolbar["right"] + 1, layout
        assert item["top"] >= toolbar["top"] - 1 and item["bottom"] <= toolbar["bottom"] + 1
    assert toolbar["right"] <= layout["viewport"] + 1, layout
    return layout


def test_jump_to_a_person_and_follow_them(everyone: tuple[UserPage, ...]) -> None:
    alice, bob, _carol = everyone
    source(bob, 30).click()
    bob.page.keyboard.press("End")
    open_panel(alice)
    bobs_cell = cell(alice, 30)
    expect(row(alice, "Bob").locator(".kc-collaborator-cell")).to_have_text("cell 31")
    assert not in_view(bobs_cell), "cell 31 should start out of Alice's view"

    # Clicking Bob in the panel scrolls to his cell and shows his caret.
    row(alice, "Bob").click()
    expect_in_view(bobs_cell)
    caret = remote_caret(alice, 30, "Bob")
    expect(caret).to_have_count(1)
    expect_in_view(caret)
    alice.screenshot("jumped")

    # Clicking his icon in the toolbar does the same.
    source(bob, 2).click()
    expect(row(alice, "Bob").locator(".kc-collaborator-cell")).to_have_text("cell 3")
    toolbar_icons(alice).filter(has_text="B").click()
    expect_in_view(cell(alice, 2))
    expect_in_view(remote_caret(alice, 2, "Bob"))

    # Following Bob keeps Alice's view on him until she scrolls.
    follow = row(alice, "Bob").locator(".kc-follow")
    follow.click()
    expect(follow).to_have_attribute("aria-pressed", "true")
    source(bob, 36).click()
    expect_in_view(cell(alice, 36))
    expect_in_view(remote_caret(alice, 36, "Bob"))
    source(bob, 20).click()
    expect_in_view(cell(alice, 20))
    alice.page.locator(".jp-NotebookPanel .jp-WindowedPanel-outer").hover()
    alice.page.mouse.wheel(0, 1500)
    expect(follow).to_have_attribute("aria-pressed", "false")
    source(bob, 1).click()
    expect(row(alice, "Bob").locator(".kc-collaborator-cell")).to_have_text("cell 2")
    # The awareness change that moved Bob's row would have moved a follower's view.
    alice.page.evaluate("() => new Promise(r => requestAnimationFrame(() => "
                        "requestAnimationFrame(r)))")  # fmt: skip
    assert not in_view(cell(alice, 1)), "Alice's view still follows Bob after she scrolled"


def test_carets_move_from_cell_to_cell(lab: JupyterServer, everyone: tuple[UserPage, ...]) -> None:
    """Each cell shows the carets that are in it: one that moves to another cell is drawn
    there and goes from the cell it left, while the others stay where they are."""
    alice, bob, carol = everyone
    source(alice, 2).click()
    source(bob, 5).click()
    expect(remote_caret(carol, 2, "Alice")).to_have_count(1)
    expect(remote_caret(carol, 5, "Bob")).to_have_count(1)
    expect(remote_caret(alice, 5, "Bob")).to_have_count(1)
    expect(carets_of(alice, "Alice")).to_have_count(0)  # nobody sees their own

    # Bob goes to another cell: his caret is there, no longer in the cell he left, and
    # Alice's stays in hers.
    source(bob, 8).click()
    for person in (alice, carol):
        expect(remote_caret(person, 8, "Bob")).to_have_count(1)
        expect(carets_of(person, "Bob")).to_have_count(1)
    expect(remote_caret(carol, 5, "Bob")).to_have_count(0)
    expect(remote_caret(carol, 2, "Alice")).to_have_count(1)

    # Into Alice's cell, then Alice leaves it: each cell keeps the caret that stays.
    source(bob, 2).click()
    bob.page.keyboard.press("End")
    expect(remote_caret(carol, 2, "Bob")).to_have_count(1)
    expect(carets_of(carol, "Bob")).to_have_count(1)
    expect(remote_caret(carol, 2, "Alice")).to_have_count(1)
    source(alice, 9).click()
    expect(remote_caret(carol, 9, "Alice")).to_have_count(1)
    expect(carets_of(carol, "Alice")).to_have_count(1)
    expect(remote_caret(carol, 2, "Bob")).to_have_count(1)
    expect(remote_caret(bob, 9, "Alice")).to_have_count(1)
    expect(carets_of(bob, "Alice")).to_have_count(1)

    # A script's caret, where it last typed, moves with its edits the same way.
    with connect_blocking(lab.url, "people.ipynb", token="alice", name=AGENT) as nb:
        nb.cells[3].source += "  # tidied"
        expect(remote_caret(carol, 3, AGENT)).to_have_count(1)
        nb.cells[6].source += "  # tidied"
        expect(remote_caret(carol, 6, AGENT)).to_have_count(1)
        expect(carets_of(carol, AGENT)).to_have_count(1)
        expect(remote_caret(carol, 3, AGENT)).to_have_count(0)
        for name, index in (("Alice", 9), ("Bob", 2)):
            expect(carets_of(carol, name)).to_have_count(1)
            expect(remote_caret(carol, index, name)).to_have_count(1)
    # It leaves: its caret goes.
    expect(carets_of(carol, AGENT)).to_have_count(0)
    expect(remote_caret(carol, 9, "Alice")).to_have_count(1)


NOTEBOOK = [
    "import math",
    "radius = 2.5",
    "area = math.pi * radius ** 2\nprint(f'area: {area:.2f}')",
    "perimeter = 2 * math.pi * radius",
    "sizes = [radius * k for k in range(1, 6)]",
    "sizes",
]


def test_a_script_is_seen_where_it_edits_and_runs(lab: JupyterServer, user_page: People) -> None:
    collaborative_notebook(lab, "circle.ipynb", NOTEBOOK)
    alice, bob, carol = (user_page(name) for name in ("alice", "bob", "carol"))
    for person in (alice, bob, carol):
        open_collaborative(person, "circle.ipynb")
        open_panel(person)
    alice.page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    expect(outputs(alice, 2)).to_have_text("area: 19.63\n", timeout=SEE_MS)
    source(bob, 1).click()
    bob.page.keyboard.press("End")
    source(carol, 5).click()
    with connect_blocking(lab.url, "circle.ipynb", token="alice", name=AGENT) as nb:
        for person in (alice, bob, carol):
            expect(row(person, AGENT)).to_have_count(1)

        # The script edits a cell: everyone sees the cell highlighted with its name and
        # colour, and its caret where it typed.
        # It adds a line to a cell: what it typed ends the cell, and so does its caret.
        target = nb.cells[3]
        target.source += "\nprint(f'perimeter: {perimeter:.2f}')"
        for person in (alice, bob, carol):
            expect_source(person, 3, "perimeter = 2 * math.pi * radius\n"
                                     "print(f'perimeter: {perimeter:.2f}')")  # fmt: skip
            expect(cell(person, 3)).to_have_class(re.compile(r"\bkc-agent-active\b"))
            expect(agent_mark(person, 3)).to_have_text(f"{AGENT} edited")
            expect(agent_mark(person, 3).locator(".kc-agent-name")).to_have_css(
                "color", "rgb(214, 39, 40)"
            )  # Alice's colour: the script runs as Alice
            caret = remote_caret(person, 3, AGENT)
            expect(caret).to_have_count(1)
            expect(caret).to_have_class(re.compile(r"\bkc-agent-caret\b"))
            # Where it typed: after its text, at the end of the cell.
            assert caret.evaluate(AT_LINE_END), "the script's caret is not where it typed"
        alice.page.locator(".kc-collaborators").scroll_into_view_if_needed()
        DOCS.mkdir(exist_ok=True)
        alice.page.screenshot(path=DOCS / "presence-light.png")

        # It runs the cell: "ran", and the run is Alice's (the identity it connected as).
        run = nb.run(nb.cells[3])
        for person in (alice, bob, carol):
            expect(agent_mark(person, 3)).to_have_text(f"{AGENT} ran")
            expect(run_mark(person, 3)).to_contain_text("Alice")
        run.wait()
        for person in (alice, bob, carol):
            expect(outputs(person, 3)).to_have_text("perimeter: 15.71\n")
            # A few seconds later the highlight is gone; the script is still at the cell.
            expect(cell(person, 3)).not_to_have_class(
                re.compile(r"\bkc-agent-active\b"), timeout=HIGHLIGHT_MS + 5_000)  # fmt: skip
            expect(agent_mark(person, 3)).to_have_text(f"{AGENT} here")

        # The dark theme (the theme is a setting of the server: back to light at the end).
        set_theme(bob, "JupyterLab Dark")
        try:
            nb.cells[4].source = "sizes = [round(radius * k, 1) for k in range(1, 6)]"
            expect(agent_mark(bob, 4)).to_have_text(f"{AGENT} edited")
            expect(remote_caret(bob, 4, AGENT)).to_have_count(1)
            expect_room_bar_fits(bob)
            bob.page.screenshot(path=DOCS / "presence-dark.png")
        finally:
            set_theme(bob, "JupyterLab Light")


def test_the_kernel_is_seen_where_its_code_edits(lab: JupyterServer, user_page: People) -> None:
    collaborative_notebook(lab, "kernel.ipynb", [
        "import kernel_collab\n"
        "nb = kernel_collab.notebook()\n"
        "nb.cells[1].source += '  # written by the kernel'",
        "x = 1",
    ])  # fmt: skip
    alice, bob = user_page("alice"), user_page("bob")
    for person in (alice, bob):
        open_collaborative(person, "kernel.ipynb")
        open_panel(person)
    source(alice, 0).click()
    alice.page.keyboard.press("Shift+Enter")
    for person in (alice, bob):
        expect_source(person, 1, "x = 1  # written by the kernel", timeout=SEE_MS)
        expect(row(person, "kernel").locator(".kc-collaborator-detail")).to_have_text("kernel")
        expect(row(person, "kernel").locator(".kc-avatar")).to_have_attribute(
            "data-kind", "kernel")  # fmt: skip
        expect(agent_mark(person, 1)).to_have_text(re.compile("^kernel (edited|here)$"))
        expect(remote_caret(person, 1, "kernel")).to_have_count(1)
        assert remote_caret(person, 1, "kernel").evaluate(AT_LINE_END)


def set_theme(person: UserPage, theme: str) -> None:
    person.page.evaluate("(theme) => window.jupyterapp.commands.execute("
                         "'apputils:change-theme', {theme})", theme)  # fmt: skip
    light = "false" if "Dark" in theme else "true"
    expect(person.page.locator("body")).to_have_attribute("data-jp-theme-light", light)


def test_people_who_leave_or_drop_are_gone(
    everyone: tuple[UserPage, ...], lab: JupyterServer
) -> None:
    alice, _bob, carol = everyone
    open_panel(alice)
    expect(rows(alice)).to_have_count(3)

    # Carol closes her tab: gone for the others within a few seconds.
    carol.context.close()
    expect(row(alice, "Carol")).to_have_count(0, timeout=5_000)
    expect(toolbar_icons(alice)).to_have_count(1)

    # A script that disconnects: gone as soon.
    with connect_blocking(lab.url, "people.ipynb", token="alice", name=AGENT):
        expect(row(alice, AGENT)).to_have_count(1)
    expect(row(alice, AGENT)).to_have_count(0, timeout=5_000)


def test_a_person_whose_connection_drops_is_gone_within_the_awareness_timeout(
    lab: JupyterServer, user_page: People
) -> None:
    collaborative_notebook(lab, "drop.ipynb", sources(3))
    alice, bob = user_page("alice"), user_page("bob")
    # Bob's page reaches the notebook's room through a relay this test can cut: then nothing
    # passes either way, and both connections stay open (as when a network drops).
    cut = {"now": False}

    def relay(page_side: WebSocketRoute) -> None:
        if cut["now"]:
            page_side.on_message(lambda message: None)  # the page reconnects: nobody answers
            return
        server_side = page_side.connect_to_server()
        page_side.on_message(lambda message: None if cut["now"] else server_side.send(message))
        server_side.on_message(lambda message: None if cut["now"] else page_side.send(message))
        page_side.on_close(lambda code, reason: None)  # keep the server's side open

    bob.page.route_web_socket(re.compile(r"/api/kernel-collab/sync/"), relay)
    # A script joins first and stays idle: it renews its presence, so it outlives Bob's.
    with connect_blocking(lab.url, "drop.ipynb", token="alice", name=AGENT):
        open_collaborative(alice, "drop.ipynb")
        open_collaborative(bob, "drop.ipynb")
        open_panel(alice)
        expect(row(alice, "Bob")).to_have_count(1)
        expect(row(alice, "Bob").locator(".kc-role")).to_have_text("edit")  # his, relayed
        expect(row(alice, AGENT)).to_have_count(1)

        cut["now"] = True
        started = time.monotonic()
        expect(row(alice, "Bob")).to_have_count(0, timeout=AWARENESS_TIMEOUT_MS + 5_000)
        gone_after = time.monotonic() - started
        assert gone_after <= (AWARENESS_TIMEOUT_MS + 2_000) / 1000, gone_after
        expect(toolbar_icons(alice)).to_have_count(1)
        # Alice's page drops whoever it has not heard of for 30 s at the same checks: the
        # script, idle since before Bob came, was heard of since (its renewals).
        expect(row(alice, AGENT)).to_have_count(1)


def test_notebook_7_shows_the_same(lab: JupyterServer, user_page: People) -> None:
    collaborative_notebook(lab, "nb7-people.ipynb", sources(4))
    alice, bob = user_page("alice"), user_page("bob")
    open_collaborative(alice, "nb7-people.ipynb")
    source(alice, 2).click()
    # Bob in Notebook 7: the room bar and Alice's icon in the notebook's toolbar, the panel
    # opened from there.
    bob.page.goto(f"{lab.url}/notebooks/{quote('nb7-people.ipynb')}")
    expect(kernel_status(bob)).to_have_attribute("data-status", "idle", timeout=SEE_MS)
    expect(room_bar(bob).locator(".kc-queue")).to_have_attribute("data-length", "0")
    expect(toolbar_icons(bob)).to_have_count(1)
    expect_room_bar_fits(bob)
    open_panel(bob)
    expect(row(bob, "Alice").locator(".kc-role")).to_have_text("run")
    expect(row(bob, "Alice").locator(".kc-collaborator-cell")).to_have_text("cell 3")
    expect(row(bob, "Bob").locator(".kc-collaborator-detail")).to_have_text("you")
    expect(row(bob, "Bob").locator(".kc-role")).to_have_text("edit")
    row(bob, "Alice").click()
    expect_in_view(remote_caret(bob, 2, "Alice"))
    bob.screenshot()


def test_without_jupyter_collaboration_the_panel_is_ours(
    lab: JupyterServer, user_page: People
) -> None:
    collaborative_notebook(lab, "alone.ipynb", sources(2))
    # This server's page config (JUPYTER_CONFIG_DIR of the ``lab`` fixture) turns off
    # jupyter-collaboration's frontend for the pages opened meanwhile.
    page_config = lab.root.parent / "config" / "labconfig" / "page_config.json"
    page_config.parent.mkdir(parents=True, exist_ok=True)
    page_config.write_text(json.dumps(
        {"disabledExtensions": {"@jupyter/collaboration-extension": True}}))  # fmt: skip
    try:
        alice, bob = user_page("alice"), user_page("bob")
        open_collaborative(alice, "alone.ipynb")
        open_collaborative(bob, "alone.ipynb")
    finally:
        page_config.unlink()
    page = alice.page
    expect(page.locator("#jp-collaboration-panel")).to_have_count(0)
    open_panel(alice)
    expect(page.locator("#kc-collaborators-panel .kc-collaborators")).to_be_visible()
    expect(page.locator(".kc-collaborators")).to_have_count(1)
    expect(row(alice, "Bob").locator(".kc-role")).to_have_text("edit")
    # Its tab in the left side bar, with JupyterLab's collaborators icon.
    tab = page.locator(".jp-SideBar.jp-mod-left .lm-TabBar-tab[data-id='kc-collaborators-panel']")
    expect(tab).to_have_count(1)
    alice.screenshot()
