"""The agent tests drive the real server: reuse its fixture."""

from tests.server.conftest import live  # noqa: F401 - a fixture, used by name
