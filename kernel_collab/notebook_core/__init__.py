"""The notebook core: what a notebook is, free of sockets and of the sidecar's lifecycle.

- :mod:`.files`: reading, validating, serialising and atomically writing ``.ipynb`` files.
- :mod:`.merge`: the three-way merge of a file changed outside with the live document.
- :mod:`.apply`: turning a shared YNotebook into a given notebook with minimal edits.
- :mod:`.schema`: the checks and repairs of cells a peer's update may break.
- :mod:`.cells`: one set of cell helpers (find by id, new ids, common prefix, text diff).
- :mod:`.outputs`: one converter from kernel (iopub) messages to nbformat outputs.

Unit-tested on their own (``tests/unit``); the sidecar, the store's command line and the
clients build on them.
"""
