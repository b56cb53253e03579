"""Writing large blobs without SQLite keeping a copy of each.

SQLite keeps a prepared statement's bound values until the statement is bound again, and
Python's ``sqlite3`` keeps its statements prepared (a cache per connection): every statement
that once stored a 10 MB snapshot held on to those 10 MB. A blob larger than ``BIND_MAX`` is
therefore not bound: the row gets ``zeroblob(n)`` and the bytes are written by incremental
I/O, so no statement retains more than ``BIND_MAX`` of the data it wrote.
"""

from __future__ import annotations

import sqlite3
import zlib
from collections.abc import Sequence
from typing import Final

BIND_MAX: Final = 64 * 1024
"""Largest blob bound as a statement's parameter (what a cached statement may keep)."""
BLOB: Final = "{blob}"
"""Where a statement given to :func:`execute` takes its blob."""
SAMPLE: Final = 64 * 1024
"""Bytes :func:`pack` tries before choosing how to compress the rest."""
POOR_RATIO: Final = 0.5
"""A sample compressing worse than this is mostly encoded binary (base64 images)."""


def pack(data: bytes) -> bytes:
    """zlib-compress a snapshot, a base or a version (any zlib reader reads it back). Y
    updates and notebooks of text compress 4-10x at level 1; base64 images barely do (to
    0.77, at ~35 MB/s here), where Huffman coding alone gets 0.75 four times faster."""
    if len(data) <= SAMPLE:
        return zlib.compress(data, 1)
    if len(zlib.compress(data[:SAMPLE], 1)) < POOR_RATIO * SAMPLE:
        return zlib.compress(data, 1)
    packer = zlib.compressobj(1, zlib.DEFLATED, zlib.MAX_WBITS, 8, zlib.Z_HUFFMAN_ONLY)
    return packer.compress(data) + packer.flush()


def execute(db: sqlite3.Connection, sql: str, params: Sequence[object], *, table: str,
            column: str, key: tuple[str, Sequence[object]] | None = None) -> None:  # fmt: skip
    """Run ``sql``, an INSERT or UPDATE of one row whose ``column`` is set to ``{blob}``, the
    parameter at that place in ``params`` (bytes or None). The row of an INSERT is found by its
    rowid; that of an UPDATE by ``key``: a ``WHERE`` condition and its parameters."""
    index = sql[: sql.index(BLOB)].count("?")
    data = params[index]
    if not isinstance(data, bytes) or len(data) <= BIND_MAX:
        db.execute(sql.replace(BLOB, "?"), params)
        return
    sized = [*params[:index], len(data), *params[index + 1 :]]
    cursor = db.execute(sql.replace(BLOB, "zeroblob(?)"), sized)
    if key is None:
        rowid = cursor.lastrowid
    else:
        row = db.execute(f"SELECT rowid FROM {table} WHERE {key[0]}", key[1]).fetchone()
        rowid = row[0] if row is not None else None
    if rowid is None:
        return  # an UPDATE of no row
    with db.blobopen(table, column, rowid) as blob:
        blob.write(data)
