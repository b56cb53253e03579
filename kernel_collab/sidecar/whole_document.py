"""The whole document as a joining peer gets it, encoded once for every peer that joins while
it stays the same (a class opening one notebook at once, people reopening it in turn)."""

from __future__ import annotations

from typing import Any

import anyio
from pycrdt import Doc

from .. import protocol


class WholeDocument:
    """The sync step 2 answering a peer that has nothing yet, kept while the document does
    not change, at most ``keep`` seconds after it last served, and while someone is in the
    room: it costs the document's size again."""

    def __init__(self, doc: Doc[Any], keep: float) -> None:
        self.doc = doc
        self.keep = keep
        self._message: bytes | None = None
        self._served = anyio.Event()

    def message(self) -> bytes:
        """The sync step 2 of the whole document as it is now."""
        if self._message is None:
            self._message = protocol.encode_sync_step2(self.doc.get_update())
        self._served.set()
        return self._message

    def prime(self, update: bytes) -> None:
        """Take the whole document as just encoded elsewhere (the store's first snapshot), for
        the first peer to join, kept as if it had just served."""
        self._message = protocol.encode_sync_step2(update)
        self._served.set()

    def drop(self) -> None:
        """Forget the encoding (the document changed, or nobody is left to join it)."""
        self._message = None

    async def run(self) -> None:
        """Drop the encoding ``keep`` seconds after it last served, until cancelled."""
        while True:
            await self._served.wait()
            while True:
                self._served = anyio.Event()
                with anyio.move_on_after(self.keep):
                    await self._served.wait()
                    continue
                break
            self.drop()
