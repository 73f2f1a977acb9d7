"""The RLVR loop: one readable function per stage, CleanRL style.

Per step:  prompts (seeded order) → G samples each at temperature 1 (KV cache, seeded uniforms) → rewards → group
advantages → old log-probs and entropies (the sampler's own at float32 without autocast; else one no-grad forward
in the training micro-batches) → M mini-batches, one optimizer step each (ρ ≠ 1 after the first) → the same tokens
re-scored under the new policy (the REALIZED entropy change; prompt-major chunks) → one metrics row (metrics.jsonl)
→ checkpoint every N steps. Every forward runs each distinct prompt of its rows once (`score_tokens_shared_prefix`).

Common random numbers: the prompts of step s, the sampling uniforms, the mini-batch split and Clip-Cov's
random picks are all drawn from generators seeded by (seed, step, purpose), never from global state, so
two runs with the same seed differ only by their intervention, and a resumed run continues exactly.
Dropout is off (the model stays in eval mode) so that log π_old and the first mini-batch's log π agree (to float
rounding: the sampler's incremental forward and the training forward multiply matrices of other shapes).

Run directory:
    config.json          the resolved RLVRConfig
    metrics.jsonl        one row per step (`METRIC_KEYS` documents them)
    eval.jsonl           held-out accuracy at step 0, every eval_every steps and at the end
    token_dumps/         per-token tensors every token_dump_every steps (safetensors)
    checkpoints/step_*/  HF model + trainer state + metadata (see checkpoint.py)
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from posttrain_probe.rlvr import checkpoint as ckpt
from posttrain_probe.rlvr.advantages import group_advantages, nonzero_variance_groups
from posttrain_probe.rlvr.config import ConfigError, RLVRConfig
from posttrain_probe.rlvr.entropy import (
    EmbeddingRows,
    centred_cov,
    embedding_rows,
    masked_mean,
    score_tokens_shared_prefix,
    steer_omega,
)
from posttrain_probe.rlvr.losses import Selection, policy_loss, select_tokens
from posttrain_probe.rlvr.mechanism import MECHANISM_KEYS, FirstMinibatchProbe, mechanism_metrics
from posttrain_probe.rlvr.sampler import Rollout, sample
from posttrain_probe.rlvr.session import (
    SEED_EVAL,
    SEED_MINIBATCH,
    SEED_ORDER,
    SEED_SAMPLE,
    SEED_SELECT,
    Session,
    derived_generator,
    setup_session,
)
from posttrain_probe.stats import pearson
from posttrain_probe.utils.device import autocast_context
from posttrain_probe.utils.io import atomic_write_json, atomic_write_text, dumps_json

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
EVAL_FILE = "eval.jsonl"
DUMP_DIR = "token_dumps"
TIMING_KEYS = frozenset(
    {"time_rollout_s", "time_train_s", "time_step_s", "rollout_tokens_per_s", "train_tokens_per_s", "wall_time_s"}
)
METRIC_KEYS = {
    "step": "optimizer round (one rollout batch)",
    "reward_mean": "mean reward of the rollouts",
    "accuracy": "share of rollouts with reward 1",
    "frac_groups_zero_std": "share of prompts whose G rewards are all equal",
    "entropy_mean": "mean token entropy (nats) of the rollouts under the rollout policy",
    "entropy_q10 / q50 / q90": "quantiles of the rollout token entropies",
    "dH_realized": "mean over the step's own tokens of H_after − H_before (all mini-batches applied)",
    "dH_pred_cov": "−mean Cov_i over the rollout batch (∝ predicted ΔH)",
    "dH_pred_omega": "−mean Ω_i (STEER) over the rollout batch (∝ predicted ΔH)",
    "dH_corr_cov / dH_corr_omega": "per-token Pearson r of the predictor with the realized ΔH_i",
    "cov_mean, cov_pos_frac, cov_pos_mean, cov_neg_mean": "batch covariance and its sign split",
    "clip_frac, clip_low_frac, clip_high_frac": "PPO clipping, token share (all mini-batches)",
    "touched_frac": "share of tokens the intervention changed (zeroed, penalized, reweighted)",
    "abs_log_ratio, approx_kl": "|log ρ| and mean(−log ρ) over the mini-batches",
    "response_len_mean, truncated_frac": "response tokens (stop token included) and share not stopped",
    "grad_norm, grad_norm_max": "pre-clip gradient norm, mean and max over the mini-batches",
    "time_*, *_tokens_per_s, wall_time_s": "timing (excluded from reproducibility checks)",
    **MECHANISM_KEYS,  # mechanism.py: what Clip-Cov/KL-Cov/STEER did, and the single-step ΔH probe
}

StepCallback = Callable[[int, torch.nn.Module, dict[str, Any]], None]


class NonFiniteLossError(RuntimeError):
    """The loss or gradient became NaN/inf; the weights were not updated by the failing step."""


class RewardNotFiniteError(ValueError):
    """A task's reward function returned NaN or inf; the step was not trained on."""


# ------------------------------------------------------------------------------------------- rollouts


