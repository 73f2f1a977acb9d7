"""One RLVR run's live state (`Session`) and how it is built: model, tokenizer, problems, prompts, optimizer.

Seeds: every random choice of the loop comes from `derived_generator(seed, purpose, ...)`, a generator
seeded by a hash of the run seed, a purpose tag and the step, never from global RNG state.
Data: `data` is a problems file or folder, "toyworld:arithmetic" (the toy world is built lazily) or
"shared:<path>" (NAME/FILE in the data cache, else the shared data folder). The held-out set is, in order
of preference, `eval_data` / `eval_split`, the file's own train/test split, or n_eval problems drawn with a
fixed seed (the same for every run seed, so runs with different seeds are scored on the same problems).
"""

from __future__ import annotations

import math
import random
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from posttrain_probe.rlvr import checkpoint as ckpt
from posttrain_probe.rlvr.config import ConfigError, RLVRConfig
from posttrain_probe.rlvr.entropy import check_head_matches_forward
from posttrain_probe.rlvr.tasks import get_task
from posttrain_probe.sources import is_toy_alias, parse_source
from posttrain_probe.utils.device import check_device, resolve_autocast, resolve_device
from posttrain_probe.utils.io import safe_join, safe_name
from posttrain_probe.utils.memory import keep_freed_memory

SEED_SAMPLE, SEED_ORDER, SEED_MINIBATCH, SEED_SELECT, SEED_EVAL, SEED_HOLDOUT = range(6)


# --------------------------------------------------------------------------------------------- seeding


def derived_seed(seed: int, *parts: int) -> int:
    """A well-mixed 63-bit seed for (seed, *parts), independent of any global RNG."""
    return int(np.random.SeedSequence([seed, *parts]).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def derived_generator(seed: int, *parts: int) -> torch.Generator:
    return torch.Generator().manual_seed(derived_seed(seed, *parts))


# ----------------------------------------------------------------------------------------------- setup


@dataclass
class Session:
    """Everything the loop needs, built by `setup_session` for a fresh or a resumed run."""

    cfg: RLVRConfig
    run_dir: Path
    model: Any
    ref_model: Any
    tokenizer: Any
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    train_problems: list
    train_prompts: list[list[int]]
    eval_problems: list
    eval_prompts: list[list[int]]
    stop_ids: list[int]
    pad_id: int
    device: torch.device
    start_step: int
    parent: str
    start_model: dict[str, Any]
    reward_fn: Callable[[str, Any], float]
    autocast: torch.dtype | None = None  # forward passes (sampling, scoring, training); the head and losses stay fp32
    prefetched: Any = None  # sample_ahead: the next step's rollout, sampled beside this step's re-scoring (trainer.py)


def _resolve_model(source: str) -> tuple[str, dict[str, Any]]:
    from posttrain_probe.pair.loading import resolve_source

    return resolve_source(source)


def _resolve_data(source: str) -> Path:
    if is_toy_alias(source):
        from posttrain_probe.toyworld import build

        try:
            parsed = parse_source(source, "data")
        except ValueError as e:
            raise ConfigError(str(e)) from None
        name = safe_name(parsed.name, "toy-world data set")  # before the (slow) build
        world = build(preset=parsed.preset)
        return safe_join(world.data_dir, f"{name}.jsonl", "data")
    if source.startswith("shared:"):
        from posttrain_probe.data.catalog import MissingDataError, data_path

        relative = source.split(":", 1)[1]
        safe_join(".", relative, "shared data path")  # refuse '..' and absolute paths before any lookup
        try:
            return data_path(relative)  # the data cache, then the shared data folder
        except MissingDataError as e:
            raise ConfigError(f"data={source!r}: {e}") from None
    return Path(source).expanduser()


def _load_problems(cfg: RLVRConfig) -> tuple[list, list]:
    """(train, eval) problems: explicit eval data/split, else train/test splits in the file, else a seeded
    hold-out of n_eval problems."""
    from posttrain_probe.data import load_problems

    path = _resolve_data(cfg.data)
    if cfg.eval_data is not None or cfg.eval_split is not None:
        train = load_problems(path, task=cfg.task, split=cfg.data_split)
        eval_path = _resolve_data(cfg.eval_data) if cfg.eval_data is not None else path
        evals = load_problems(eval_path, task=cfg.task, split=cfg.eval_split)[: cfg.n_eval]
        return train, evals
    problems = load_problems(path, task=cfg.task)
    splits = {p.split for p in problems}
    if cfg.data_split is None and "train" in splits and splits & {"test", "eval", "val"}:
        held = next(s for s in ("test", "eval", "val") if s in splits)
        return [p for p in problems if p.split == "train"], [p for p in problems if p.split == held][: cfg.n_eval]
    if cfg.data_split is not None:
        problems = [p for p in problems if p.split == cfg.data_split]
    if len(problems) <= cfg.n_eval:
        raise ConfigError(
            f"{path} has {len(problems)} problems, not more than n_eval={cfg.n_eval}; lower n_eval or pass eval_data"
        )
    order = torch.randperm(len(problems), generator=derived_generator(0, SEED_HOLDOUT)).tolist()
    evals = [problems[i] for i in order[: cfg.n_eval]]
    train = [problems[i] for i in sorted(order[cfg.n_eval :])]
    return train, evals


def _prompt_ids(problems: Sequence, tokenizer: Any, prompt_format: str) -> list[list[int]]:
    from posttrain_probe.pair.prompts import format_instruction

    fmt = prompt_format
    if fmt == "auto":
        fmt = "chat" if getattr(tokenizer, "chat_template", None) else "raw"
    out = []
    for p in problems:
        text = format_instruction(p.question, fmt, tokenizer)
        ids = tokenizer(text, add_special_tokens=(fmt == "raw"))["input_ids"]
        if not ids:
            raise ConfigError(f"problem {p.id!r} tokenizes to an empty prompt; check the data set")
        out.append(list(ids))
    return out


def _stop_ids(cfg: RLVRConfig, tokenizer: Any, model: Any) -> list[int]:
    ids = set()
    for value in (tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list | tuple):
            ids.update(int(v) for v in value)
    vocab = tokenizer.get_vocab()
    ids.update(vocab[t] for t in cfg.stop_tokens if t in vocab)
    if not ids:
        raise ConfigError("the tokenizer has no eos token and no stop_tokens are in its vocabulary; set stop_tokens")
    return sorted(ids)


def _load_causal_lm(path: str, cfg: RLVRConfig, device: torch.device) -> Any:
    from transformers import AutoModelForCausalLM

    from posttrain_probe.utils.hf import no_hf_progress_bars

    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[cfg.dtype]
    try:  # safetensors only: a checkpoint that has only pickled .bin weights is refused, never unpickled
        with no_hf_progress_bars():
            model = AutoModelForCausalLM.from_pretrained(
                path, dtype=dtype, trust_remote_code=False, use_safetensors=True
            )
    except OSError as e:
        raise ConfigError(
            f"could not load model {path}: {str(e).splitlines()[0]}; pass an HF directory with safetensors weights"
        ) from None
    return model.to(device).eval()


def _lr_lambda(cfg: RLVRConfig) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if cfg.warmup_steps and step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.lr_schedule == "cosine":
            span = max(1, cfg.steps - cfg.warmup_steps)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - cfg.warmup_steps) / span)))
        return 1.0

    return factor


