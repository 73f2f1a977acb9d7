"""End to end: toy-pair builds, the demo, notebooks, experiments, determinism (all marked slow)."""
