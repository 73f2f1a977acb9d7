"""Tiny random-init models of real architectures (posttrain_probe.testing.make_tiny_checkpoint)."""
