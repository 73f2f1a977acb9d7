"""Paired-study plumbing of the RLVR trainer on a tiny random Llama: common random numbers across arms, the
mechanism metrics of Clip-Cov / KL-Cov / STEER, the single-step entropy probe, eval entropy for the last-k mean.

Mutations these tests caught (each tried by hand): the sampling generator's seed depending on the loss; every
diagnostic tagged with mini-batch 0 (`diag["minibatch"]`).
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from posttrain_probe.analysis.dynamics import analyze_runs, eval_entropy_last_k
from posttrain_probe.rlvr import tasks, trainer
from posttrain_probe.rlvr.config import RLVRConfig, null_arm
from posttrain_probe.rlvr.losses import LossConfig
from posttrain_probe.rlvr.trainer import TIMING_KEYS, read_jsonl, train

pytestmark = pytest.mark.slow
WORDS = "one two three four five six seven eight nine".split()


def digit_share(completion: str, problem) -> float:
    toks = completion.split()
    return sum(t.isdigit() for t in toks) / max(len(toks), 1)


@pytest.fixture(autouse=True)
def _dense_task(monkeypatch):
    monkeypatch.setitem(tasks.TASKS, "digits", tasks.Task("digits", digit_share, None))


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> tuple[Path, Path]:
    from posttrain_probe.testing import make_tiny_checkpoint

    root = tmp_path_factory.mktemp("rlvr_study")
    model = make_tiny_checkpoint("llama", root / "start", d_model=32, n_layers=2)
    rng = random.Random(0)
    with open(root / "problems.jsonl", "w") as f:
        for _ in range(60):
            a, b = rng.randint(1, 4), rng.randint(1, 4)
            f.write(json.dumps({"question": f"{WORDS[a - 1]} and {WORDS[b - 1]} is", "answer": str(a + b)}) + "\n")
    return model, root / "problems.jsonl"


def _cfg(world, **kw) -> RLVRConfig:
    model, data = world
    base = dict(
        model=str(model), data=str(data), task="digits", n_eval=8, eval_every=2, eval_samples=2,
        prompts_per_step=4, group_size=4, max_new_tokens=5, steps=2, minibatches=2, checkpoint_every=0,
        token_dump_every=1, progress=False, lr=3e-3, device=os.environ.get("POSTTRAIN_PROBE_TEST_DEVICE", "cpu"),
    )  # fmt: skip
    base.update(kw)
    return RLVRConfig(**base)


def test_arms_with_the_same_seed_see_the_same_prompts_and_random_numbers(world, tmp_path, monkeypatch):
    logs: dict[str, list] = {}
    real = trainer._rollout

    def rollout(s, prompts, generator, temperature):  # records every rollout call of the current run
        seed = None if generator is None else generator.initial_seed()
        logs[current].append((tuple(map(tuple, prompts)), seed, temperature))
        return real(s, prompts, generator, temperature)

    monkeypatch.setattr(trainer, "_rollout", rollout)
    for current, loss in (("grpo", LossConfig("grpo")), ("steer", LossConfig.from_recipe("steer_paper"))):
        logs[current] = []
        train(_cfg(world, loss=loss), tmp_path / current)
    # every rollout call (training steps and evaluations): same prompts, same generator seed, same temperature
    assert len(logs["grpo"]) == len(logs["steer"]) > 3
    assert logs["grpo"] == logs["steer"]
    a, b = (read_jsonl(tmp_path / arm / "metrics.jsonl") for arm in ("grpo", "steer"))
    # step 1 samples from the same start model: identical rollouts and rewards; later steps differ by the loss
    assert a[0]["reward_mean"] == b[0]["reward_mean"] and a[0]["entropy_mean"] == b[0]["entropy_mean"]
    d1 = [load_file(str(tmp_path / arm / "token_dumps" / "step_000001.safetensors")) for arm in ("grpo", "steer")]
    assert torch.equal(d1[0]["response_ids"], d1[1]["response_ids"])
    assert torch.equal(d1[0]["prompt_index"], d1[1]["prompt_index"])
    e = [read_jsonl(tmp_path / arm / "eval.jsonl") for arm in ("grpo", "steer")]
    assert e[0][0] == e[1][0]  # step-0 evaluation: same model, same fixed eval set and uniforms
    assert b[0]["steer_lambda_mean"] < 1 and "adv_mass_removed" in b[0]
    assert "steer_lambda_mean" not in a[0]  # keys only the intervention's runs have


def test_null_arm_differs_only_by_lr(world, tmp_path):
    base = _cfg(world, steps=3)
    null = null_arm(base)
    assert null.lr == pytest.approx(base.lr * 1.01)
    train(null, tmp_path / "null")
    saved = json.loads((tmp_path / "null" / "config.json").read_text())
    assert saved["arm"] == "null"
    res = analyze_runs([tmp_path / "null"])
    assert "null" in res.summary


def test_kl_cov_and_clip_cov_log_selected_and_touched_tokens(world, tmp_path):
    train(_cfg(world, loss=LossConfig.from_recipe("kl_cov_toy")), tmp_path / "kl")
    rows = read_jsonl(tmp_path / "kl" / "metrics.jsonl")
    for r in rows:
        sel, touched, share = r["cov_selected_tokens"], r["cov_touched_tokens"], r["cov_selected_first_mb_share"]
        assert sel >= 2 and 0 < share < 1
        # the first mini-batch is on-policy (log ρ = 0 exactly): its picks are inert, the later ones are not
        assert touched == pytest.approx(sel * (1 - share))
        assert r["cov_selected_frac"] == pytest.approx(sel / r["response_tokens"], rel=0.5)
    train(_cfg(world, loss=LossConfig.from_recipe("clip_cov_toy")), tmp_path / "clip")
    rows = read_jsonl(tmp_path / "clip" / "metrics.jsonl")
    for r in rows:
        assert r["cov_selected_tokens"] >= 2 and r["cov_touched_tokens"] <= r["cov_selected_tokens"]
        assert 0 < r["adv_mass_removed"] < 0.5


def test_single_step_probe_adds_metrics_and_dumps_without_changing_training(world, tmp_path):
    cfg = _cfg(world, loss="grpo", steps=3, lr=3e-4)  # small steps: first order holds (lr 3e-3: r ≈ 0.6)
    train(cfg, tmp_path / "plain")
    train(RLVRConfig(**{**cfg.to_dict(), "probe_first_minibatch": True}), tmp_path / "probe")
    plain, probe = (read_jsonl(tmp_path / d / "metrics.jsonl") for d in ("plain", "probe"))
    for p, q in zip(plain, probe):
        for key in set(p) - TIMING_KEYS:
            assert p[key] == q[key] or (p[key] != p[key] and q[key] != q[key]), key  # NaN == NaN
        assert q["dH1_tokens"] > 0
        # the exact first-order term tracks the realized single-step change token by token
        assert q["dH1_corr_first_order"] > 0.95
        for key in ("dH1_realized", "dH1_first_order", "dH1_corr_cov", "dH1_corr_omega"):
            assert key in q
    dump = load_file(str(tmp_path / "probe" / "token_dumps" / "step_000001.safetensors"))
    first = dump["first_minibatch"].bool()
    assert first.any() and not (first & ~dump["trained"].bool()).any()
    assert (dump["dH1_realized"][~first] == 0).all() and (dump["dH1_realized"][first] != 0).any()
    res = analyze_runs([tmp_path / "probe"])
    single = res.tables["token_predictors_single_step"]
    assert set(single["predictor"]) == {"first_order", "-cov", "-omega"}
    assert float(single.set_index("predictor").loc["first_order", "pearson"]) > 0.9


def test_eval_logs_entropy_on_the_fixed_eval_set_and_last_k_mean(world, tmp_path):
    train(_cfg(world, steps=3, eval_every=1), tmp_path / "run")
    rows = read_jsonl(tmp_path / "run" / "eval.jsonl")
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    assert all(r["eval_problems"] == 8 and r["eval_entropy_mean"] > 0 for r in rows)
    want = sum(r["eval_entropy_mean"] for r in rows[-3:]) / 3
    assert eval_entropy_last_k(tmp_path / "run", 3) == pytest.approx(want)
    with pytest.raises(ValueError, match="k="):
        eval_entropy_last_k(tmp_path / "run", 0)
