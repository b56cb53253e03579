"""Join a shared notebook from outside the kernel (scripts, agents) through the server."""

from .blocking import connect_blocking
from .connection import NotebookError, connect

__all__ = ["NotebookError", "connect", "connect_blocking"]
