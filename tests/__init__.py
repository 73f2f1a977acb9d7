"""The test suite, in tiers: unit/, integration/, e2e/ and reference/ (see conftest.py)."""
