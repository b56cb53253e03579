"""``python -m kernel_collab.sidecar``."""

from .app import main

if __name__ == "__main__":
    main()
