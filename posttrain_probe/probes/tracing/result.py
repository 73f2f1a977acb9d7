"""Assembling a tracing run's `RunResult`: token-class maps, bootstrap intervals, base − post differences,
correlations, peaks, the per-fact table and the notes."""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import TYPE_CHECKING

import pandas as pd
import torch

from posttrain_probe.pair.spans import TOKEN_CLASSES, token_class_masks
from posttrain_probe.probes.tracing.core import NOISE_SITE, ModelTrace, PreparedFact
from posttrain_probe.results import RunResult, provenance
from posttrain_probe.stats import argmax_2d, bootstrap_ci, class_means, nanmean0, pearson
from posttrain_probe.utils.io import sha256_text

if TYPE_CHECKING:
    from posttrain_probe.probes.tracing.config import TracingConfig

ANALYSIS = "causal_tracing"
ROLES = ("base", "post")


def _class_maps(trace: ModelTrace, prepared: dict[int, PreparedFact], kind: str) -> torch.Tensor:
    """Per-fact token-class maps (F, C, L) for one kind."""
    out = []
    for j, fi in enumerate(trace.fact_index):
        f = prepared[fi]
        masks = token_class_masks(f.n_tokens, *f.subject)
        out.append(class_means(trace.ie[kind][j, : f.n_tokens], masks))
    L = next(iter(trace.ie.values())).shape[-1]
    return torch.stack(out) if out else torch.full((0, len(TOKEN_CLASSES), L), math.nan)


def _summaries(per_fact: torch.Tensor, cfg: TracingConfig, seed_offset: int) -> tuple[torch.Tensor, ...]:
    """(mean (C, L), lo, hi, n per class (C,)) of per-fact class maps (F, C, L)."""
    mean = nanmean0(per_fact) if per_fact.shape[0] else torch.full(per_fact.shape[1:], math.nan)
    lo, hi = bootstrap_ci(per_fact, cfg.n_boot, cfg.ci, seed=cfg.seed + seed_offset)
    n = (~torch.isnan(per_fact[..., 0])).sum(0) if per_fact.shape[0] else torch.zeros(per_fact.shape[1])
    return mean, lo, hi, n


def _per_fact_cells(trace: ModelTrace, prepared: dict[int, PreparedFact], kind: str, keep: set[int]):
    """All (t ≥ subject start, l) cells of the facts in `keep`, concatenated in fact-index order."""
    cells = []
    for j, fi in sorted(enumerate(trace.fact_index), key=lambda x: x[1]):
        if fi in keep:
            f = prepared[fi]
            cells.append(trace.ie[kind][j, f.subject[0] : f.n_tokens].flatten())
    return torch.cat(cells) if cells else torch.empty(0)


def assemble_result(pair, facts, prepared, skipped, clean, known, common, traces, cfg) -> RunResult:
    by_index = {f.index: f for f in prepared}
    L = pair.base.n_layers
    tables, tensors, aie, peaks, corr = {}, {}, {}, {}, {}
    rows = []
    for r in ROLES:
        tr = traces[r]
        tensors[f"fact_index.{r}"] = torch.tensor(tr.fact_index, dtype=torch.long)
        tensors[f"p_clean.{r}"], tensors[f"p_corrupted.{r}"] = tr.p_clean, tr.p_corrupted
        for k in cfg.kinds:
            tensors[f"ie.{r}.{k}"] = tr.ie[k]
    class_maps = {(r, k): _class_maps(traces[r], by_index, k) for r in ROLES for k in cfg.kinds}
    for s_i, scope in enumerate(("own", "common")):
        for r_i, r in enumerate(ROLES):
            keep = torch.tensor([fi in common or scope == "own" for fi in traces[r].fact_index], dtype=torch.bool)
            order = torch.tensor([fi for fi in traces[r].fact_index]).argsort()
            for k_i, k in enumerate(cfg.kinds):
                per = class_maps[(r, k)][order][keep[order]]
                mean, lo, hi, n = _summaries(per, cfg, 100 * s_i + 10 * r_i + k_i)
                _store(tensors, rows, aie, scope, r, k, mean, lo, hi, n)
    for k_i, k in enumerate(cfg.kinds):
        maps = {}
        for r in ROLES:
            tr = traces[r]
            sel = sorted((fi, j) for j, fi in enumerate(tr.fact_index) if fi in common)
            maps[r] = class_maps[(r, k)][[j for _, j in sel]] if sel else torch.empty(0, len(TOKEN_CLASSES), L)
        diff = maps["base"] - maps["post"]
        mean, lo, hi, n = _summaries(diff, cfg, 1000 + k_i)
        _store(tensors, rows, aie, "common", "base_minus_post", k, mean, lo, hi, n)
        corr[k] = {
            "class_map": pearson(aie["common"]["base"][k], aie["common"]["post"][k]),
            "per_fact_cells": pearson(*(_per_fact_cells(traces[r], by_index, k, common) for r in ROLES)),
        }
        for r in ROLES:
            own = aie["own"][r][k]
            if torch.isfinite(own).any():
                c, l, v = argmax_2d(own)
                peaks.setdefault(r, {})[k] = {"token_class": TOKEN_CLASSES[c], "layer": l, "aie": v}
    tables["aie"] = pd.DataFrame(rows)
    tables["facts"] = _facts_table(pair.tokenizer, facts, by_index, skipped, clean, known, traces, prepared)
    if skipped:
        tables["skipped"] = pd.DataFrame(skipped)
    summary = {
        "n_facts_loaded": len(facts),
        "n_skipped": len(skipped),
        "n_known": {r: len(known[r]) for r in ROLES},
        "n_common": len(common),
        "n_layers": L,
        "token_classes": list(TOKEN_CLASSES),
        "kinds": list(cfg.kinds),
        "pearson_base_post": corr,
        "peak": peaks,
        "mlp_peak": {r: peaks.get(r, {}).get("mlp") for r in ROLES},
        "aie": {s: {r: {k: v.tolist() for k, v in d.items()} for r, d in sd.items()} for s, sd in aie.items()},
        "p_clean_mean": {r: float(traces[r].p_clean.mean()) if len(traces[r].fact_index) else None for r in ROLES},
        "p_corrupted_mean": {
            r: float(traces[r].p_corrupted.mean()) if len(traces[r].fact_index) else None for r in ROLES
        },
    }
    return RunResult(
        analysis=ANALYSIS,
        config=asdict(cfg),
        summary=summary,
        tables=tables,
        tensors=tensors,
        provenance=provenance(pair, data=_facts_provenance(facts)),
        seeds={"noise": cfg.seed, "bootstrap": cfg.seed},
        notes=_notes(cfg, L, skipped, prepared),
    )


