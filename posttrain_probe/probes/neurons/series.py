"""Entropy-neuron weight screens along a series of checkpoints (SPEC §6): weights only, no forward passes."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from posttrain_probe.probes.neurons.screen import iou, neuron_directions, screen_arch, select_du, select_null
from posttrain_probe.probes.neurons.tables import RULES


def screen_checkpoints(
    paths: Sequence[str | os.PathLike],
    layer: int = -1,
    all_layers: bool = False,
    null_k: int | float | None = None,
    top_frac: float = 0.25,
    n_select: int = 10,
    n_null: int = 10,
    fold_final_norm: bool = True,
    center_unembed: bool = True,
) -> pd.DataFrame:
    """Weight screens of every checkpoint (HF dirs, hub ids or toy-world aliases), one row per (checkpoint,
    layer, neuron): norm, logit_var, null_frac, norm_decile, the rank in each selection of `layer` (−1 when
    not selected), and the cosine of the neuron's write vector with the same neuron of the first checkpoint.
    Loads weights only (no hooks); `selection_overlap` summarizes it."""
    from transformers import AutoModelForCausalLM

    from posttrain_probe.pair.arch import discover
    from posttrain_probe.pair.loading import ModelLoadError, resolve_source
    from posttrain_probe.utils.hf import no_hf_progress_bars

    if not paths:
        raise ValueError("no checkpoints given; pass at least one checkpoint directory")
    frames, first = [], None
    for ci, src in enumerate(paths):
        resolved, _ = resolve_source(src)
        try:
            with no_hf_progress_bars():
                hf = AutoModelForCausalLM.from_pretrained(resolved, dtype=torch.float32, use_safetensors=True)
        except OSError as e:
            raise ModelLoadError(f"could not load checkpoint {src}: {str(e).splitlines()[0]}") from None
        arch = discover(hf)
        L = arch.n_layers
        if not -L <= layer < L:
            raise ValueError(f"layer {layer} out of range for {L} layers in {src}; use 0..{L - 1} or -1")
        lay = layer % L
        layers = list(range(L)) if all_layers else [lay]
        df, _ = screen_arch(arch, layers, null_k, fold_final_norm, center_unembed)
        sl = df[df.layer == lay].reset_index(drop=True)
        for rule, sel in (("du", select_du(sl, top_frac, n_select)), ("null", select_null(sl, n_null))):
            rank = {n: r for r, n in enumerate(sel)}
            df[f"rank_{rule}"] = np.where(df.layer == lay, df.neuron.map(lambda n, rank=rank: rank.get(n, -1)), -1)
        dirs = {l: neuron_directions(arch, l, fold_final_norm).double() for l in layers}
        if first is None:
            first = dirs
        if set(first) != set(dirs) or any(first[l].shape != dirs[l].shape for l in dirs):
            raise ValueError(f"{src} has other shapes than {paths[0]}; a series must share one architecture")
        df["cos_to_first"] = np.concatenate(
            [torch.nn.functional.cosine_similarity(dirs[l], first[l], dim=1).numpy() for l in layers]
        )
        df.insert(0, "path", str(src))
        df.insert(0, "checkpoint", ci)
        frames.append(df)
        del hf
    return pd.concat(frames, ignore_index=True)


def selection_overlap(series: pd.DataFrame) -> pd.DataFrame:
    """Per checkpoint and rule: the selected set, its IoU with the first and the previous checkpoint."""
    rows = []
    for rule in RULES:
        prev = first = None
        for ci, g in series.groupby("checkpoint", sort=True):
            g = g[g[f"rank_{rule}"] >= 0].sort_values(f"rank_{rule}")
            sel = [int(n) for n in g.neuron]
            first = sel if first is None else first
            rows.append(
                {
                    "checkpoint": int(ci),
                    "rule": rule,
                    "neurons": " ".join(map(str, sel)),
                    "iou_first": iou(sel, first),
                    "iou_previous": iou(sel, prev) if prev is not None else float("nan"),
                }
            )
            prev = sel
    return pd.DataFrame(rows)


def run_series(
    checkpoints: Sequence[str | os.PathLike],
    layer: int = -1,
    all_layers: bool = False,
    null_k: int | float | None = None,
    top_frac: float = 0.25,
    n_select: int = 10,
    n_null: int = 10,
):
    """Weight screens of every checkpoint (base first) and how the selections move along the series, as one
    `neurons_series` RunResult; `selection_overlap` is also its table."""
    from posttrain_probe.results import RunResult, RunTimer

    with RunTimer() as timer:
        series = screen_checkpoints(checkpoints, layer, all_layers, null_k, top_frac, n_select, n_null)
        overlap = selection_overlap(series)
    config = {
        "checkpoints": [str(c) for c in checkpoints],
        "layer": layer,
        "all_layers": all_layers,
        "null_k": null_k,
        "top_frac": top_frac,
        "n_select": n_select,
        "n_null": n_null,
    }
    summary = {
        "n_checkpoints": len(checkpoints),
        "iou_first_last": {r: float(overlap[overlap.rule == r].iou_first.iloc[-1]) for r in RULES},
    }
    result = RunResult(
        analysis="neurons_series",
        config=config,
        summary=summary,
        tables={"screens": series, "selection_overlap": overlap},
    )
    return timer.record_into(result)
