"""Analyses over a model pair: one analysis a module (tracing, patching, truth, refusal, neurons)."""