def prompt_indices(step: int, n_problems: int, per_step: int, seed: int) -> list[int]:
    """The problems of `step` (1-based): consecutive slices of seeded per-epoch permutations."""
    start = (step - 1) * per_step
    out: list[int] = []
    while len(out) < per_step:
        epoch, offset = divmod(start + len(out), n_problems)
        perm = torch.randperm(n_problems, generator=derived_generator(seed, SEED_ORDER, epoch))
        out.extend(perm[offset : offset + per_step - len(out)].tolist())
    return out


def _left_pad(prompts: Sequence[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.tensor(p)
        mask[i, width - len(p) :] = 1
    return ids.to(device), mask.to(device)


def _completions(s: Session, rollout: Rollout) -> list[str]:
    stop = torch.tensor(s.stop_ids, device=rollout.response_ids.device)
    keep = rollout.response_mask & ~torch.isin(rollout.response_ids, stop)
    return [s.tokenizer.decode(row[k].tolist()) for row, k in zip(rollout.response_ids, keep)]


def _rollout(s: Session, prompts: Sequence[list[int]], generator: torch.Generator | None, temperature: float):
    ids, mask = _left_pad(prompts, s.pad_id, s.device)
    with autocast_context(s.device, s.autocast):
        return sample(s.model, ids, mask, s.cfg.max_new_tokens, s.stop_ids, s.pad_id, temperature, generator)


# ---------------------------------------------------------------------------------------------- scoring


def _trim(attn: torch.Tensor) -> slice:
    """Columns that hold at least one attended token (drops all-pad columns at both ends)."""
    used = attn.any(0).nonzero().flatten()
    return slice(int(used[0]), int(used[-1]) + 1)


def _score_rows(
    s: Session, model: Any, ids: torch.Tensor, attn: torch.Tensor, target: torch.Tensor, prompt_width: int
) -> tuple[torch.Tensor, torch.Tensor, EmbeddingRows | None]:
    """log π and H on `target` for a group of rows (one micro-batch), with all-pad columns trimmed; the first
    `prompt_width` columns are the prompt, run once per distinct prompt (a group's G completions share it). Under
    autocast only the decoder body runs in bf16 (see `output_head`); log π and H are fp32. With gradients on, the
    input embedding's gradient lands on the returned `EmbeddingRows` (None: on the table itself): call its
    `add_grad` after backward."""
    cols = _trim(attn)
    prefix = prompt_width - cols.start
    rows = embedding_rows(model, ids[:, cols])
    with autocast_context(s.device, s.autocast):
        logp, ent = score_tokens_shared_prefix(
            model, ids[:, cols], attn[:, cols], target[:, cols], prefix, s.cfg.entropy_chunk, s.cfg.temperature,
            rows, s.cfg.pack_rows,
        )  # fmt: skip
    full_logp = torch.zeros(ids.shape, dtype=logp.dtype, device=ids.device)
    full_ent = torch.zeros_like(full_logp)
    full_logp[:, cols] = logp
    full_ent[:, cols] = ent
    return full_logp, full_ent, rows


def _score_batch_rows(s: Session, model: Any, batch: dict[str, Any], rows: torch.Tensor):
    """`_score_rows` of the batch's `rows`."""
    return _score_rows(s, model, batch["ids"][rows], batch["attn"][rows], batch["target"][rows], batch["prompt_width"])


def _micro_groups(rows: torch.Tensor, micro: int | None) -> list[torch.Tensor]:
    return list(torch.split(rows, micro)) if micro else [rows]


Scored = list[tuple[torch.Tensor, torch.Tensor, EmbeddingRows | None]]  # per micro-batch: log π, H (rows, S) each


@torch.no_grad()
def _score_all(
    s: Session,
    model: Any,
    batch: dict[str, Any],
    groups: list[list[torch.Tensor]],
    known: Scored | None = None,
):
    """log π and H for every row, scored in exactly the micro-batches the training pass uses. `known` holds
    the (with-gradient) scores of the first mini-batch's micro-batches, already computed: reused, not rerun."""
    logp = torch.zeros(batch["ids"].shape, device=s.device)
    ent = torch.zeros_like(logp)
    for g, mini in enumerate(groups):
        for mi, rows in enumerate(mini):
            if known is not None and g == 0:
                lp, en, _ = known[mi]
                lp, en = lp.detach(), en.detach()
            else:
                lp, en, _ = _score_batch_rows(s, model, batch, rows)
            logp[rows], ent[rows] = lp, en
    return logp, ent


def _rollout_scores_are_exact(s: Session) -> bool:
    """Whether the sampler's log π and H are the rollout policy's at full precision (float32 weights, no autocast),
    so that they serve as the old log-probs. Under bf16 autocast the sampling head ran in bf16 while scoring runs
    it in float32 (`output_head`), so old log-probs are recomputed by a forward instead."""
    return s.autocast is None and all(p.dtype == torch.float32 for p in s.model.parameters())


def _first_minibatch_scores(s: Session, batch: dict[str, Any], groups: list[list[torch.Tensor]]) -> Scored:
    """log π and H, with gradient, of the first mini-batch's micro-batches under the rollout policy.

    Before the first optimizer step the policy is the rollout policy, so these forwards are both the old
    log-probs of those rows and the first update's training forwards (the same op on the same inputs gives
    the same bits with or without autograd): one forward of a quarter of the batch saved per step."""
    if not groups:
        return []
    return [_score_batch_rows(s, s.model, batch, rows) for rows in groups[0]]


# ----------------------------------------------------------------------------------------------- update


def _pearson(x: torch.Tensor, y: torch.Tensor) -> float:
    return pearson(x, y, min_n=2)  # float64 on the tensors' device; the guard n_train > 1 is the caller's


def _update(
    s: Session,
    step: int,
    batch: dict[str, Any],
    groups: list[list[torch.Tensor]],
    first: Scored = (),
    after_step: Callable[[int], None] | None = None,
):
    """All mini-batch optimizer steps of one rollout batch; returns per-token weights and diagnostics.
    `first`: the first mini-batch's forwards, already run with gradient (`_first_minibatch_scores`);
    `after_step(mb)` runs right after mini-batch mb's optimizer step (the single-step probe)."""
    cfg = s.cfg
    mask, adv_tok = batch["target"], batch["adv_tok"]
    pg_weight = torch.ones_like(adv_tok)
    kl_mask = torch.zeros_like(mask)
    diags: list[dict[str, float]] = []
    grad_norms, losses = [], []
    params = [p for p in s.model.parameters() if p.requires_grad]
    for mb, mini in enumerate(groups):
        mini_rows = torch.cat(mini)
        total_tokens = float(mask[mini_rows].sum())
        if total_tokens == 0:
            continue
        mini_sel = None
        if cfg.loss.needs_selection and cfg.loss.selection_scope == "mini" and len(mini) > 1:
            # before the first step the current policy is the rollout policy: its log π are the old ones
            cur = batch["old_logp"] if mb == 0 else _score_all(s, s.model, batch, [mini])[0]
            mini_sel = select_tokens(
                cfg.loss, cur[mini_rows], batch["old_logp"][mini_rows], adv_tok[mini_rows], mask[mini_rows],
                batch["old_ent"][mini_rows], derived_generator(cfg.seed, SEED_SELECT, step, mb),
            )  # fmt: skip
        s.optimizer.zero_grad(set_to_none=True)
        offsets = np.cumsum([0] + [len(rows) for rows in mini]).tolist()
        scores = first if mb == 0 and first else [None] * len(mini)
        jobs = [
            _MicroBatch(
                mb,
                mi,
                rows,
                scores[mi],
                None if mini_sel is None else mini_sel.slice(slice(*offsets[mi : mi + 2])),
                total_tokens,
                float(len(mini_rows)),
            )  # fmt: skip
            for mi, rows in enumerate(mini)
        ]
        mb_loss = 0.0
        parallel = cfg.sample_ahead and len(mini) > 1 and not (mb == 0 and first)
        for pair in _pairs(jobs) if parallel else [[job] for job in jobs]:
            if parallel:  # two micro-batches' gradients on two threads, added in micro-batch order
                results = _two_threads([partial(_micro_loss, s, step, batch, j, params) for j in pair])
                for _, _, _, emb_rows, grads in results:
                    _accumulate(params, grads[: len(params)])
                    if emb_rows is not None:
                        emb_rows.add_grad(grads[len(params)])
            else:
                loss, diag, sel, emb_rows, _ = _micro_loss(s, step, batch, pair[0])
                loss.backward()
                if emb_rows is not None:
                    emb_rows.add_grad()
                results = [(loss, diag, sel, emb_rows, None)]
            for job, (loss, diag, sel, _, _) in zip(pair, results):
                mb_loss += float(loss.detach())
                diag["minibatch"] = float(mb)
                diags.append(diag)
                pg_weight[job.rows], kl_mask[job.rows] = _weights_of(sel, mask[job.rows])
        norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm))
        if not math.isfinite(norm):
            raise NonFiniteLossError(
                f"gradient norm is {norm} at step {step} (mini-batch {mb}); the run stopped and saved nothing "
                f"for this step. Last good checkpoint: {_latest_or_start(s)}. Lower lr, then resume from it"
            )
        s.optimizer.step()
        if after_step is not None:
            after_step(mb)
        grad_norms.append(norm)
        losses.append(mb_loss)
    return pg_weight, kl_mask, diags, grad_norms, losses


