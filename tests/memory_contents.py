"""A ContentsManager that is not file-based (kernel_collab must refuse it at start-up)."""

from __future__ import annotations

from typing import Any

from jupyter_server.services.contents.manager import ContentsManager
from tornado import web


class NoFilesContentsManager(ContentsManager):
    """Keeps nothing; enough for a server to start."""

    def dir_exists(self, path: str) -> bool:
        """Only the root."""
        return path.strip("/") == ""

    def is_hidden(self, path: str) -> bool:
        """Nothing is hidden."""
        return False

    def file_exists(self, path: str = "") -> bool:
        """No files."""
        return False

    def get(self, path: Any, content: Any = True, type: Any = None, format: Any = None,
            require_hash: Any = False) -> Any:
        """Only an empty root."""
        if path.strip("/"):
            raise web.HTTPError(404, "no files here")
        return {"name": "", "path": "", "type": "directory", "content": [] if content else None,
                "format": "json" if content else None, "mimetype": None, "writable": False,
                "created": None, "last_modified": None, "size": None}  # fmt: skip
