"""``python -m kernel_collab.store``: list, export and reset stored documents; their history."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from jupyter_ydoc import YNotebook

from .history import HistoryError
from .sqlite import SQLiteStore, StoredDocument, StoreError

DEFAULT_DB = ".kernel_collab.db"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m kernel_collab.store",
        description="Inspect kernel_collab's SQLite store (the shared documents' durable state).",
    )
    parser.add_argument(
        "--db", type=Path, default=Path(DEFAULT_DB), help=f"store file (default: ./{DEFAULT_DB})"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list stored documents and their sizes")
    export = sub.add_parser("export", help="write a stored document as .ipynb")
    export.add_argument("path", help="notebook path as stored (relative to the root)")
    export.add_argument("-o", "--output", type=Path, help="file to write (default: stdout)")
    export.add_argument("--version", type=int, help="an earlier version (see `history`)")
    history = sub.add_parser("history", help="list a document's versions, one a line")
    history.add_argument("path", help="notebook path as stored (relative to the root)")
    reset = sub.add_parser("reset", help="forget a document's stored state")
    reset.add_argument("path", help="notebook path as stored (relative to the root)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command; return the exit status."""
    args = _parser().parse_args(argv)
    if not args.db.exists():
        print(f"error: {args.db}: no such store", file=sys.stderr)
        return 2
    try:
        store = SQLiteStore(args.db)
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        if args.command == "list":
            print(f"{'path':40} {'document id':36} {'snapshot':>10} {'updates':>8} "
                  f"{'upd bytes':>10} {'base':>9}  updated")
            for d in store.list():
                stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(d.updated))
                print(f"{d.path:40} {d.document_id:36} {d.snapshot_bytes:>10} "
                      f"{d.update_count:>8} {d.update_bytes:>10} {d.base_bytes:>9}  {stamp}")
            return 0
        if args.command in ("export", "history"):
            stored = store.load(args.path)
            if stored is None:
                print(f"error: {args.path}: not in {store.path}", file=sys.stderr)
                return 1
            if args.command == "history":
                return _history(store, stored)
            return _export(store, args.path, stored, args.output, args.version)
        if store.reset(args.path):
            print(f"reset {args.path}: its stored state is gone; the file is untouched")
            return 0
        print(f"error: {args.path}: not in {args.db}", file=sys.stderr)
        return 1
    finally:
        store.close()


def _export(store: SQLiteStore, path: str, stored: StoredDocument, output: Path | None,
            version: int | None) -> int:  # fmt: skip
    from ..notebook_core import files as notebook_file

    if version is None:
        notebook = YNotebook()
        notebook.ydoc.apply_update(stored.update)
        nb = notebook.get()
    else:
        try:
            nb = store.history.snapshot(stored.document_id, version).notebook
        except HistoryError as exc:
            print(f"error: {path}: {exc}", file=sys.stderr)
            return 1
    data = notebook_file.serialize(nb)
    if output is None:
        sys.stdout.buffer.write(data)
    else:
        notebook_file.write_atomic(output, data)
        what = f"version {version} of {path}" if version is not None else path
        print(f"exported {what} ({len(nb['cells'])} cells) to {output}", file=sys.stderr)
    return 0


def _history(store: SQLiteStore, stored: StoredDocument) -> int:
    for v in store.history.versions(stored.document_id):
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(v.at))
        who = ", ".join(f"{a.get('name')} ({a.get('kind')})" for a in v.authors) or "-"
        extra = "  [outputs dropped]" if v.outputs_dropped else ""
        label = f"  {v.label}" if v.label else ""
        print(f"{v.version}\t{stamp}\t{v.kind}\t{who}{label}{extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
