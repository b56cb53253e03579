"""An adversarial suite: each role against each attack on the trust boundary, through the real
server (Python peers through its WebSocket proxy, its HTTP routes, the contents API) and in
chromium, with a runner (Alice), an editor who may not run (Bob) and a reader (Carol) as
``tests.auth_roles.PEOPLE_ROLES`` says.

The attacks plant HTML that runs a script (``<script>``, ``<img onerror>``) and JavaScript
outputs, each setting ``window.__kc_pwned``: appended to an existing cell by a peer of each
role (refused: closed with 4403, never seen by anyone), in a cell an editor inserts (kept,
shown untrusted), written into the file through the contents API as "trusted" while the room
is live (jupyter_server signs it; merged untrusted, its forged run record marked from the
file), and in an unsigned file opened fresh. Kernel-made HTML and JavaScript (a runner's run)
render trusted for runners only. Readers' and editors' requests the rules refuse are refused
with a reason, jupyter_server's own kernel routes included. What editors may still do in
JupyterLab (clear outputs, cut, copy, paste, move cells, edit tags) closes nothing, and a
moved trusted output stays trusted; "Trust Notebook" by a runner trusts for runners only.

A check that something did not happen follows an event proving it had its chance: the planted
output is on the page (its image loaded or failed), the trust record has reached the page, a
later edit has arrived. Readers' pages join after each attack and are checked as they first
render; that a reader's page then stays on the notebook is
``test_a_readers_page_stays_on_the_notebook``'s to check. The module's figures line counts the
attacks its tests tried (``Tally``).
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio
import httpx
import nbformat
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from jupyter_ydoc import YNotebook
from nbformat.sign import NotebookNotary
from playwright.sync_api import Locator, expect
from pycrdt import Map
from websockets.asyncio.client import connect as ws_connect

from tests.auth_roles import PEOPLE_ROLES
from tests.browser.conftest import UserPage
from tests.browser.test_collaboration import (
    SEE_MS,
    People,
    cell,
    collaborative_notebook,
    expect_source,
    open_collaborative,
    outputs,
    run,
    run_mark,
    type_at_end,
    wait_for_file,
)
from tests.integration.test_roles_and_defense import _refused
from tests.integration.test_stdin import Person
from tests.jupyter_server_process import JupyterServer
from tests.peers import NotebookPeer, url_with_token

RUNNER, EDITOR, READER = "alice", "bob", "carol"
assert (PEOPLE_ROLES[RUNNER], PEOPLE_ROLES[EDITOR], PEOPLE_ROLES[READER]) == (
    "runner", "editor", "reader")  # fmt: skip

#: Planted outputs: each sets ``window.__kc_pwned`` if it runs, and shows a text if it is shown.
PLANTED: dict[str, dict[str, str]] = {
    "<script> HTML": {
        "text/html": '<b class="kc-planted">planted script</b>'
                     "<script>window.__kc_pwned=1</script>",
    },
    "<img onerror> HTML": {
        "text/html": '<b class="kc-planted">planted img</b>'
                     '<img src=x onerror="window.__kc_pwned=1">',
    },
    "application/javascript": {
        "application/javascript": "window.__kc_pwned=1",
        "text/plain": "planted javascript",
    },
}  # fmt: skip
PLANTED_TEXTS = ["planted script", "planted img", "planted javascript"]

#: A runner's cell whose outputs run scripts when they render trusted.
KERNEL_MADE = (
    "from IPython.display import HTML, Javascript, display\n"
    "display(HTML('<b id=\"kc-made\">made</b><script>window.__kc_kernel_ran=1</script>'))\n"
    "display(Javascript('window.__kc_kernel_js=1'))"
)

#: What ran or was left unsanitized in a page.
PAGE_STATE = """() => ({
    pwned: typeof window.__kc_pwned,
    onerror: document.querySelectorAll('[onerror]').length,
    scripts: document.querySelectorAll('.jp-OutputArea script').length,
    javascript: document.querySelectorAll('.jp-RenderedJavaScript').length,
})"""
DEFUSED = {"pwned": "undefined", "onerror": 0, "scripts": 0, "javascript": 0}

#: Whether the trust record of the page's notebook (as the page has it) has a cell's id.
TRUSTED_IN_PAGE = """(index) => {
    const notebook = window.jupyterapp.shell.currentWidget?.content?.model?.sharedModel;
    const record = notebook?.ystate?.get('kernel_collab')?.get?.('trusted');
    const id = notebook?.cells?.[index]?.getId();
    return record !== undefined && id !== undefined && record.has(id);
}"""

#: How many outputs each cell has in the page's shared document, and in its cell models.
SHARED_OUTPUTS = """() => window.jupyterapp.shell.currentWidget.content.model.sharedModel.cells
    .map(c => (c.toJSON().outputs ?? []).length)"""
MODEL_OUTPUTS = """() => window.jupyterapp.shell.currentWidget.content.widgets
    .map(w => w.model.outputs?.length ?? 0)"""

#: JupyterLab's dialogs in a page, as text.
DIALOGS = "() => [...document.querySelectorAll('.jp-Dialog')].map(d => d.innerText)"

T = TypeVar("T")


# --- the server, the tally ------------------------------------------------------------------


@pytest.fixture(scope="module")
def lab_server_args() -> tuple[str, ...]:
    """People have roles: Alice runs, Bob edits, Carol reads."""
    return ("--ServerApp.authorizer_class=tests.auth_roles.PeopleRoleAuthorizer",)


@dataclass
class Tally:
    """The attacks the module tried, by role, and what came of them."""

    tried: list[tuple[str, str]] = field(default_factory=list)
    held: int = 0
    """Refused (4403, ``ok: false``, HTTP 403, a dialog) or defused (shown, nothing ran)."""
    ran: int = 0
    """Attacks whose payload ran in a page where it must not."""

    def attack(self, name: str, by: str, *, held: bool, ran_in: list[str] | None = None) -> None:
        self.tried.append((name, by))
        self.held += held and not ran_in
        self.ran += bool(ran_in)

    def line(self) -> str:
        roles = {by for _, by in self.tried} & {"runner", "editor", "reader"}
        return (f"adversarial: {len(self.tried)} attacks tried ({len(roles)} roles), "
                f"{self.held} refused or defused, {self.ran} ran in any page")  # fmt: skip


@pytest.fixture(scope="module")
def tally() -> Tally:
    return Tally()


@pytest.fixture(autouse=True)
def _figures(
    request: pytest.FixtureRequest, tally: Tally, report_figure: Callable[[str], None]
) -> Iterator[None]:
    """After the module's last test of this run (or the one that stopped it, with ``-x``),
    report what its tests tried."""
    yield
    session = request.session
    ours = [item for item in session.items if item.path == request.node.path]
    if request.node is ours[-1] or session.shouldfail or session.shouldstop:
        report_figure(tally.line())


@pytest.fixture
def portal() -> Iterator[BlockingPortal]:
    """An event loop on a thread for the test's Python peers (the test's own thread runs
    Playwright's)."""
    with start_blocking_portal() as running:
        yield running


