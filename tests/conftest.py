"""Shared fixtures (the quick toy pair, built once per test session into a temporary cache) and the tiers.

Each test gets the marker of its folder: tests/unit → `unit`, tests/integration → `integration`,
tests/e2e → `e2e` and `slow`, tests/reference → `reference`; so `python -m pytest -q tests/unit` and
`python -m pytest -q -m "not slow"` select tiers.
"""

from __future__ import annotations

from pathlib import Path

import pytest

TIER_MARKERS = {
    "unit": ("unit",),
    "integration": ("integration",),
    "e2e": ("e2e", "slow"),
    "reference": ("reference",),
}
_ROOT = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every collected test with the markers of its tier folder."""
    for item in items:
        try:
            tier = Path(item.path).resolve().relative_to(_ROOT).parts[0]
        except ValueError:  # a test outside tests/
            continue
        for name in TIER_MARKERS.get(tier, ()):
            item.add_marker(name)


@pytest.fixture(scope="session")
def toy_cache(tmp_path_factory):
    """`<tmp>/cache/toyworld`, so POSTTRAIN_PROBE_CACHE=<tmp>/cache finds the same builds through aliases."""
    return tmp_path_factory.mktemp("cache") / "toyworld"


@pytest.fixture(scope="session")
def toy_pair_quick(toy_cache):
    """The `quick` toy pair (seed 0); other tests load it with load_pair(pair.base_dir, pair.post_dir)."""
    from posttrain_probe.toyworld import build

    return build("quick", seed=0, cache_root=toy_cache, progress=False)
