"""The kernel's replica (``kernel_collab.notebook()``) as people in JupyterLab see it: not at all.

Whatever carries the replica's sync between the kernel and the sidecar, a person must not
see it: no kernel status flicker while people type and a cell runs (JupyterLab's own kernel
indicators and kernel_collab's room bar), no "IOPub message rate exceeded" when code in the
kernel makes many edits, and no output lost.

Each page gets a recorder (``RECORDER``) that notes every change of every kernel status it
shows: JupyterLab's kernel connection (``statusChanged``) and session context, the notebook
toolbar's execution indicator, the status bar's "Python 3 (collaborative) | Busy", the
running cell's prompt (``[*]``), and the room bar's ``.kc-kernel-status``; and every IOPub
message the page's kernel connection receives. Each test also shows the recorder sees the
busy → idle change at the end of a run, so that "nothing changed" means something.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
from playwright.sync_api import expect

from kernel_collab.client import connect_blocking
from tests.browser.conftest import UserPage
from tests.browser.test_collaboration import (
    SEE_MS,
    People,
    alice_and_bob,
    collaborative_notebook,
    expect_source,
    file_cells,
    open_collaborative,
    outputs,
    run,
    source,
    stream_text,
    wait_for_file,
    wait_for_stock_kernel,
)
from tests.jupyter_server_process import JupyterServer

#: Installs ``window.kcRecorder`` for the notebook at ``path`` (once per page), watching the
#: prompt of cell ``promptCell``: the value of each kernel status indicator when installed,
#: every change since (with ``performance.now()`` times), marks set by the test, and the IOPub
#: messages the page's kernel connection got.
RECORDER = """([path, promptCell]) => {
    const app = window.jupyterapp;
    const panel = [...app.shell.widgets('main')].find(w => w.context?.path === path);
    if (!panel) throw new Error(`no notebook panel for ${path}`);
    const sessionContext = panel.sessionContext;
    const kernel = sessionContext.session?.kernel;
    if (!kernel) throw new Error(`the page has no kernel connection for ${path}`);
    const rec = {initial: {}, last: {}, changes: [], marks: {}, iopub: [], rateNotices: [],
                 since: performance.now()};
    const note = (source, value) => {
        value = value ?? null;
        if (!(source in rec.last)) {
            rec.initial[source] = value;
        } else if (rec.last[source] !== value) {
            rec.changes.push({t: performance.now(), source, from: rec.last[source], to: value});
        }
        rec.last[source] = value;
    };
    note('kernel', kernel.status);
    kernel.statusChanged.connect((_, status) => note('kernel', status));
    note('session', sessionContext.kernelDisplayStatus);
    sessionContext.statusChanged.connect(() => note('session', sessionContext.kernelDisplayStatus));
    kernel.iopubMessage.connect((_, msg) => {
        const type = msg.header.msg_type;
        const state = type === 'status' ? msg.content.execution_state : undefined;
        rec.iopub.push({t: performance.now(), type, state,
                        parent: msg.parent_header?.msg_type ?? null});
        const text = type === 'stream' ? String(msg.content.text) : '';
        if (/rate exceeded/i.test(text)) rec.rateNotices.push(text);
    });
    const dom = () => {
        const toolbar = panel.node.querySelector('.jp-Notebook-ExecutionIndicator');
        note('toolbar', toolbar?.dataset.status);
        const item = document.querySelector('#jp-main-statusbar [title^="Change kernel for"]');
        note('statusbar', item?.textContent.split('|').pop().trim());
        const prompts = panel.node.querySelectorAll('.jp-Cell .jp-InputPrompt');
        const prompt = prompts[promptCell]?.textContent;
        note('prompt', prompt?.includes('*') ? 'running' : prompt && 'not running');
        note('room-bar', panel.node.querySelector('.kc-kernel-status')?.dataset.status);
    };
    dom();
    new MutationObserver(dom).observe(document.documentElement, {
        subtree: true, childList: true, attributes: true, characterData: true});
    rec.mark = (name) => { rec.marks[name] = performance.now(); };
    window.kcRecorder = rec;
}"""

#: The recorder's findings, as JSON-able data.
RECORDED = """() => {
    const {initial, last, changes, marks, iopub, rateNotices} = window.kcRecorder;
    return {initial, last, changes, marks, iopub, rateNotices};
}"""

#: How long the pages' kernel connections must be without IOPub before a test starts looking.
QUIET_MS = 1_000

#: The kernel status sources and the value each shows for a busy and an idle kernel.
BUSY = {"kernel": "busy", "session": "busy", "toolbar": "busy", "statusbar": "Busy",
        "prompt": "running", "room-bar": "busy"}  # fmt: skip
IDLE = {"kernel": "idle", "session": "idle", "toolbar": "idle", "statusbar": "Idle",
        "prompt": "not running", "room-bar": "idle"}  # fmt: skip


def record(person: UserPage, path: str, prompt_cell: int) -> None:
    """Start recording the kernel status indicators of ``person``'s page (``RECORDER``)."""
    person.page.evaluate(RECORDER, [path, prompt_cell])


