"""What an entropy-neuron run does (`NeuronsConfig`) and reads (`NeuronsData`); light: no torch here."""

from __future__ import annotations

from dataclasses import dataclass

from posttrain_probe.probes.base import option

SCREEN_LAYERS = ("last", "all")


@dataclass(frozen=True)
class NeuronsConfig:
    """Settings of one entropy-neuron run (SPEC §3); every field is recorded in result.json."""

    layer: int = option(-1, "MLP layer whose neurons are selected and ablated (-1: the last)", paper="Du et al.: last")
    screen_layers: str = option("last", "layers to screen by weights", choices=SCREEN_LAYERS)
    null_k: int | float | None = option(
        None,
        "size of the unembedding's null space: an int, or a fraction of d_model",
        derived="40 for d_model ≥ 400, else ⌈0.1·d_model⌉",
    )
    top_frac: float = option(
        0.25, "Du et al.'s rule keeps the top share of neurons by ‖w_out‖", paper="Du et al.: 0.25"
    )
    n_select: int = option(10, "neurons in Du et al.'s set (lowest LogitVar among the top by norm)", paper="10")
    n_null: int = option(10, "neurons in the null-space set (largest ρ)")
    fold_final_norm: bool = option(True, "screen against W_U with the final norm's weight folded in")
    center_unembed: bool = option(True, "centre W_U's columns before the screens")
    n_ref: int = option(256, "reference texts whose mean activations replace the ablated neurons'")
    n_eval: int = option(64, "other texts on which the ablation effects are measured")
    max_tokens: int = option(64, "tokens per text at most")
    n_controls: int = option(2, "random neurons of the same norm decile per selected neuron")
    n_control_sets: int = option(10, "random sets of the selection's size, drawn decile by decile")
    all_neurons: bool = option(False, "also ablate every neuron of the layer alone (slow)")
    batch_rows: int = option(128, "rows per forward (each condition needs a total and a direct row)")
    seed: int = option(0, "seed of the text split and the control draws")
    progress: bool = option(True, "show progress bars")

    def __post_init__(self) -> None:
        if self.screen_layers not in SCREEN_LAYERS:
            raise ValueError(f"screen_layers must be one of {SCREEN_LAYERS}, got {self.screen_layers!r}")
        if not 0 < self.top_frac <= 1:
            raise ValueError(f"top_frac must be in (0, 1], got {self.top_frac}; 0.25 keeps the top quarter")
        for name in ("n_select", "n_null", "n_ref", "n_eval", "batch_rows"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("n_controls", "n_control_sets"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.max_tokens < 2:
            raise ValueError(f"max_tokens must be >= 2 (one next-token prediction), got {self.max_tokens}")
        if self.null_k is not None and not self.null_k > 0:
            raise ValueError(f"null_k must be > 0 (an int, or a fraction of d_model), got {self.null_k}")
        if self.batch_rows < 2:
            raise ValueError(f"batch_rows must be >= 2 (a total and a direct row), got {self.batch_rows}")


@dataclass(frozen=True)
class NeuronsData:
    """What an entropy-neuron run reads; by default the pair's default texts (the toy corpus, or TinyStories)."""

    texts: str | None = option(None, "reference/evaluation texts: a .txt file (one text a line) or a folder of them")