# --- Python peers through the server ---------------------------------------------------------


@dataclass
class Peer:
    """A ``NotebookPeer`` through the server, driven from the test's thread (its document lives
    on the portal's thread: everything touching it runs there)."""

    portal: BlockingPortal
    peer: NotebookPeer

    def do(self, change: Callable[[YNotebook], T]) -> T:
        return self.portal.call(lambda: change(self.peer.notebook))

    def wait_until(self, predicate: Callable[[YNotebook], bool]) -> None:
        self.portal.call(self.peer.wait_until, lambda p: predicate(p.notebook))

    def cells(self) -> list[dict[str, Any]]:
        cells: list[dict[str, Any]] = self.do(lambda nb: nb.get()["cells"])
        return cells

    def trusted(self) -> set[str]:
        def record(nb: YNotebook) -> set[str]:
            status = nb.ystate.get("kernel_collab")
            value = status.get("trusted") if status is not None else None
            return set(value.to_py() or {}) if value is not None else set()

        return self.do(record)

    def refusal(self) -> tuple[int | None, str]:
        """Wait until the sidecar closes this peer; its close code and reason."""
        with contextlib.suppress(ConnectionError):
            self.portal.call(self.peer.wait_until, lambda p: False)
        return self.peer.close_code, self.peer.close_reason or ""

    def still_open(self) -> bool:
        return self.peer.close_code is None and self.portal.call(self._flushed)

    async def _flushed(self) -> bool:
        try:
            await self.peer.flush()
        except ConnectionError:
            return False
        return True


@contextlib.contextmanager
def connected(portal: BlockingPortal, lab: JupyterServer, document_id: str,
              person: str) -> Iterator[Peer]:  # fmt: skip
    """A Python peer of ``person`` (their login token) through the server's sync route."""
    url = lab.sync_url(document_id)
    with portal.wrap_async_context_manager(NotebookPeer.connect(url, person)) as peer:
        yield Peer(portal, peer)


def open_room(portal: BlockingPortal, lab: JupyterServer, path: str) -> dict[str, Any]:
    """The room of ``path``, opened by the runner (readers and editors may not start one)."""
    room: dict[str, Any] = portal.call(lab.open_room, path, RUNNER)
    return room


def http(lab: JupyterServer, person: str) -> httpx.Client:
    return httpx.Client(base_url=lab.url, headers={"Authorization": f"token {person}"},
                        timeout=30)  # fmt: skip


def display_output(data: dict[str, str]) -> dict[str, Any]:
    return {"output_type": "display_data", "data": data, "metadata": {}}


