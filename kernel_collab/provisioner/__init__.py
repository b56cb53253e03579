"""The collaborative kernel provisioner (entry point ``kernel-collab``)."""

from .provisioner import CollabProvisioner

__all__ = ["CollabProvisioner"]
