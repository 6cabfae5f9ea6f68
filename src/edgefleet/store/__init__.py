"""Persistence: SQLAlchemy tables, repositories, unit of work and Alembic migrations.

SQLite (a file under ``EDGEFLEET_HOME``, WAL mode) is the embedded default;
``EDGEFLEET_DATABASE_URL`` selects PostgreSQL through psycopg 3. ``open_registry``
wires a ready ``RegistryService`` from settings::

    from edgefleet.store.bootstrap import open_registry
    with open_registry(Settings()) as registry:
        registry.list_versions()
"""
