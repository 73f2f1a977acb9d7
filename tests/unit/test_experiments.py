"""Experiment scripts without models: the pair registry, argument errors and the real pairs' RLVR configs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from posttrain_probe.studies import PAIRS, Study, rlvr_config, study_from_args, study_parser

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"


def _main(name: str):
    spec = importlib.util.spec_from_file_location(f"experiment_{name}", EXPERIMENTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_pair_registry_and_argument_errors(tmp_path):
    assert PAIRS["qwen2.5-0.5b"].post == "Qwen/Qwen2.5-0.5B-Instruct"
    assert PAIRS["llama-3.2-1b"].base == "meta-llama/Llama-3.2-1B"
    parser = study_parser("x", "test")
    study = study_from_args("x", parser.parse_args(["--pair", "qwen2.5-0.5b"]))
    assert (study.base, study.size, study.out) == ("Qwen/Qwen2.5-0.5B", "real", Path("runs/experiments/x/qwen2.5-0.5b"))
    study = study_from_args("x", parser.parse_args(["--preset", "quick"]))
    assert (study.base, study.post, study.size) == ("toyworld:quick:base", "toyworld:quick:post", "quick")
    assert study_from_args("x", parser.parse_args([])).base == "toyworld:base"
    for argv, match in (
        (["--pair", "qwen2.5-0.5b", "--base", "a", "--post", "b"], "drop --pair"),
        (["--base", "a"], "both --base and --post"),
        (["--base", "a", "--post", "b", "--preset", "quick"], "drop it"),
    ):
        with pytest.raises(ValueError, match=match):
            study_from_args("x", parser.parse_args(argv))
    with pytest.raises(ValueError, match="for both"):
        Study("x", "toyworld:base", str(tmp_path), tmp_path)
    assert _main("directions")(["--pair", "qwen2.5-0.5b", "--base", "a", "--post", "b"]) == 1


def test_real_rlvr_configs_follow_the_pair(tmp_path):
    configs = EXPERIMENTS / "configs"
    qwen = Study("r", *(PAIRS["qwen2.5-0.5b"].base, PAIRS["qwen2.5-0.5b"].post), tmp_path, pair="qwen2.5-0.5b",
                 device="cpu", configs=configs)  # fmt: skip
    cfg = rlvr_config(qwen, "clip_cov")
    assert (cfg.model, cfg.task, cfg.steps, cfg.loss.name, cfg.loss.cov_preset) == (
        "Qwen/Qwen2.5-0.5B-Instruct", "gsm8k", 300, "clip_cov", "paper")  # fmt: skip
    assert cfg.eval_data == "shared:gsm8k/test.jsonl" and "<|im_end|>" in cfg.stop_tokens
    math = Study("r", PAIRS["qwen2.5-math-1.5b"].base, PAIRS["qwen2.5-math-1.5b"].post, tmp_path,
                 pair="qwen2.5-math-1.5b", device="cpu", configs=configs)  # fmt: skip
    cfg = rlvr_config(math, "kl_cov", steps=20)
    assert (cfg.task, cfg.data, cfg.eval_data, cfg.steps, cfg.checkpoint_every) == (
        "math500", "shared:math500/test.jsonl", None, 20, 5)  # fmt: skip
    llama = Study("r", PAIRS["llama-3.2-1b"].base, PAIRS["llama-3.2-1b"].post, tmp_path, pair="llama-3.2-1b",
                  device="cpu", configs=configs)  # fmt: skip
    assert "<|eot_id|>" in rlvr_config(llama, "steer").stop_tokens
    with pytest.raises(ValueError, match="unknown loss"):
        rlvr_config(llama, "ppo")
