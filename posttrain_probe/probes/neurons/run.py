"""The entropy-neuron analysis's run: `run_neurons` and its inputs (what it computes: the package docstring)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from posttrain_probe.pair import HookedModel, ModelPair
from posttrain_probe.probes.neurons.ablate import ablation_effects, reference_means
from posttrain_probe.probes.neurons.config import NeuronsConfig, NeuronsData
from posttrain_probe.probes.neurons.screen import neuron_directions, resolve_null_k, screen_arch, select_du, select_null
from posttrain_probe.probes.neurons.tables import (
    ROLES,
    RULES,
    build_conditions,
    build_notes,
    build_summary,
    effects_table,
    explained_share,
    matching_table,
    side_by_side,
)
from posttrain_probe.results import RunResult, RunTimer, provenance
from posttrain_probe.utils.io import sha256_text

ANALYSIS = "neurons"


# ---------------------------------------------------------------------------------------------- texts


def load_texts(source: str | os.PathLike) -> list[str]:
    """Non-empty lines of a .txt file, or of every .txt file in a folder (sorted by name)."""
    path = Path(source).expanduser()
    if path.is_dir():
        files = sorted(path.glob("*.txt"))
        if not files:
            raise ValueError(f"{path} holds no .txt files; pass a text file with one document per line")
    elif path.is_file():
        files = [path]
    else:
        raise ValueError(f"reference text source {path} not found; pass a .txt file or a folder of them")
    texts = [ln.strip() for f in files for ln in f.read_text(encoding="utf-8").splitlines()]
    texts = [t for t in texts if t]
    if not texts:
        raise ValueError(f"{path} has no non-empty lines; pass a text file with one document per line")
    return texts


def split_texts(texts: Sequence[str], n_ref: int, n_eval: int, seed: int) -> tuple[list[str], list[str]]:
    """Seeded disjoint (reference, evaluation) subsets."""
    if len(texts) < n_ref + n_eval:
        raise ValueError(
            f"{len(texts)} texts cannot give {n_ref} reference + {n_eval} evaluation texts; "
            "lower n_ref / n_eval or pass more texts"
        )
    order = np.random.default_rng(seed).permutation(len(texts))
    return [texts[i] for i in order[:n_ref]], [texts[i] for i in order[n_ref : n_ref + n_eval]]


def encode_texts(pair: ModelPair, texts: Sequence[str], max_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and mask (N, ≤ max_tokens), truncated; texts of fewer than 2 tokens are refused."""
    ids, am = pair.encode(texts, padding_side="right")
    ids, am = ids[:, :max_tokens], am[:, :max_tokens]
    short = int((am.sum(1) < 2).sum())
    if short:
        raise ValueError(f"{short} texts have fewer than 2 tokens; drop them or pass longer texts")
    return ids, am


def _by_length(pair: ModelPair, texts: list[str]) -> list[str]:
    """Texts sorted by token count (stable), so batches carry little padding."""
    lengths = [len(x) for x in pair.tokenizer(list(texts))["input_ids"]]
    return [texts[i] for i in np.argsort(lengths, kind="stable")]


# ---------------------------------------------------------------------------------------------- per model


def _layers(model: HookedModel, cfg: NeuronsConfig) -> tuple[int, list[int]]:
    L = model.n_layers
    if not -L <= cfg.layer < L:
        raise ValueError(f"layer {cfg.layer} out of range for {L} layers; use 0..{L - 1} or -1")
    layer = cfg.layer % L
    return layer, (list(range(L)) if cfg.screen_layers == "all" else [layer])


