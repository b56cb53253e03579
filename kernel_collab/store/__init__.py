"""Durable storage of shared documents (``.kernel_collab.db``)."""

from .history import HistoryError, Policy, Snapshot, Version
from .sqlite import SCHEMA_VERSION, Commit, DocumentInfo, SQLiteStore, StoredDocument, StoreError

__all__ = ["SCHEMA_VERSION", "Commit", "DocumentInfo", "HistoryError", "Policy", "SQLiteStore",
           "Snapshot", "StoreError", "StoredDocument", "Version"]
