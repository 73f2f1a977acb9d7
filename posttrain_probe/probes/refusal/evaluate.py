"""The model-running stages of the refusal analysis: per-model preparation (formats, candidates), candidate
scoring on the validation split, evaluation of every direction source on every model, and the
orthogonalization check."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from posttrain_probe.pair import HookedModel
from posttrain_probe.probes.refusal.config import RefusalConfig
from posttrain_probe.probes.refusal.core import (
    is_refusal,
    kl_next_token,
    refusal_log_odds,
    refusal_start_token_ids,
    row_ablation,
    row_addition,
)
from posttrain_probe.probes.refusal.data import RefusalData
from posttrain_probe.probes.refusal.model import (
    Prompts,
    candidate_activations,
    format_prompts,
    generate_batched,
    last_logits,
    post_instruction_tokens,
)
from posttrain_probe.stats import diff_in_means


def _bar(it, cfg: RefusalConfig, desc: str, total: int | None = None):
    if not cfg.progress:
        return it
    from tqdm import tqdm

    return tqdm(it, desc=desc, total=total, leave=False)


@dataclass
class ModelState:
    role: str
    model: HookedModel
    fmt: str
    post_tokens: list[str]
    candidates: torch.Tensor  # (L, P, D)
    val_harmful: Prompts
    val_harmless: Prompts
    eval_prompts: Prompts  # harmful eval then harmless eval
    score_ids: list[int]


def _fmt(cfg: RefusalConfig, role: str) -> str:
    return cfg.base_format if role == "base" else cfg.post_format


def prepare_model(role: str, model: HookedModel, data: RefusalData, cfg: RefusalConfig) -> ModelState:
    fmt = _fmt(cfg, role)
    post_tokens = post_instruction_tokens(model, role, data.harmful_train + data.harmless_train, fmt, cfg.base_template)
    P = len(post_tokens)
    tr_h = format_prompts(model, role, data.harmful_train, fmt, cfg.base_template)
    tr_hl = format_prompts(model, role, data.harmless_train, fmt, cfg.base_template)
    acts_h = candidate_activations(model, tr_h, P, cfg.batch_size)  # (N, L, P, D)
    acts_hl = candidate_activations(model, tr_hl, P, cfg.batch_size)
    cands = diff_in_means(acts_h, acts_hl, dtype=torch.float32)  # (L, P, D)
    ids = refusal_start_token_ids(model.tokenizer, cfg.score_phrases or cfg.refusal_phrases)
    if not ids:
        raise ValueError(
            "none of the refusal phrases starts with a token of this vocabulary; pass score_phrases that do"
        )
    return ModelState(
        role,
        model,
        tr_h.fmt,
        post_tokens,
        cands,
        format_prompts(model, role, data.harmful_val, fmt, cfg.base_template),
        format_prompts(model, role, data.harmless_val, fmt, cfg.base_template),
        format_prompts(model, role, data.harmful_eval + data.harmless_eval, fmt, cfg.base_template),
        ids,
    )


def _tile(p: Prompts, times: int) -> tuple[torch.Tensor, torch.Tensor]:
    return p.input_ids.repeat(times, 1), p.attention_mask.repeat(times, 1)


@torch.no_grad()
def score_candidates(st: ModelState, cfg: RefusalConfig) -> tuple[pd.DataFrame, dict[str, float]]:
    """Bypass / induce / KL of every candidate on the validation split; many candidates per forward (one
    direction per batch row)."""
    m, L = st.model, st.model.n_layers
    P = st.candidates.shape[1]
    flat = st.candidates.reshape(L * P, -1)  # (C, D), candidate c = (l, p) = divmod(c, P)
    layers = [c // P for c in range(L * P)]
    n_h, n_hl = len(st.val_harmful), len(st.val_harmless)
    base_h = last_logits(m, st.val_harmful.input_ids, st.val_harmful.attention_mask, cfg.batch_size)
    base_hl = last_logits(m, st.val_harmless.input_ids, st.val_harmless.attention_mask, cfg.batch_size)
    per_chunk = max(1, cfg.batch_size // max(n_h, n_hl))
    bypass, induce, kl = [], [], []
    starts = range(0, L * P, per_chunk)
    for c0 in _bar(starts, cfg, f"{st.role}: candidates", total=len(starts)):
        cs = list(range(c0, min(c0 + per_chunk, L * P)))
        k = len(cs)
        ids_h, mask_h = _tile(st.val_harmful, k)
        ids_hl, mask_hl = _tile(st.val_harmless, k)
        dirs_h = flat[cs].repeat_interleave(n_h, 0)  # (k·n_h, D)
        dirs_hl = flat[cs].repeat_interleave(n_hl, 0)
        lay_hl = [layers[c] for c in cs for _ in range(n_hl)]
        bs = cfg.batch_size
        abl_h = last_logits(m, ids_h, mask_h, bs, lambda sl, d=dirs_h: row_ablation(d[sl], L))
        abl_hl = last_logits(m, ids_hl, mask_hl, bs, lambda sl, d=dirs_hl: row_ablation(d[sl], L))
        add_hl = last_logits(
            m,
            ids_hl,
            mask_hl,
            bs,
            lambda sl, d=dirs_hl, ly=lay_hl: row_addition(d[sl], ly[sl], cfg.add_scale),
        )
        bypass += refusal_log_odds(abl_h, st.score_ids).view(k, n_h).mean(1).tolist()
        induce += refusal_log_odds(add_hl, st.score_ids).view(k, n_hl).mean(1).tolist()
        kl += kl_next_token(base_hl.repeat(k, 1), abl_hl).view(k, n_hl).mean(1).tolist()
    table = pd.DataFrame(
        {
            "model": st.role,
            "layer": layers,
            "position": [c % P - P for c in range(L * P)],
            "position_token": [st.post_tokens[c % P] for c in range(L * P)],
            "norm": flat.norm(dim=-1).tolist(),
            "bypass_score": bypass,
            "induce_score": induce,
            "kl": kl,
        }
    )
    baseline = {
        "val_harmful_refusal_score": float(refusal_log_odds(base_h, st.score_ids).mean()),
        "val_harmless_refusal_score": float(refusal_log_odds(base_hl, st.score_ids).mean()),
    }
    return table, baseline


def _direction_ivs(vec: torch.Tensor, layer: int, condition: str, n_layers: int, scale: float):
    from posttrain_probe.steering import SteeringVector

    if condition == "ablation":
        return SteeringVector(vec, "resid_all", None, "all", "ablate").to_interventions(n_layers)
    return SteeringVector(vec, "resid_pre", layer, "all", "add", scale).to_interventions(n_layers)


@torch.no_grad()
def evaluate(
    states: dict[str, ModelState],
    chosen: dict[str, tuple[torch.Tensor, int]],
    data: RefusalData,
    cfg: RefusalConfig,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Baseline / ablation / addition for every direction source × applied-to model on the evaluation split:
    (summary table, per-prompt generations)."""
    n_h = len(data.harmful_eval)
    sets = ["harmful"] * n_h + ["harmless"] * len(data.harmless_eval)
    instr = [x.text for x in data.harmful_eval + data.harmless_eval]
    gen_rows, rows = [], []
    gen = torch.Generator().manual_seed(cfg.seed)
    sources: dict[str, tuple[torch.Tensor, int]] = dict(chosen)
    for to, st in states.items():
        conds = [("none", "baseline")] + [(s, c) for s in chosen for c in ("ablation", "addition")]
        if cfg.random_control:
            v, l = chosen[to]
            rnd = torch.randn(v.shape, generator=gen)
            sources[f"random_{to}"] = (rnd * v.norm() / rnd.norm(), l)
            conds += [(f"random_{to}", c) for c in ("ablation", "addition")]
        baseline_first = None
        for src, cond in _bar(conds, cfg, f"evaluate on {to}"):
            ivs = [] if cond == "baseline" else _direction_ivs(*sources[src], cond, st.model.n_layers, cfg.add_scale)
            texts, first = generate_batched(st.model, st.eval_prompts, ivs, cfg.max_new_tokens, cfg.batch_size)
            if baseline_first is None:
                baseline_first = first
            refused = np.array([is_refusal(t, cfg.refusal_phrases) for t in texts])
            score = refusal_log_odds(first, st.score_ids).numpy()
            kl = kl_next_token(baseline_first, first).numpy()
            src_name = "random" if src.startswith("random") else src
            for i, (t, s) in enumerate(zip(texts, sets)):
                gen_rows.append((to, src_name, cond, s, i, instr[i], t, bool(refused[i]), float(score[i])))
            for s in ("harmful", "harmless"):
                sel = np.array(sets) == s
                rows.append(
                    {
                        "applied_to": to,
                        "direction_from": src_name,
                        "condition": cond,
                        "prompt_set": s,
                        "n": int(sel.sum()),
                        "refusal_rate": float(refused[sel].mean()),
                        "refusal_score": float(score[sel].mean()),
                        "kl": float(kl[sel].mean()),
                    }
                )
    cols = [
        "applied_to",
        "direction_from",
        "condition",
        "prompt_set",
        "index",
        "instruction",
        "completion",
        "refused",
        "refusal_score",
    ]
    return pd.DataFrame(rows), pd.DataFrame(gen_rows, columns=cols)


@torch.no_grad()
def orthogonalization_gap(st: ModelState, vec: torch.Tensor, n_prompts: int = 16) -> float:
    """max |logits(orthogonalized weights) − logits(runtime ablation)| over eval prompts (all positions with
    a real token)."""
    from posttrain_probe.probes.refusal.orthogonalize import orthogonalized_copy

    hf, _ = orthogonalized_copy(st.model, vec)
    ids = st.eval_prompts.input_ids[:n_prompts].to(st.model.device)
    mask = st.eval_prompts.attention_mask[:n_prompts].to(st.model.device)
    runtime = st.model.run(ids, mask, interventions=row_ablation(vec.expand(ids.shape[0], -1), st.model.n_layers))
    ortho = hf(input_ids=ids, attention_mask=mask).logits
    real = mask.bool()
    gap = (ortho.float() - runtime.logits.float()).abs()[real].max()
    del hf
    return float(gap)