def _screen_model(model: HookedModel, role: str, cfg: NeuronsConfig) -> dict[str, Any]:
    """Weight screens, both selections and the write vectors of the ablation layer."""
    layer, layers = _layers(model, cfg)
    screen, svals = screen_arch(model.arch, layers, cfg.null_k, cfg.fold_final_norm, cfg.center_unembed)
    screen.insert(0, "role", role)
    sl = screen[screen.layer == layer].reset_index(drop=True)
    sel = {"du": select_du(sl, cfg.top_frac, cfg.n_select), "null": select_null(sl, cfg.n_null)}
    for rule in RULES:
        rank = {n: r for r, n in enumerate(sel[rule])}
        screen[f"rank_{rule}"] = np.where(
            screen.layer == layer, screen.neuron.map(lambda n, rank=rank: rank.get(n, -1)), -1
        )
    return {
        "layer": layer,
        "screen": screen,
        "screen_layer": sl,
        "svals": svals,
        "selection": sel,
        "directions": neuron_directions(model.arch, layer, cfg.fold_final_norm),
    }


def _ablate_model(model: HookedModel, role: str, info: dict, other_sel: dict, ref, evl, cfg: NeuronsConfig):
    """Reference means, then every condition's total and direct effects; fills `info` in place."""
    layer, sl, sel = info["layer"], info["screen_layer"], info["selection"]
    conds, controls, n_sets = build_conditions(
        sl, sel, other_sel, cfg.n_controls, cfg.n_control_sets, cfg.all_neurons, cfg.seed
    )
    means = reference_means(model, *ref, [layer], cfg.batch_rows, cfg.progress, f"{role} means")[layer]
    stats = ablation_effects(
        model, *evl, layer, [c[2] for c in conds], means, cfg.batch_rows, cfg.progress, f"{role} ablations"
    )
    info["effects"] = effects_table(role, conds, stats, sl, sel, other_sel, controls)
    info["controls"] = pd.DataFrame(
        [
            {"role": role, "neuron": t, "control": c, "decile": int(sl.norm_decile[t])}
            for t, cs in controls.items()
            for c in cs
        ],
        columns=["role", "neuron", "control", "decile"],
    )
    info["n_control_sets"] = n_sets
    info["means"] = means
    info["stats"] = stats


# ---------------------------------------------------------------------------------------------- the run


@dataclass(frozen=True)
class NeuronsInputs:
    """The texts to split into reference and evaluation texts, and where they came from."""

    texts: Sequence[str]
    text_source: str | None = None


def load_inputs(data: NeuronsData, sources, cfg=None) -> NeuronsInputs:
    """The texts of `data` (default: the pair's default texts)."""
    source = data.texts or str(sources.texts)
    return NeuronsInputs(load_texts(source), source)


def run(pair: ModelPair, inputs: NeuronsInputs, config: NeuronsConfig | None = None) -> RunResult:
    """The probe contract's entry point: `run_neurons` on `inputs`."""
    return run_neurons(pair, inputs.texts, config, inputs.text_source)


def run_neurons(
    pair: ModelPair,
    texts: Sequence[str],
    config: NeuronsConfig | None = None,
    text_source: str | os.PathLike | None = None,
) -> RunResult:
    """The entropy-neuron analysis of `pair` (module docstring); `texts` are split into reference texts (for
    the means) and evaluation texts (for the effects). Returns a RunResult for `write_run`."""
    cfg = config or NeuronsConfig()
    with RunTimer() as timer:
        result = _run_neurons(pair, list(texts), cfg, text_source)
    return timer.record_into(result)