def mark(person: UserPage, name: str) -> None:
    person.page.evaluate("(name) => window.kcRecorder.mark(name)", name)


def recorded(person: UserPage) -> dict[str, Any]:
    result: dict[str, Any] = person.page.evaluate(RECORDED)
    return result


def expect_all(person: UserPage, values: dict[str, str]) -> None:
    """Wait until every indicator of the page shows its value in ``values``."""
    try:
        person.page.wait_for_function(
            "(values) => Object.entries(values).every(([k, v]) => window.kcRecorder.last[k] === v)",
            arg=values, timeout=SEE_MS,
        )  # fmt: skip
    except PlaywrightTimeoutError:
        shown = recorded(person)["last"]
        raise AssertionError(f"{person.user}'s indicators show {shown}, not {values}") from None


def wait_quiet(*people: UserPage) -> None:
    """Wait until no page's kernel connection has had an IOPub message for ``QUIET_MS``.

    A page that connects to the kernel (Bob's, after Alice's) makes the kernel answer
    requests of its own (``kernel_info``, ``comm_info``, ``history``, the widget manager's comm,
    ...), each with a busy → idle status that every page shows: stock JupyterLab, not what
    these tests look for. They start looking once that is over.
    """
    for person in people:
        try:
            person.page.wait_for_function(
                """(quiet) => {
                    const rec = window.kcRecorder;
                    const last = rec.iopub.length ? rec.iopub[rec.iopub.length - 1].t : rec.since;
                    return performance.now() - last > quiet;
                }""", arg=QUIET_MS, timeout=SEE_MS, polling=100,
            )  # fmt: skip
        except PlaywrightTimeoutError:
            found = recorded(person)
            raise AssertionError(f"{person.user}'s page never went {QUIET_MS} ms without IOPub: "
                                 f"{iopub_summary(found, 0)}") from None  # fmt: skip


def iopub_summary(found: dict[str, Any], start: float, end: float | None = None) -> list[str]:
    """The IOPub messages the page got in a window, as ``type[:state] (parent)``."""
    return [
        f"{m['type']}{':' + m['state'] if m['state'] else ''} ({m['parent']})"
        for m in found["iopub"]
        if m["t"] >= start and (end is None or m["t"] < end)
    ]


def assert_no_rate_limit(lab: JupyterServer, log_start: int, *people: UserPage) -> None:
    """Nobody was told the IOPub rate was exceeded: not in a page, not in the server log."""
    for person in people:
        found = recorded(person)
        assert found["rateNotices"] == [], (person.user, found["rateNotices"])
        page_text: str = person.page.evaluate("() => document.body.innerText")
        assert "rate exceeded" not in page_text.lower(), f"{person.user}'s page:\n{page_text}"
        console = [line for line in person.console if "rate exceeded" in line.lower()]
        assert console == [], console
    log = "".join(lab.log_lines[log_start:])
    assert "rate exceeded" not in log.lower(), log


# --- the tests -------------------------------------------------------------------------------


