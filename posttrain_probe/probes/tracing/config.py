"""What a causal-tracing run does (`TracingConfig`) and reads (`TracingData`); light: no torch here."""

from __future__ import annotations

import math
from dataclasses import dataclass

from posttrain_probe.probes.base import option

KINDS = ("resid", "mlp", "attn")  # the restoration kinds of posttrain_probe.pair.restore
NOISE_CALIBRATIONS = ("base", "post", "per_model")
KV_REUSE = ("auto", "on", "off")
ROME_WINDOW, ROME_LAYERS = 10, 48  # ROME restores 10 of GPT-2 XL's 48 layers


def tracing_window(n_layers: int) -> int:
    """The restoration window for a model of `n_layers`: ROME's share of the depth (10 of 48 layers), at least
    1 — 10 on GPT-2 XL, 5 on a 24-layer model, 1 on the 4-layer toy model (a window of 10 there would cover
    every layer and flatten the MLP/attention maps)."""
    if n_layers < 1:
        raise ValueError(f"n_layers={n_layers}; a model has at least one layer")
    return max(1, round(n_layers * ROME_WINDOW / ROME_LAYERS))


@dataclass(frozen=True)
class TracingConfig:
    """Settings of one tracing run (defaults: ROME / SPEC §1a); every field is recorded in result.json."""

    n_samples: int = option(10, "noise samples per fact", paper="ROME: 10")
    noise_scale: float = option(3.0, "noise std as a multiple of the subject embeddings' std σ", paper="ROME: 3")
    noise_calibration: str = option(
        "base", "whose σ scales the noise: base's, post's, or each model its own", choices=NOISE_CALIBRATIONS
    )
    kinds: tuple[str, ...] = option(
        KINDS, "what is restored: block outputs, MLP outputs, attention outputs", choices=KINDS
    )
    window: int | None = option(
        None,
        "layers restored around each MLP/attention layer",
        derived="ROME's 10 of 48 layers, round(n_layers·10/48), at least 1",
        paper="ROME: 10 on 48 layers",
    )
    seed: int = option(0, "seed of the noise draws (the same draws for both models)")
    max_facts: int | None = option(None, "trace at most this many facts (none: all)")
    n_boot: int = option(1000, "bootstrap resamples over facts for the intervals")
    ci: float = option(0.95, "confidence level of the bootstrap intervals")
    kv_reuse: str = option(
        "auto", "reuse the noised run's KV cache for the unchanged prefix (auto: where it checks out)", choices=KV_REUSE
    )
    facts_per_batch: int = option(16, "facts whose restorations share one forward")
    max_batch_tokens: int = option(8192, "upper bound of rows × tokens in one forward")
    progress: bool = option(True, "show progress bars")

    def __post_init__(self) -> None:
        object.__setattr__(self, "kinds", tuple(self.kinds))
        if self.n_samples < 1:
            raise ValueError(f"n_samples={self.n_samples}; use at least 1 noise sample (ROME: 10)")
        if not math.isfinite(self.noise_scale) or self.noise_scale < 0:
            raise ValueError(f"noise_scale={self.noise_scale}; use a finite multiple of σ ≥ 0 (ROME: 3)")
        if self.noise_calibration not in NOISE_CALIBRATIONS:
            raise ValueError(
                f"noise_calibration={self.noise_calibration!r}; choose one of {', '.join(NOISE_CALIBRATIONS)}"
            )
        bad = [k for k in self.kinds if k not in KINDS] or ([] if self.kinds else ["(none)"])
        if bad or len(set(self.kinds)) != len(self.kinds):
            raise ValueError(f"kinds={self.kinds}; pass distinct kinds from {', '.join(KINDS)}")
        if self.window is not None and self.window < 1:
            raise ValueError(f"window={self.window}; use a window of at least 1 layer (ROME: 10), or None")
        if self.max_facts is not None and self.max_facts < 1:
            raise ValueError(f"max_facts={self.max_facts}; use a positive number or None for all facts")
        if not 0 < self.ci < 1 or self.n_boot < 0:
            raise ValueError(f"ci={self.ci}, n_boot={self.n_boot}; use 0 < ci < 1 and n_boot ≥ 0")
        if self.kv_reuse not in KV_REUSE:
            raise ValueError(f"kv_reuse={self.kv_reuse!r}; choose auto, on or off")
        if self.facts_per_batch < 1 or self.max_batch_tokens < 1:
            raise ValueError("facts_per_batch and max_batch_tokens must be ≥ 1")

    def for_model(self, n_layers: int) -> TracingConfig:
        """This config with the model-derived sizes filled in (the window from the depth)."""
        if self.window is not None:
            return self
        from dataclasses import replace

        return replace(self, window=tracing_window(n_layers))


@dataclass(frozen=True)
class TracingData:
    """What a tracing run reads; empty fields take the pair's default data (the toy world's pretraining facts
    and corpus for a toy pair, ROME's known_1000 otherwise)."""

    data: str | None = option(None, "facts: a known_1000-style json, a folder or a hub id")
    split: str | None = option(None, "keep only facts with this 'split'")
    reference: str | None = option(
        None, "text file (one text a line) for the embedding std σ (default: the facts' subjects, as ROME)"
    )
