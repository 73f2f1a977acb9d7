"""The patching run: `patch_maps`, `run_patching` and its inputs (what it computes: the package docstring)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm import tqdm

from posttrain_probe.data import Statement
from posttrain_probe.pair import HookedModel, ModelPair
from posttrain_probe.pair.restore import Restorations, block_skip_works, resolve_kv_reuse, restore, run_receiver
from posttrain_probe.probes.patching.config import PatchingConfig, PatchingData
from posttrain_probe.probes.patching.pairs import (
    EncodedPair,
    FewShotPrompt,
    build_pairs,
    choose_shots,
    encode_pair,
    pair_columns,
)
from posttrain_probe.probes.patching.result import DIRECTIONS, assemble_result, direction_name
from posttrain_probe.results import RunResult, RunTimer


@dataclass(frozen=True)
class PatchingInputs:
    """The statements to pair up, and where they came from."""

    statements: Sequence[Statement]
    data_source: str | None = None


def load_inputs(data: PatchingData, sources, cfg=None) -> PatchingInputs:
    """The statements of `data` (default: the pair's default true/false statements)."""
    from posttrain_probe.data import load_statements

    source = data.data or str(sources.pair_statements)
    return PatchingInputs(load_statements(source, datasets=list(data.datasets) or None), str(source))


def run(pair: ModelPair, inputs: PatchingInputs, config: PatchingConfig | None = None) -> RunResult:
    """The probe contract's entry point: `run_patching` on `inputs`."""
    return run_patching(pair, inputs.statements, config, inputs.data_source)


def label_token_ids(tokenizer, true_label: str, false_label: str) -> tuple[int, int, list[str]]:
    """First token ids of the two labels, and notes when a label is not a single token."""
    ids, notes = [], []
    for text in (true_label, false_label):
        toks = tokenizer.encode(text, add_special_tokens=False)
        if not toks or toks[0] == getattr(tokenizer, "unk_token_id", None):
            raise ValueError(f"the label {text!r} is not in the vocabulary; pass labels the tokenizer knows")
        if len(toks) > 1:
            notes.append(f"{text!r} is {len(toks)} tokens; the metric uses its first token {toks[0]}")
        ids.append(int(toks[0]))
    if ids[0] == ids[1]:
        raise ValueError(f"{true_label!r} and {false_label!r} start with the same token; pass other labels")
    return ids[0], ids[1], notes


@torch.no_grad()
def patch_maps(
    models: dict[str, HookedModel],
    pairs: Sequence[EncodedPair],
    true_id: int,
    false_id: int,
    directions: Sequence[tuple[str, str]] = DIRECTIONS,
    kv_reuse: dict[str, bool] | None = None,
    pairs_per_batch: int = 16,
    max_batch_tokens: int = 8192,
    progress: bool = True,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """ΔLD maps per direction, each (N, T_max, L) (NaN past a prompt's end), and LD of the true / false runs
    per model ({"ld_true.base": (N,), ...}). Batched: one row per (pair, token, layer)."""
    L = next(iter(models.values())).n_layers
    t_max = max((p.n_tokens for p in pairs), default=0)
    maps = {direction_name(*d): torch.full((len(pairs), t_max, L), math.nan) for d in directions}
    lds = {f"ld_{w}.{r}": torch.empty(len(pairs)) for r in models for w in ("true", "false")}
    reads = [f"resid_post.{l}" for l in range(L)]
    sets = [(s,) for s in reads]
    scored = torch.tensor([[true_id, false_id]])
    by_len: dict[int, list[int]] = {}
    for i, p in enumerate(pairs):
        by_len.setdefault(p.n_tokens, []).append(i)
    groups = [
        idx[j : j + pairs_per_batch] for _, idx in sorted(by_len.items()) for j in range(0, len(idx), pairs_per_batch)
    ]
    reuse = kv_reuse or {r: False for r in models}
    for idx in tqdm(groups, desc="patching", disable=not progress):
        N, T = len(idx), pairs[idx[0]].n_tokens
        true_ids = torch.stack([pairs[i].true_ids for i in idx])
        false_ids = torch.stack([pairs[i].false_ids for i in idx])
        tok = scored.expand(N, 2)
        sources, receivers = {}, {}
        for r, m in models.items():
            run = m.run(true_ids, read=reads, logits_to_keep=1)
            lp = torch.log_softmax(run.logits[:, -1].float(), -1)[:, [true_id, false_id]].cpu()
            lds[f"ld_true.{r}"][idx] = lp[:, 0] - lp[:, 1]
            sources[r] = run.cache
            receivers[r] = run_receiver(m, false_ids, tok, kv_reuse=reuse[r], skip_blocks=block_skip_works(m))
            lds[f"ld_false.{r}"][idx] = receivers[r].logprobs[:, 0] - receivers[r].logprobs[:, 1]
        parts = []
        for j, i in enumerate(idx):
            grid = torch.cartesian_prod(torch.arange(pairs[i].subject[0], T), torch.arange(L))
            grid = grid[(grid[:, 1] < L - 1) | (grid[:, 0] == T - 1)]  # the last block only matters at the end
            parts.append(torch.cat([torch.full_like(grid[:, :1], j), grid], 1))
        g = torch.cat(parts)  # (R, 3): pair row, position, layer
        rows = Restorations(g[:, 0], g[:, 0], g[:, 1], g[:, 2], sets)
        for src, dst in directions:
            lp = restore(models[dst], receivers[dst], sources[src], rows, tok, max_batch_tokens)
            delta = torch.zeros(N, T, L)
            delta[g[:, 0], g[:, 1], g[:, 2]] = (lp[:, 0] - lp[:, 1]) - lds[f"ld_false.{dst}"][idx][g[:, 0]]
            maps[direction_name(src, dst)][idx, :T] = delta
    return maps, lds


def run_patching(
    pair: ModelPair,
    statements: Sequence[Statement],
    config: PatchingConfig | None = None,
    data_source: str | None = None,
) -> RunResult:
    """True/false patching on both models and across them; see the module docstring."""
    cfg = config or PatchingConfig()
    tok = pair.tokenizer
    with RunTimer() as timer:
        subj_col, _ = pair_columns(statements, cfg.subject_column, cfg.object_column)
        family = [s for s in statements if s.extra.get(subj_col)]
        shots = choose_shots(family, cfg.n_shots, cfg.seed)
        prompt = FewShotPrompt(shots, cfg.suffix, cfg.true_label, cfg.false_label)
        pairs, counts = build_pairs(
            family, tok, cfg.max_pairs, cfg.seed, cfg.subject_column, cfg.object_column, [t for t, _ in shots]
        )
        true_id, false_id, label_notes = label_token_ids(tok, cfg.true_label, cfg.false_label)
        encoded, misaligned = [], 0
        for p in pairs:
            try:
                encoded.append(encode_pair(tok, p, prompt))
            except ValueError:
                misaligned += 1
        if not encoded:
            raise ValueError(
                f"no usable statement pairs ({counts}); check the data has subject/object columns and true rows"
            )
        n_ctx = pair.base.max_context
        if n_ctx is not None and max(e.n_tokens for e in encoded) > n_ctx:
            raise ValueError(f"a few-shot prompt is longer than the model's {n_ctx} tokens; lower n_shots")
        models = pair.models()
        reuse = {r: resolve_kv_reuse(m, cfg.kv_reuse) for r, m in models.items()}
        dirs = DIRECTIONS if cfg.cross_model else DIRECTIONS[:2]
        maps, lds = patch_maps(
            models,
            encoded,
            true_id,
            false_id,
            dirs,
            reuse,
            cfg.pairs_per_batch,
            cfg.max_batch_tokens,
            cfg.progress,
        )
        result = assemble_result(pair, cfg, encoded, maps, lds, dirs)
    timer.record_into(result)
    result.summary.update(
        pair_counts={**counts, "n_misaligned": misaligned, "n_encoded": len(encoded)},
        few_shot_prefix=prompt.prefix,
        label_token_ids={"true": true_id, "false": false_id},
        kv_prefix_reuse=reuse,
    )
    result.notes += label_notes
    result.config["data_source"] = data_source
    return result


def format_summary(summary: dict) -> str:
    lines = [f"pairs used: {summary['n_pairs_used']}; accuracy {summary['accuracy']}"]
    for k, v in summary["comparisons"].items():
        lines.append(
            f"{k}: pearson {v['pearson']:.3f}, max|diff| {v['max_abs_diff']:.3f} (subject "
            f"{v['max_abs_diff_subject']:.3f}, object {v['max_abs_diff_object']:.3f}, "
            f"last {v['max_abs_diff_last']:.3f})"
        )
    return "\n".join(lines)
