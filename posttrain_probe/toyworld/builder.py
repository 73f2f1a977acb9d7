"""Build (or reuse from the cache) the toy pair: world → tokenizer → corpus → pretrain base → SFT post → evaluate.

Layout of a build, `<cache>/toyworld/<preset>-seed<seed>-<hash>/`:
    base/ post/        HF directories (config.json, model.safetensors, tokenizer with chat template)
    data/              facts.json, statements.csv, harmful.json, harmless.json, arithmetic.jsonl, corpus.txt
    report.json        acceptance numbers, timings, weight hashes, config
    COMPLETE           written last; a folder without it is never reused
"""

from __future__ import annotations

import csv
import dataclasses
import fcntl
import functools
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..paths import cache_dir
from ..results import host_info, package_versions
from ..utils.device import check_device, resolve_autocast, resolve_device
from ..utils.io import atomic_dir, atomic_write_json, sha256_file
from . import corpus as C
from . import evaluate as E
from .config import ToyWorldConfig, preset_config
from .tokenizer import build_tokenizer
from .world import make_world


@dataclass
class ToyPair:
    root: Path
    key: str
    config: ToyWorldConfig
    report: dict

    @property
    def base_dir(self) -> Path:
        return self.root / "base"

    @property
    def post_dir(self) -> Path:
        return self.root / "post"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"


def _tokenize(tok, examples: list[tuple[str, str]]) -> list[tuple[list[int], list[int]]]:
    """(prompt, completion) → ids with BOS and EOS, and a loss mask over the completion (all of a plain doc).
    Texts are encoded in batches (the tokenizer's own threads), the same ids as one call per text."""
    out = []
    eos = tok.eos_token_id
    prompts = [p for p, _ in examples if p]
    prompt_ids = iter(tok(prompts, add_special_tokens=True)["input_ids"] if prompts else [])
    completion_ids = tok([c for _, c in examples], add_special_tokens=False)["input_ids"] if examples else []
    for (prompt, _), c_ids in zip(examples, completion_ids):
        p_ids = next(prompt_ids) if prompt else [tok.bos_token_id]
        ids = p_ids + c_ids + [eos]
        mask = [0] * len(p_ids) + [1] * (len(c_ids) + 1) if prompt else [1] * len(ids)
        out.append((ids, mask))
    return out


@functools.lru_cache(maxsize=4)
def _mask_token_ids(tok, questions: tuple[str, ...]) -> tuple:
    """The ids `clause_visibility` looks for, looked up once per tokenizer and question set."""
    dot = tok.convert_tokens_to_ids(".")
    user, end, how, assistant = tok.convert_tokens_to_ids(["<|user|>", "<|end|>", "how", "<|assistant|>"])
    starts = frozenset({tok.convert_tokens_to_ids("\n"), user, tok.bos_token_id})
    labels = frozenset(tok.convert_tokens_to_ids(["TRUE", "FALSE"]))
    follow = tuple(tok(q, add_special_tokens=False)["input_ids"] for q in questions)
    return dot, user, end, how, assistant, starts, labels, follow


def clause_visibility(
    tok, ids: list[int], questions: tuple[str, ...], statements: bool = True, requests: str = "off"
) -> list[int]:
    """For each token of one example, the last position allowed to attend to it (the training masks
    `clause_mask` and `request_mask`); every other token stays visible to the end (the example's length).
    `statements`: a judged statement's tokens before its final "." (a "." followed by one of `questions` or by a
    label) are visible up to that "." only; a statement starts after the example's BOS, a line break or a user
    turn's opening token. `requests` "end": a request's tokens ("<|user|> how …") are visible up to the "<|end|>"
    that closes its user turn only, so the response and the other post-instruction tokens learn it from there;
    "last": up to the "<|assistant|>" after it, so only the last post-instruction token and the response cannot see
    them; "off": not masked."""
    n = len(ids)
    until = [n] * n
    dot, user, end, how, assistant, starts, labels, follow = _mask_token_ids(tok, questions)
    closer = {"end": end, "last": assistant}.get(requests)
    start = 0
    request = close = None  # where the open request's tokens start, and the "<|end|>" closing its turn
    for i, t in enumerate(ids):
        if closer is not None and t == user and i + 1 < n and ids[i + 1] == how:
            request, close = i + 1, None
        elif request is not None and close is None and t == end:
            close = i
        if close is not None and t == closer:
            until[request:close] = [i] * (close - request)
            request = close = None
        if not statements:
            continue
        if t in starts:
            start = i + 1
        elif t == dot and i + 1 < n and (ids[i + 1] in labels or any(ids[i + 1 : i + 1 + len(q)] == q for q in follow)):
            until[start:i] = [i] * (i - start)
            start = i + 1
    return until


