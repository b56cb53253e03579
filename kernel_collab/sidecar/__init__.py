"""The sidecar: the process that owns a notebook's shared document (see ``--help``)."""
