"""Errors of the storage layer."""

from __future__ import annotations

from edgefleet.errors import EdgefleetError


class StoreError(EdgefleetError):
    """Base class of storage errors."""

    code = "store_error"


class StoreUnavailableError(StoreError):
    """The database is locked by another process, or cannot be reached."""

    code = "store_unavailable"
    transient = True


class SchemaOutOfDateError(StoreError):
    """The database schema is older (or newer) than this edgefleet expects."""

    code = "schema_out_of_date"


class StoreConflictError(StoreError):
    """A concurrent change got there first; retrying is safe."""

    code = "store_conflict"
    transient = True