def append_output(index: int, data: dict[str, str]) -> Callable[[YNotebook], None]:
    """A change appending an output to cell ``index``, as no peer may."""
    return lambda nb: nb.ycells[index]["outputs"].append(Map(display_output(data)))


# --- what a page shows ----------------------------------------------------------------------


def page_state(person: UserPage) -> dict[str, Any]:
    state: dict[str, Any] = person.page.evaluate(PAGE_STATE)
    return state


def dialogs(person: UserPage) -> list[str]:
    shown: list[str] = person.page.evaluate(DIALOGS)
    return shown


def output_items(person: UserPage, index: int) -> Locator:
    return outputs(person, index).locator(".jp-OutputArea-output")


def made(person: UserPage, index: int) -> Locator:
    """The kernel-made HTML of cell ``index``, trusted (``#kc-made``) or sanitized (no id)."""
    return outputs(person, index).locator("b", has_text=re.compile("^made$"))


def cell_metadata_editor(person: UserPage) -> Locator:
    """The property inspector's JSON editor of the active cell's metadata (opened)."""
    page = person.page
    tab = page.locator(".jp-SideBar.jp-mod-right .lm-TabBar-tab[data-id='jp-property-inspector']")
    if tab.get_attribute("aria-selected") != "true":
        tab.click()
    advanced = page.locator("#jp-property-inspector .jp-Collapse-header", has_text="Advanced Tools")
    expect(advanced).to_be_visible()
    if "jp-Collapse-header-collapsed" in (advanced.get_attribute("class") or ""):
        advanced.click()
    editor = page.locator("#jp-property-inspector .jp-JSONEditor").first
    expect(editor).to_be_visible()
    return editor


def expect_planted_shown(person: UserPage, index: int) -> None:
    """Wait until cell ``index`` shows the planted outputs (as text: untrusted), its image
    loaded or failed: each had its chance to run."""
    expect(output_items(person, index)).to_have_text(PLANTED_TEXTS, timeout=SEE_MS)
    expect_images_settled(person)


def expect_images_settled(person: UserPage) -> None:
    """Wait until the page's output images have loaded or failed (an ``onerror`` had its
    chance)."""
    person.page.wait_for_function(
        """() => {
            const images = [...document.querySelectorAll('.jp-Notebook .jp-OutputArea img')];
            return images.length > 0 && images.every(image => image.complete);
        }"""
    )


def expect_trusted_in_page(person: UserPage, index: int) -> None:
    """Wait until the trust record this page has vouches for cell ``index``."""
    person.page.wait_for_function(TRUSTED_IN_PAGE, arg=index, timeout=SEE_MS)


def pages_where_it_ran(pages: list[UserPage]) -> list[str]:
    return [p.user for p in pages if page_state(p) != DEFUSED]


def assert_defused(pages: list[UserPage]) -> None:
    for person in pages:
        assert page_state(person) == DEFUSED, f"{person.user}'s page: {page_state(person)}"


def palette(person: UserPage, label: str) -> None:
    """Run a command through JupyterLab's command palette, as a person does."""
    page = person.page
    page.keyboard.press("Escape")  # command mode: the palette's shortcut is not the editor's
    page.keyboard.press("Control+Shift+C")
    search = page.locator(".lm-CommandPalette-input")
    expect(search).to_be_focused()
    search.fill(label)
    item = page.locator(".lm-CommandPalette-item", has_text=re.compile(f"^{re.escape(label)}"))
    item.first.click()


def flag(person: UserPage, name: str) -> Any:
    return person.page.evaluate(f"() => window.{name}")


# --- 1. planted outputs ---------------------------------------------------------------------


