"""Data of the refusal analysis: `RefusalData` (the instruction splits) and `load_refusal_data`."""

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
from posttrain_probe.utils.io import sha256_text

ANALYSIS = "refusal"
ROLES = ("base", "post")


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
