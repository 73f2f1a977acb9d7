"""What a true/false patching run does (`PatchingConfig`) and reads (`PatchingData`); light: no torch here."""

from __future__ import annotations

import math
from dataclasses import dataclass

from posttrain_probe.probes.base import option

KV_REUSE = ("auto", "on", "off")


@dataclass(frozen=True)
class PatchingConfig:
    """Settings of one patching run (SPEC §1b); every field is recorded in result.json."""

    n_shots: int = option(4, "few-shot TRUE/FALSE examples before each statement", paper="Du et al.: 4")
    max_pairs: int | None = option(200, "patch at most this many true/false statement pairs (none: all)")
    seed: int = option(0, "seed of the pair sample and the few-shot examples")
    suffix: str = option(" This statement is:", "text after the statement that asks for the judgement")
    true_label: str = option(" TRUE", "the answer for a true statement (its first token is scored)")
    false_label: str = option(" FALSE", "the answer for a false statement (its first token is scored)")
    min_gap: float = option(0.0, "a pair counts for a model when LD(true) − LD(false) exceeds this")
    cross_model: bool = option(True, "also patch base→post and post→base (cross-model patching)")
    subject_column: str | None = option(None, "statements column with the subject (default: detected)")
    object_column: str | None = option(None, "statements column with the object (default: detected)")
    n_boot: int = option(1000, "bootstrap resamples over pairs for the intervals")
    ci: float = option(0.95, "confidence level of the bootstrap intervals")
    kv_reuse: str = option(
        "auto", "reuse the false run's KV cache for the unchanged prefix (auto: where it checks out)", choices=KV_REUSE
    )
    pairs_per_batch: int = option(16, "pairs whose patches share one forward")
    max_batch_tokens: int = option(8192, "upper bound of rows × tokens in one forward")
    progress: bool = option(True, "show progress bars")

    def __post_init__(self) -> None:
        if self.n_shots < 0:
            raise ValueError(f"n_shots={self.n_shots}; use 0 or more few-shot examples (SPEC: 4)")
        if self.max_pairs is not None and self.max_pairs < 1:
            raise ValueError(f"max_pairs={self.max_pairs}; use a positive number or None for all pairs")
        if self.true_label == self.false_label:
            raise ValueError("true_label and false_label are equal; pass two different answers")
        if not math.isfinite(self.min_gap):
            raise ValueError(f"min_gap={self.min_gap}; pass a finite logit-difference threshold")
        if not 0 < self.ci < 1 or self.n_boot < 0:
            raise ValueError(f"ci={self.ci}, n_boot={self.n_boot}; use 0 < ci < 1 and n_boot ≥ 0")
        if self.kv_reuse not in KV_REUSE:
            raise ValueError(f"kv_reuse={self.kv_reuse!r}; choose auto, on or off")
        if self.pairs_per_batch < 1 or self.max_batch_tokens < 1:
            raise ValueError("pairs_per_batch and max_batch_tokens must be ≥ 1")


@dataclass(frozen=True)
class PatchingData:
    """What a patching run reads; empty fields take the pair's default statements (the toy world's, or
    geometry_of_truth's cities.csv)."""

    data: str | None = option(None, "statements: a csv, folder or hub id with subject and object columns")
    datasets: tuple[str, ...] = option((), "keep only these dataset names (default: all)")