def test_planted_outputs_run_in_no_page(
    lab: JupyterServer, user_page: People, portal: BlockingPortal, tally: Tally
) -> None:
    path = collaborative_notebook(lab, "planted.ipynb", ["x = 1", "y = 2", "z = 3"])
    room = open_room(portal, lab, "planted.ipynb")
    runner, editor = user_page(RUNNER), user_page(EDITOR)
    for person in (runner, editor):
        open_collaborative(person, "planted.ipynb")
    pages = [runner, editor]

    with connected(portal, lab, room["document_id"], RUNNER) as witness:
        # (a) A peer of each role appends an output to an existing cell: refused, every time.
        reasons = {"reader": "read-only: your edits were refused",
                   "editor": "outputs are written by the kernel only",
                   "runner": "outputs are written by the kernel only"}  # fmt: skip
        for who in (READER, EDITOR, RUNNER):
            role = PEOPLE_ROLES[who]
            for name, data in PLANTED.items():
                with connected(portal, lab, room["document_id"], who) as mallory:
                    mallory.do(append_output(0, data))
                    code, reason = mallory.refusal()
                tally.attack(f"append {name} to a cell", role,
                             held=code == 4403 and reasons[role] in reason)  # fmt: skip
                assert code == 4403, (role, name, code, reason)
                assert reasons[role] in reason, (role, name, reason)
        # Nobody saw them: an edit made after them arrives, and cell 0 still has no output.
        witness.do(lambda nb: nb.ycells[2]["source"].insert(5, "  # after the refusals"))
        for person in pages:
            expect_source(person, 2, "z = 3  # after the refusals")
            expect(output_items(person, 0)).to_have_count(0)
        assert witness.cells()[0]["outputs"] == []
        assert_defused(pages)

        # (b) The editor inserts a cell with the planted outputs: kept, untrusted everywhere.
        with connected(portal, lab, room["document_id"], EDITOR) as mallory:
            planted_cell: dict[str, Any] = {
                "id": "planted-cell", "cell_type": "code", "source": "# planted", "metadata": {},
                "execution_count": None, "outputs": [display_output(d) for d in PLANTED.values()],
            }  # fmt: skip
            mallory.do(lambda nb: nb.ycells.insert(1, nb.create_ycell(planted_cell)))
            witness.wait_until(lambda nb: nb.cell_number == 4)
            for person in pages:
                expect_planted_shown(person, 1)
            ran_in = pages_where_it_ran(pages)
            for name in PLANTED:
                tally.attack(f"{name} in an inserted cell", "editor", held=True, ran_in=ran_in)
            assert_defused(pages)
            assert "planted-cell" not in witness.trusted()
            assert mallory.still_open()

        # (c) The editor saves the planted outputs into the file through the contents API,
        # every cell "trusted" and a forged run record: jupyter_server signs the file, the
        # room merges it as an outside change, untrusted, its run record marked from the file.
        editor.page.keyboard.press("Control+s")  # the file has the inserted cell, as a base
        wait_for_file(path, lambda: "planted-cell" in path.read_text())
        with http(lab, EDITOR) as bob, http(lab, READER) as carol:
            model = bob.get("/api/contents/planted.ipynb").raise_for_status().json()
            content = model["content"]
            for file_cell in content["cells"]:
                file_cell["metadata"]["trusted"] = True
            (target,) = [c for c in content["cells"] if c["id"] == "cell-2"]
            target["outputs"] = [display_output(d) for d in PLANTED.values()]
            forged = {"by": {"username": "teacher", "name": "The Teacher"}, "status": "ok",
                      "start": 1.7e9, "end": 1.7e9 + 1}  # fmt: skip
            target["metadata"]["kernel_collab"] = {"last_run": forged}
            body = {"type": "notebook", "format": "json", "content": content}
            refused = carol.put("/api/contents/planted.ipynb", json=body)
            tally.attack("save planted outputs through the contents API", "reader",
                         held=refused.status_code == 403)  # fmt: skip
            assert refused.status_code == 403, refused.text
            bob.put("/api/contents/planted.ipynb", json=body).raise_for_status()
        saved = nbformat.read(path, as_version=4)
        notary = NotebookNotary(data_dir=str(lab.root.parent / "data"))
        assert notary.check_signature(saved), "jupyter_server did not sign the trusted save"

        witness.wait_until(lambda nb: len(nb.get()["cells"][3]["outputs"]) == 3)
        for person in pages:
            expect_planted_shown(person, 3)
        ran_in = pages_where_it_ran(pages)
        for name in PLANTED:
            tally.attack(f"{name} saved signed through the contents API", "editor",
                         held="cell-2" not in witness.trusted(), ran_in=ran_in)  # fmt: skip
        assert_defused(pages)
        assert "cell-2" not in witness.trusted()
        last_run = witness.cells()[3]["metadata"]["kernel_collab"]["last_run"]
        assert last_run["by"]["name"] == "The Teacher" and last_run["from_file"] is True

    # The reader, joining now, sees what the others see, and nothing runs either.
    reader = user_page(READER)
    open_collaborative(reader, "planted.ipynb")
    expect_source(reader, 3, "z = 3  # after the refusals")
    expect(output_items(reader, 0)).to_have_count(0)
    for index in (1, 3):
        expect_planted_shown(reader, index)
    assert_defused([reader])


# --- 2. an unsigned file, then "Trust Notebook" -----------------------------------------------


