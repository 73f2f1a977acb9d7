"""Which data an analysis reads when the user names none: the toy world's data for a toy-world model, the
public data sets for any other model, each found through `catalog.data_path` (the data cache filled by
`posttrain-probe data fetch`, then `$POSTTRAIN_PROBE_DATA` or ../shared/data).

A model source counts as toy-world when it is a `toyworld:` alias or a local folder inside a complete toy
build (`<build>/base`, `<build>/post` next to `<build>/data`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# Paths under the shared data folder, relative to it.
SHARED = {
    "facts": "known_1000/known_1000.json",
    "truth_statements": ("geometry_of_truth", "truth_is_universal"),
    "pair_statements": "geometry_of_truth/cities.csv",
    "refusal": "refusal_direction",
    "advbench": "refusal_direction/advbench.csv",
    "texts": "tinystories_val_subset/tinystories_val.txt",
    "gsm8k": "gsm8k",
    "math500": "math500/test.jsonl",
    "countdown": "countdown/countdown_cd3_test.jsonl",
}


@dataclass(frozen=True)
class DataSources:
    """Default inputs of every analysis for one model source; `kind` is "toyworld" or "shared"."""

    kind: str
    root: Path
    facts: Path
    facts_split: str | None
    truth_statements: tuple[Path, ...]
    pair_statements: Path
    refusal: Path
    texts: Path

    def __post_init__(self) -> None:
        if self.kind not in ("toyworld", "shared"):
            raise ValueError(f"kind={self.kind!r}; use 'toyworld' or 'shared'")


def toy_data_dir(source: str | os.PathLike) -> Path | None:
    """The data folder of the toy build behind `source` (building it for an alias), else None."""
    from posttrain_probe.sources import parse_source

    parsed = parse_source(source, "model")
    if parsed.is_toy:
        from posttrain_probe.toyworld import build

        return Path(build(preset=parsed.preset).data_dir)
    path = Path(str(source)).expanduser()
    build_root = path.parent
    if path.is_dir() and (build_root / "COMPLETE").is_file() and (build_root / "data" / "facts.json").is_file():
        return build_root / "data"
    return None


def shared_path(name: str) -> Path:
    """`SHARED[name]` (one path) from the data cache or the shared data folder; one-line error naming the fetch
    command when it is in neither."""
    from posttrain_probe.data.catalog import data_path

    rel = SHARED[name]
    if isinstance(rel, tuple):
        raise ValueError(f"{name} names several folders; use default_sources()")
    return data_path(rel)


def default_sources(model_source: str | os.PathLike) -> DataSources:
    """The toy world's data for a toy-world model source, else the shared public data sets."""
    toy = toy_data_dir(model_source)
    if toy is not None:
        return DataSources(
            kind="toyworld",
            root=toy,
            facts=toy / "facts.json",
            facts_split="pretrain",
            truth_statements=(toy / "statements.csv",),
            pair_statements=toy / "statements.csv",
            refusal=toy,
            texts=toy / "corpus.txt",
        )
    from posttrain_probe.data.catalog import data_set_dir

    facts = shared_path("facts")
    truth = tuple(data_set_dir(d) for d in SHARED["truth_statements"])
    return DataSources(
        kind="shared",
        root=facts.parent.parent,
        facts=facts,
        facts_split=None,
        truth_statements=truth,
        pair_statements=shared_path("pair_statements"),
        refusal=shared_path("refusal"),
        texts=shared_path("texts"),
    )