def test_no_kernel_status_flicker_while_people_type_and_the_replica_follows(
    lab: JupyterServer, user_page: People, tmp_path: Path
) -> None:
    # cell 1 watches cell 2 through the kernel's replica, in a blocking loop, until someone
    # types DONE; a thread mirrors what the replica sees to a file, for the test to wait on.
    sees = tmp_path / "replica-sees.txt"
    path = "flicker.ipynb"
    collaborative_notebook(lab, path, [
        "import kernel_collab, os, threading, time\n"
        "nb = kernel_collab.notebook()\n"
        "def mirror(path):\n"
        "    last = None\n"
        "    while True:\n"
        "        text = nb.cells[2].source\n"
        "        if text != last:\n"
        "            with open(path + '.tmp', 'w') as f:\n"
        "                f.write(text)\n"
        "            os.replace(path + '.tmp', path)\n"
        "            last = text\n"
        "        time.sleep(0.02)\n"
        f"threading.Thread(target=mirror, args=({str(sees)!r},), daemon=True).start()\n"
        "print('replica up')",
        "versions = set()\n"
        "print('watching', flush=True)\n"
        "deadline = time.monotonic() + 45\n"
        "while time.monotonic() < deadline:\n"
        "    text = nb.cells[2].source\n"
        "    versions.add(text)\n"
        "    if 'DONE' in text:\n"
        "        break\n"
        "    time.sleep(0.01)\n"
        "print(f'saw {len(versions)} versions')",
        "",
    ])  # fmt: skip
    alice, bob = alice_and_bob(user_page, path)
    for person in (alice, bob):
        wait_for_stock_kernel(person)

    run(alice, 0)
    expect(outputs(alice, 0)).to_have_text("replica up\n", timeout=SEE_MS)
    run(alice, 1)
    for person in (alice, bob):
        expect(outputs(person, 1)).to_have_text("watching\n", timeout=SEE_MS)
        record(person, path, prompt_cell=1)
    wait_quiet(alice, bob)
    for person in (alice, bob):
        expect_all(person, BUSY)  # the loop runs: every indicator says busy
        mark(person, "typing")

    # Alice and Bob type into cell 2 in turns, Alice at its end and Bob at its start.
    source(alice, 2).click()
    source(bob, 2).click()
    bob.page.keyboard.press("Control+Home")
    typed_alice, typed_bob = "", ""
    for turn in range(6):
        alice.page.keyboard.press("Control+End")
        alice.page.keyboard.type(f"a{turn} ", delay=25)
        typed_alice += f"a{turn} "
        bob.page.keyboard.type(f"b{turn} ", delay=25)
        typed_bob += f"b{turn} "
    everything = typed_bob + typed_alice
    for person in (alice, bob):
        expect_source(person, 2, everything, timeout=SEE_MS)
    # The kernel's replica has every keystroke too, while the loop still runs.
    wait_for_file(sees, lambda: sees.read_text() == everything)
    for person in (alice, bob):
        mark(person, "typed")

    alice.page.keyboard.press("Control+End")
    alice.page.keyboard.type("DONE")  # ends the loop: the kernel goes idle
    for person in (alice, bob):
        expect(outputs(person, 1)).to_contain_text("saw ", timeout=SEE_MS)
        expect_all(person, IDLE)
    printed = outputs(alice, 1).inner_text()
    versions = int(printed.split("saw ")[1].split()[0])
    # The loop saw the text grow, keystroke by keystroke (not only at the end).
    assert versions >= 10, printed

    for person in (alice, bob):
        found = recorded(person)
        start, typed = found["marks"]["typing"], found["marks"]["typed"]
        during = [c for c in found["changes"] if start <= c["t"] < typed]
        assert during == [], (
            f"{person.user} saw the kernel status change while people typed: {during}; "
            f"IOPub meanwhile: {iopub_summary(found, start, typed)}")  # fmt: skip
        # The recorder is live: it saw the end of the run, busy → idle, on every indicator.
        after: dict[str, list[tuple[str, str]]] = {}
        for change in found["changes"]:
            if change["t"] >= typed:
                after.setdefault(change["source"], []).append((change["from"], change["to"]))
        for name in BUSY:
            assert after.get(name, [])[:1] == [(BUSY[name], IDLE[name])], (
                f"{person.user}'s {name}: {after.get(name)}")  # fmt: skip
    alice.screenshot()


def test_ten_thousand_edits_from_the_kernel_stay_within_iopub_limits(
    lab: JupyterServer, user_page: People
) -> None:
    # One page (the IOPub rate limit is per page) and a script as the other peer: two pages
    # redrawing 10,000 edits would take most of this machine's two cores.
    path = "burst.ipynb"
    notebook = collaborative_notebook(lab, path, [
        "import kernel_collab\n"
        "nb = kernel_collab.notebook()\n"
        "for i in range(10_000):\n"
        "    nb.cells[1].source = str(i)\n"
        "    if i % 1000 == 999:\n"
        "        print(f'edits {i + 1}', flush=True)\n"
        "print('done', nb.cells[1].source)",
        "start",
    ])  # fmt: skip
    alice = user_page("alice")
    open_collaborative(alice, path)
    wait_for_stock_kernel(alice)
    record(alice, path, prompt_cell=0)
    with connect_blocking(lab.url, path, token="bob", name="watcher") as script:
        wait_quiet(alice)
        expect_all(alice, IDLE)
        mark(alice, "before")
        log_start = len(lab.log_lines)

        run(alice, 0)
        expected = "".join(f"edits {k}\n" for k in range(1000, 10_001, 1000)) + "done 9999\n"
        # Every line printed, in order, while the edits went out: none lost.
        expect(outputs(alice, 0)).to_have_text(expected, timeout=45_000)
        expect_source(alice, 1, "9999", timeout=SEE_MS)
        expect_all(alice, IDLE)
        deadline = time.monotonic() + SEE_MS / 1000
        while (seen := script.cells[1].source) != "9999" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert seen == "9999", f"the script's copy of cell 1 is {seen!r}"
    wait_for_file(notebook, lambda: "".join(file_cells(notebook)[1]["source"]) == "9999"
                  and stream_text(file_cells(notebook)[0]) == expected)  # fmt: skip

    wait_quiet(alice)  # whatever the kernel still had to send after the run has arrived
    assert_no_rate_limit(lab, log_start, alice)
    found = recorded(alice)
    # One run, seen as one busy → idle on every indicator: no flicker after it either.
    changes: dict[str, list[tuple[str, str]]] = {}
    for change in found["changes"]:
        if change["t"] >= found["marks"]["before"]:
            changes.setdefault(change["source"], []).append((change["from"], change["to"]))
    for name in BUSY:
        assert changes.get(name) == [(IDLE[name], BUSY[name]), (BUSY[name], IDLE[name])], (
            f"alice's {name}: {changes.get(name)}; "
            f"IOPub: {iopub_summary(found, found['marks']['before'])}")  # fmt: skip
