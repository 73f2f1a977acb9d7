"""Config and inputs of the example probe."""

from __future__ import annotations

from dataclasses import dataclass

from posttrain_probe.probes.base import option


@dataclass(frozen=True)
class ExampleConfig:
    n_texts: int = option(16, "texts to average over")
    seed: int = option(0, "unused: every probe takes a seed")
    progress: bool = option(True, "unused: every probe takes a progress flag")

    def __post_init__(self) -> None:
        if self.n_texts < 1:
            raise ValueError(f"n_texts={self.n_texts}; use at least 1 text")


@dataclass(frozen=True)
class ExampleData:
    texts: str | None = option(None, "a text file, one text a line (default: the pair's default texts)")
