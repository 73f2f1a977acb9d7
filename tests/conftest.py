"""Shared fixtures: the quick toy pair, built once per test session into a temporary cache."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def toy_cache(tmp_path_factory):
    """`<tmp>/cache/toyworld`, so POSTTRAIN_PROBE_CACHE=<tmp>/cache finds the same builds through aliases."""
    return tmp_path_factory.mktemp("cache") / "toyworld"


@pytest.fixture(scope="session")
def toy_pair_quick(toy_cache):
    """The `quick` toy pair (seed 0); other tests load it with load_pair(pair.base_dir, pair.post_dir)."""
    from posttrain_probe.toyworld import build

    return build("quick", seed=0, cache_root=toy_cache, progress=False)