def _run_neurons(pair: ModelPair, texts: list[str], cfg: NeuronsConfig, text_source) -> RunResult:
    _layers(pair.base, cfg)  # fail on a bad layer before any model work
    k = resolve_null_k(cfg.null_k, pair.base.d_model)
    ref_texts, eval_texts = split_texts(texts, cfg.n_ref, cfg.n_eval, cfg.seed)
    ref_texts, eval_texts = _by_length(pair, ref_texts), _by_length(pair, eval_texts)
    ref = encode_texts(pair, ref_texts, cfg.max_tokens)
    evl = encode_texts(pair, eval_texts, cfg.max_tokens)
    per = {r: _screen_model(pair.models()[r], r, cfg) for r in ROLES}
    for r, other in (("base", "post"), ("post", "base")):
        _ablate_model(pair.models()[r], r, per[r], per[other]["selection"], ref, evl, cfg)
    selections = {r: per[r]["selection"] for r in ROLES}
    effects = {r: per[r]["effects"] for r in ROLES}
    share = explained_share({r: per[r]["stats"].clean_means()[0] for r in ROLES}, effects)
    matching = matching_table({r: per[r]["directions"] for r in ROLES}, selections)
    summary = build_summary(per, k, share, matching)
    summary |= {"n_ref_tokens": int(ref[1].sum()), "n_eval_tokens": int(evl[1].sum())}
    texts_table = pd.DataFrame(
        {
            "text": eval_texts,
            "n_predictions": per["base"]["stats"].n_tokens,
            **{f"entropy_{r}": per[r]["stats"].clean[:, 0] for r in ROLES},
            **{f"loss_{r}": per[r]["stats"].clean[:, 1] for r in ROLES},
        }
    )
    selection_table = pd.DataFrame(
        [
            {"role": r, "rule": rule, "rank": i, "neuron": n}
            for r in ROLES
            for rule in RULES
            for i, n in enumerate(per[r]["selection"][rule])
        ]
    )
    tables = {
        "screen": pd.concat([per[r]["screen"] for r in ROLES], ignore_index=True),
        "selections": selection_table,
        "effects": pd.concat([effects[r] for r in ROLES], ignore_index=True),
        "side_by_side": side_by_side(effects, selections),
        "controls": pd.concat([per[r]["controls"] for r in ROLES], ignore_index=True),
        "matching": matching,
        "explained_share": share,
        "eval_texts": texts_table,
    }
    tensors = {}
    for r in ROLES:
        tensors[f"mean_act.{r}"] = per[r]["means"]
        tensors[f"unembed_singular_values.{r}"] = per[r]["svals"]
    data = {
        "source": None if text_source is None else str(text_source),
        "n_texts_available": len(texts),
        "ref_sha256": sha256_text("\n".join(ref_texts)),
        "eval_sha256": sha256_text("\n".join(eval_texts)),
    }
    return RunResult(
        analysis=ANALYSIS,
        config=asdict(cfg),
        summary=summary,
        tables=tables,
        tensors=tensors,
        provenance=provenance(pair, data=data),
        seeds={
            "split": cfg.seed,
            "single_controls": cfg.seed + 1,
            "set_controls": [cfg.seed + 2, cfg.seed + 3],
        },
        notes=build_notes(summary),
    )


def format_summary(summary: dict[str, Any]) -> str:
    """A few lines for the terminal: selections, IoU, set effects against controls, explained share."""
    lines = [
        f"layer {summary['layer']}, null-space k = {summary['null_k']}; "
        f"entropy base {summary['base']['entropy']:.4f}, post {summary['post']['entropy']:.4f} nats "
        f"(gap {summary['entropy_gap_post_minus_base']:+.4f})",
        f"IoU base vs post: du {summary['iou']['du']:.2f}, null {summary['iou']['null']:.2f}",
    ]
    for r in ROLES:
        for rule in RULES:
            e = summary[r]["sets"][rule]
            lines.append(
                f"{r:4} {rule:4} set {summary['selection'][r][rule]}: ΔH total {e['dH_total']:+.3g} "
                f"(ctrl {e['dH_total_control_mean']:+.3g}±{e['dH_total_control_std']:.2g}), "
                f"direct {e['dH_direct']:+.3g} (ctrl {e['dH_direct_control_mean']:+.3g})"
            )
    for key, v in summary["explained_share"].items():
        if "_own_" not in key:
            continue
        lines.append(
            f"explained share of the gap, {key}: {v['share_both']:+.1%} (controls {v['control_share_both_mean']:+.1%})"
        )
    return "\n".join(lines)
