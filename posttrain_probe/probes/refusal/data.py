"""Settings and data of the refusal analysis: `RefusalConfig`, `RefusalData`, `load_refusal_data`."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from posttrain_probe.data import (
    DataSourceError,
    Instruction,
    check_balanced,
    load_instructions,
    load_refusal_splits,
    sample_records,
)
from posttrain_probe.pair.prompts import BASE_TEMPLATE
from posttrain_probe.probes.refusal.core import DEFAULT_REFUSAL_PHRASES
from posttrain_probe.utils.io import sha256_text

ANALYSIS = "refusal"
ROLES = ("base", "post")
FORMATS = ("auto", "base", "chat", "raw")


@dataclass
class RefusalConfig:
    """Settings of one refusal run; every field is recorded in result.json."""

    base_format: str = "auto"
    post_format: str = "auto"
    base_template: str = BASE_TEMPLATE
    n_train: int | None = 128  # per class, sampled (seeded) from the train split
    n_val: int | None = 32
    n_eval: int | None = 64
    refusal_phrases: tuple[str, ...] = DEFAULT_REFUSAL_PHRASES
    score_phrases: tuple[str, ...] | None = None  # phrases whose first tokens the score uses; None = above
    kl_max: float = 0.1
    max_layer_frac: float = 0.8
    induce_min: float = 0.0
    add_scale: float = 1.0
    max_new_tokens: int = 16
    batch_size: int = 32
    seed: int = 0
    random_control: bool = True
    check_orthogonalization: bool = True
    diagnostics: bool = True  # where refusal lives, all-candidate ablation, addition sweep (_refusal_diagnostics)
    diagnostic_scales: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0)
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("base_format", "post_format"):
            if getattr(self, name) not in FORMATS:
                raise ValueError(f"{name}={getattr(self, name)!r}; choose one of {', '.join(FORMATS)}")
        if "{instruction}" not in self.base_template:
            raise ValueError("base_template must contain '{instruction}', e.g. 'User: {instruction}\\nAssistant:'")
        for name in ("n_train", "n_val", "n_eval"):
            v = getattr(self, name)
            if v is not None and v < 2:
                raise ValueError(f"{name}={v}: need at least 2 instructions per class (or None for all)")
        self.refusal_phrases = tuple(self.refusal_phrases)
        if not self.refusal_phrases or not all(isinstance(p, str) and p.strip() for p in self.refusal_phrases):
            raise ValueError("refusal_phrases must be a non-empty list of non-empty strings")
        if self.score_phrases is not None:
            self.score_phrases = tuple(self.score_phrases)
        if self.kl_max <= 0:
            raise ValueError(f"kl_max={self.kl_max} must be > 0 (SPEC default 0.1)")
        if not 0 < self.max_layer_frac <= 1:
            raise ValueError(f"max_layer_frac={self.max_layer_frac} must be in (0, 1] (SPEC default 0.8)")
        self.diagnostic_scales = tuple(float(c) for c in self.diagnostic_scales)
        if self.max_new_tokens < 1 or self.batch_size < 1:
            raise ValueError("max_new_tokens and batch_size must be ≥ 1")


@dataclass
class RefusalData:
    """Harmful/harmless instructions per split; `sources` and `notes` go into the result."""

    harmful_train: list[Instruction]
    harmless_train: list[Instruction]
    harmful_val: list[Instruction]
    harmless_val: list[Instruction]
    harmful_eval: list[Instruction]
    harmless_eval: list[Instruction]
    sources: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def hashes(self) -> dict[str, str]:
        return {
            k: sha256_text(json.dumps([x.text for x in getattr(self, k)]))
            for k in (
                "harmful_train",
                "harmless_train",
                "harmful_val",
                "harmless_val",
                "harmful_eval",
                "harmless_eval",
            )
        }


def load_refusal_data(
    folder: str | os.PathLike,
    advbench: str | os.PathLike | None = None,
    n_train: int | None = 128,
    n_val: int | None = 32,
    n_eval: int | None = 64,
    seed: int = 0,
) -> RefusalData:
    """Train/val splits from a refusal_direction-style folder (or the toy world's data dir); the evaluation
    split is its "heldout" split if present, else AdvBench (`advbench`, harmful) and the val split."""
    splits = load_refusal_splits(folder)
    notes = []

    def cap(xs, n, s):
        return sample_records(xs, n, seed + s) if n is not None else list(xs)

    def heldout(harmful: bool) -> list[Instruction] | None:
        try:
            return load_instructions(folder, harmful, split="heldout")
        except DataSourceError:
            return None

    h_eval, hl_eval = heldout(True), heldout(False)
    sources = {"folder": str(folder)}
    if advbench is not None:
        h_eval = load_instructions(advbench, True)
        sources["advbench"] = str(advbench)
    if h_eval is None:
        h_eval = splits.harmful_val
        notes.append("no held-out harmful split: evaluation reuses the validation split used for selection")
    if hl_eval is None:
        hl_eval = splits.harmless_val
        notes.append("no held-out harmless split: evaluation reuses the validation split used for selection")
    data = RefusalData(
        cap(splits.harmful_train, n_train, 0),
        cap(splits.harmless_train, n_train, 1),
        cap(splits.harmful_val, n_val, 2),
        cap(splits.harmless_val, n_val, 3),
        cap(h_eval, n_eval, 4),
        cap(hl_eval, n_eval, 5),
        sources,
        notes,
    )
    check_balanced(data.harmful_train, data.harmless_train)
    return data
