"""Alembic migrations of the edgefleet database (``script_location = edgefleet.store:migrations``)."""