def test_an_unsigned_notebook_runs_nothing_until_a_runner_trusts_it(
    lab: JupyterServer, user_page: People, tally: Tally
) -> None:
    path = collaborative_notebook(lab, "unsigned.ipynb", ["a = 1", "b = 2", "c = 3"])
    nb = nbformat.read(path, as_version=4)
    for nb_cell, data in zip(nb.cells, PLANTED.values(), strict=True):
        nb_cell.outputs = [nbformat.v4.new_output("display_data", data=data)]
    nbformat.write(nb, path)  # not signed
    runner, editor = user_page(RUNNER), user_page(EDITOR)
    for person in (runner, editor):
        open_collaborative(person, "unsigned.ipynb")
    pages = [runner, editor]
    for person in pages:
        for index, text in enumerate(PLANTED_TEXTS):
            expect(output_items(person, index)).to_have_text(text)
        expect_images_settled(person)
    ran_in = pages_where_it_ran(pages)
    for name in PLANTED:
        tally.attack(f"{name} in an unsigned file", "file", held=True, ran_in=ran_in)
    assert_defused(pages)

    # The editor may not trust it: JupyterLab says so, and asks the sidecar nothing.
    palette(editor, "Trust Notebook")
    refusal = editor.page.locator(".jp-Dialog")
    expect(refusal.locator(".jp-Dialog-header")).to_have_text("Cannot trust this notebook")
    tally.attack("Trust Notebook", "editor", held=True)
    refusal.locator(".jp-mod-accept").click()
    expect(refusal).to_have_count(0)

    # The runner trusts it: the outputs render trusted for the runner, scripts run.
    palette(runner, "Trust Notebook")
    question = runner.page.locator(".jp-Dialog")
    expect(question.locator(".jp-Dialog-header")).to_have_text("Trust this notebook's outputs?")
    question.locator(".jp-mod-accept").click()
    runner.page.wait_for_function("() => window.__kc_pwned === 1", timeout=SEE_MS)
    expect(runner.page.locator(".jp-OutputArea img[onerror]")).to_have_count(1)
    expect(runner.page.locator(".jp-RenderedJavaScript")).to_have_count(1)
    # Not for the editor, whose page has the same record and still runs nothing.
    for index in range(3):
        expect_trusted_in_page(editor, index)
    assert_defused([editor])

    reader = user_page(READER)
    open_collaborative(reader, "unsigned.ipynb")
    for index, text in enumerate(PLANTED_TEXTS):
        expect(output_items(reader, index)).to_have_text(text)
        expect_trusted_in_page(reader, index)
    expect_images_settled(reader)
    assert_defused([reader])


# --- 3. kernel-made outputs -----------------------------------------------------------------


def test_kernel_made_html_runs_for_runners_only(
    lab: JupyterServer, user_page: People, tally: Tally
) -> None:
    collaborative_notebook(lab, "made.ipynb", [KERNEL_MADE, ""])
    runner, editor = user_page(RUNNER), user_page(EDITOR)
    for person in (runner, editor):
        open_collaborative(person, "made.ipynb")

    run(runner, 0)
    expect(outputs(runner, 0).locator("#kc-made")).to_have_text("made", timeout=SEE_MS)
    runner.page.wait_for_function(
        "() => window.__kc_kernel_ran === 1 && window.__kc_kernel_js === 1")
    # The editor's page shows it sanitized (no script, no id); the reader joins after the run.
    expect(made(editor, 0)).to_be_visible(timeout=SEE_MS)
    expect_trusted_in_page(editor, 0)
    reader = user_page(READER)
    open_collaborative(reader, "made.ipynb")
    expect(made(reader, 0)).to_be_visible()
    expect_trusted_in_page(reader, 0)
    others = [editor, reader]
    ran_in = [p.user for p in others
              if flag(p, "__kc_kernel_ran") is not None or flag(p, "__kc_kernel_js") is not None]
    for name in ("kernel-made <script> HTML", "kernel-made Javascript"):
        tally.attack(f"{name} shown to those who may not run", "runner", held=True,
                     ran_in=ran_in)  # fmt: skip
    assert ran_in == []
    for person in others:
        expect(outputs(person, 0).locator("script")).to_have_count(0)

    # A fresh page of the runner's renders it trusted too.
    runner.page.reload()
    expect(outputs(runner, 0).locator("#kc-made")).to_have_text("made", timeout=SEE_MS)
    runner.page.wait_for_function(
        "() => window.__kc_kernel_ran === 1 && window.__kc_kernel_js === 1")


# --- 4. what editors may still do -----------------------------------------------------------


def clear_all_outputs(person: UserPage) -> None:
    """Edit → Clear Outputs of All Cells."""
    person.page.locator(".lm-MenuBar-itemLabel", has_text=re.compile("^Edit$")).click()
    person.page.get_by_role("menuitem", name="Clear Outputs of All Cells", exact=True).click()


def select(person: UserPage, index: int) -> None:
    """Select a cell in command mode, as a click on its prompt does."""
    cell(person, index).locator(".jp-InputPrompt").click()


def run_kernel_made(runner: UserPage, others: list[UserPage], index: int) -> None:
    """The runner runs the kernel-made cell at ``index``; wait until every page shows it and
    it ran in the runner's."""
    run(runner, index)
    expect(outputs(runner, index).locator("#kc-made")).to_have_text("made", timeout=SEE_MS)
    for person in others:
        expect(made(person, index)).to_be_visible(timeout=SEE_MS)
    runner.page.wait_for_function("() => window.__kc_kernel_ran === 1")


