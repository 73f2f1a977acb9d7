"""Pure functions: no model beyond a few-KB random tensor; the fast tier (seconds)."""
