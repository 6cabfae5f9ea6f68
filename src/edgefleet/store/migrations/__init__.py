"""Alembic migrations of the edgefleet database (script location ``edgefleet.store:migrations``)."""