def test_editors_may_clear_move_copy_cut_paste_and_tag(
    lab: JupyterServer, user_page: People, tally: Tally
) -> None:
    collaborative_notebook(lab, "arrange.ipynb", [KERNEL_MADE, "w = 1", "v = 2"])
    runner, editor = user_page(RUNNER), user_page(EDITOR)
    for person in (runner, editor):
        open_collaborative(person, "arrange.ipynb")
    run_kernel_made(runner, [editor], 0)
    log_start = len(lab.log_lines)

    def reset_runner_flags() -> None:
        runner.page.evaluate("() => {delete window.__kc_kernel_ran; delete window.__kc_kernel_js}")

    # Clear every output from the Edit menu; the runner runs the cell again.
    clear_all_outputs(editor)
    for person in (runner, editor):
        expect(person.page.locator(".jp-Notebook .jp-OutputArea-output")).to_have_count(0)
    reset_runner_flags()
    run_kernel_made(runner, [editor], 0)

    # Move the trusted cell down with the cell's own toolbar: it stays trusted for the runner
    # (its re-rendered output runs again there), not for the editor.
    reset_runner_flags()
    select(editor, 0)
    cell(editor, 0).locator(".jp-cell-toolbar [data-command='notebook:move-cell-down']").click()
    for person in (runner, editor):
        expect_source(person, 0, "w = 1")
        expect(made(person, 1)).to_be_visible()
    runner.page.wait_for_function(
        "() => window.__kc_kernel_ran === 1 && window.__kc_kernel_js === 1", timeout=SEE_MS)
    assert flag(editor, "__kc_kernel_ran") is None

    # Copy and paste it (C, V): the copy has a new id, which nobody vouched for.
    reset_runner_flags()
    select(editor, 1)
    editor.page.keyboard.press("c")
    editor.page.keyboard.press("v")
    for person in (runner, editor):
        expect(person.page.locator(".jp-Notebook .jp-Cell")).to_have_count(4)
        expect(made(person, 2)).to_be_visible()
    expect_trusted_in_page(runner, 1)
    assert not runner.page.evaluate(TRUSTED_IN_PAGE, 2)
    assert flag(runner, "__kc_kernel_ran") is None

    # Cut the original (X) and paste it below the copy (V): it keeps its id, and its trust.
    select(editor, 1)
    editor.page.keyboard.press("x")
    for person in (runner, editor):
        expect(person.page.locator(".jp-Notebook .jp-Cell")).to_have_count(3)
    reset_runner_flags()
    select(editor, 1)
    editor.page.keyboard.press("v")
    for person in (runner, editor):
        expect(person.page.locator(".jp-Notebook .jp-Cell")).to_have_count(4)
        expect(made(person, 2)).to_be_visible()
    expect_trusted_in_page(runner, 2)
    runner.page.wait_for_function("() => window.__kc_kernel_ran === 1", timeout=SEE_MS)

    # Tag the moved cell in the property inspector's cell metadata editor (it re-sets every
    # key, its run record too, to the value it has). (The inspector's "Add Tag" field is not
    # used: in JupyterLab 4.6 the first tag it adds to a cell is never sent to collaborators,
    # with jupyter-collaboration's rooms too.)
    select(editor, 2)
    metadata = cell_metadata_editor(editor)
    metadata.locator(".cm-line").first.click()
    editor.page.keyboard.press("End")
    editor.page.keyboard.press("Enter")
    editor.page.keyboard.type('"tags": ["reviewed"],')
    metadata.locator("[title='Commit changes to data']").click()
    runner.page.wait_for_function(
        "() => JSON.stringify(window.jupyterapp.shell.currentWidget.content.model.sharedModel"
        ".cells[2].getMetadata('tags')) === '[\"reviewed\"]'", timeout=SEE_MS)

    # The editor is still connected: a later edit arrives; nothing was refused.
    type_at_end(editor, 0, "  # still here")
    expect_source(runner, 0, "w = 1  # still here")
    assert dialogs(editor) == []
    refusals = [line for line in lab.log_lines[log_start:] if "closing peer bob" in line]
    assert refusals == []

    # What the editor may not do there: rewrite the run record ("ran by Mallory").
    select(editor, 2)
    metadata = cell_metadata_editor(editor)
    metadata.locator(".cm-line", has_text='"name": "Alice"').get_by_text("Alice").dblclick()
    editor.page.keyboard.type("Mallory")
    metadata.locator("[title='Commit changes to data']").click()
    refusal = editor.page.locator(".jp-Dialog")
    expect(refusal.locator(".jp-Dialog-header")).to_have_text("Your change was refused")
    expect(refusal).to_contain_text("metadata.kernel_collab is written by the sidecar only")
    # The refusal came after the sidecar held the change: the runner never saw it.
    seen = run_mark(runner, 2).inner_text()
    tally.attack("forge a run record in the metadata editor", "editor",
                 held=seen.startswith("ran by Alice "))  # fmt: skip
    assert seen.startswith("ran by Alice "), seen


