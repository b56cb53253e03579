"""``python -m kernel_collab.sidecar``."""

import sys

# jsonschema (imported by nbformat) imports the optional packages of its format checkers at
# import; rfc3987-syntax alone builds a grammar (0.8 s and 15 MiB), isoduration brings arrow
# (3 MiB). nbformat never checks formats (no FormatChecker), so nothing the sidecar checks
# needs them: mark them unavailable and jsonschema skips those checkers, as it does for any
# optional package that is missing (tests/unit/test_memory.py holds nbformat to that).
FORMAT_CHECKER_ONLY = (
    "rfc3987_syntax", "isoduration", "rfc3339_validator", "rfc3986_validator", "webcolors",
    "uri_template", "fqdn",
)  # fmt: skip
for _name in FORMAT_CHECKER_ONLY:
    sys.modules.setdefault(_name, None)  # type: ignore[arg-type]

from .app import main  # noqa: E402

if __name__ == "__main__":
    main()
