"""Analyses across steps and checkpoints: entropy dynamics, internal drift, exact entropy identities."""