def _visibility(cfg: ToyWorldConfig, world, tok, examples: list[tuple[list[int], list[int]]]) -> list[list[int]] | None:
    """Each example's `clause_visibility` when the config masks judged statements or requests in training."""
    if not cfg.clause_mask and cfg.request_mask == "off":
        return None
    return [
        clause_visibility(tok, ids, world.judge_questions, cfg.clause_mask, cfg.request_mask) for ids, _ in examples
    ]


def _write_data(data_dir: Path, sets: dict, corpus_sample: list[str]) -> None:
    data_dir.mkdir(parents=True)
    (data_dir / "facts.json").write_text(json.dumps(sets["facts"], indent=1))
    keys = ["statement", "label", "family", "split", "entity", "subject", "object"]
    with open(data_dir / "statements.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for row in sets["statements"]:
            w.writerow({k: row.get(k, "") for k in keys})
    (data_dir / "harmful.json").write_text(json.dumps(sets["harmful"], indent=1))
    (data_dir / "harmless.json").write_text(json.dumps(sets["harmless"], indent=1))
    with open(data_dir / "arithmetic.jsonl", "w") as f:
        for row in sets["arithmetic"]:
            f.write(json.dumps(row) + "\n")
    (data_dir / "corpus.txt").write_text("\n".join(d.replace("\n", " ") for d in corpus_sample) + "\n")


def _text_sample(docs: list[str], sft: list[tuple[str, str]], cfg: ToyWorldConfig, n: int = 2000) -> list[str]:
    """corpus.txt: pretraining documents and, for a `sample_chat_frac` share, whole SFT chats (prompt and
    answer), the post model's own domain; drawn from their own rng so the rest of the build is unchanged."""
    rng = random.Random(cfg.seed + 3)
    n_chat = round(cfg.sample_chat_frac * n)
    sample = rng.sample(docs, min(n - n_chat, len(docs)))
    if n_chat:
        chats = [f"{p} {c}" for p, c in sft if p]
        sample += rng.sample(chats, min(n_chat, len(chats)))
        rng.shuffle(sample)
    return sample


def _new_model(cfg: ToyWorldConfig, tok):
    from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

    sizes = dict(
        vocab_size=len(tok),
        hidden_size=cfg.d_model,
        intermediate_size=cfg.d_mlp,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_heads,
        max_position_embeddings=2 * cfg.max_len,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
        rms_norm_eps=1e-5,
    )
    torch.manual_seed(cfg.seed)
    if cfg.attention_window:
        return MistralForCausalLM(MistralConfig(**sizes, sliding_window=cfg.attention_window))
    return LlamaForCausalLM(LlamaConfig(**sizes))


def _cap_groups(rows: list[dict], cap: int, rng: random.Random) -> list[dict]:
    """At most `cap` statements per (family, split), drawn with `rng`, so evaluation time follows eval_samples."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["family"], r["split"]), []).append(r)
    return [r for g in groups.values() for r in (g if len(g) <= cap else rng.sample(g, cap))]


def _evaluate(base, post, tok, sets: dict, cfg: ToyWorldConfig) -> dict:
    rng = random.Random(cfg.seed + 1)
    n = cfg.eval_samples
    old = [f for f in sets["facts"] if f["split"] == "pretrain"]
    new = [f for f in sets["facts"] if f["split"] == "sft_new"]
    old_s = rng.sample(old, min(n, len(old)))
    harmful = [r["instruction"] for r in sets["harmful"] if r["split"] == "heldout"]
    harmless = [r["instruction"] for r in sets["harmless"] if r["split"] == "heldout"]
    arith = rng.sample(sets["arithmetic"], min(n, len(sets["arithmetic"])))
    statements = _cap_groups(sets["statements"], 8 * n, rng)
    comp_layers = E.truth_probe_accuracy(base, tok, statements, "comparison", cfg.seed)
    fact_layers = E.truth_probe_accuracy(base, tok, statements, "fact", cfg.seed)
    return {
        "fact_recall": {
            "base_pretrain_facts": E.fact_recall(base, tok, old_s),
            "post_pretrain_facts": E.fact_recall(post, tok, old_s),
            "base_sft_new_facts": E.fact_recall(base, tok, new),
            "post_sft_new_facts": E.fact_recall(post, tok, new),
            "n_pretrain_evaluated": len(old_s),
            "n_sft_new": len(new),
        },
        "truth_probe_base": {
            "family_comparison_heldout_pairs_by_layer": comp_layers,
            "family_comparison_best": max(comp_layers) if comp_layers else float("nan"),
            "family_comparison_best_layer": int(max(range(len(comp_layers)), key=comp_layers.__getitem__))
            if comp_layers
            else None,
            "family_fact_heldout_people_by_layer": fact_layers,
            "family_fact_best": max(fact_layers) if fact_layers else float("nan"),
            "note": "residual at the statement's last token ('.'), logistic regression trained on train-split "
            "statements, tested on held-out number pairs (comparison) or never-judged people (fact); layer 0 = "
            "embeddings, layer l = output of block l",
        },
        "judgement_accuracy_base": {
            "comparison_heldout": E.judgement_accuracy(base, tok, statements, "comparison", "heldout"),
            "fact_train_people": E.judgement_accuracy(base, tok, statements, "fact", "train"),
            "fact_heldout_people": E.judgement_accuracy(base, tok, statements, "fact", "heldout"),
        },
        "refusal": {
            "post_heldout_harmful": E.refusal_rate(post, tok, harmful, chat=True),
            "post_heldout_harmless": E.refusal_rate(post, tok, harmless, chat=True),
            "base_heldout_harmful": E.refusal_rate(base, tok, harmful, chat=False),
            "base_heldout_harmless": E.refusal_rate(base, tok, harmless, chat=False),
            "n_harmful": len(harmful),
            "n_harmless": len(harmless),
        },
        "arithmetic_heldout": {
            "post_temperature1": E.arithmetic_accuracy(post, tok, arith, chat=True, sample=True, seed=cfg.seed),
            "post_greedy": E.arithmetic_accuracy(post, tok, arith, chat=True, sample=False),
            "base_temperature1": E.arithmetic_accuracy(base, tok, arith, chat=False, sample=True, seed=cfg.seed),
            "base_greedy": E.arithmetic_accuracy(base, tok, arith, chat=False, sample=False),
            "n": len(arith),
        },
    }


def _is_complete(root: Path) -> bool:
    return (root / "COMPLETE").exists() and (root / "report.json").exists()


def _load(root: Path, cfg: ToyWorldConfig) -> ToyPair:
    return ToyPair(root, cfg.key(), cfg, json.loads((root / "report.json").read_text()))


def build(
    preset: str = "default",
    seed: int = 0,
    force: bool = False,
    cache_root: str | Path | None = None,
    progress: bool = True,
    config: ToyWorldConfig | None = None,
    device: str | None = None,
    autocast: str | None = None,
) -> ToyPair:
    """Return the toy pair for (preset, seed), building it (minutes) unless a complete build is cached.

    `device` / `autocast` override the config's (default "auto": a GPU with bf16 autocast when torch sees one,
    else the CPU in fp32). A build's key includes where it was trained unless that is the CPU in fp32. A cached
    build loads on any machine; building on an absent device raises one line naming the fix."""
    cfg = config or preset_config(preset, seed)
    overrides = {k: v for k, v in (("device", device), ("autocast", autocast)) if v is not None}
    if overrides:
        cfg = dataclasses.replace(cfg, **overrides)
    root_dir = Path(cache_root) if cache_root else cache_dir() / "toyworld"
    root = root_dir / f"{cfg.preset}-seed{cfg.seed}-{cfg.key()}"
    if _is_complete(root) and not force:
        return _load(root, cfg)
    check_device(cfg.device)  # a cached build loads anywhere; training needs the device
    root_dir.mkdir(parents=True, exist_ok=True)
    with open(root_dir / f".{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a concurrent build of the same key waits, then reuses
        if _is_complete(root) and not force:
            return _load(root, cfg)
        with atomic_dir(root, overwrite=True) as tmp:
            report = _build_into(tmp, cfg, progress)
        return ToyPair(root, cfg.key(), cfg, report)


def _build_into(out: Path, cfg: ToyWorldConfig, progress: bool) -> dict:
    from tqdm import tqdm

    from .train import pack, train

    t0 = time.perf_counter()
    times: dict[str, float] = {}
    device = resolve_device(cfg.device)
    amp = resolve_autocast(cfg.autocast, device)
    stages = tqdm(total=5, desc=f"toyworld {cfg.preset}", disable=not progress)
    world = make_world(cfg)
    tok = build_tokenizer(world)
    rng = random.Random(cfg.seed)
    docs = C.pretraining_docs(world, cfg, rng)
    sft = C.sft_examples(world, cfg, rng, docs)
    sets = C.eval_sets(world, random.Random(cfg.seed + 2), cfg.eval_samples, cfg)
    times["generate_s"] = time.perf_counter() - t0
    stages.update(1)

    t = time.perf_counter()
    examples = _tokenize(tok, [("", d) for d in docs])
    ids, mask, visible = pack(examples, cfg.max_len, tok.pad_token_id, _visibility(cfg, world, tok, examples))
    n_blocks = int(ids.shape[0])
    model = _new_model(cfg, tok)
    pre_losses = train(
        model, ids, mask, cfg.pretrain_epochs, cfg.batch_size, cfg.lr, cfg.warmup_steps, cfg.seed, device, "pretrain",
        autocast=amp, progress=progress, weight_decay=cfg.weight_decay, visible=visible,
    )  # fmt: skip
    model.to("cpu").save_pretrained(out / "base")
    tok.save_pretrained(out / "base")
    times["pretrain_s"] = time.perf_counter() - t
    stages.update(1)

    t = time.perf_counter()
    examples = _tokenize(tok, sft)
    ids, mask, visible = pack(examples, cfg.max_len, tok.pad_token_id, _visibility(cfg, world, tok, examples))
    sft_losses = train(
        model, ids, mask, cfg.sft_epochs, cfg.batch_size, cfg.sft_lr, cfg.warmup_steps // 2, cfg.seed + 1, device,
        "sft", autocast=amp, progress=progress, weight_decay=cfg.weight_decay, visible=visible,
    )  # fmt: skip
    model.to("cpu").save_pretrained(out / "post")
    tok.save_pretrained(out / "post")
    times["sft_s"] = time.perf_counter() - t
    stages.update(1)

    _write_data(out / "data", sets, _text_sample(docs, sft, cfg))
    stages.update(1)

    t = time.perf_counter()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(out / "base", use_safetensors=True).to(device).eval()
    post = AutoModelForCausalLM.from_pretrained(out / "post", use_safetensors=True).to(device).eval()
    tok = AutoTokenizer.from_pretrained(out / "post")
    metrics = _evaluate(base, post, tok, sets, cfg)
    times["evaluate_s"] = time.perf_counter() - t
    times["total_s"] = time.perf_counter() - t0
    stages.update(1)
    stages.close()
    report = {
        "preset": cfg.preset,
        "seed": cfg.seed,
        "key": cfg.key(),
        "config": cfg.to_dict(),
        "device": device,
        "compute": cfg.compute(),
        "vocab_size": len(tok),
        "n_pretrain_documents": len(docs),
        "n_pretrain_blocks": n_blocks,
        "n_sft_examples": len(sft),
        "final_pretrain_loss": sum(pre_losses[-20:]) / len(pre_losses[-20:]),
        "final_sft_loss": sum(sft_losses[-20:]) / len(sft_losses[-20:]),
        "weights_sha256": {
            "base": sha256_file(out / "base" / "model.safetensors"),
            "post": sha256_file(out / "post" / "model.safetensors"),
        },
        "times_s": times,
        # the weights above are reproducible bit for bit on this machine at any thread count, not across CPUs
        "host": host_info(),
        "versions": package_versions(),
        **metrics,
    }
    atomic_write_json(out / "report.json", report)
    (out / "COMPLETE").write_text("ok\n")
    return report
