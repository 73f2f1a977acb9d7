"""Benchmark: batched causal tracing vs (a) a loop over TransformerLens's patching helper and (b) a naive
one-forward-per-patch loop on the plain HF model, on the same model, facts, noise and cells.

(a) TransformerLens 4.x has no ROME helper; `transformer_lens.patching.generic_activation_patch` (what
`get_act_patch_resid_pre` / `get_act_patch_mlp_out` / `get_act_patch_attn_out` wrap) accepts the bridge.
We call it once per fact and kind with an `index_df` of the same (layer, position ≥ subject start) cells, the
corrupted run made by a noise hook at `blocks.0.hook_resid_pre` held by `bridge.hooks(...)`, and the mean
answer probability over the noise samples as metric: one forward per (layer, position), ROME's own loop.
TL patches one layer per forward, so its mlp/attn numbers are single-layer restorations, not ROME's windows
(same number of forwards; only the resid maps are compared numerically).
(b) `tests/reference/naive_tracing.trace_fact`, the test suite's oracle (plain HF forward hooks, its own noise
draws): one full forward (batch = noise samples) per (token, layer, kind).
(c) The floor: raw HF forwards (no hooks) of exactly the batches our engine runs, and the share of their
token × layer work that any method must do (blocks above the lowest restored layer, positions ≥ t).

Real shapes: `--shape gpt2-small` (d 768, 12 layers, vocabulary 50,257) or `--shape large-vocab` (Qwen2-0.5B's
shape: d 896, 24 layers, vocabulary 151,936) traces random-init checkpoints of those shapes
(`posttrain_probe.testing.make_shaped_checkpoint`, `--layers` overrides the depth) on 8 short facts made of the
tokenizer's words, with fewer facts and noise samples by default so that a run stays within minutes.
`--tl-facts N` / `--naive-facts N` run (a) / (b) on the N facts with the fewest restored cells only, and
`--loop-kinds` on those kinds only; their time for all facts and kinds is then extrapolated per restored cell
(printed as such, with the measured seconds: one forward per cell, and a shorter prompt's forward is no
dearer), and the numerical comparisons cover what they ran. The large-vocabulary shape runs both loops on
the resid kind only (each kind costs them the same number of forwards), so that its full 24 layers finish in
minutes.

Run: `python benchmarks/bench_tracing.py [--model DIR|toyworld:base] [--facts facts.json] [--n-facts 16]
[--backend nnsight] [--shape gpt2-small] [--tl-facts 1]`. Default model: the cached default toy pair if present,
else a tiny random Llama. Timings of ours and the floor are medians over --repeats runs; (a) and (b) run once.
Prints one JSON object, then one summary line: ours, the floor, TL and the ratios; "TL … x the floor" is the
largest speedup over that loop that any method doing the floor's work could show.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch


def _toy_paths() -> tuple[str, str] | None:
    from posttrain_probe.paths import cache_dir

    for d in sorted((cache_dir() / "toyworld").glob("default-seed0-*")):
        if (d / "COMPLETE").exists():
            return str(d / "base"), str(d / "data" / "facts.json")
    return None


SHAPE_DEFAULTS = {  # facts, noise samples, facts and kinds of the TL and naive loops (extrapolated per cell), repeats
    "gpt2-small": {"n_facts": 4, "n_samples": 5, "tl_facts": 1, "naive_facts": 1, "loop_kinds": None, "repeats": 1},
    "large-vocab": {
        "n_facts": 2, "n_samples": 5, "tl_facts": 1, "naive_facts": 1, "loop_kinds": ["resid"], "repeats": 1,
    },
}  # fmt: skip


def _tiny(tmp: str, shape: str | None = None, layers: int | None = None) -> tuple[str, list]:
    from posttrain_probe.data import Fact
    from posttrain_probe.testing import make_shaped_checkpoint, make_tiny_checkpoint

    if shape is None:
        path = make_tiny_checkpoint("llama", Path(tmp) / "m", d_model=128, n_layers=layers or 4, d_mlp=512)
    else:
        path = make_shaped_checkpoint(shape, Path(tmp) / "m", n_layers=layers)
    subjects = [
        "city of river",
        "bread",
        "river",
        "make bread",
        "year of zero",
        "two three",
        "poison",
        "country",
    ]
    facts = [Fact(prompt=f"the {s} is in", subject=s, answer=" the") for s in subjects]
    return str(path), facts


def _tl_loop(bridge, facts, sigma, n, seed, kinds):
    """ROME's loop through TL's generic_activation_patch; returns (seconds, resid IE maps)."""
    from transformer_lens.patching import generic_activation_patch, layer_pos_patch_setter

    from posttrain_probe.probes.tracing.core import _noise_full

    L = bridge.cfg.n_layers
    names = {"resid": "resid_post", "mlp": "mlp_out", "attn": "attn_out"}
    maps = []
    t0 = time.perf_counter()
    for f in facts:
        ids = f.ids[None].repeat(n, 1)
        noise = _noise_full(f, n, bridge.cfg.d_model, sigma, seed)
        _, clean_cache = bridge.run_with_cache(ids)
        ans = f.answer_id

        def metric(logits, ans=ans):
            return torch.softmax(logits[:, -1].float(), -1)[:, ans].mean()

        def add_noise(x, hook, noise=noise):
            return x + noise.to(x)

        cells = pd.DataFrame(
            [(l, t) for l in range(L) for t in range(f.subject[0], f.n_tokens)], columns=["layer", "pos"]
        )
        with torch.no_grad(), bridge.hooks(fwd_hooks=[("blocks.0.hook_resid_pre", add_noise)]):
            p_corr = metric(bridge(ids))
            for k in kinds:
                vals = generic_activation_patch(
                    bridge, ids, clean_cache, metric, layer_pos_patch_setter, names[k], index_df=cells
                )
                if k == "resid":
                    m = torch.zeros(f.n_tokens, L)
                    m[cells["pos"].to_numpy(), cells["layer"].to_numpy()] = vals.cpu() - p_corr.cpu()
                    maps.append(m)
    return time.perf_counter() - t0, maps


def _raw_floor(path, facts, n, kinds, window, per_batch, max_tokens):
    """Seconds of raw HF forwards with our engine's batch shapes, and (our, minimal) token × layer work."""
    from transformers import AutoModelForCausalLM

    from posttrain_probe.pair.restore import _cut_cache, window_layers
    from posttrain_probe.probes.tracing.core import _groups

    hf = AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager").eval()
    L = hf.config.num_hidden_layers
    sets = [(k, tuple([l]) if k == "resid" else tuple(window_layers(l, L, window))) for k in kinds for l in range(L)]
    uniq = list(dict.fromkeys(sets))  # the distinct restorations our engine runs (same dedupe, same skips)
    ours = minimal = 0
    t0 = time.perf_counter()
    with torch.no_grad():
        for idx in _groups(facts, per_batch):
            T = facts[idx[0]].n_tokens
            ids = torch.stack([facts[i].ids for i in idx])
            hf(ids, logits_to_keep=1, output_hidden_states=True)
            cache = hf(ids.repeat_interleave(n, 0), use_cache=True, logits_to_keep=1).past_key_values
            for t in range(min(facts[i].subject[0] for i in idx), T):
                items = torch.tensor(
                    [j * n + s for j, i in enumerate(idx) if facts[i].subject[0] <= t for s in range(n)]
                )
                lows = [min(ls) for _, ls in uniq if t == T - 1 or min(ls) < L - 1]
                rows = items.repeat_interleave(len(lows))
                ours += len(rows) * (T - t) * L
                # any method: blocks above the lowest restored one at positions ≥ t, plus the head at the end
                minimal += len(items) * (T - t) * sum(L - 1 - lo for lo in lows) + len(rows)
                per = max(1, max_tokens // (T - t))
                for c in range(0, len(rows), per):
                    r = rows[c : c + per]
                    kw = {"past_key_values": _cut_cache(cache, r, t, hf.config)} if t > 0 else {}
                    hf(ids.repeat_interleave(n, 0)[r, t:], logits_to_keep=1, **kw)
    return time.perf_counter() - t0, ours, minimal


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--facts", default=None)
    ap.add_argument("--shape", default=None, choices=list(SHAPE_DEFAULTS), help="a random-init real-shape model")
    ap.add_argument("--layers", type=int, default=None, help="override the random-init model's depth")
    ap.add_argument("--n-facts", type=int, default=None, help="default 16 (a real shape: see SHAPE_DEFAULTS)")
    ap.add_argument("--n-samples", type=int, default=None, help="default 10 (a real shape: see SHAPE_DEFAULTS)")
    ap.add_argument("--tl-facts", type=int, default=None, help="run the TL loop on this many facts, extrapolate")
    ap.add_argument("--naive-facts", type=int, default=None, help="run the naive loop on this many facts, extrapolate")
    ap.add_argument("--loop-kinds", nargs="+", default=None, help="run the TL and naive loops on these kinds only")
    ap.add_argument("--window", type=int, default=10)
    ap.add_argument("--backend", default="nnsight", choices=["bridge", "nnsight"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=None, help="median over this many runs of ours and the floor (3)")
    ap.add_argument("--skip-tl", action="store_true")
    args = ap.parse_args()
    plain = {"n_facts": 16, "n_samples": 10, "tl_facts": None, "naive_facts": None, "loop_kinds": None, "repeats": 3}
    defaults = SHAPE_DEFAULTS.get(args.shape, plain)
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    torch.set_num_threads(args.threads)
    from posttrain_probe.data import load_facts
    from posttrain_probe.pair import load_model
    from posttrain_probe.pair.restore import KINDS, kv_cache_reuse_works
    from posttrain_probe.probes.tracing.core import (
        embedding_std,
        prepare_facts,
        trace_model,
    )

    tmp = tempfile.TemporaryDirectory()
    toy = _toy_paths()
    if args.shape:
        path, facts = _tiny(tmp.name, args.shape, args.layers)
    elif args.model:
        path, facts = args.model, load_facts(args.facts) if args.facts else None
    elif toy:
        path, facts = toy[0], load_facts(toy[1])
    else:
        path, facts = _tiny(tmp.name)
    if args.model and args.model.startswith("toyworld:"):
        from posttrain_probe.pair import resolve_source

        path = resolve_source(args.model)[0]
    if facts is None:
        raise SystemExit("pass --facts with --model")
    m = load_model(path, backend=args.backend)
    prepared, _ = prepare_facts(m.tokenizer, facts)
    prepared = prepared[: args.n_facts]
    n, kinds, seed = args.n_samples, KINDS, 0
    sigma = 3 * embedding_std(m, [f.fact.subject for f in prepared])
    reuse = kv_cache_reuse_works(m)
    out = {
        "model": args.shape or path,
        "backend": args.backend,
        "kv_reuse": reuse,
        "n_facts": len(prepared),
        "n_samples": n,
    }
    out["n_layers"], out["window"], out["threads"] = m.n_layers, args.window, args.threads

    def n_cells(f, ks=kinds) -> int:
        return (f.n_tokens - f.subject[0]) * m.n_layers * len(ks)

    all_cells = sum(n_cells(f) for f in prepared)
    out["restorations"] = all_cells * n
    loop_kinds = tuple(args.loop_kinds or kinds)
    by_cells = sorted(range(len(prepared)), key=lambda j: n_cells(prepared[j]))  # loops: the cheapest facts first
    out["loop_kinds"] = list(loop_kinds)

    trace_model(m, prepared[:2], sigma, n, kinds, args.window, seed, reuse, progress=False)  # warm-up
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        tr = trace_model(m, prepared, sigma, n, kinds, args.window, seed, reuse, progress=False)
        times.append(time.perf_counter() - t0)
    out["ours_s"] = statistics.median(times)

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for tests.reference
    from transformers import AutoModelForCausalLM

    from tests.reference.naive_tracing import trace_fact

    hf = AutoModelForCausalLM.from_pretrained(path).eval()

    def cells(f):
        return range(f.subject[0], f.n_tokens)

    naive_idx = by_cells[: args.naive_facts]
    t0 = time.perf_counter()
    naive = {
        j: trace_fact(hf, f.ids, f.subject, f.answer_id, f.index, sigma, n, loop_kinds, args.window, seed, cells(f))[0]
        for j, f in ((j, prepared[j]) for j in naive_idx)
    }
    out["naive_facts_run"] = len(naive_idx)
    out["naive_measured_s"] = time.perf_counter() - t0
    run_cells = sum(n_cells(prepared[j], loop_kinds) for j in naive_idx)
    out["naive_s"] = out["naive_measured_s"] * all_cells / run_cells  # extrapolated per restored cell
    out["naive_max_abs_diff"] = max(
        float((tr.ie[k][j, : prepared[j].n_tokens] - naive[j][k]).abs().max()) for j in naive_idx for k in loop_kinds
    )
    if not args.skip_tl:
        tl_idx = by_cells[: args.tl_facts]
        bridge = load_model(path, backend="bridge").bridge
        out["tl_measured_s"], tl_maps = _tl_loop(bridge, [prepared[j] for j in tl_idx], sigma, n, seed, loop_kinds)
        out["tl_facts_run"] = len(tl_idx)
        run_cells = sum(n_cells(prepared[j], loop_kinds) for j in tl_idx)
        out["tl_s"] = out["tl_measured_s"] * all_cells / run_cells  # extrapolated per restored cell
        if "resid" in loop_kinds:
            out["tl_resid_max_abs_diff"] = max(
                float((tr.ie["resid"][j, : prepared[j].n_tokens] - m_).abs().max()) for j, m_ in zip(tl_idx, tl_maps)
            )
        out["speedup_vs_tl"] = out["tl_s"] / out["ours_s"]
    out["speedup_vs_naive"] = out["naive_s"] / out["ours_s"]
    floors = [_raw_floor(path, prepared, n, kinds, args.window, 16, 8192) for _ in range(args.repeats)]
    raw_s, work, minimal = statistics.median(f[0] for f in floors), floors[0][1], floors[0][2]
    out["raw_same_batches_s"] = raw_s
    out["ours_over_raw_same_batches"] = out["ours_s"] / raw_s
    out["minimal_work_fraction"] = minimal / work
    out["ours_over_floor_estimate"] = out["ours_s"] / (raw_s * minimal / work)
    for key in ("tl", "naive"):  # the most any method could gain on that loop while doing the floor's work
        if f"{key}_s" in out:
            out[f"{key}_over_floor"] = out[f"{key}_s"] / (raw_s * minimal / work)
    print(json.dumps({k: v if "diff" in k or not isinstance(v, float) else round(v, 4) for k, v in out.items()}))
    print(summary(out))
    tmp.cleanup()


def summary(out: dict) -> str:
    """One line: ours, the floor, TransformerLens and the naive loop (extrapolated when run on fewer facts)."""
    ratio = out["ours_over_floor_estimate"]
    line = f"{out['model']}: ours {out['ours_s']:.2f} s, floor {out['ours_s'] / ratio:.2f} s (ours/floor {ratio:.2f})"
    for name, key in (("TransformerLens loop", "tl"), ("naive loop", "naive")):
        if f"{key}_s" not in out:
            continue
        run, ks = out[f"{key}_facts_run"], out["loop_kinds"]
        how = (
            ""
            if run == out["n_facts"] and len(ks) == 3
            else f" (extrapolated per cell from {run} of {out['n_facts']} facts, kinds {'/'.join(ks)}: "
            f"{out[f'{key}_measured_s']:.2f} s)"
        )
        line += (
            f"; {name} {out[f'{key}_s']:.2f} s{how}, {out[f'speedup_vs_{key}']:.1f}x ours, "
            f"{out[f'{key}_over_floor']:.1f}x the floor"
        )
    return line


if __name__ == "__main__":
    main()