def setup_session(cfg: RLVRConfig, run_dir: Path, resume_from: Path | None) -> Session:
    """Load model, tokenizer, problems and optimizer; with `resume_from`, the policy, optimizer, scheduler
    and RNG states come from that checkpoint. Sets torch's thread count when cfg.threads is given."""
    from transformers import AutoTokenizer

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.sample_ahead:  # each of the two threads runs its ops on one core: no oversubscription, 1 thread's numbers
        torch.set_num_threads(1)
    if cfg.keep_freed_memory:
        keep_freed_memory()
    check_device(cfg.device, error=ConfigError)
    device = torch.device(resolve_device(cfg.device))
    autocast = resolve_autocast(cfg.autocast, str(device)) if cfg.dtype == "float32" else None
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    random.seed(cfg.seed)
    start_path, provenance = _resolve_model(cfg.model)
    load_from = str(resume_from) if resume_from is not None else start_path
    tokenizer = AutoTokenizer.from_pretrained(load_from, trust_remote_code=False)
    model = _load_causal_lm(load_from, cfg, device)
    ref_model = None
    if cfg.loss.kl_coef > 0:
        ref_path = _resolve_model(cfg.ref_model)[0] if cfg.ref_model else start_path
        ref_model = _load_causal_lm(ref_path, cfg, device)
        ref_model.requires_grad_(False)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad_id is None:
        raise ConfigError("the tokenizer has neither a pad nor an eos token; add a pad token to the model dir")
    train_problems, eval_problems = _load_problems(cfg)
    if len(train_problems) < cfg.prompts_per_step:
        raise ConfigError(
            f"{len(train_problems)} training problems < prompts_per_step={cfg.prompts_per_step}; lower it"
        )
    train_prompts = _prompt_ids(train_problems, tokenizer, cfg.prompt_format)
    eval_prompts = _prompt_ids(eval_problems, tokenizer, cfg.prompt_format)
    probe = [t for p in train_prompts[:4] for t in p][:16]
    if len(probe) >= 2:
        check_head_matches_forward(model, torch.tensor([probe], device=device), atol=1e-3)
    # fused: one kernel per tensor for the whole AdamW update (what TRL's Trainer uses by default). The multi-tensor
    # foreach update made 5 passes over every parameter; at GPT-2-small size (124M) that took 0.76 s a step at one
    # thread against 0.10 s fused, and far longer on tiny (denormal) second moments. The last bits of the weights
    # differ from the foreach update's (tests/integration/rlvr_pinned.json was rewritten for it).
    fused = device.type in ("cpu", "cuda")
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=cfg.lr, betas=cfg.adam_betas, eps=cfg.adam_eps, weight_decay=cfg.weight_decay,
        fused=fused, foreach=None if fused else True,
    )  # fmt: skip
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg))
    start_step, parent = 0, start_path
    if resume_from is not None:
        state = ckpt.load_trainer_state(resume_from, optimizer, scheduler)
        start_step, parent = int(state["step"]), str(resume_from)
    if cfg.loss.name == "kl_cov" and cfg.minibatches == 1:
        warnings.warn(
            "loss kl_cov with minibatches=1 is inert: every update is on-policy (ρ = 1) and |log ρ| has zero "
            "gradient there, so KL-Cov equals unclipped PG; use minibatches >= 2",
            stacklevel=3,
        )
    return Session(
        cfg, run_dir, model, ref_model, tokenizer, optimizer, scheduler, train_problems, train_prompts,
        eval_problems, eval_prompts, _stop_ids(cfg, tokenizer, model), int(pad_id), device, start_step,
        parent, {"source": cfg.model, "path": start_path, **provenance}, get_task(cfg.task).reward, autocast,
    )  # fmt: skip
