"""Shared fixtures: example bundles, and a store on each database backend.

Tests that take the ``settings`` or ``registry`` fixture run once on SQLite and once on
PostgreSQL. The PostgreSQL run uses ``EDGEFLEET_TEST_DATABASE_URL`` and skips, saying
why, when it is unset or unreachable, unless ``EDGEFLEET_REQUIRE_POSTGRES=1`` (set by
``.ci/run``) turns that into a failure.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from edgefleet.config import Settings
from edgefleet.registry.artifacts import sha256_file
from edgefleet.registry.service import RegistryService
from edgefleet.store.bootstrap import open_registry

POSTGRES_ENV = "EDGEFLEET_TEST_DATABASE_URL"


@pytest.fixture(scope="session")
def example_bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The digits example bundles, built once per test session (read-only: copy to change)."""
    from edgefleet.examples.digits import build_examples

    out = tmp_path_factory.mktemp("examples")
    bundles = build_examples(out, seed=0)
    return {path.name.removeprefix("digits-"): path for path in bundles}


@pytest.fixture
def bundle_copy(example_bundles: dict[str, Path], tmp_path: Path):
    """Copy an example bundle somewhere it may be changed: ``bundle_copy("1.0.0")``."""

    def copy(version: str) -> Path:
        target = tmp_path / f"bundle-{version}-{uuid.uuid4().hex[:6]}"
        shutil.copytree(example_bundles[version], target)
        return target

    return copy


def edit_manifest(bundle: Path, change) -> None:
    """Apply ``change(dict)`` to a bundle's edgefleet.yaml."""
    path = bundle / "edgefleet.yaml"
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def rehash(bundle: Path, variant_index: int = 0) -> None:
    """Make the manifest's SHA-256 and size of a variant match its file again."""

    def update(data: dict) -> None:
        entry = data["variants"][variant_index]
        entry["sha256"], entry["size"] = sha256_file(bundle / entry["file"])

    edit_manifest(bundle, update)


def _postgres_url() -> str:
    url = os.environ.get(POSTGRES_ENV)
    required = os.environ.get("EDGEFLEET_REQUIRE_POSTGRES") == "1"
    if not url:
        message = f"PostgreSQL tests need {POSTGRES_ENV} (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test)"
        if required:
            pytest.fail(message)
        pytest.skip(message)
    try:
        import sqlalchemy

        engine = sqlalchemy.create_engine(url, connect_args={"connect_timeout": 3})
        with engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")
        engine.dispose()
    except Exception as exc:
        message = f"PostgreSQL at {POSTGRES_ENV} is unreachable: {str(exc).splitlines()[0]}"
        if required:
            pytest.fail(message)
        pytest.skip(message)
    return url


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A throwaway PostgreSQL database for this test session."""
    import sqlalchemy
    from sqlalchemy.engine import make_url

    base = make_url(_postgres_url())
    name = f"edgefleet_test_{uuid.uuid4().hex[:10]}"
    admin = sqlalchemy.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def _reset_postgres(url: str) -> None:
    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql("DROP SCHEMA public CASCADE")
        connection.exec_driver_sql("CREATE SCHEMA public")
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def settings(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    """Settings for an empty store on ``backend`` with its home in a temp directory."""
    home = tmp_path / "home"
    if backend == "postgresql":
        url = request.getfixturevalue("postgres_database")
        _reset_postgres(url)
        return Settings(home=home, database_url_override=url, db_busy_timeout_s=0.2)
    return Settings(home=home, database_url_override=None, db_busy_timeout_s=0.2)


@pytest.fixture
def registry(settings: Settings) -> Iterator[RegistryService]:
    with open_registry(settings) as service:
        yield service


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    """Say plainly whether the PostgreSQL half of the suite ran."""
    ran = skipped = 0
    for outcome in ("passed", "failed", "error"):
        ran += sum(1 for r in terminalreporter.stats.get(outcome, []) if "[postgresql" in r.nodeid)
    skipped = sum(1 for r in terminalreporter.stats.get("skipped", []) if "[postgresql" in r.nodeid)
    terminalreporter.write_line(
        f"PostgreSQL backend: {ran} tests ran, {skipped} skipped"
        + ("" if ran else f" (set {POSTGRES_ENV} to run them)")
    )
