"""The host patches still fit the installed hosts, and stand aside outside their versions.

If a release of jupyter_server, jupyter_client or jupyter-collaboration renames or reshapes
what ``kernel_collab/hostpatches.py`` wraps, the first test fails and names it: a patch never
stands aside silently.
"""

from __future__ import annotations

import inspect
import logging

import jupyter_server
import pytest
from jupyter_server.services.kernels.handlers import KernelActionHandler

from kernel_collab import hostpatches


def test_every_patch_fits_the_installed_hosts() -> None:
    assert hostpatches.problems() == []


def test_the_kernel_action_handler_has_the_shape_the_guard_wraps() -> None:
    post = inspect.unwrap(KernelActionHandler.post)
    assert inspect.iscoroutinefunction(post)
    assert list(inspect.signature(post).parameters) == ["self", "kernel_id", "action"]


async def _never(*_args: object) -> None:
    raise AssertionError("not called")


def test_outside_the_versions_it_knows_the_guard_warns_and_stands_aside(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(jupyter_server, "__version__", "3.0.0")
    before = KernelActionHandler.post
    with caplog.at_level(logging.WARNING, logger="kernel_collab"):
        assert hostpatches.guard_stock_kernel_actions(_never, lambda *_: True, _never) is False
    assert KernelActionHandler.post is before
    assert "jupyter_server 3.0 is outside the versions" in caplog.text
    assert "kernels:write" in caplog.text
    assert any("jupyter_server 3.0 is outside" in p for p in hostpatches.problems())
