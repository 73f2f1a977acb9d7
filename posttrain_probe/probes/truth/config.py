"""What a truth-direction run does (`TruthConfig`) and reads (`TruthData`); light: no torch here."""

from __future__ import annotations

import math
from dataclasses import dataclass

from posttrain_probe.probes.base import option

PROBE_KINDS = ("mass_mean", "logistic")  # the probe families fitted in .fit
PROMPT_FORMATS = ("raw", "chat")  # the prompt formats of .model
LODO_MODES = ("all", "probe_layer", "none")


@dataclass(frozen=True)
class TruthConfig:
    """Settings of one truth run (SPEC §2a); every field is recorded in result.json."""

    test_frac: float = option(0.2, "share of statements held out (stratified, seeded) to score the probes")
    seed: int = option(0, "seed of the split, the few-shot examples and the intervention sample")
    max_per_dataset: int | None = option(None, "keep at most this many statements per dataset (none: all)")
    batch_size: int = option(32, "statements per forward when collecting activations")
    C: float = option(1.0, "inverse L2 strength of the logistic probes (scikit-learn's C)")
    max_iter: int = option(2000, "iteration limit of the probes' Newton solves (they stop on convergence first)")
    probe_layer: int | None = option(
        None,
        "resid layer whose direction is intervened with",
        derived="the layer in 1..L−1 with the best mean held-out accuracy of both models",
    )
    band_start: int | None = option(
        None, "first layer of the intervened band", derived="the probe layer minus max(1, round(L/10)), never 0"
    )
    direction_probe: str = option(
        "mass_mean",
        "probe family whose direction is intervened with",
        choices=PROBE_KINDS,
        paper="Du et al.: mass-mean",
    )
    scale: float = option(1.0, "multiple of δ added (false statements) and subtracted (true statements)")
    n_shots: int = option(4, "few-shot TRUE/FALSE examples before each intervened statement", paper="Du et al.: 4")
    n_intervene: int = option(200, "held-out statements for the intervention, split equally over datasets")
    suffix: str = option(" This statement is:", "text after the statement that asks for the judgement")
    true_label: str = option(" TRUE", "the answer for a true statement")
    false_label: str = option(" FALSE", "the answer for a false statement")
    sep: str = option("\n", "separator between few-shot examples")
    base_format: str = option("raw", "prompt format of the base model", choices=PROMPT_FORMATS)
    post_format: str = option(
        "raw", "prompt format of the post model (chat: its chat template)", choices=PROMPT_FORMATS
    )
    lodo: str = option("all", "layers at which to run leave-one-dataset-out probes", choices=LODO_MODES)
    random_control: bool = option(True, "also intervene with a random direction of the same norm")
    reach_pairs: int = option(32, "matched true/false pairs for the check that the answer reads the cells (0: off)")
    keep_activations: bool = option(True, "store the activations in the run dir (a rerun with --force reuses them)")
    progress: bool = option(True, "show progress bars")

    def __post_init__(self) -> None:
        if not 0 < self.test_frac < 1:
            raise ValueError(f"test_frac must be in (0, 1), got {self.test_frac}; 0.2 holds out a fifth")
        if self.max_per_dataset is not None and self.max_per_dataset < 4:
            raise ValueError(f"max_per_dataset must be >= 4 or None, got {self.max_per_dataset}")
        if self.reach_pairs < 0:
            raise ValueError(f"reach_pairs must be >= 0 (0 turns the patching check off), got {self.reach_pairs}")
        for name in ("batch_size", "max_iter", "n_intervene"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.n_shots < 0:
            raise ValueError(f"n_shots must be >= 0, got {self.n_shots}")
        if not self.C > 0:
            raise ValueError(f"C (inverse L2 strength) must be > 0, got {self.C}")
        if self.direction_probe not in PROBE_KINDS:
            raise ValueError(f"direction_probe must be one of {PROBE_KINDS}, got {self.direction_probe!r}")
        for name in ("base_format", "post_format"):
            if getattr(self, name) not in PROMPT_FORMATS:
                raise ValueError(f"{name} must be one of {PROMPT_FORMATS}, got {getattr(self, name)!r}")
        if self.lodo not in LODO_MODES:
            raise ValueError(f"lodo must be one of {LODO_MODES} (layers to run it at), got {self.lodo!r}")
        if not math.isfinite(self.scale):
            raise ValueError(f"scale must be finite, got {self.scale}")
        if self.band_start is not None and self.band_start < 0:
            raise ValueError(f"band_start must be >= 0, got {self.band_start}")
        if self.band_start is not None and self.probe_layer is not None and self.band_start > self.probe_layer:
            raise ValueError(f"band_start {self.band_start} is above probe_layer {self.probe_layer}; lower it")

    @property
    def fewshot(self):
        from posttrain_probe.pair.prompts import FewShotPrompt

        return FewShotPrompt(suffix=self.suffix, true_label=self.true_label, false_label=self.false_label, sep=self.sep)


@dataclass(frozen=True)
class TruthData:
    """What a truth run reads; empty fields take the pair's default statements (the toy world's, grouped by
    family, or the Geometry-of-Truth and Truth-is-Universal csvs)."""

    data: tuple[str, ...] = option((), "statement csv files or folders")
    datasets: tuple[str, ...] = option((), "keep only these dataset names (default: all)")
    dataset_column: str | None = option(
        "family", "csv column naming the dataset when every row of a source has it (none: the file name)"
    )
    reuse: str | None = option(None, "an earlier truth run dir whose cached activations to reuse when they match")