# --- 5. refused requests --------------------------------------------------------------------


async def _request_refusals(url: str) -> dict[tuple[str, str], str]:
    """Each request the rules refuse a reader or an editor, on the sync route: its reason.
    ``input_reply`` answers a live prompt of the runner's."""
    reasons: dict[tuple[str, str], str] = {}
    async with (
        ws_connect(url_with_token(url, RUNNER)) as ws_runner,
        ws_connect(url_with_token(url, EDITOR)) as ws_editor,
        ws_connect(url_with_token(url, READER)) as ws_reader,
        anyio.create_task_group() as tg,
    ):
        runner, editor, reader = Person(ws_runner), Person(ws_editor), Person(ws_reader)
        for person in (runner, editor, reader):
            tg.start_soon(person.collect)
        refused: dict[str, list[dict[str, Any]]] = {
            "reader": [{"type": "save"}],
            "editor": [],
        }
        for role in ("reader", "editor"):
            refused[role] += [
                {"type": "execute", "cell_id": "cell-1"},
                {"type": "kernel_action", "action": "interrupt"},
                {"type": "kernel_action", "action": "restart"},
                {"type": "trust"},
            ]
        for role, person in (("reader", reader), ("editor", editor)):
            for request in refused[role]:
                name = request.get("action") or request["type"]
                reasons[role, str(name)] = await _refused(person, request)

        await runner.send({"type": "execute", "cell_id": "cell-0"})
        await runner.wait(lambda: runner.prompts())
        prompt = runner.prompts()[0]
        for role, person in (("reader", reader), ("editor", editor)):
            reply = {"type": "input_reply", "value": "0000", "request_id": prompt["request_id"]}
            reasons[role, "input_reply"] = await _refused(person, reply)
        answered = await runner.send({"type": "input_reply", "value": "1234",
                                      "request_id": prompt["request_id"]})  # fmt: skip
        await runner.wait(lambda: (runner.reply(answered) or {}).get("ok") is True)
        tg.cancel_scope.cancel()
    return reasons


def test_readers_and_editors_refused_requests(
    lab: JupyterServer, portal: BlockingPortal, tally: Tally
) -> None:
    collaborative_notebook(lab, "roles.ipynb", ["pin = input('pin? ')\nprint('pin', pin)",
                                                 "print('never')"])  # fmt: skip
    room = open_room(portal, lab, "roles.ipynb")
    url = lab.sync_url(room["document_id"])
    with connected(portal, lab, room["document_id"], RUNNER) as witness:
        reasons = portal.call(_request_refusals, url)
        witness.wait_until(lambda nb: "pin 1234" in json.dumps(nb.get()["cells"][0]["outputs"]))
        expected = {
            "save": "Carol may only read this notebook",
            "execute": "{} may not run cells here",
            "interrupt": "{} may not interrupt the kernel",
            "restart": "{} may not restart the kernel",
            "trust": "{} may not trust outputs: only people who may run code can",
            "input_reply": "{} may not answer input(): it needs the right to run",
        }
        for (role, name), reason in reasons.items():
            who = {"reader": "Carol", "editor": "Bob"}[role]
            tally.attack(f"{name} request", role, held=reason == expected[name].format(who))
        assert len(reasons) == 11
        for (role, name), reason in reasons.items():
            who = {"reader": "Carol", "editor": "Bob"}[role]
            assert reason == expected[name].format(who), (role, name, reason)

        # jupyter_server's own kernel routes, and ours, through HTTP.
        kernel = f"/api/kernels/{room['kernel_id']}"
        with http(lab, EDITOR) as bob, http(lab, READER) as carol:
            attempts = {
                ("editor", "stock interrupt"): bob.post(f"{kernel}/interrupt"),
                ("editor", "stock restart"): bob.post(f"{kernel}/restart"),
                ("reader", "stock interrupt"): carol.post(f"{kernel}/interrupt"),
                ("reader", "stock restart"): carol.post(f"{kernel}/restart"),
                ("editor", "execute route"): bob.post(f"{kernel}/execute", json={
                    "cell_id": "cell-1", "document_id": room["document_id"]}),
                ("editor", "room restart route"):
                    bob.post("/api/kernel-collab/rooms/roles.ipynb/restart"),
            }  # fmt: skip
        for (role, name), response in attempts.items():
            tally.attack(name, role, held=response.status_code == 403)
        assert {k: r.status_code for k, r in attempts.items()} == dict.fromkeys(attempts, 403)
        for role, name in (("editor", "stock interrupt"), ("editor", "stock restart")):
            assert "kernels:execute" in attempts[role, name].json()["message"]

        # None of it happened: the same kernel, no kernel event, the refused run never ran (it
        # would have been queued before the runner's, which has finished).
        after = open_room(portal, lab, "roles.ipynb")
        assert after["kernel_id"] == room["kernel_id"]
        state = witness.do(lambda nb: nb.ystate["kernel_collab"].to_py())
        assert "last_kernel_event" not in state
        never = witness.cells()[1]
        assert never["outputs"] == [] and "kernel_collab" not in never["metadata"]


