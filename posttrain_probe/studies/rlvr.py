"""Study: why does policy entropy collapse during RLVR, and what do the covariance-based interventions change?
Train every loss of the GRPO family from the post-trained model with the configs in experiments/configs (the
toy world's arithmetic for the toy pair; GSM8K, MATH-500 or Countdown for real pairs), then analyse their
entropy dynamics together."""

from __future__ import annotations

import shutil
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

    if study.configs is None:
        raise ValueError("no configs folder; pass the experiments/configs folder (the study scripts do)")
    data: dict[str, Any] = yaml.safe_load(config_file(study.configs, study.is_toy, loss).read_text()) or {}
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
    import json

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
