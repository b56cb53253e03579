"""kernel_collab's Jupyter server extension: authenticated rooms keyed by notebook."""
