import pytest

from tests.server.conftest import live  # noqa: F401 - the live server fixture


@pytest.fixture
def settings(settings):
    """The suite's settings with a controller that steps often and analyses at once."""
    return settings.model_copy(update={"rollout_tick_s": 0.1, "rollout_analysis_interval_s": 0.0})
