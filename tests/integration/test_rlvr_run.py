"""RLVRRun, the one reader of an RLVR run directory: on a run written by hand (every odd state a kill can
leave) and on a tiny run written by the trainer."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from posttrain_probe.rlvr.config import ConfigError
from posttrain_probe.rlvr.run import RLVRRun, checkpoint_step


def _checkpoint(run: Path, step: int, complete: bool = True) -> Path:
    d = run / "checkpoints" / f"step_{step:06d}"
    d.mkdir(parents=True)
    (d / "metadata.json").write_text(json.dumps({"step": step, "start_model": {"source": "toy/post", "sha": "ab"}}))
    if complete:
        (d / "trainer_state.json").write_text(json.dumps({"step": step}))
    return d


def _hand_run(path: Path, steps: int = 4, rows: int = 4, final_checkpoint: bool = True) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model": "toy/post", "steps": steps, "loss": {"name": "clip_cov"}}))
    metrics = "".join(json.dumps({"step": s, "entropy_mean": 1.0 / s}) + "\n" for s in range(1, rows + 1))
    (path / "metrics.jsonl").write_text(metrics + '{"step": 99, "entr')  # torn last line: a kill mid-write
    (path / "eval.jsonl").write_text(json.dumps({"step": 0, "eval_accuracy_greedy": 0.1}) + "\n")
    (path / "token_dumps").mkdir()
    for s in (4, 2):
        save_file({"reward": np.zeros(2)}, str(path / "token_dumps" / f"step_{s:06d}.safetensors"))
    (path / "token_dumps" / ".step_000006.safetensors.tmp").write_text("half")
    _checkpoint(path, 2)
    _checkpoint(path, 3, complete=False)  # no trainer state: not a checkpoint
    if final_checkpoint:
        _checkpoint(path, steps)
    (path / "checkpoints" / ".step_000005.tmp-1").mkdir()
    return path


def test_reads_every_part_of_a_run_dir(tmp_path):
    run = RLVRRun(_hand_run(tmp_path / "grpo"))
    assert run.config["steps"] == 4 and run.steps == 4 and run.label == "clip_cov"
    assert [r["step"] for r in run.metrics()] == [1, 2, 3, 4]  # the torn line is no row
    assert run.eval_rows() == [{"step": 0, "eval_accuracy_greedy": 0.1}]
    assert [s for s, _ in run.token_dumps()] == [2, 4]
    assert [s for s, _ in run.checkpoints()] == [2, 4]
    assert run.latest_checkpoint() == run.path / "checkpoints" / "step_000004"
    assert run.steps_done == 4 and run.is_finished
    assert run.start_model() == {"source": "toy/post", "sha": "ab"}
    assert run.metrics_path == run.path / "metrics.jsonl" and RLVRRun.is_run_dir(run.path)


def test_unfinished_runs(tmp_path):
    short = RLVRRun(_hand_run(tmp_path / "a", steps=6))  # metrics up to 4 of 6 steps
    assert short.steps_done == 4 and not short.is_finished
    no_final = RLVRRun(_hand_run(tmp_path / "b", final_checkpoint=False))  # killed before the last checkpoint
    assert no_final.steps_done == 4 and not no_final.is_finished
    empty = tmp_path / "c"
    empty.mkdir()
    (empty / "config.json").write_text(json.dumps({"model": "m", "steps": 2, "loss": {"name": "grpo"}}))
    fresh = RLVRRun(empty)
    assert fresh.metrics() == [] and fresh.steps_done == 0 and not fresh.is_finished
    assert fresh.checkpoints() == [] and fresh.token_dumps() == [] and fresh.latest_checkpoint() is None
    assert fresh.start_model() == {"source": "m"}


def test_refusals_and_what_is_not_a_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        RLVRRun(tmp_path / "missing")
    model_dir = tmp_path / "hf"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")  # an HF model directory is not a run
    assert not RLVRRun.is_run_dir(model_dir) and not RLVRRun.is_run_dir(tmp_path / "missing")
    with pytest.raises(ConfigError, match="no config.json"):
        _ = RLVRRun(tmp_path).config


def test_checkpoint_step(tmp_path):
    assert checkpoint_step(_checkpoint(tmp_path, 7)) == 7
    assert checkpoint_step(tmp_path) is None


def test_drift_and_studies_read_runs_through_it(tmp_path):
    from posttrain_probe.analysis.drift import _step_of, entropy_curve
    from posttrain_probe.analysis.drift_inputs import expand_checkpoints

    rd = _hand_run(tmp_path / "grpo")
    ckpts, metrics = expand_checkpoints([str(rd), "some/hf/dir"])
    assert ckpts == [str(rd / "checkpoints" / "step_000002"), str(rd / "checkpoints" / "step_000004"), "some/hf/dir"]
    assert metrics == rd / "metrics.jsonl"
    assert entropy_curve(metrics)["step"].tolist() == [1, 2, 3, 4]  # the torn line is skipped
    assert _step_of(Path(ckpts[1]), 9) == 4 and _step_of(tmp_path, 9) == 9
    bare = tmp_path / "bare"
    (bare / "checkpoints").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        expand_checkpoints([str(bare)])


@pytest.mark.slow
def test_a_run_written_by_the_trainer(tmp_path):
    from posttrain_probe.rlvr import RLVRConfig, train
    from posttrain_probe.rlvr.trainer import read_jsonl
    from posttrain_probe.testing import make_tiny_checkpoint

    model = make_tiny_checkpoint("llama", tmp_path / "start", d_model=16, n_layers=1)
    data = tmp_path / "problems.jsonl"
    rows = [{"question": f"{a} plus {a} is", "answer": str(2 * a)} for a in range(30)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = RLVRConfig(
        model=str(model), data=str(data), n_eval=4, eval_every=2, eval_samples=1, prompts_per_step=2, group_size=2,
        max_new_tokens=3, steps=3, minibatches=1, checkpoint_every=2, token_dump_every=1, progress=False,
        device=os.environ.get("POSTTRAIN_PROBE_TEST_DEVICE", "cpu"),
    )  # fmt: skip
    run = RLVRRun(train(cfg, tmp_path / "run"))
    assert run.config == json.loads(json.dumps(cfg.to_dict())) and run.rlvr_config() == cfg
    assert run.metrics() == read_jsonl(run.path / "metrics.jsonl") and run.steps_done == 3
    assert [s for s, _ in run.checkpoints()] == [2, 3] and run.is_finished
    assert [s for s, _ in run.token_dumps()] == [1, 2, 3]
    assert [r["step"] for r in run.eval_rows()] == [0, 2, 3]
    assert run.start_model()["source"] == str(model) and run.label == "grpo"
