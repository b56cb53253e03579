"""Merging a batch of Y updates in groups gives the document that applying them one by one
gives, whatever the batch's size relative to the groups."""

from __future__ import annotations

import random
from typing import Any

import pytest
from pycrdt import Array, Doc, Map, Text, TransactionEvent

from kernel_collab.notebook_core.updates import FAN_IN, merge


def _edits(count: int, seed: int) -> tuple[bytes, list[bytes]]:
    """A base document and ``count`` updates made on it by three clients (inserts, deletes,
    map and array changes, some depending on another client's earlier update)."""
    rng = random.Random(seed)
    base: Doc[Any] = Doc()
    base.get("text", type=Text).insert(0, "hello world")
    base.get("meta", type=Map)["k"] = 0
    base.get("cells", type=Array).extend([1, 2, 3])
    start = base.get_update()
    docs = []
    for _ in range(3):
        doc: Doc[Any] = Doc()
        doc.apply_update(start)
        docs.append(doc)
    updates: list[bytes] = []
    for i in range(count):
        doc = rng.choice(docs)
        captured: list[bytes] = []
        subscription = doc.observe(lambda e, c=captured: c.append(e.update))
        text, meta, cells = (doc.get("text", type=Text), doc.get("meta", type=Map),
                             doc.get("cells", type=Array))  # fmt: skip
        action = rng.randrange(4)
        if action == 0 or len(text) == 0:
            text.insert(rng.randrange(len(text) + 1), rng.choice("abc "))
        elif action == 1:
            del text[rng.randrange(len(text))]
        elif action == 2:
            meta[f"k{rng.randrange(5)}"] = i
        else:
            cells.append(i)
        doc.unobserve(subscription)
        updates += captured
        other = rng.choice(docs)  # clients see some of each other's edits
        if other is not doc:
            other.apply_update(captured[0])
    return start, updates


def _state(start: bytes, updates: list[bytes]) -> dict[str, Any]:
    doc: Doc[Any] = Doc()
    doc.apply_update(start)
    for update in updates:
        doc.apply_update(update)
    return {"text": str(doc.get("text", type=Text)), "meta": doc.get("meta", type=Map).to_py(),
            "cells": doc.get("cells", type=Array).to_py()}  # fmt: skip


@pytest.mark.parametrize("count", [1, 2, FAN_IN - 1, FAN_IN, FAN_IN + 1, FAN_IN**2 + 3, 3000])
def test_a_merged_batch_is_the_batch(count: int) -> None:
    start, updates = _edits(count, seed=count)
    assert len(updates) == count
    assert _state(start, [merge(updates)]) == _state(start, updates)


def test_a_batch_merged_out_of_order_is_the_same_document() -> None:
    start, updates = _edits(500, seed=7)
    shuffled = updates[:]
    random.Random(1).shuffle(shuffled)
    assert _state(start, [merge(shuffled)]) == _state(start, updates)


def test_nothing_to_merge_is_an_error() -> None:
    with pytest.raises(ValueError, match="no updates"):
        merge([])


def test_one_client_typing_merges_to_its_text() -> None:
    doc: Doc[Any] = Doc()
    text = doc.get("t", type=Text)
    updates: list[bytes] = []

    def keep(event: TransactionEvent) -> None:
        updates.append(event.update)

    doc.observe(keep)
    for _ in range(5000):
        text += "x"
    fresh: Doc[Any] = Doc()
    fresh.apply_update(merge(updates))
    assert str(fresh.get("t", type=Text)) == "x" * 5000