# --- 6. clearing the outputs of a moved cell ------------------------------------------------


def test_clearing_a_moved_cells_outputs_clears_them_in_every_page(
    lab: JupyterServer, user_page: People
) -> None:
    """The editor moves the runner's cell, then clears every output: the runner's page shows
    what the document has, no outputs."""
    collaborative_notebook(lab, "moved.ipynb", ["print('one')", "w = 1"])
    runner, editor = user_page(RUNNER), user_page(EDITOR)
    for person in (runner, editor):
        open_collaborative(person, "moved.ipynb")
    run(runner, 0)
    for person in (runner, editor):
        expect(outputs(person, 0)).to_have_text("one\n", timeout=SEE_MS)
    select(editor, 0)
    cell(editor, 0).locator(".jp-cell-toolbar [data-command='notebook:move-cell-down']").click()
    expect(outputs(runner, 1)).to_have_text("one\n")
    clear_all_outputs(editor)
    expect(output_items(editor, 1)).to_have_count(0)
    runner.page.wait_for_function(f"() => ({SHARED_OUTPUTS})().every(n => n === 0)")
    on_screen = runner.page.evaluate(MODEL_OUTPUTS)
    assert on_screen == [0, 0], (
        f"the document has no outputs, the runner's cell models have {on_screen}")
    expect(output_items(runner, 1)).to_have_count(0)


# --- 7. a reader's page ---------------------------------------------------------------------


def test_a_readers_page_stays_on_the_notebook(
    lab: JupyterServer, user_page: People, portal: BlockingPortal
) -> None:
    """A reader opening a collaborative notebook stays connected and sees later edits."""
    log_start = len(lab.log_lines)
    collaborative_notebook(lab, "read.ipynb", ["x = 1", "y = 2"])
    room = open_room(portal, lab, "read.ipynb")
    reader = user_page(READER)
    open_collaborative(reader, "read.ipynb")
    with connected(portal, lab, room["document_id"], RUNNER) as runner:
        runner.do(lambda nb: nb.ycells[1]["source"].insert(5, "  # edited"))
        reader.page.wait_for_function(
            "() => document.querySelectorAll('.jp-Dialog').length > 0 || "
            "[...document.querySelectorAll('.jp-Notebook .jp-Cell .cm-content')]"
            ".some(c => c.textContent.includes('# edited'))", timeout=SEE_MS)  # fmt: skip
    shown = dialogs(reader)
    closed = [line.strip() for line in lab.log_lines[log_start:] if "closing peer carol" in line]
    assert shown == [], f"the reader's page lost the notebook: {shown}; sidecar: {closed}"
    expect_source(reader, 1, "y = 2  # edited")


# --- 8. a run record from the file -----------------------------------------------------------


def test_a_run_record_from_the_file_is_not_shown_as_a_run_here(
    lab: JupyterServer, user_page: People, portal: BlockingPortal
) -> None:
    """An editor's file brings a run record "by" someone: the page says it came from the file
    (the document marks it ``from_file``), not as if that person ran the cell in this room."""
    collaborative_notebook(lab, "record.ipynb", ["x = 1"])
    room = open_room(portal, lab, "record.ipynb")
    runner = user_page(RUNNER)
    open_collaborative(runner, "record.ipynb")
    with connected(portal, lab, room["document_id"], RUNNER) as witness, \
            http(lab, EDITOR) as bob:  # fmt: skip
        content = bob.get("/api/contents/record.ipynb").raise_for_status().json()["content"]
        content["cells"][0]["metadata"]["kernel_collab"] = {"last_run": {
            "by": {"username": "teacher", "name": "The Teacher"}, "status": "ok",
            "start": 1.7e9, "end": 1.7e9 + 1}}  # fmt: skip
        body = {"type": "notebook", "format": "json", "content": content}
        bob.put("/api/contents/record.ipynb", json=body).raise_for_status()
        witness.wait_until(lambda nb: "kernel_collab" in nb.get()["cells"][0]["metadata"])
        last_run = witness.cells()[0]["metadata"]["kernel_collab"]["last_run"]
        assert last_run["from_file"] is True
    mark = run_mark(runner, 0)
    expect(mark).to_contain_text("The Teacher")
    expect(mark).to_contain_text(re.compile("file", re.IGNORECASE))