def _minibatches(cfg: RLVRConfig, step: int, keep: torch.Tensor) -> list[torch.Tensor]:
    """The rows of each optimizer mini-batch (seeded by step), without the rows `keep` drops. `minibatch_split`
    "rows": a permutation of all completions cut in `minibatches` parts (TRL); "groups": a permutation of the prompts
    cut in parts, each prompt with all its G completions (verl), so that a mini-batch runs each prompt once."""
    gen = derived_generator(cfg.seed, SEED_MINIBATCH, step)
    if cfg.minibatch_split == "groups":
        g = cfg.group_size
        prompts = torch.randperm(len(keep) // g, generator=gen)
        parts = torch.tensor_split(prompts, min(cfg.minibatches, len(prompts)))
        minis = [(part[:, None] * g + torch.arange(g)).flatten() for part in parts]  # (P_m * G,) prompt-major
        minis = [m[keep[m]] for m in minis]
    else:
        order = torch.randperm(len(keep), generator=gen)
        order = order[keep[order]]
        minis = list(torch.tensor_split(order, min(cfg.minibatches, max(1, len(order)))))
    return [m for m in minis if len(m)]


@dataclass(frozen=True)
class _MicroBatch:
    """One micro-batch of mini-batch `mb`: its rows, its scores if already computed with gradient (the first
    mini-batch under autocast), and its slice of a mini-batch-wide token selection (Clip-Cov/KL-Cov scope "mini")."""

    mb: int
    mi: int
    rows: torch.Tensor
    scores: tuple[torch.Tensor, torch.Tensor] | None
    selection: Selection | None
    total_tokens: float  # the mini-batch's, by which every micro-batch's loss is normalised
    total_seqs: float


def _micro_loss(
    s: Session,
    step: int,
    batch: dict[str, Any],
    job: _MicroBatch,
    params: list[torch.nn.Parameter] | None = None,
) -> tuple[torch.Tensor, dict[str, float], Selection, EmbeddingRows | None, tuple[torch.Tensor | None, ...] | None]:
    """The policy loss of one micro-batch (normalised over its whole mini-batch), its diagnostics, token selection
    and embedding rows (`_score_rows`); with `params`, also the loss's gradients for them and, last, for the
    embedding rows (`torch.autograd.grad`, `.grad` untouched)."""
    cfg = s.cfg
    rows = job.rows
    logp, ent, emb_rows = job.scores if job.scores is not None else _score_batch_rows(s, s.model, batch, rows)
    m, a = batch["target"][rows], batch["adv_tok"][rows]
    sel = job.selection
    if sel is None:
        gen = derived_generator(cfg.seed, SEED_SELECT, step, job.mb, job.mi)
        sel = select_tokens(cfg.loss, logp, batch["old_logp"][rows], a, m, batch["old_ent"][rows], gen)
    loss, diag = policy_loss(
        cfg.loss, logp, batch["old_logp"][rows], a, m, entropy=ent, rollout_entropy=batch["old_ent"][rows],
        ref_logp=batch["ref_logp"][rows], selection=sel, total_tokens=job.total_tokens,
        total_seqs=job.total_seqs,
    )  # fmt: skip
    if not torch.isfinite(loss):
        raise NonFiniteLossError(
            f"loss is {float(loss.detach())} at step {step} (mini-batch {job.mb}, micro-batch {job.mi}); the run "
            f"stopped and saved nothing for this step. Last good checkpoint: {_latest_or_start(s)}. Lower lr "
            "or check the start model, then resume from that checkpoint"
        )
    grads = None
    if params is not None:
        leaves = params + ([emb_rows.leaf] if emb_rows is not None else [])
        grads = torch.autograd.grad(loss, leaves, allow_unused=True)
    return loss, diag, sel, emb_rows, grads


def _pairs(items: list) -> list[list]:
    return [items[i : i + 2] for i in range(0, len(items), 2)]


def _two_threads(jobs: list[Callable[[], Any]]) -> list[Any]:
    """Run the jobs (at most two) at once, the last on this thread; results in job order, errors re-raised."""
    if len(jobs) == 1:
        return [jobs[0]()]
    with ThreadPoolExecutor(max_workers=1) as pool:
        other = pool.submit(jobs[0])
        last = jobs[1]()
        return [other.result(), last]


@torch.no_grad()
def _accumulate(params: list[torch.nn.Parameter], grads: Sequence[torch.Tensor | None]) -> None:
    """Add gradients to `.grad` as `backward` does (the first assigned, later ones added in place), so that
    micro-batches accumulated in order give the bits of their backward passes run one after another."""
    for p, g in zip(params, grads):
        if g is None:
            continue
        if p.grad is None:
            p.grad = g
        else:
            p.grad += g


def _weights_of(sel: Selection, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return sel.pg_weight * mask, sel.kl_mask & mask


def _latest_or_start(s: Session) -> str:
    latest = ckpt.latest_checkpoint(s.run_dir)
    return str(latest) if latest is not None else f"none yet (start model {s.start_model['path']})"


def _weighted(diags: list[dict[str, float]], key: str) -> float:
    total = sum(d["tokens"] for d in diags)
    return sum(d[key] * d["tokens"] for d in diags) / total if total else 0.0


# ------------------------------------------------------------------------------------------------- step


def _check_rewards(rewards: torch.Tensor, problems: Sequence[Any], step: int, task: str) -> None:
    bad = (~torch.isfinite(rewards)).nonzero().flatten()
    if len(bad):
        i = int(bad[0])
        raise RewardNotFiniteError(
            f"reward of task {task!r} is {float(rewards[i])} for problem {getattr(problems[i], 'id', i)!r} at "
            f"step {step}; nothing was trained on it. Make the reward function return a finite number, then resume"
        )


def _sample_step(s: Session, step: int) -> tuple[list[int], Rollout, float]:
    """The problems of `step`, their G samples each (seeded by step: the same whenever they are drawn) and the
    seconds the sampling took."""
    cfg = s.cfg
    t = time.perf_counter()
    idx = prompt_indices(step, len(s.train_prompts), cfg.prompts_per_step, cfg.seed)
    prompts = [s.train_prompts[i] for i in idx for _ in range(cfg.group_size)]  # prompt-major
    rollout = _rollout(s, prompts, derived_generator(cfg.seed, SEED_SAMPLE, step), cfg.temperature)
    return idx, rollout, time.perf_counter() - t


def _train_step(s: Session, step: int) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    cfg = s.cfg
    t0 = time.perf_counter()
    prefetched, s.prefetched = s.prefetched, None
    t_earlier = 0.0  # sampling seconds spent during the previous step (sample_ahead), not in this step's wall time
    if prefetched is not None and prefetched[0] == step:
        _, idx, rollout, t_earlier = prefetched
    else:
        idx, rollout, _ = _sample_step(s, step)
    texts = _completions(s, rollout)
    problems = [s.train_problems[i] for i in idx for _ in range(cfg.group_size)]
    rewards = torch.tensor([s.reward_fn(t, p) for t, p in zip(texts, problems)], dtype=torch.float32)
    _check_rewards(rewards, problems, step, cfg.task)
    t_rollout = time.perf_counter() - t0 + t_earlier  # the rollout's own time, wherever it ran

    adv = group_advantages(rewards, cfg.group_size, cfg.adv_scale, cfg.adv_eps, cfg.adv_unbiased_std)
    varied = nonzero_variance_groups(rewards, cfg.group_size)
    keep = varied.repeat_interleave(cfg.group_size) if cfg.dynamic_sampling else torch.ones_like(rewards).bool()
    ids, attn, target = rollout.full()
    batch: dict[str, Any] = {"ids": ids, "attn": attn, "target": target, "prompt_width": rollout.prompt_ids.shape[1]}
    batch["adv_tok"] = adv.to(s.device)[:, None] * target
    minis = [m.to(s.device) for m in _minibatches(cfg, step, keep)]
    groups = [_micro_groups(m, cfg.micro_batch_size) for m in minis]
    dropped = (~keep).nonzero().flatten().to(s.device)  # scored for the metrics, never trained on
    scored = groups + ([_micro_groups(dropped, cfg.micro_batch_size)] if len(dropped) else [])

    rollout_scores = rollout.full_scores() if _rollout_scores_are_exact(s) else None
    if rollout_scores is not None:  # the sampler's own log π and H: no old-log-prob forward
        first: Scored = []
        batch["old_logp"], batch["old_ent"] = rollout_scores
    else:
        first = _first_minibatch_scores(s, batch, groups)
        batch["old_logp"], batch["old_ent"] = _score_all(s, s.model, batch, scored, first or None)
    batch["ref_logp"] = torch.zeros_like(batch["old_logp"])
    if s.ref_model is not None:
        batch["ref_logp"], _ = _score_all(s, s.ref_model, batch, groups)
    mask = target & keep.to(s.device)[:, None]
    cov = centred_cov(batch["old_logp"], batch["adv_tok"], mask)
    omega = steer_omega(batch["adv_tok"], batch["old_logp"], batch["old_logp"], batch["old_ent"], mask)

    t1 = time.perf_counter()
    lr = s.scheduler.get_last_lr()[0]
    probe = FirstMinibatchProbe(s, batch, torch.cat(groups[0])) if cfg.probe_first_minibatch and groups else None
    after_step = probe.after_step if probe is not None else None
    pg_weight, kl_mask, diags, grad_norms, losses = _update(s, step, batch, groups, first, after_step)
    del first  # the first mini-batch's graphs
    with warnings.catch_warnings():  # a step with no optimizer update (all groups dropped) is fine here
        warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step", category=UserWarning)
        s.scheduler.step()
    # re-scoring needs no particular grouping: prompt-major chunks of a mini-batch's size run each prompt once
    chunk = cfg.micro_batch_size or (max(len(m) for m in minis) if minis else len(rewards))
    rescore = [list(torch.split(torch.arange(len(rewards), device=s.device), chunk))]
    if cfg.sample_ahead and step < cfg.steps:  # the next step's sampling beside this step's re-scoring
        with ThreadPoolExecutor(max_workers=1) as pool:
            rescored = pool.submit(_score_all, s, s.model, batch, rescore)
            s.prefetched = (step + 1, *_sample_step(s, step + 1))
            new_logp, new_ent = rescored.result()
    else:
        new_logp, new_ent = _score_all(s, s.model, batch, rescore)
    t_train = time.perf_counter() - t1

    dh = (new_ent - batch["old_ent"]) * mask
    h_valid = batch["old_ent"][target]
    q = torch.quantile(h_valid.double().cpu(), torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)).tolist()
    cov_valid = cov[mask]
    n_resp = int(target.sum())
    n_train = int(mask.sum())
    row: dict[str, Any] = {
        "step": step,
        "reward_mean": float(rewards.mean()),
        "reward_std": float(rewards.std()) if len(rewards) > 1 else 0.0,
        "accuracy": float((rewards >= 1.0).float().mean()),
        "frac_groups_zero_std": float((~varied).float().mean()),
        "trained_seqs": int(keep.sum()),
        "entropy_mean": float(h_valid.mean()),
        "entropy_q10": q[0],
        "entropy_q50": q[1],
        "entropy_q90": q[2],
        "dH_realized": float(masked_mean(dh, mask)) if n_train else 0.0,
        "dH_pred_cov": -float(masked_mean(cov, mask)) if n_train else 0.0,
        "dH_pred_omega": -float(masked_mean(omega, mask)) if n_train else 0.0,
        "dH_corr_cov": _pearson(-cov[mask], dh[mask]) if n_train > 1 else float("nan"),
        "dH_corr_omega": _pearson(-omega[mask], dh[mask]) if n_train > 1 else float("nan"),
        "cov_mean": float(cov_valid.mean()) if n_train else 0.0,
        "cov_pos_frac": float((cov_valid > 0).float().mean()) if n_train else 0.0,
        "cov_pos_mean": float(cov_valid[cov_valid > 0].mean()) if (cov_valid > 0).any() else 0.0,
        "cov_neg_mean": float(cov_valid[cov_valid < 0].mean()) if (cov_valid < 0).any() else 0.0,
    }
    for key in ("clip_frac", "clip_low_frac", "clip_high_frac", "touched_frac", "abs_log_ratio", "approx_kl"):
        row[key] = _weighted(diags, key)
    if s.ref_model is not None:
        row["kl_ref"] = _weighted(diags, "kl_ref")
    # mechanism metrics and the single-step probe (mechanism.py); keys only loss-specific runs have
    row.update(mechanism_metrics(cfg.loss, diags, pg_weight, batch["adv_tok"], mask))
    probe_dump: dict[str, torch.Tensor] = {}
    if probe is not None:
        probe_row, probe_dump = probe.result(mask, cov, omega)
        row.update(probe_row)
    lengths = rollout.lengths.float()
    row.update(
        loss=float(np.mean(losses)) if losses else 0.0,
        grad_norm=float(np.mean(grad_norms)) if grad_norms else 0.0,
        grad_norm_max=float(np.max(grad_norms)) if grad_norms else 0.0,
        optimizer_steps=len(grad_norms),
        lr=lr,
        response_len_mean=float(lengths.mean()),
        response_len_max=int(lengths.max()),
        truncated_frac=float((~rollout.finished).float().mean()),
        response_tokens=n_resp,
        time_rollout_s=t_rollout,
        time_train_s=t_train,
        time_step_s=time.perf_counter() - t0,
        rollout_tokens_per_s=n_resp / max(t_rollout, 1e-9),
        train_tokens_per_s=n_train * max(1, len(grad_norms)) / max(t_train, 1e-9),
    )
    cols = slice(rollout.prompt_ids.shape[1], None)
    dump = {
        "response_ids": rollout.response_ids,
        "response_mask": rollout.response_mask,
        "trained": mask[:, cols],
        "logp_old": batch["old_logp"][:, cols],
        "logp_new": new_logp[:, cols],
        "entropy_old": batch["old_ent"][:, cols],
        "entropy_new": new_ent[:, cols],
        "advantage": batch["adv_tok"][:, cols],
        "cov": cov[:, cols],
        "omega": omega[:, cols],
        "pg_weight": pg_weight[:, cols],
        "kl_cov_mask": kl_mask[:, cols],
        "reward": rewards,
        "prompt_index": torch.tensor(idx).repeat_interleave(cfg.group_size),
        **{key: value[:, cols] for key, value in probe_dump.items()},
    }
    return row, dump


# ------------------------------------------------------------------------------------------------ eval


@torch.no_grad()
def evaluate(s: Session, batch_prompts: int = 64) -> dict[str, float]:
    """Held-out accuracy: greedy, and at the training temperature with eval_samples samples per problem
    (fixed uniforms, so evaluations at different steps see the same random numbers)."""
    cfg = s.cfg
    greedy, sampled, entropy, n_tok = [], [], 0.0, 0
    gen = derived_generator(cfg.seed, SEED_EVAL)
    for start in range(0, len(s.eval_prompts), batch_prompts):
        prompts = s.eval_prompts[start : start + batch_prompts]
        problems = s.eval_problems[start : start + batch_prompts]
        r = _rollout(s, prompts, None, 0.0)
        greedy += [s.reward_fn(t, p) for t, p in zip(_completions(s, r), problems)]
        many = [p for p in prompts for _ in range(cfg.eval_samples)]
        r = _rollout(s, many, gen, cfg.temperature)
        probs = [p for p in problems for _ in range(cfg.eval_samples)]
        sampled += [s.reward_fn(t, p) for t, p in zip(_completions(s, r), probs)]
        ids, attn, target = r.full()
        if _rollout_scores_are_exact(s):
            entropy += float(r.entropy[r.response_mask].sum())
        else:
            for rows in _micro_groups(torch.arange(len(ids), device=s.device), cfg.micro_batch_size):
                _, ent, _ = _score_rows(s, s.model, ids[rows], attn[rows], target[rows], r.prompt_ids.shape[1])
                entropy += float(ent[target[rows]].sum())
        n_tok += int(target.sum())
    return {
        "eval_accuracy_greedy": float(np.mean([g >= 1.0 for g in greedy])),
        "eval_accuracy_sampled": float(np.mean([x >= 1.0 for x in sampled])),
        "eval_entropy_mean": entropy / max(n_tok, 1),
        "eval_problems": len(s.eval_prompts),
    }


# ------------------------------------------------------------------------------------------ artefacts


def _append_jsonl(path: Path, row: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(dumps_json(row, indent=None) + "\n")  # valid JSON: a non-finite metric is null
        f.flush()


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a JSONL file; an unterminated last line (a write cut off by a kill) is not a row. A null
    value (how a non-finite metric is written: valid JSON) is read back as NaN."""
    path = Path(path)
    if not path.is_file():
        return []
    text = path.read_text()
    lines = text.splitlines()
    if lines and not text.endswith("\n"):
        try:
            json.loads(lines[-1])
        except json.JSONDecodeError:
            lines.pop()
    rows = [json.loads(line) for line in lines if line.strip()]
    return [{k: math.nan if v is None else v for k, v in r.items()} for r in rows]


def _truncate_jsonl(path: Path, last_step: int) -> None:
    rows = [r for r in read_jsonl(path) if r["step"] <= last_step]
    atomic_write_text(path, "".join(dumps_json(r, indent=None) + "\n" for r in rows))


def _remove_stale_temporaries(run_dir: Path) -> None:
    """Delete what a killed process left half-written: temp checkpoint folders, dump and JSON temp files."""
    patterns = [
        ("checkpoints", ".step_*.tmp-*"),
        ("checkpoints", ".step_*.old-*"),
        (DUMP_DIR, ".step_*.safetensors.tmp"),
        (".", f".{METRICS_FILE}.*"),
        (".", f".{EVAL_FILE}.*"),
        (".", f".{CONFIG_FILE}.*"),
    ]
    for folder, pattern in patterns:
        for stale in (run_dir / folder).glob(pattern):
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)


def _save_dump(s: Session, step: int, dump: dict[str, torch.Tensor]) -> None:
    folder = s.run_dir / DUMP_DIR
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"{ckpt.step_dir_name(step)}.safetensors"
    tmp = folder / f".{final.name}.tmp"
    tensors = {
        k: (v.to(torch.uint8) if v.dtype == torch.bool else v).detach().cpu().contiguous() for k, v in dump.items()
    }
    save_file(tensors, str(tmp), metadata={"step": str(step), "task": s.cfg.task, "loss": s.cfg.loss.name})
    os.replace(tmp, final)


def _versions() -> dict[str, str]:
    out = {}
    for pkg in ("torch", "transformers", "safetensors", "numpy"):
        try:
            out[pkg] = importlib_metadata.version(pkg)
        except importlib_metadata.PackageNotFoundError:
            continue
    return out


def _save_checkpoint(s: Session, step: int, row: dict[str, Any]) -> Path:
    path = s.run_dir / "checkpoints" / ckpt.step_dir_name(step)
    meta = {
        "kind": "posttrain_probe.rlvr checkpoint",
        "step": step,
        "config": s.cfg.to_dict(),
        "start_model": s.start_model,
        "parent_checkpoint": s.parent,
        "last_metrics": row,
        "versions": _versions(),
        "created_unix": time.time(),
    }
    state = {"step": step, "data_cursor": _cursor(s, step), "seed": s.cfg.seed}
    ckpt.save_checkpoint(path, s.model, s.tokenizer, s.optimizer, s.scheduler, state, meta)
    s.parent = str(path)
    if s.cfg.keep_last_checkpoints:
        for _, old in ckpt.list_checkpoints(s.run_dir)[: -s.cfg.keep_last_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
    return path


def _cursor(s: Session, step: int) -> dict[str, int]:
    seen = step * s.cfg.prompts_per_step
    epoch, index = divmod(seen, len(s.train_prompts))
    return {"prompts_seen": seen, "epoch": epoch, "index_in_epoch": index}


# ------------------------------------------------------------------------------------------------ loop


def _run(s: Session, callbacks: Sequence[StepCallback] = ()) -> Path:
    from tqdm import tqdm

    cfg = s.cfg
    metrics_path, eval_path = s.run_dir / METRICS_FILE, s.run_dir / EVAL_FILE
    if s.start_step == 0 and cfg.eval_every:
        _append_jsonl(eval_path, {"step": 0, **evaluate(s)})
    t_start = time.perf_counter()
    bar = tqdm(total=cfg.steps, initial=s.start_step, disable=not cfg.progress, desc="rlvr", dynamic_ncols=True)
    try:
        for step in range(s.start_step + 1, cfg.steps + 1):
            row, dump = _train_step(s, step)
            if cfg.eval_every and (step % cfg.eval_every == 0 or step == cfg.steps):
                ev = evaluate(s)
                _append_jsonl(eval_path, {"step": step, **ev})
                row.update(ev)
            row["wall_time_s"] = time.perf_counter() - t_start
            _append_jsonl(metrics_path, row)
            if cfg.token_dump_every and step % cfg.token_dump_every == 0:
                _save_dump(s, step, dump)
            if (cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or step == cfg.steps:
                _save_checkpoint(s, step, row)
            bar.update(1)
            bar.set_postfix(reward=f"{row['reward_mean']:.3f}", H=f"{row['entropy_mean']:.3f}")
            for cb in callbacks:
                cb(step, s.model, row)
    finally:
        bar.close()
    return s.run_dir


def train(config: RLVRConfig | str | Path, out_dir: str | Path, callbacks: Sequence[StepCallback] = ()) -> Path:
    """Run RLVR from `config` (an RLVRConfig or a YAML path) into a new run directory `out_dir`.

    `callbacks` are called as cb(step, model, metrics_row) after each step's metrics and checkpoint.
    Returns the run directory.
    """
    cfg = config if isinstance(config, RLVRConfig) else RLVRConfig.from_yaml(config)
    run_dir = Path(out_dir)
    if (run_dir / CONFIG_FILE).exists() or (run_dir / METRICS_FILE).exists():
        raise ConfigError(f"{run_dir} already holds an RLVR run; resume it or choose another --out")
    if run_dir.is_dir():
        _remove_stale_temporaries(run_dir)  # what a run killed before its config.json was written left
    if run_dir.exists() and any(run_dir.iterdir()):
        raise ConfigError(f"{run_dir} is not empty; choose a new or empty --out folder")
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        # config.json first: a run killed while loading (the slow part for large models) can be resumed
        atomic_write_json(run_dir / CONFIG_FILE, cfg.to_dict())
        session = setup_session(cfg, run_dir, None)
    except BaseException:
        if created:
            shutil.rmtree(run_dir, ignore_errors=True)
        else:
            (run_dir / CONFIG_FILE).unlink(missing_ok=True)
        raise
    return _run(session, callbacks)


# may change between a run and its resume
_RESUME_FREE_KEYS = frozenset({"progress", "threads", "device", "sample_ahead", "keep_freed_memory", "pack_rows"})


def _check_same_run(path: Path, meta: dict[str, Any], cfg: RLVRConfig) -> None:
    """Refuse a checkpoint written under another config (copied from another run, or a config edited since)."""
    theirs, ours = meta.get("config") or {}, json.loads(json.dumps(cfg.to_dict()))
    # keys only one side has come from another package version, not from another run (also inside `loss`)
    differ = sorted(
        k for k in set(theirs) & set(ours) if k not in _RESUME_FREE_KEYS and not _same_values(theirs[k], ours[k])
    )
    if differ:
        raise ckpt.CheckpointError(
            f"{path} was written by another run (config differs in {', '.join(differ)}); move it out of "
            f"{path.parent} or resume the run it came from"
        )


def _same_values(a: Any, b: Any) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return all(_same_values(a[k], b[k]) for k in set(a) & set(b))
    return a == b


def resume(run_dir: str | Path, callbacks: Sequence[StepCallback] = ()) -> Path:
    """Continue an interrupted run from its latest checkpoint (or from the start if it has none), exactly
    as if it had never stopped: rows after the checkpoint are dropped and recomputed."""
    run_dir = Path(run_dir)
    cfg_file = run_dir / CONFIG_FILE
    if not cfg_file.is_file():
        raise ConfigError(f"{run_dir} is not an RLVR run directory (no {CONFIG_FILE}); pass the --out of a run")
    cfg = RLVRConfig.from_dict(json.loads(cfg_file.read_text()))
    _remove_stale_temporaries(run_dir)
    latest = ckpt.latest_checkpoint(run_dir)
    last_step = 0
    if latest is not None:
        meta = ckpt.read_metadata(latest)
        _check_same_run(latest, meta, cfg)
        last_step = int(meta["step"])
    for name in (METRICS_FILE, EVAL_FILE):
        if (run_dir / name).exists():  # without a checkpoint even the step-0 evaluation is redone
            _truncate_jsonl(run_dir / name, last_step if latest is not None else -1)
    for dump in (run_dir / DUMP_DIR).glob("step_*.safetensors"):
        if int(dump.stem.split("_")[1]) > last_step:
            dump.unlink()
    session = setup_session(cfg, run_dir, latest)
    return _run(session, callbacks)
