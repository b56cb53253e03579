"""Durable storage of shared documents (``.kernel_collab.db``)."""

from .sqlite import SCHEMA_VERSION, DocumentInfo, SQLiteStore, StoredDocument, StoreError

__all__ = ["SCHEMA_VERSION", "DocumentInfo", "SQLiteStore", "StoreError", "StoredDocument"]
