"""The simulator's tests share one cache of every example bundle its scenarios use."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgefleet.examples.digits import RECIPES, ensure_examples


@pytest.fixture(scope="session")
def sim_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache directory (``$XDG_CACHE_HOME`` layout) holding every digits bundle."""
    root = tmp_path_factory.mktemp("sim-cache")
    ensure_examples(root / "edgefleet" / "examples", [r.version for r in RECIPES], seed=0)
    return root


@pytest.fixture
def bundle_cache(sim_cache: Path) -> Path:
    return sim_cache / "edgefleet" / "examples"
