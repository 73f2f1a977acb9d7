"""The RLVR loop on a tiny random Llama: exact resume, every loss variant, warnings and failures, checkpoints."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from posttrain_probe.rlvr import checkpoint as ckpt
from posttrain_probe.rlvr import tasks, trainer
from posttrain_probe.rlvr.config import ConfigError, RLVRConfig
from posttrain_probe.rlvr.losses import LOSS_TYPES, LossConfig
from posttrain_probe.rlvr.trainer import (
    METRICS_FILE,
    TIMING_KEYS,
    NonFiniteLossError,
    prompt_indices,
    read_jsonl,
    resume,
    train,
)

pytestmark = pytest.mark.slow
# POSTTRAIN_PROBE_TEST_DEVICE=cuda runs these on a GPU (the default is the CPU)
WORDS = "one two three four five six seven eight nine".split()


def digit_share(completion: str, problem) -> float:
    """A dense test reward in [0, 1]: the share of digit tokens, so that groups have reward variance."""
    toks = completion.split()
    return sum(t.isdigit() for t in toks) / max(len(toks), 1)


@pytest.fixture(autouse=True)
def _dense_task(monkeypatch):
    monkeypatch.setitem(tasks.TASKS, "digits", tasks.Task("digits", digit_share, None))


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> tuple[Path, Path]:
    from posttrain_probe.testing import make_tiny_checkpoint

    root = tmp_path_factory.mktemp("rlvr")
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
        prompts_per_step=4, group_size=4, max_new_tokens=5, steps=4, minibatches=2, checkpoint_every=2,
        token_dump_every=2, progress=False, lr=3e-3, device=os.environ.get("POSTTRAIN_PROBE_TEST_DEVICE", "cpu"),
    )  # fmt: skip
    base.update(kw)
    return RLVRConfig(**base)


def _strip(rows):
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]


def _same_rows(a, b) -> bool:
    def eq(x, y):
        return (isinstance(x, float) and math.isnan(x) and isinstance(y, float) and math.isnan(y)) or x == y

    return len(a) == len(b) and all(r.keys() == s.keys() and all(eq(r[k], s[k]) for k in r) for r, s in zip(a, b))


def _weights(run: Path, step: int) -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoints" / ckpt.step_dir_name(step) / "model.safetensors"))


def test_interrupted_and_resumed_run_ends_bit_identical(world, tmp_path):
    cfg = _cfg(world, loss=LossConfig("clip_cov", cov_preset="toy", clip_cov_ratio=0.1))
    full = train(cfg, tmp_path / "full")

    def crash(step, model, row):
        if step == 3:  # after step 3's metrics row; the latest checkpoint is step 2
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "cut", callbacks=[crash])
    assert len(read_jsonl(tmp_path / "cut" / METRICS_FILE)) == 3
    seen: list[int] = []
    resumed = resume(tmp_path / "cut", callbacks=[lambda step, model, row: seen.append(step)])
    assert seen == [3, 4]  # it continued from the step-2 checkpoint (optimizer state included), not from 0

    a, b = _weights(full, 4), _weights(resumed, 4)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    start = load_file(str(Path(cfg.model) / "model.safetensors"))
    assert any(not torch.equal(a[k], start[k]) for k in a)  # training moved the weights
    rows_a, rows_b = read_jsonl(full / METRICS_FILE), read_jsonl(resumed / METRICS_FILE)
    assert [r["step"] for r in rows_b] == [1, 2, 3, 4]
    assert _same_rows(_strip(rows_a), _strip(rows_b))
    assert _same_rows(read_jsonl(full / "eval.jsonl"), read_jsonl(resumed / "eval.jsonl"))
    da, db = (
        load_file(str(full / "token_dumps/step_000004.safetensors")),
        load_file(str(resumed / "token_dumps/step_000004.safetensors")),
    )
    assert all(torch.equal(da[k], db[k]) for k in da)
    meta = ckpt.read_metadata(resumed / "checkpoints" / "step_000004")
    assert meta["parent_checkpoint"].endswith("step_000002")
    assert all(r["grad_norm"] > 0 for r in rows_a)


@pytest.mark.parametrize(
    "loss",
    [LossConfig(n) for n in LOSS_TYPES]
    + [
        LossConfig("steer", steer_variant="linear"),
        LossConfig("kl_cov", selection_scope="mini"),
        LossConfig("grpo", kl_coef=0.1, kl_estimator="k3", aggregation="seq-mean-token-mean"),
        LossConfig("clip_cov", cov_preset="paper", aggregation="constant-normalized"),
    ],
    ids=lambda c: f"{c.name}-{c.selection_scope}-{c.aggregation}-{c.kl_coef}-{c.steer_variant}",
)
def test_every_loss_variant_trains_and_logs_finite_metrics(world, tmp_path, loss):
    cfg = _cfg(world, loss=loss, steps=2, micro_batch_size=3, eval_every=0)
    run = train(cfg, tmp_path / "run")
    rows = read_jsonl(run / METRICS_FILE)
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        for key in ("reward_mean", "entropy_mean", "dH_realized", "dH_pred_cov", "loss", "grad_norm", "clip_frac"):
            assert math.isfinite(r[key]), key
        assert r["optimizer_steps"] == 2
    if loss.name in ("kl_cov", "steer", "entropy_bonus") or (loss.name == "clip_cov" and loss.cov_preset == "toy"):
        assert any(r["touched_frac"] > 0 for r in rows)
    if loss.name == "clip_cov" and loss.cov_preset == "paper":  # |Cov| < 1 here: the (1, 5) window is empty
        assert all(r["touched_frac"] == 0 for r in rows)
    if loss.kl_coef:
        assert "kl_ref" in rows[0] and rows[0]["kl_ref"] >= 0
    assert not (run / "token_dumps").exists() or len(list((run / "token_dumps").iterdir())) == 1


@pytest.mark.parametrize(
    "extra",
    [{}, {"micro_batch_size": 3, "loss": LossConfig("clip_cov", selection_scope="mini", clip_cov_ratio=0.1)}],
    ids=["whole-minibatch", "micro3-clip-cov-mini"],
)
def test_sampling_ahead_gives_the_numbers_of_one_thread_and_resumes_exactly(world, tmp_path, extra):
    """sample_ahead samples step s + 1 beside step s's re-scoring and computes a mini-batch's micro-batches two at a
    time, every op on one torch thread: the same numbers as a one-thread run, and a run cut after step 3 (its
    prefetched rollout lost) resumes to the same end."""
    before = torch.get_num_threads()
    try:
        cfg = _cfg(world, threads=1, **extra)
        one = train(cfg, tmp_path / "one")
        two = train(dataclasses.replace(cfg, threads=None, sample_ahead=True), tmp_path / "two")

        def crash(step, model, row):
            if step == 3:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            train(dataclasses.replace(cfg, threads=None, sample_ahead=True), tmp_path / "cut", callbacks=[crash])
        cut = resume(tmp_path / "cut")
    finally:
        torch.set_num_threads(before)
    for run in (two, cut):
        assert _same_rows(_strip(read_jsonl(one / METRICS_FILE)), _strip(read_jsonl(run / METRICS_FILE)))
        assert _same_rows(read_jsonl(one / "eval.jsonl"), read_jsonl(run / "eval.jsonl"))
        a, b = _weights(one, 4), _weights(run, 4)
        assert all(torch.equal(a[k], b[k]) for k in a)
    rows = read_jsonl(two / METRICS_FILE)
    assert all(r["time_rollout_s"] > 0 and r["time_step_s"] > 0 for r in rows)
    with pytest.raises(ConfigError, match="sample_ahead"):
        _cfg(world, sample_ahead=True, threads=2)


@pytest.mark.parametrize(
    "tied,extra",
    [
        (False, {}),
        (True, {}),
        (True, {"micro_batch_size": 3, "threads": None, "sample_ahead": True}),
    ],
    ids=["untied", "tied", "tied-micro3-sample-ahead"],
)
def test_embedding_gradient_through_the_used_rows_equals_the_dense_one(world, tmp_path, monkeypatch, tied, extra):
    """Training forwards embed through the rows their tokens use (`EmbeddingRows`), not the whole table: on an
    untied model every logged number and weight is the dense path's bit for bit; with tied embeddings the output
    head's and the embedding's gradients are summed in another order, so numbers agree to float rounding."""
    from posttrain_probe.testing import make_tiny_checkpoint

    model = make_tiny_checkpoint("llama", tmp_path / "m", d_model=32, n_layers=2, tie_embeddings=tied)
    cfg = _cfg((model, world[1]), steps=3, eval_every=0, checkpoint_every=3, **extra)
    before = torch.get_num_threads()
    used = []
    real = trainer.embedding_rows
    monkeypatch.setattr(trainer, "embedding_rows", lambda *a: used.append(real(*a)) or used[-1])
    try:
        rows_run = train(cfg, tmp_path / "rows")
        monkeypatch.setattr(trainer, "embedding_rows", lambda *a: None)
        dense_run = train(cfg, tmp_path / "dense")
    finally:
        torch.set_num_threads(before)
    assert any(r is not None for r in used)  # the rows path ran
    a, b = _strip(read_jsonl(rows_run / METRICS_FILE)), _strip(read_jsonl(dense_run / METRICS_FILE))
    wa, wb = _weights(rows_run, 3), _weights(dense_run, 3)
    if not tied:
        assert _same_rows(a, b)
        assert all(torch.equal(wa[k], wb[k]) for k in wa)
        return
    assert [r["trained_seqs"] for r in a] == [r["trained_seqs"] for r in b]
    for ra, rb in zip(a, b):
        for k in ("loss", "grad_norm", "entropy_mean", "dH_realized"):
            assert ra[k] == pytest.approx(rb[k], rel=1e-4, abs=1e-7), k
    for k in wa:
        assert (wa[k] - wb[k]).abs().max() <= 1e-5 * wb[k].abs().max(), k


@pytest.mark.parametrize("split", ["rows", "groups"])
def test_packed_scoring_trains_as_the_kv_cache_path_does(world, tmp_path, monkeypatch, split):
    """`pack_rows` (default): prompts and completions packed into rows under a block mask; off: each prompt's KV
    cache copied to its rows. Same sampled tokens, rewards and counts; losses, entropies and weights to float
    rounding (the matrix products see other shapes)."""
    from posttrain_probe.rlvr import entropy

    layouts = []
    real = entropy._score_packed
    monkeypatch.setattr(entropy, "_score_packed", lambda *a: layouts.append(a[2]) or real(*a))
    cfg = _cfg(world, steps=3, eval_every=0, checkpoint_every=3, minibatch_split=split)
    before = torch.get_num_threads()
    try:
        packed = train(cfg, tmp_path / "packed")
        n_packed = len(layouts)
        cached = train(dataclasses.replace(cfg, pack_rows=False), tmp_path / "cached")
    finally:
        torch.set_num_threads(before)
    assert n_packed > 0 and len(layouts) == n_packed  # the packed path ran, and only where asked
    a, b = _strip(read_jsonl(packed / METRICS_FILE)), _strip(read_jsonl(cached / METRICS_FILE))
    for ra, rb in zip(a, b, strict=True):
        assert ra["trained_seqs"] == rb["trained_seqs"] and ra["reward_mean"] == rb["reward_mean"]
        for k in ("loss", "grad_norm", "entropy_mean", "dH_realized"):
            assert ra[k] == pytest.approx(rb[k], rel=1e-3, abs=1e-6), k
    wa, wb = _weights(packed, 3), _weights(cached, 3)
    for k in wa:  # Adam divides by √v: rounding in a near-zero gradient moves that weight by a fraction of lr
        assert (wa[k] - wb[k]).abs().max() <= max(1e-4 * wb[k].abs().max(), 1e-2 * cfg.lr), k


def test_on_policy_first_update_has_ratio_one_and_realized_dh_matches_dump(world, tmp_path, monkeypatch):
    # old log-probs from a forward (as under autocast): the first update's ratio is 1 bit for bit
    with monkeypatch.context() as m:
        m.setattr(trainer, "_rollout_scores_are_exact", lambda s: False)
        rows = read_jsonl(train(_cfg(world, minibatches=1, steps=2, eval_every=0), tmp_path / "fwd") / METRICS_FILE)
    assert all(r["abs_log_ratio"] == 0.0 and r["clip_frac"] == 0.0 for r in rows)
    # the sampler's own log-probs (float32, no autocast): 1 up to float rounding
    run = train(_cfg(world, minibatches=1, steps=2, eval_every=0), tmp_path / "run")
    rows = read_jsonl(run / METRICS_FILE)
    assert all(r["abs_log_ratio"] < 1e-5 and r["clip_frac"] == 0.0 for r in rows)
    dump = load_file(str(run / "token_dumps" / "step_000002.safetensors"))
    mask = dump["trained"].bool()
    realized = (dump["entropy_new"] - dump["entropy_old"])[mask].mean().item()
    assert realized == pytest.approx(rows[1]["dH_realized"], abs=1e-6)
    assert rows[1]["dH_realized"] != 0.0
    cov = dump["cov"][mask]
    assert -cov.mean().item() == pytest.approx(rows[1]["dH_pred_cov"], abs=1e-6)
    assert dump["response_ids"].shape[0] == 16 and set(dump["prompt_index"].tolist()) == set(
        prompt_indices(2, 52, 4, 0)
    )


def test_dynamic_sampling_drops_zero_variance_groups_but_still_measures_them(world, tmp_path):
    # with a random model the exact arithmetic reward is 0 for (almost) every sample: no group varies
    run = train(_cfg(world, task="arithmetic", dynamic_sampling=True, steps=2, eval_every=0), tmp_path / "run")
    rows = read_jsonl(run / METRICS_FILE)
    for r in rows:
        dropped = round(r["frac_groups_zero_std"] * 4) * 4
        assert r["trained_seqs"] == 16 - dropped
        assert r["entropy_mean"] > 0
    if all(r["trained_seqs"] == 0 for r in rows):
        assert all(r["optimizer_steps"] == 0 for r in rows)
        a, start = _weights(run, 2), load_file(str(Path(world[0]) / "model.safetensors"))
        assert all(torch.equal(a[k], start[k]) for k in a)


def test_kl_cov_warns_when_it_would_be_inert(world, tmp_path):
    with pytest.warns(UserWarning, match="inert"):
        train(_cfg(world, loss="kl_cov", minibatches=1, steps=1, eval_every=0), tmp_path / "run")


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(world, tmp_path):
    def poison(step, model, row):
        if step == 2:
            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))

    run = tmp_path / "run"
    with pytest.raises(NonFiniteLossError, match=r"at step 3 .*Last good checkpoint: .*step_000002"):
        train(_cfg(world, steps=6, eval_every=0), run, callbacks=[poison])
    assert [s for s, _ in ckpt.list_checkpoints(run)] == [2]
    good = _weights(run, 2)
    assert all(torch.isfinite(t).all() for t in good.values())
    assert len(read_jsonl(run / METRICS_FILE)) == 2


def test_checkpoint_is_an_hf_model_with_metadata_and_exact_optimizer_state(world, tmp_path):
    from transformers import AutoModelForCausalLM

    from posttrain_probe.utils.io import sha256_file

    run = train(_cfg(world, steps=2, eval_every=0), tmp_path / "run")
    path = run / "checkpoints" / "step_000002"
    meta = ckpt.read_metadata(path)
    assert meta["weights_sha256"]["model.safetensors"] == sha256_file(path / "model.safetensors")
    assert meta["config"]["task"] == "digits" and meta["last_metrics"]["step"] == 2
    assert meta["parent_checkpoint"] == meta["start_model"]["path"]
    model = AutoModelForCausalLM.from_pretrained(path)
    opt = torch.optim.AdamW(model.parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    state = ckpt.load_trainer_state(path, opt, sched, restore_rng=False)
    assert state["step"] == 2 and state["data_cursor"]["prompts_seen"] == 8
    assert opt.param_groups[0]["lr"] == pytest.approx(3e-3)
    flat, structure = ckpt.flatten_optimizer_state(opt.state_dict())
    again = ckpt.unflatten_optimizer_state(flat, json.loads(json.dumps(structure)))
    for pid, slot in opt.state_dict()["state"].items():
        assert all(torch.equal(v, again["state"][pid][k]) for k, v in slot.items())
    assert slot["step"].item() == 4  # two rollout steps × two mini-batches


def test_checkpoint_loads_as_the_post_model_of_a_pair(world, tmp_path):
    from posttrain_probe import load_pair

    run = train(_cfg(world, steps=2, eval_every=0), tmp_path / "run")
    pair = load_pair(str(world[0]), str(run / "checkpoints" / "step_000002"))
    assert pair is not None


def test_train_refuses_an_existing_run_and_resume_a_non_run(world, tmp_path):
    run = train(_cfg(world, steps=1, eval_every=0), tmp_path / "run")
    with pytest.raises(ConfigError, match="already holds an RLVR run"):
        train(_cfg(world, steps=1), run)
    with pytest.raises(ConfigError, match="not an RLVR run directory"):
        resume(tmp_path)
    with pytest.raises(ValueError, match="no such file"):
        train(dataclasses.replace(_cfg(world), data=str(tmp_path / "missing.jsonl")), tmp_path / "new")
    assert not (tmp_path / "new").exists()
