"""Causal tracing of one model (ROME, Meng et al. 2022): facts → per-fact indirect-effect maps.

Conventions (recorded in every result):
- Noise is added at `resid_pre.0`, the residual entering block 0, on the subject tokens only. That is the
  token embedding as the blocks see it: Gemma's √d scaling included, GPT-2's position embedding included
  (ROME adds noise to the token-embedding output `wte`, before GPT-2 adds positions). The noise std is
  measured at the same site, so the noise-to-signal ratio does not depend on the convention.
- Embedding std σ: the std of all resid_pre.0 entries of a reference text set (default: the facts'
  subjects tokenized without special tokens, as ROME's `collect_embedding_std`). Noise = scale · σ · z,
  z ~ N(0, 1) of shape (n_samples, n_subject_tokens, d_model), one `torch.randn` call on a CPU generator
  seeded with seed · 1_000_003 + fact index: the same z for every model.
- p = the probability of the answer's first token at the last prompt position. IE(t, l) = mean over noise
  samples of p_restored − mean of p_corrupted. Restoring a position before the subject is a no-op (the
  corrupted and clean runs agree there), so those cells are 0 without a forward.
- Kinds: "resid" restores block l's output (resid_post.l, as ROME's hidden state of layer l); "mlp" / "attn"
  restore mlp_out / attn_out at every layer of the window of `window` layers centred on l.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from posttrain_probe.data import Fact
from posttrain_probe.pair import HookedModel
from posttrain_probe.pair.restore import (
    Restorations,
    block_skip_works,
    restoration_sites,
    restore,
    run_receiver,
    source_sites,
)
from posttrain_probe.pair.spans import SubjectNotFoundError, answer_token, find_token_span

NOISE_SITE = "resid_pre.0"


@dataclass
class PreparedFact:
    """A fact tokenized once for both models: ids (T,), subject token span [start, end), answer token."""

    index: int
    fact: Fact
    ids: torch.Tensor
    subject: tuple[int, int]
    answer_id: int
    answer_by_prefix: bool

    @property
    def n_tokens(self) -> int:
        return int(self.ids.shape[0])


def prepare_facts(
    tokenizer, facts: Sequence[Fact], max_tokens: int | None = None
) -> tuple[list[PreparedFact], list[dict]]:
    """Tokenize facts and find their subject spans; a fact whose subject cannot be aligned (or whose prompt
    is too long) is reported in the second list and skipped, never traced at a guessed position."""
    ok, skipped = [], []
    for i, f in enumerate(facts):
        try:
            span = find_token_span(tokenizer, f.prompt, f.subject, char_start=f.subject_char_span[0])
            ids = torch.tensor(tokenizer(f.prompt)["input_ids"], dtype=torch.long)
            if max_tokens is not None and len(ids) > max_tokens:
                raise ValueError(f"prompt has {len(ids)} tokens, more than the model's {max_tokens}")
            tok, by_prefix = answer_token(tokenizer, f.prompt, f.answer)
            if tok == getattr(tokenizer, "unk_token_id", None):
                raise ValueError(f"the answer {f.answer!r} starts with the unknown token; it cannot be scored")
        except (SubjectNotFoundError, ValueError) as e:
            skipped.append({"index": i, "id": f.id, "reason": f"{type(e).__name__}: {e}"})
            continue
        ok.append(PreparedFact(i, f, ids, span, tok, by_prefix))
    return ok, skipped


def _groups(facts: Sequence[PreparedFact], per_batch: int) -> list[list[int]]:
    """Indices into `facts`, grouped by token length (no padding needed) and cut into batches."""
    by_len: dict[int, list[int]] = defaultdict(list)
    for i, f in enumerate(facts):
        by_len[f.n_tokens].append(i)
    return [idx[j : j + per_batch] for _, idx in sorted(by_len.items()) for j in range(0, len(idx), per_batch)]


@torch.no_grad()
def embedding_std(model: HookedModel, texts: Sequence[str], tokenizer=None, batch_size: int = 64) -> float:
    """Std of all entries of resid_pre.0 over the tokens of `texts` (no special tokens, padding excluded)."""
    tok = tokenizer or model.tokenizer
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise ValueError("no reference texts to measure the embedding std; pass non-empty texts")
    vals = []
    for b in range(0, len(texts), batch_size):
        enc = tok(list(texts[b : b + batch_size]), add_special_tokens=False, padding=True, return_tensors="pt")
        if enc["input_ids"].shape[1] == 0:
            continue
        x = model.run(enc["input_ids"], enc["attention_mask"], read=[NOISE_SITE]).cache[NOISE_SITE]
        vals.append(x[enc["attention_mask"].bool().to(x.device)].float().cpu())
    if not vals:
        raise ValueError("the reference texts encode to no tokens; pass other texts")
    return float(torch.cat(vals).std())


def noise_unit(index: int, n_samples: int, n_subject: int, d_model: int, seed: int) -> torch.Tensor:
    """Standard-normal draws (n_samples, n_subject, d_model) for fact `index`, identical for every model."""
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(index))
    return torch.randn(n_samples, n_subject, d_model, generator=g)


def _noise_full(fact: PreparedFact, n: int, d: int, sigma: float, seed: int) -> torch.Tensor:
    """(n, T, D) additive noise: zero except on the subject tokens."""
    s0, s1 = fact.subject
    out = torch.zeros(n, fact.n_tokens, d)
    out[:, s0:s1] = sigma * noise_unit(fact.index, n, s1 - s0, d, seed)
    return out


@torch.no_grad()
def clean_answer_probs(
    model: HookedModel, facts: Sequence[PreparedFact], batch_size: int = 64
) -> tuple[torch.Tensor, torch.Tensor]:
    """p(answer token) at the last position (F,) and whether the answer is the argmax (F,) bool."""
    p = torch.empty(len(facts))
    top = torch.zeros(len(facts), dtype=torch.bool)
    for idx in _groups(facts, batch_size):
        ids = torch.stack([facts[i].ids for i in idx])
        logits = model.run(ids, logits_to_keep=1).logits[:, -1].float().cpu()
        ans = torch.tensor([facts[i].answer_id for i in idx])
        p[idx] = torch.softmax(logits, -1).gather(1, ans[:, None])[:, 0]
        top[idx] = logits.argmax(-1) == ans
    return p, top


@dataclass
class ModelTrace:
    """Per-fact results of one model: maps ie[kind] (F, T_max, L) (NaN past each prompt's end)."""

    fact_index: list[int]
    p_clean: torch.Tensor
    p_corrupted: torch.Tensor
    ie: dict[str, torch.Tensor]
    n_tokens: list[int]


def _site_sets(kinds: Sequence[str], n_layers: int, window: int) -> list[tuple[str, ...]]:
    return [restoration_sites(k, l, n_layers, window) for k in kinds for l in range(n_layers)]


@torch.no_grad()
def trace_model(
    model: HookedModel,
    facts: Sequence[PreparedFact],
    sigma: float,
    n_samples: int = 10,
    kinds: Sequence[str] = ("resid", "mlp", "attn"),
    window: int = 10,
    seed: int = 0,
    kv_reuse: bool = True,
    facts_per_batch: int = 16,
    max_batch_tokens: int = 8192,
    progress: bool = True,
    desc: str = "tracing",
    skip_blocks: bool | None = None,
) -> ModelTrace:
    """Batched causal tracing of `facts` (noise std `sigma`, already scaled): every (token ≥ subject start,
    layer, kind) restoration for every noise sample, many per forward, reusing the corrupted prefix and
    (`skip_blocks`, default: where `block_skip_works`) the corrupted run's blocks below each restoration."""
    from tqdm import tqdm

    if skip_blocks is None:
        skip_blocks = block_skip_works(model)

    L, D, K, n = model.n_layers, model.d_model, len(kinds), n_samples
    t_max = max((f.n_tokens for f in facts), default=0)
    ie = torch.full((len(facts), t_max, K, L), math.nan)
    p_clean, p_corr = torch.empty(len(facts)), torch.empty(len(facts))
    sets = _site_sets(kinds, L, window)
    # identical site sets (windows clipped at both ends of a shallow model) are run once
    uniq = list(dict.fromkeys(sets))
    set_of = torch.tensor([uniq.index(s) for s in sets])
    # writes confined to the last block change nothing at the last position unless made there
    last_only = torch.tensor([all(int(site.rsplit(".", 1)[1]) == L - 1 for site in ss) for ss in uniq])
    reads = source_sites(kinds, L)
    for idx in tqdm(_groups(facts, facts_per_batch), desc=desc, disable=not progress):
        F, T = len(idx), facts[idx[0]].n_tokens
        ids = torch.stack([facts[i].ids for i in idx])  # (F, T)
        ans = torch.tensor([[facts[i].answer_id] for i in idx])  # (F, 1)
        clean = model.run(ids, read=reads, logits_to_keep=1)
        p_clean[idx] = torch.softmax(clean.logits[:, -1].float(), -1).gather(1, ans.to(clean.logits.device))[:, 0].cpu()
        noise = torch.cat([_noise_full(facts[i], n, D, sigma, seed) for i in idx])  # (F·n, T, D)
        ans_n = ans.repeat_interleave(n, 0)  # (F·n, 1)
        rec = run_receiver(model, ids.repeat_interleave(n, 0), ans_n, {NOISE_SITE: noise}, kv_reuse, skip_blocks)
        pc = rec.logprobs[:, 0].exp().view(F, n).mean(1)  # (F,)
        p_corr[idx] = pc
        parts = []
        for f, i in enumerate(idx):
            grid = torch.cartesian_prod(torch.arange(n), torch.arange(facts[i].subject[0], T), torch.arange(len(uniq)))
            grid = grid[~(last_only[grid[:, 2]] & (grid[:, 1] < T - 1))]
            parts.append(torch.cat([(f * n + grid[:, :1]), torch.full_like(grid[:, :1], f), grid[:, 1:]], 1))
        g = torch.cat(parts)  # (R, 4): item, source, position, unique site set
        rows = Restorations(g[:, 0], g[:, 1], g[:, 2], g[:, 3], uniq)
        p = restore(model, rec, clean.cache, rows, ans_n, max_batch_tokens, progress=False)[:, 0].exp()
        cell = (g[:, 1] * T + g[:, 2]) * len(uniq) + g[:, 3]
        acc = torch.zeros(F * T * len(uniq), dtype=torch.float64).index_add_(0, cell, p.double())
        done = torch.zeros(F * T * len(uniq), dtype=torch.bool)
        done[cell] = True
        # cells not run are no-ops (before the subject, last-layer writes at a non-last token): p = p_corr
        pc_cells = pc.double().repeat_interleave(T * len(uniq))
        mean_p = torch.where(done, acc / n, pc_cells).view(F, T, len(uniq))[:, :, set_of]  # (F, T, K·L)
        block = (mean_p - pc.double().view(F, 1, 1)).view(F, T, K, L)
        ie[idx, :T] = block.float()
    return ModelTrace(
        fact_index=[f.index for f in facts],
        p_clean=p_clean,
        p_corrupted=p_corr,
        ie={k: ie[:, :, j].contiguous() for j, k in enumerate(kinds)},
        n_tokens=[f.n_tokens for f in facts],
    )
