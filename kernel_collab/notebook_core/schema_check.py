"""nbformat's own v4 schema, checked a cell and an output at a time.

``nbformat.validate`` checks every cell against ``oneOf`` [raw, markdown, code] and every
output against ``oneOf`` its four kinds: fastjsonschema tries each branch and builds an
exception for each one that fails, about 10 ms of a 1,000-cell notebook's 15. Each branch
requires its own ``cell_type`` (``output_type``), so at most one can match: checking each cell
against the definition its type names accepts exactly what ``oneOf`` accepts. The
definitions are nbformat's schema files, compiled with fastjsonschema as nbformat does.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Callable
from importlib import resources
from typing import Any

import fastjsonschema
from nbformat import v4

CELL_TYPES = ("raw", "markdown", "code")
OUTPUT_TYPES = ("execute_result", "display_data", "stream", "error")

Check = Callable[[Any], Any]


class Checks:
    """The compiled checks of one v4 minor version."""

    def __init__(self, top: Check, cells: dict[str, Check], outputs: dict[str, Check],
                 ids: bool) -> None:  # fmt: skip
        self.top = top
        """The notebook with ``cells`` only required to be an array."""
        self.cells = cells
        """Per ``cell_type``, the cell with ``outputs`` only required to be an array."""
        self.outputs = outputs
        """Per ``output_type``."""
        self.ids = ids
        """Whether cells have ids (4.5 and later), which nbformat repairs when missing or
        repeated."""


def _one_of(definitions: dict[str, Any], name: str, kinds: tuple[str, ...], suffix: str) -> bool:
    """Whether ``definitions[name]`` is ``oneOf`` exactly the definitions of ``kinds``."""
    found = definitions.get(name, {}).get("oneOf")
    wanted = [{"$ref": f"#/definitions/{kind}{suffix}"} for kind in kinds]
    return isinstance(found, list) and len(found) == len(wanted) and all(
        ref in found for ref in wanted)


@functools.cache
def checks(minor: int) -> Checks | None:
    """The checks for nbformat 4.``minor`` (``None``: a minor version nbformat has no schema
    for, or whose schema is not shaped as this module expects: ask nbformat)."""
    name = v4.nbformat_schema.get((4, minor))
    if name is None:
        return None
    schema = json.loads(resources.files(v4).joinpath(name).read_text(encoding="utf-8"))
    definitions = schema.get("definitions", {})
    if not (_one_of(definitions, "cell", CELL_TYPES, "_cell")
            and _one_of(definitions, "output", OUTPUT_TYPES, "")):  # fmt: skip
        return None
    top = copy.deepcopy(schema)
    top["properties"]["cells"] = {"type": "array"}
    shallow = copy.deepcopy(definitions)
    shallow["code_cell"]["properties"]["outputs"] = {"type": "array"}

    def compiled(ref: str, defs: dict[str, Any]) -> Check:
        check: Check = fastjsonschema.compile({"$ref": f"#/definitions/{ref}",
                                               "definitions": defs})  # fmt: skip
        return check

    return Checks(
        fastjsonschema.compile(top),
        {kind: compiled(f"{kind}_cell", shallow) for kind in CELL_TYPES},
        {kind: compiled(kind, definitions) for kind in OUTPUT_TYPES},
        ids=minor >= 5,
    )


def plainly_valid(nb: dict[str, Any]) -> bool:
    """Whether ``nbformat.validate`` accepts this parsed v4 notebook as it is. ``False`` means
    "ask nbformat": the notebook is invalid, or has cell ids nbformat would repair, or a
    version this module does not check."""
    minor = nb.get("nbformat_minor")
    if nb.get("nbformat") != 4 or not isinstance(minor, int) or isinstance(minor, bool):
        return False
    found = checks(minor)
    if found is None:
        return False
    try:
        found.top(nb)
        ids = set()
        for cell in nb["cells"]:
            check = found.cells.get(str(cell.get("cell_type"))) if isinstance(cell, dict) else None
            if check is None:
                return False
            check(cell)
            if found.ids:
                ids.add(cell["id"])
            for output in cell.get("outputs", ()):
                if not isinstance(output, dict):
                    return False
                output_check = found.outputs.get(str(output.get("output_type")))
                if output_check is None:
                    return False
                output_check(output)
    except fastjsonschema.JsonSchemaException:
        return False
    return not found.ids or len(ids) == len(nb["cells"])
