"""kernel_collab: a Jupyter notebook and its kernel as one live, shared document."""

__version__ = "0.1.0"
