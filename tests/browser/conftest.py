"""Browser tests: a real JupyterLab server, Debian's chromium driven by Playwright, two people.

Fixtures:

- ``lab`` (module): a ``JupyterServer`` (``tests.jupyter_server_process``) with JupyterLab,
  kernel_collab's extension and the venv's labextensions, on a free loopback port, with its
  own root (``lab.root``), runtime, data and config directories, and the named-people identity
  provider of ``tests.browser.identity``. A test module adds server arguments by overriding
  the ``lab_server_args`` fixture (module scope, a tuple of strings).
- ``browser`` (session): headless chromium (``/usr/bin/chromium``; ``scripts/setup-browser``).
- ``user_page`` (function): ``user_page("alice") -> UserPage``, a new browser context logged in
  as that person (see ``tests.browser.identity``) and a page in it; closed after the test.

A ``UserPage`` has ``open_notebook(path)``, ``open_lab()``, ``identity()``, ``screenshot()``,
and ``page``/``context`` for everything else. Pages can look inside JupyterLab through
``window.jupyterapp`` (``LabApp.expose_app_in_browser``); the news toast is turned off.
A test's artifacts of a previous run are deleted when it starts.

When a test fails, its report gets the server log written during the test and every page's
console (with page errors, failed requests and HTTP errors), and ``tests/browser/artifacts/``
gets ``<test>-<user>-failed.png``, ``<test>-<user>-console.log`` and ``<test>-server.log``.

Tests here are synchronous: Playwright's sync API keeps its event loop marked as running
between calls, so an ``anyio``/``asyncio`` test cannot run while it lives. The
``pytest_runtest_protocol`` hook below unmarks it after each browser test, so that the
suite's async tests elsewhere run normally in the same session; within a browser test, drive
notebooks from a script with ``kernel_collab.client.connect_blocking`` (it runs its own loop
on a thread).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Request,
    Response,
    expect,
    sync_playwright,
)
from playwright.sync_api import Error as PlaywrightError

from tests.browser import identity
from tests.jupyter_server_process import JupyterServer, running_server

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
ARTIFACTS = HERE / "artifacts"

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",  # we run as root in containers
    "--disable-dev-shm-usage",  # /dev/shm is small in containers
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

#: How long the helpers wait for JupyterLab (a cold page load takes ~3 s here).
TIMEOUT_MS = 30_000

LAB_ARGS = (
    f"--ServerApp.identity_provider_class={identity.PROVIDER}",
    "--LabApp.expose_app_in_browser=True",  # window.jupyterapp, for tests to look inside
)

#: JupyterLab user settings of every ``lab``: no "official Jupyter news?" toast over the
#: notebook (it shows while ``fetchNews`` is "none", whatever ``LabApp.news_url`` says).
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
}


# --- the server ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lab_server_args() -> tuple[str, ...]:
    """Extra ``jupyter server`` arguments for this module's ``lab``; override it to add some."""
    return ()


