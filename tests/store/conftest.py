import pytest

from edgefleet.store.database import make_engine
from edgefleet.store.migrate import ensure_schema


@pytest.fixture
def engine(settings):
    """An engine on an empty, migrated store of the test's backend."""
    engine = make_engine(settings)
    ensure_schema(engine, auto_migrate=True)
    yield engine
    engine.dispose()
