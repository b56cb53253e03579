"""Shared pytest configuration."""

import pytest


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio (the sidecar's and websockets' event loop)."""
    return "asyncio"