@pytest.fixture(scope="module")
def lab(
    tmp_path_factory: pytest.TempPathFactory, lab_server_args: tuple[str, ...]
) -> Iterator[JupyterServer]:
    """A JupyterLab server for the module's tests; notebooks go in ``lab.root``."""
    base = tmp_path_factory.mktemp("lab")
    root, runtime, config, data = (base / name for name in ("root", "runtime", "config", "data"))
    for folder in (root, runtime, config, data):
        folder.mkdir()
    settings = config / "lab" / "user-settings"
    for plugin, values in LAB_SETTINGS.items():
        (settings / plugin).parent.mkdir(parents=True, exist_ok=True)
        (settings / f"{plugin}.jupyterlab-settings").write_text(json.dumps(values))
    env = {
        # Nothing from ~/.jupyter (settings, workspaces, config) or ~/.local/share/jupyter;
        # the venv's own config, kernelspecs and labextensions (sys.prefix) still apply.
        "JUPYTER_CONFIG_DIR": str(config),
        "JUPYTER_DATA_DIR": str(data),
        "JUPYTERLAB_SETTINGS_DIR": str(settings),
        "JUPYTERLAB_WORKSPACES_DIR": str(config / "lab" / "workspaces"),
        # The server imports the identity provider from tests/, whatever the cwd.
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    # jupyter-collaboration's store is ./.jupyter_ystore.db by default: not in the repo.
    args = (*LAB_ARGS, f"--SQLiteYStore.db_path={base / 'ystore.db'}", *lab_server_args)
    with running_server(root, runtime, *args, env=env) as server:
        yield server


# --- the browser -----------------------------------------------------------------------------

_playwright_loop: asyncio.AbstractEventLoop | None = None


@contextmanager
def _playwright_loop_marked() -> Iterator[None]:
    """Mark Playwright's loop as the thread's running loop (as its sync calls expect) inside."""
    previous = asyncio._get_running_loop()
    if _playwright_loop is not None:
        asyncio._set_running_loop(_playwright_loop)
    try:
        yield
    finally:
        if _playwright_loop is not None:
            asyncio._set_running_loop(previous)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(
    item: pytest.Item, nextitem: pytest.Item | None
) -> Generator[None, object, object]:
    """Browser tests run with Playwright's loop marked running; all other tests without it."""
    if not item.path.is_relative_to(HERE):
        return (yield)
    with _playwright_loop_marked():
        return (yield)


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """Headless chromium, shared by every browser test of the session."""
    global _playwright_loop
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: run scripts/setup-browser (or scripts/test)")
    with sync_playwright() as playwright:
        _playwright_loop = asyncio.get_running_loop()
        try:
            chromium = playwright.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
            )
            try:
                yield chromium
            finally:
                # The session may end in a non-browser test, with the loop unmarked.
                asyncio._set_running_loop(_playwright_loop)
                chromium.close()
        finally:
            asyncio._set_running_loop(_playwright_loop)  # for Playwright's stop, which unmarks it
            _playwright_loop = None


# --- people and their pages ------------------------------------------------------------------


def artifact_name(item: pytest.Item) -> str:
    """A test's name as a file-name prefix (parameters included)."""
    return re.sub(r"[^\w.-]+", "_", item.name).strip("_")


@dataclass
class UserPage:
    """One person's browser context and page, and everything the page logged."""

    user: str
    context: BrowserContext
    page: Page
    lab_url: str
    test_name: str
    console: list[str] = field(default_factory=list)

    def open_notebook(self, path: str) -> None:
        """Open ``path`` (relative to the server root) alone in JupyterLab; wait for its cells."""
        self.page.goto(f"{self.lab_url}/lab/tree/{quote(path)}?reset")
        expect(self.page.locator(".jp-Notebook .jp-Cell").first).to_be_visible(
            timeout=TIMEOUT_MS
        )
        # The page may show a placeholder cell before the document has synced: wait for the
        # document's context, which is ready once its content has arrived.
        self.page.wait_for_function(
            "() => window.jupyterapp?.shell.currentWidget?.context?.isReady === true",
            timeout=TIMEOUT_MS,
        )

    def open_lab(self) -> None:
        """Open JupyterLab with no document; return once it has started and restored."""
        self.page.goto(f"{self.lab_url}/lab?reset")
        self.page.wait_for_function("() => window.jupyterapp !== undefined", timeout=TIMEOUT_MS)
        self.page.evaluate("() => window.jupyterapp.restored.then(() => true)")

    def identity(self) -> dict[str, Any]:
        """``GET /api/me`` from the page, with the page's cookies: the identity the server sees."""
        result: dict[str, Any] = self.page.evaluate(
            "async () => (await (await fetch('/api/me')).json()).identity"
        )
        return result

    def screenshot(self, label: str = "") -> Path:
        """Save the page as ``tests/browser/artifacts/<test>-<user>[-<label>].png``."""
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"{self.test_name}-{self.user}{'-' + label if label else ''}.png"
        self.page.screenshot(path=path)
        return path

    def _record(self, line: str) -> None:
        self.console.append(line)

    def _on_console(self, message: ConsoleMessage) -> None:
        where = message.location.get("url", "").rsplit("/", 1)[-1]
        self._record(f"[{message.type}] {message.text}" + (f"  ({where})" if where else ""))

    def _on_page_error(self, error: PlaywrightError) -> None:
        self._record(f"[pageerror] {error.name}: {error.message}\n{error.stack or ''}")

    def _on_request_failed(self, request: Request) -> None:
        self._record(f"[requestfailed] {request.method} {request.url}: {request.failure}")

    def _on_response(self, response: Response) -> None:
        if response.status >= 400:
            self._record(f"[http {response.status}] {response.request.method} {response.url}")


