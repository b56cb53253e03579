"""Shared pytest configuration."""

from collections.abc import Callable

import pytest

FIGURES = pytest.StashKey[list[str]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--soak``: the 10-minute soak instead of the 1-minute one of every run."""
    parser.addoption("--soak", action="store_true", help="run the 10-minute soak test")


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio (the sidecar's and websockets' event loop)."""
    return "asyncio"


@pytest.fixture
def report_figure(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Record a line of figures (reliability runs), printed at the end of the test run."""
    figures = request.config.stash.setdefault(FIGURES, [])
    return figures.append


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter,
                            config: pytest.Config) -> None:
    """Print the figures the tests recorded."""
    figures = config.stash.get(FIGURES, [])
    if figures:
        terminalreporter.section("figures")
        for line in figures:
            terminalreporter.write_line(line)
