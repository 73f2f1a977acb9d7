"""Figures from saved run results: one module per analysis; functions take a RunResult, return Figures."""
