"""``python -m kernel_collab.sidecar``."""

import sys

# jsonschema (imported by nbformat) builds the grammar of its optional rfc3987-syntax format
# checker at import: 0.8 s of the sidecar's start-up, for IRI formats notebooks never use.
# Mark it unavailable so jsonschema skips that checker (it treats the package as optional).
sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]

from .app import main  # noqa: E402

if __name__ == "__main__":
    main()
