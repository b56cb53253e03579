"""Benchmarks of kernel_collab's sidecar against jupyter-collaboration (see ``run.sh``)."""