def _facts_provenance(facts) -> dict:
    """How many facts were given and a hash of their prompt, subject and answer."""
    text = "\n".join(f"{f.prompt}\t{f.subject}\t{f.answer}" for f in facts)
    return {"n_facts": len(facts), "facts_sha256": sha256_text(text)}


def _store(tensors, rows, aie, scope, role, kind, mean, lo, hi, n) -> None:
    tensors[f"aie.{scope}.{role}.{kind}"] = mean.float()
    tensors[f"aie_ci.{scope}.{role}.{kind}"] = torch.stack([lo, hi]).float()
    aie.setdefault(scope, {}).setdefault(role, {})[kind] = mean.float()
    for c, name in enumerate(TOKEN_CLASSES):
        for l in range(mean.shape[1]):
            rows.append(
                {
                    "scope": scope,
                    "role": role,
                    "kind": kind,
                    "token_class": name,
                    "layer": l,
                    "aie": float(mean[c, l]),
                    "ci_lo": float(lo[c, l]),
                    "ci_hi": float(hi[c, l]),
                    "n_facts": int(n[c]),
                }
            )


def _facts_table(tokenizer, facts, by_index, skipped, clean, known, traces, prepared) -> pd.DataFrame:
    skip = {s["index"]: s["reason"] for s in skipped}
    pos = {f.index: i for i, f in enumerate(prepared)}
    corr = {r: dict(zip(traces[r].fact_index, traces[r].p_corrupted.tolist())) for r in ROLES}
    out = []
    for i, f in enumerate(facts):
        p = by_index.get(i)
        row = {"index": i, "id": f.id, "prompt": f.prompt, "subject": f.subject, "answer": f.answer}
        row["status"] = "ok" if p else f"skipped: {skip[i]}"
        row["n_tokens"] = p.n_tokens if p else -1
        row["subject_start"], row["subject_end"] = p.subject if p else (-1, -1)
        row["answer_token"] = tokenizer.convert_ids_to_tokens(p.answer_id) if p else ""
        row["tokens"] = " | ".join(tokenizer.convert_ids_to_tokens(p.ids.tolist())) if p else ""
        for r in ROLES:
            row[f"known_{r}"] = bool(p and i in known[r])
            row[f"p_clean_{r}"] = float(clean[r][0][pos[i]]) if p else math.nan
            row[f"p_corrupted_{r}"] = corr[r].get(i, math.nan)
        out.append(row)
    return pd.DataFrame(out)


def _notes(cfg: TracingConfig, n_layers: int, skipped: list, prepared: list) -> list[str]:
    notes = [
        f"noise added at {NOISE_SITE} (the block-0 input: token embeddings incl. any √d scaling and GPT-2 "
        "position embeddings), std measured at the same site; the same N(0,1) draws for both models, "
        "scaled by "
        f"the {cfg.noise_calibration!r} σ",
        "p = probability of the answer's first token; "
        "IE = mean_samples p_restored − mean_samples p_corrupted; "
        "cells before the subject are 0 by construction (clean == corrupted there)",
        "resid restores block l's output (resid_post.l); mlp/attn restore mlp_out/attn_out over the window "
        f"of {cfg.window} layers centred on l (ROME)",
    ]
    if cfg.window >= n_layers and any(k != "resid" for k in cfg.kinds):
        notes.append(
            f"window {cfg.window} ≥ n_layers {n_layers}: every mlp/attn window covers almost all layers, so "
            "those maps vary little with the layer; rerun with a smaller --window to localize by layer"
        )
    if skipped:
        notes.append(f"{len(skipped)} facts skipped (subject not aligned or prompt too long); see table 'skipped'")
    n_alone = sum(not f.answer_by_prefix for f in prepared)
    if n_alone:
        notes.append(
            f"{n_alone} answers did not tokenize as a continuation of the prompt; their first token alone was used"
        )
    return notes
