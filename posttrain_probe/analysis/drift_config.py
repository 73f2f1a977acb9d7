"""Settings of `compare_checkpoints` (light: no torch, so the command line can show their defaults)."""

from __future__ import annotations

import math
from dataclasses import dataclass

TRACING_KINDS = ("resid", "mlp", "attn")


@dataclass
class DriftConfig:
    """Settings of the per-checkpoint probes of `compare_checkpoints`; every field is recorded in result.json.

    Tracing: `tracing_samples` noise draws of `noise_scale`·σ_start on the first `max_facts` facts, restoring
    `tracing_kinds` with a `tracing_window`-layer window (ROME: 10 samples, 3σ, window 10). Neurons: the
    `n_select` Du-rule neurons (top `top_frac` by norm) of layer `neuron_layer`, means over `n_ref` texts,
    effects on `n_eval` other texts of at most `max_tokens` tokens, `batch_rows` rows per forward."""

    tracing_kinds: tuple[str, ...] = ("resid", "mlp")
    tracing_samples: int = 5
    tracing_window: int | None = None  # None: the tracing probe's window for the depth (tracing_window)
    noise_scale: float = 3.0
    max_facts: int | None = 50
    neuron_layer: int = -1
    top_frac: float = 0.25
    n_select: int = 10
    n_ref: int = 64
    n_eval: int = 32
    max_tokens: int = 64
    batch_rows: int = 64
    batch_size: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        self.tracing_kinds = tuple(self.tracing_kinds)
        bad = [k for k in self.tracing_kinds if k not in TRACING_KINDS] or ([] if self.tracing_kinds else ["(none)"])
        if bad or len(set(self.tracing_kinds)) != len(self.tracing_kinds):
            raise ValueError(f"tracing_kinds={self.tracing_kinds}; pass distinct kinds from {', '.join(TRACING_KINDS)}")
        if self.tracing_window is not None and self.tracing_window < 1:
            raise ValueError(f"tracing_window={self.tracing_window} must be >= 1 (or None: derived from the depth)")
        for name in ("tracing_samples", "n_select", "n_ref", "n_eval", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if self.max_facts is not None and self.max_facts < 1:
            raise ValueError(f"max_facts={self.max_facts}; use a positive number or None for all facts")
        if not math.isfinite(self.noise_scale) or self.noise_scale < 0:
            raise ValueError(f"noise_scale={self.noise_scale}; use a finite multiple of σ >= 0 (ROME: 3)")
        if not 0 < self.top_frac <= 1:
            raise ValueError(f"top_frac={self.top_frac} must be in (0, 1]; 0.25 keeps the top quarter by norm")
        if self.max_tokens < 2:
            raise ValueError(f"max_tokens={self.max_tokens} must be >= 2 (one next-token prediction)")
        if self.batch_rows < 2:
            raise ValueError(f"batch_rows={self.batch_rows} must be >= 2 (a total and a direct row)")


# ------------------------------------------------------------------------------------------ orchestration
