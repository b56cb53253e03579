"""Reading, validating and atomically writing ``.ipynb`` files (blocking; run in a thread)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import nbformat
from nbformat.v4.rwbase import _rejoin_mimebundle

from . import schema_check


class NotebookFileError(Exception):
    """A notebook file cannot be used; the message names the path and the reason."""


def content_hash(data: bytes) -> str:
    """The hash by which the sidecar recognises file contents (sha256, hex)."""
    return hashlib.sha256(data).hexdigest()


MAX_FILE_BYTES = 256 * 2**20
"""Largest ``.ipynb`` read by default: a document in memory takes several times its file."""


def read_bytes(path: Path, limit: int = MAX_FILE_BYTES) -> bytes:
    """The file's bytes, with a clear error when it is missing, unreadable or over ``limit``."""
    try:
        size = path.stat().st_size
        if size > limit and path.is_file():
            raise NotebookFileError(
                f"{path}: {size:,} bytes, more than the {limit:,}-byte limit "
                "(--DiskSync.max_file_bytes); not loaded"
            )
        return path.read_bytes()
    except FileNotFoundError:
        raise NotebookFileError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise NotebookFileError(f"{path}: is a directory, not a notebook") from None
    except OSError as exc:
        raise NotebookFileError(f"{path}: cannot read: {exc.strerror or exc}") from None


def parse(path: Path, data: bytes) -> dict[str, Any]:
    """Parse and validate notebook bytes into an nbformat v4 dict."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NotebookFileError(f"{path}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    if not text.strip():
        raise NotebookFileError(f"{path}: empty file, not a notebook")
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise NotebookFileError(
            f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from None
    if not isinstance(raw, dict) or "nbformat" not in raw:
        raise NotebookFileError(f"{path}: JSON but not a notebook (no nbformat field)")
    major = raw.get("nbformat")
    if not isinstance(major, int) or major > 4 or major < 3:
        raise NotebookFileError(f"{path}: unsupported nbformat version {major!r}")
    minor = raw.get("nbformat_minor", 0)
    if not isinstance(minor, int) or isinstance(minor, bool):  # nbformat asserts it
        raise NotebookFileError(f"{path}: not a valid notebook: nbformat_minor {minor!r} is "
                                "not an integer")
    if major == 4:
        fast = _read_v4(raw)
        if fast is not None:
            return fast
    invalid: dict[str, Any] = {}
    try:
        # reads validates (once: a second validate doubled the cost of opening) and hands
        # the error over rather than raising it.
        nb = nbformat.reads(text, as_version=4, capture_validation_error=invalid)
        if "ValidationError" in invalid:
            raise invalid["ValidationError"]
    except (nbformat.ValidationError, ValueError, KeyError, TypeError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise NotebookFileError(f"{path}: not a valid notebook: {message}") from None
    plain: dict[str, Any] = _to_plain(nb)
    return plain


def _read_v4(raw: dict[str, Any]) -> dict[str, Any] | None:
    """What ``nbformat.reads(..., as_version=4)`` makes of a v4 notebook, as plain dicts, or
    ``None`` when it is not valid (the caller then asks nbformat, for its error message).

    nbformat turns the whole tree into ``NotebookNode`` objects, validates them, and we turned
    them back into dicts: 32 ms for 1,000 cells, half of it conversions. Here its validator
    checks the parsed JSON itself, after the same rejoining of split lines and stripping of
    transient fields as its v4 reader does (``tests/unit/test_files.py`` holds the two equal).
    """
    try:
        for cell in raw["cells"]:
            _rejoin_cell(cell)
        metadata = raw["metadata"]
        for key in ("orig_nbformat", "orig_nbformat_minor", "signature"):
            metadata.pop(key, None)
        for cell in raw["cells"]:
            cell["metadata"].pop("trusted", None)
        if not schema_check.plainly_valid(raw):
            nbformat.validate(raw)  # repairs missing or duplicate cell ids, as reads does
    except (nbformat.ValidationError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return raw


def _rejoin_cell(cell: dict[str, Any]) -> None:
    """nbformat's v4 ``rejoin_lines`` for one cell of plain dicts (its own function for
    mimebundles works on dicts; ``rejoin_lines`` needs ``NotebookNode`` attributes)."""
    if isinstance(cell.get("source"), list):
        cell["source"] = "".join(cell["source"])
    for attachment in (cell.get("attachments") or {}).values():
        _rejoin_mimebundle(attachment)
    if cell.get("cell_type") != "code":
        return
    for output in cell.get("outputs", []):
        output_type = output.get("output_type", "")
        if output_type in ("execute_result", "display_data"):
            _rejoin_mimebundle(output.get("data", {}))
        elif output_type and isinstance(output.get("text", ""), list):
            output["text"] = "".join(output["text"])


def read(path: Path, limit: int = MAX_FILE_BYTES) -> tuple[dict[str, Any], bytes]:
    """Read and validate a notebook; return it and the bytes it came from."""
    data = read_bytes(path, limit)
    return parse(path, data), data


def serialize(nb: dict[str, Any]) -> bytes:
    """The bytes Jupyter writes for a notebook (nbformat's layout, trailing newline)."""
    node = nbformat.from_dict(nb)
    text: str = nbformat.writes(node, version=nbformat.NO_CONVERT)
    if not text.endswith("\n"):
        text += "\n"
    return text.encode("utf-8")


def validate(nb: dict[str, Any]) -> None:
    """Raise :class:`NotebookFileError` if ``nb`` is not a valid notebook."""
    try:
        nbformat.validate(nbformat.from_dict(nb))
    except nbformat.ValidationError as exc:
        raise NotebookFileError(f"refusing to save an invalid notebook: {exc.message}") from None


def write_atomic(path: Path, data: bytes) -> None:
    """Write via a temporary file in the same directory, fsync, rename, fsync the directory."""
    directory = path.parent
    mode = 0o644
    with contextlib.suppress(FileNotFoundError):
        mode = path.stat().st_mode & 0o777
    fd, tmp = tempfile.mkstemp(prefix=f".~{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _to_plain(node: Any) -> Any:
    """nbformat's NotebookNode tree as plain dicts and lists."""
    if isinstance(node, dict):
        return {k: _to_plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_to_plain(v) for v in node]
    return node