@dataclass
class _Diagnostics:
    """What a failing test's report shows; filled in by the fixtures the test uses."""

    test_name: str
    server: JupyterServer | None = None
    log_start: int = 0
    pages: list[UserPage] = field(default_factory=list)

    def dump(self) -> list[tuple[str, str]]:
        """Report sections, and artifacts on disk: screenshots, consoles, the server log."""
        ARTIFACTS.mkdir(exist_ok=True)
        sections = []
        for user_page in self.pages:
            name = f"{self.test_name}-{user_page.user}"
            if not user_page.page.is_closed():
                try:
                    user_page.page.screenshot(path=ARTIFACTS / f"{name}-failed.png")
                except PlaywrightError as error:
                    user_page.console.append(f"(no failure screenshot: {error.message})")
            console = "\n".join(user_page.console)
            (ARTIFACTS / f"{name}-console.log").write_text(console + "\n")
            sections.append((f"browser console of {user_page.user}", console or "(empty)"))
        if self.server is not None:
            log_file = ARTIFACTS / f"{self.test_name}-server.log"
            log_file.write_text(self.server.log)
            during = "".join(self.server.log_lines[self.log_start:])
            sections.append((f"server log during the test (all of it: {log_file})", during))
        return sections


DIAGNOSTICS = pytest.StashKey[_Diagnostics]()


@pytest.fixture(autouse=True)
def _diagnostics(request: pytest.FixtureRequest) -> None:
    """Start the test's failure diagnostics, and clear its artifacts of a previous run."""
    name = artifact_name(request.node)
    for stale in ARTIFACTS.glob(f"{name}-*"):
        stale.unlink()
    diagnostics = _Diagnostics(name)
    request.node.stash[DIAGNOSTICS] = diagnostics
    if "lab" in request.fixturenames:
        server: JupyterServer = request.getfixturevalue("lab")
        diagnostics.server, diagnostics.log_start = server, len(server.log_lines)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Add the server log and the pages' consoles to a failed test's report."""
    report = yield
    diagnostics = item.stash.get(DIAGNOSTICS, None)
    if report.failed and diagnostics is not None:
        report.sections.extend(diagnostics.dump())
    return report


@pytest.fixture
def user_page(
    browser: Browser, lab: JupyterServer, request: pytest.FixtureRequest
) -> Iterator[Callable[[str], UserPage]]:
    """``user_page("alice")``: a new context logged in as that person, and a blank page in it.

    The people are ``tests.browser.identity.TOKENS`` (``alice``, ``bob``). Each call makes a
    new context, so one person may have several pages with separate cookies.
    """
    diagnostics = request.node.stash[DIAGNOSTICS]
    contexts: list[BrowserContext] = []

    def new(user: str) -> UserPage:
        if user not in identity.TOKENS:
            raise ValueError(f"unknown user {user!r}; the test users are {sorted(identity.TOKENS)}")
        context = browser.new_context(base_url=lab.url, viewport={"width": 1280, "height": 800})
        contexts.append(context)
        context.set_default_timeout(TIMEOUT_MS)
        # Logging in is one request with the person's token; the context keeps the cookie.
        response = context.request.get("/api/me", params={"token": user})
        assert response.ok, f"login as {user}: HTTP {response.status} {response.text()}"
        assert response.json()["identity"]["username"] == user
        page = context.new_page()
        result = UserPage(user, context, page, lab.url, diagnostics.test_name)
        page.on("console", result._on_console)
        page.on("pageerror", result._on_page_error)
        page.on("requestfailed", result._on_request_failed)
        page.on("response", result._on_response)
        diagnostics.pages.append(result)
        return result

    yield new
    for context in contexts:
        context.close()
