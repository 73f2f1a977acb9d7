"""Naive oracles kept out of production code, written without its helpers, and the tests against them."""
