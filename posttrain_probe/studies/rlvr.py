"""Study: why does policy entropy collapse during RLVR, and what do the covariance-based interventions change?
Train every loss of the GRPO family from the post-trained model with the configs in experiments/configs (the
toy world's arithmetic for the toy pair; GSM8K, MATH-500 or Countdown for real pairs), then analyse their
entropy dynamics together."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

from .common import Study

LOSSES = ("grpo", "clip_higher", "entropy_bonus", "clip_cov", "kl_cov", "steer")
# smoke / quick sizes of the trainer (toy and real sizes are the YAML files')
SHRINK: dict[str, dict[str, int]] = {
    "smoke": {"n_eval": 4, "eval_samples": 1, "prompts_per_step": 2, "group_size": 4, "minibatches": 2},
    "quick": {"n_eval": 32, "prompts_per_step": 8, "group_size": 8, "minibatches": 4},
}
# The toy world's RLVR settings (experiments/configs/rlvr_toy_grpo.yaml is this dict; a test keeps them equal): the
# demo trains every loss from them, so the package needs no file outside it.
TOY_RLVR: dict[str, Any] = {
    "model": "toyworld:post",
    "task": "arithmetic",
    "data": "toyworld:arithmetic",
    "n_eval": 128,
    "eval_every": 50,
    "eval_samples": 4,
    "prompts_per_step": 16,
    "group_size": 8,
    "max_new_tokens": 16,
    "steps": 300,
    "lr": 1.0e-4,
    "minibatches": 4,
    "max_grad_norm": 1.0,
    "adv_scale": "std",
    "checkpoint_every": 100,
    "token_dump_every": 50,
    "seed": 0,
    "threads": 2,
    "loss": {"name": "grpo"},
}
REAL_TASK_DATA = {
    "gsm8k": ("shared:gsm8k/train.jsonl", "shared:gsm8k/test.jsonl"),
    "math500": ("shared:math500/test.jsonl", None),
    "countdown": ("shared:countdown/countdown_cd3_test.jsonl", None),
}


def config_file(configs: Path, toy: bool, loss: str) -> Path:
    """experiments/configs/rlvr_toy_<loss>.yaml, or the GSM8K file of `loss` for real pairs."""
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; choose from {', '.join(LOSSES)}")
    if toy:
        name = f"rlvr_toy_{loss}.yaml"
    else:
        name = "rlvr_gsm8k_paper_clip_cov.yaml" if loss == "clip_cov" else f"rlvr_gsm8k_{loss}.yaml"
    path = Path(configs) / name
    if not path.is_file():
        raise FileNotFoundError(f"RLVR config {path} not found; pass the experiments/configs folder")
    return path


def rlvr_config(study: Study, loss: str, steps: int | None = None, task: str | None = None):
    """The `RLVRConfig` of `loss` for this study: the YAML file with the study's post model, data, device,
    dtype and seed, and sizes shrunk for the smoke and quick presets (real and default-toy sizes are the file's)."""
    import yaml

    from posttrain_probe.rlvr import RLVRConfig

    if study.configs is None and not (study.is_toy and loss == "grpo"):
        raise ValueError("no configs folder; pass the experiments/configs folder (the study scripts do)")
    if study.configs is None:  # the toy GRPO config is TOY_RLVR (a test keeps the YAML file equal to it)
        data: dict[str, Any] = json.loads(json.dumps(TOY_RLVR))
    else:
        data = yaml.safe_load(config_file(study.configs, study.is_toy, loss).read_text()) or {}
    data.update(model=str(study.post), seed=study.seed, progress=study.progress)
    if study.is_toy:
        data["data"] = f"toyworld:{study.toy_preset}:arithmetic"
    else:
        task = task or (study.spec.rlvr_task if study.spec else "gsm8k")
        if task not in REAL_TASK_DATA:
            raise ValueError(f"unknown task {task!r} for a real pair; choose {', '.join(REAL_TASK_DATA)}")
        train, held_out = REAL_TASK_DATA[task]
        data.update(task=task, data=train, eval_data=held_out)
        if study.spec:
            data["stop_tokens"] = list(study.spec.stop_tokens)
        else:  # an unregistered model: its chat template when it has one, its eos token as the stop
            data.update(prompt_format="auto", stop_tokens=[])
    if study.device:
        data["device"] = study.device
    if study.dtype:
        data["dtype"] = study.dtype
    n = steps or study.pick(3, 12, data.get("steps", 300), data.get("steps", 300))
    data["steps"] = n
    data.update(SHRINK.get(study.size, {}))
    every, shrink = max(1, n // 4), study.size in SHRINK
    for key in ("checkpoint_every", "token_dump_every"):  # checkpoints and dumps land inside a shortened run
        if shrink or int(data.get(key, 0)) > n:
            data[key] = every
    if shrink or int(data.get("eval_every", 0)) > n:
        data["eval_every"] = n
    if study.smoke:  # threads: None leaves the process's torch threads as they are (tests run many studies)
        data.update(max_new_tokens=min(int(data.get("max_new_tokens", 16)), 8), micro_batch_size=None, threads=None)
    return RLVRConfig.from_dict(data)


def train_runs(study: Study, losses: tuple[str, ...], steps: int | None = None, task: str | None = None) -> list[Path]:
    """OUT/rlvr/<loss> trainer run directories. A run of the same config is reused when finished and resumed
    (exactly) when interrupted; one of another config is refused unless --force, which retrains it."""
    from posttrain_probe.rlvr import resume, train
    from posttrain_probe.rlvr.run import RLVRRun

    configs = {loss: rlvr_config(study, loss, steps, task) for loss in losses}  # every config checked first
    runs = []
    for loss, cfg in configs.items():
        rd = study.out / "rlvr" / loss
        if rd.exists() and (study.force or not (rd / "config.json").is_file()):
            shutil.rmtree(rd)
        if not rd.exists():
            train(cfg, rd)
        elif RLVRRun(rd).config != json.loads(json.dumps(cfg.to_dict())):
            raise FileExistsError(f"{rd} holds a run of another config; pass --force or another --out")
        elif not RLVRRun(rd).is_finished:
            resume(rd)
        runs.append(rd)
    return runs


def run_rlvr_dynamics(study: Study) -> list[Path]:
    """OUT/rlvr/<loss> for every loss, then OUT/dynamics (with figures) over all of them."""
    from posttrain_probe.analysis.dynamics import analyze_runs

    losses = tuple(study.extra.get("losses") or LOSSES)
    study.check_out(["dynamics"])
    runs = train_runs(study, losses, study.extra.get("steps"), study.extra.get("task"))
    return runs + [study.save("dynamics", analyze_runs(runs), "posttrain_probe.plots.dynamics")]


# ------------------------------------------------------------------------------------- paired multi-seed study

# The full study's arms: the null arm, the interventions the papers' claims name, clip-higher, and the official STEER
# recipe with its matched baseline (rlvr.paired.ARMS says what each is; entropy_bonus, steer_linear_paper and the
# paper-ratio Cov presets are available through --arms).
STUDY_ARMS = (
    "grpo", "null", "clip_higher", "clip_cov", "kl_cov", "steer", "steer_baseline_paper", "steer_paper",
)  # fmt: skip
STUDY_SEEDS = {"smoke": 2, "quick": 2, "toy": 5, "real": 3}
# The toy study's sizes (on top of TOY_RLVR): measured on the default toy pair (build 8b06ad8bc838, 2 cores,
# one thread per run): with 16 prompts × 8 at lr 2e-4 GRPO's held-out eval entropy fell 0.716 → 0.278 (−61%) in
# 150 steps while sampled accuracy rose 0.125 → 0.57; at lr 1e-4 it fell only 39% (8 prompts), and 8 prompts at
# 2e-4 or 3e-4 collapsed accuracy instead. ~0.6 s per step per core.
TOY_STUDY: dict[str, Any] = {
    "steps": 150,
    "lr": 2.0e-4,
    "prompts_per_step": 16,
    "n_eval": 64,
    "eval_samples": 2,
    "eval_every": 25,
    "checkpoint_every": 150,
    "token_dump_every": 50,
    "probe_first_minibatch": True,  # single-step ΔH and its exact first-order term: Ω vs Cov judged like with like
}


def study_base_config(study: Study, steps: int | None = None, task: str | None = None):
    """The GRPO config every arm of the paired study starts from: `rlvr_config(study, "grpo")` with the toy study's
    sizes (`TOY_STUDY`) on a toy pair; evaluations every steps/6, one final checkpoint, token dumps 3 times."""
    import dataclasses

    cfg = rlvr_config(study, "grpo", steps, task)
    if study.is_toy and study.size == "toy":
        sizes = dict(TOY_STUDY)
        if steps:
            sizes["steps"] = steps
        cfg = dataclasses.replace(cfg, **sizes)
    n = cfg.steps
    return dataclasses.replace(
        cfg,
        eval_every=max(1, n // 6),
        checkpoint_every=n,
        token_dump_every=max(1, n // 3),
        keep_last_checkpoints=1,
        progress=False,
    )


def run_rlvr_study(study: Study) -> list[Path]:
    """The paired multi-seed RLVR study: every arm (`--arms`, default `STUDY_ARMS`; baselines added) and, with
    `--dose`, the dose–response arms, on `--seeds` paired seeds, trained in parallel single-threaded workers into
    OUT/rlvr/<arm>_seed<k> (finished runs reused, interrupted ones resumed exactly); then OUT/dynamics with the
    paired effects, dose–response table, verdicts and figures, OUT/verdicts.json (printed as a table; smoke and
    quick sizes list the claims without judging them) and OUT/timings.txt with every run's seconds."""
    import time

    from posttrain_probe.analysis.dynamics import analyze_runs
    from posttrain_probe.report import verdict_table_text
    from posttrain_probe.results import read_run
    from posttrain_probe.rlvr.paired import dose_arms, paired_configs, resolve_arms
    from posttrain_probe.rlvr.pool import default_workers, train_many
    from posttrain_probe.rlvr.run import RLVRRun, same_config
    from posttrain_probe.verdicts import collect_verdicts, write_verdicts

    x = study.extra
    for key in ("seeds", "dose_seeds", "steps", "workers"):
        if x.get(key) is not None and x[key] < 1:
            raise ValueError(f"--{key.replace('_', '-')} {x[key]} must be >= 1")
    arms = resolve_arms(x.get("arms") or STUDY_ARMS)
    n_seeds = x.get("seeds") or STUDY_SEEDS[study.size]
    base = study_base_config(study, x.get("steps"), x.get("task"))
    configs = paired_configs(base, arms, range(study.seed, study.seed + n_seeds))
    if x.get("dose") is not None:  # dose arms on their own (fewer) seeds, paired with the baselines' first seeds
        doses = [a for a in dose_arms(x["dose"] or None) if a.name not in {b.name for b in arms}]
        n_dose = min(x.get("dose_seeds") or n_seeds, n_seeds)
        for name, cfg in paired_configs(base, doses, range(study.seed, study.seed + n_dose)).items():
            configs.setdefault(name, cfg)
    study.check_out(["dynamics"])
    t0 = time.perf_counter()
    jobs, runs = [], []
    for name, cfg in configs.items():
        rd = study.out / "rlvr" / name
        if rd.exists() and (study.force or not (rd / "config.json").is_file()):
            shutil.rmtree(rd)
        if rd.exists() and not same_config(RLVRRun(rd).config, cfg):
            raise FileExistsError(f"{rd} holds a run of another config; pass --force or another --out")
        if not (rd.exists() and RLVRRun(rd).is_finished):
            jobs.append((cfg, rd))
        runs.append(rd)
    timings: dict[str, float] = {}

    def done(rd: Path, seconds: float) -> None:
        timings[rd.name] = seconds
        print(f"rlvr study: {rd.name} done in {seconds:.0f} s ({len(timings)}/{len(jobs)})", file=sys.stderr)

    workers = x.get("workers") or default_workers(base.device, len(jobs))
    train_many(jobs, workers, study.out / "rlvr", on_done=done, keep_unfinished=True)
    timings["train_total"] = time.perf_counter() - t0
    out = study.save("dynamics", analyze_runs(runs), "posttrain_probe.plots.dynamics")
    verdicts = collect_verdicts([read_run(out)])
    write_verdicts(study.out / "verdicts.json", verdicts)
    timings["total"] = time.perf_counter() - t0
    (study.out / "timings.txt").write_text("".join(f"{k}\t{v:.1f}\n" for k, v in timings.items()))
    judged = study.size in ("toy", "real")
    print(verdict_table_text([v.as_dict() for v in verdicts], judged=judged), file=sys.stderr)
    return runs + [out]


def add_study_arguments(p) -> None:
    """The paired study's own flags (on top of the common study flags)."""
    p.add_argument("--arms", type=_names, default=None, help=f"comma-separated arms (default: {','.join(STUDY_ARMS)})")
    p.add_argument("--seeds", type=int, default=None, help="paired seeds per arm (default: 5 toy, 3 real, 2 quick)")
    p.add_argument("--steps", type=int, default=None, help="RL steps per run (default: 150 toy; the config's)")
    p.add_argument(
        "--dose",
        nargs="?",
        const="",
        default=None,
        help="add the dose–response arms: alone, the default sweep (Clip-Cov ratio, KL-Cov β and k, STEER λ_min); or "
        "'METHOD:PARAM=V1,V2;...' (e.g. clip_cov:clip_cov_ratio=0.005,0.08)",
    )
    p.add_argument(
        "--dose-seeds", type=int, default=None, help="seeds of each dose arm (default: --seeds; at most --seeds)"
    )
    p.add_argument("--workers", type=int, default=None, help="parallel single-threaded runs (default: one per core)")
    p.add_argument("--task", default=None, choices=sorted(REAL_TASK_DATA), help="RLVR task (real pairs only)")


def _names(text: str) -> tuple[str, ...]:
    import argparse

    from posttrain_probe.rlvr.paired import resolve_arms

    out = tuple(x.strip() for x in text.split(",") if x.strip())
    try:
        resolve_arms(out)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e
    return out
