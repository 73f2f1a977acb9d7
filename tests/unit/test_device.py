"""Device and autocast plumbing (issue #9), checked on the CPU: one-line config errors, CPU fp32 build keys and
results unchanged, bf16 autocast paths that keep log-probs in fp32, and scripts/gpu_check.sh (no-CUDA exit and the
--dry-run of the whole build → demo → timings path)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from posttrain_probe.rlvr import tasks
from posttrain_probe.rlvr.config import ConfigError, RLVRConfig
from posttrain_probe.toyworld.config import preset_config

REPO = Path(__file__).resolve().parents[2]
NO_CUDA = not torch.cuda.is_available()


def _one_line_error(fn, exc=ValueError, match: str = "") -> str:
    with pytest.raises(exc, match=match) as info:
        fn()
    msg = str(info.value)
    assert msg and "\n" not in msg
    return msg


@pytest.mark.parametrize(
    ("make", "exc"),
    [(lambda **kw: preset_config("quick", **kw), ValueError), (lambda **kw: RLVRConfig(**kw), ConfigError)],
    ids=["toyworld", "rlvr"],
)
def test_bad_device_or_autocast_is_one_line_that_names_the_fix(make, exc):
    _one_line_error(lambda: make(device="gpu"), exc, "use auto, cpu, cuda or cuda:N")
    _one_line_error(lambda: make(device="cuda:x"), exc, "use auto, cpu, cuda or cuda:N")
    _one_line_error(lambda: make(autocast="fp8"), exc, "use auto .*, bf16 or off")
    make(device="cuda")  # a GPU config stays readable on any machine; the device is checked when work starts


@pytest.mark.skipif(not NO_CUDA, reason="checks the error on a machine without CUDA")
def test_cuda_without_a_gpu_fails_before_any_work_with_the_fix(tmp_path):
    from posttrain_probe.rlvr.trainer import train
    from posttrain_probe.toyworld import build

    msg = _one_line_error(
        lambda: build("quick", cache_root=tmp_path / "c", device="cuda"), match="CUDA is not available"
    )
    assert "device='cpu' or 'auto'" in msg and not (tmp_path / "c").exists()
    _one_line_error(lambda: train(RLVRConfig(device="cuda:0"), tmp_path / "run"), ConfigError, "CUDA is not available")
    assert not (tmp_path / "run").exists()


def test_rlvr_bf16_autocast_needs_float32_weights():
    msg = _one_line_error(lambda: RLVRConfig(autocast="bf16", dtype="bfloat16"), ConfigError, "needs dtype='float32'")
    assert "autocast: off" in msg
    RLVRConfig(autocast="auto", dtype="bfloat16")  # auto simply stays off over low-precision weights


@pytest.mark.skipif(not NO_CUDA, reason="checks the error on a machine without CUDA")
def test_demo_refuses_cuda_without_a_gpu_before_writing_anything(tmp_path):
    from posttrain_probe.cli import main
    from posttrain_probe.demo import run_demo

    _one_line_error(lambda: run_demo(tmp_path / "demo", device="cuda"), ValueError, "CUDA is not available")
    assert not (tmp_path / "demo").exists()
    assert main(["demo", "--device", "cuda", "--out", str(tmp_path / "d2")]) == 1
    assert not (tmp_path / "d2").exists()


def test_demo_preset_flags():
    from posttrain_probe.cli import build_parser
    from posttrain_probe.demo import run_demo

    parse = build_parser().parse_args
    assert parse(["demo"]).preset == "default"
    assert parse(["demo", "--quick"]).preset == "quick"  # the old flag is an alias
    assert parse(["demo", "--preset", "large", "--device", "cpu"]).preset == "large"
    _one_line_error(lambda: run_demo(quick=True, preset="large"), ValueError, "contradicts")
    _one_line_error(lambda: run_demo(preset="huge"), ValueError, "unknown preset")


def test_cpu_fp32_build_keys_are_unchanged_and_gpu_builds_get_their_own(monkeypatch):
    # the keys every CPU cache and test relies on
    assert preset_config("default", device="cpu").key() == "8b06ad8bc838"
    assert preset_config("quick", device="cpu").key() == "1beb90766bc8"
    assert preset_config("default", device="cpu").compute() == "cpu-fp32"
    assert preset_config("default", device="cpu", autocast="bf16").compute() == "cpu-bf16"
    assert preset_config("default", device="cpu", autocast="bf16").key() != "8b06ad8bc838"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    on_gpu = preset_config("default")  # device auto on a CUDA machine
    assert on_gpu.compute() == "cuda-bf16"
    fp32_gpu = preset_config("default", device="cuda", autocast="off")
    assert fp32_gpu.compute() == "cuda-fp32"
    keys = {on_gpu.key(), fp32_gpu.key(), preset_config("default", device="cpu").key()}
    assert len(keys) == 3 and "8b06ad8bc838" in keys


def _tiny_llama(tmp_path: Path):
    from transformers import AutoModelForCausalLM

    from posttrain_probe.testing import make_tiny_checkpoint

    path = make_tiny_checkpoint("llama", tmp_path / "tiny", d_model=32, n_layers=2)
    return path, AutoModelForCausalLM.from_pretrained(path).eval()


def test_output_head_stays_fp32_under_autocast(tmp_path):
    from posttrain_probe.rlvr.entropy import output_head

    _, model = _tiny_llama(tmp_path)
    head = output_head(model)
    h = torch.randn(5, model.config.hidden_size)
    plain = head(h)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model.get_output_embeddings()(h).dtype == torch.bfloat16  # autocast is on
        inside = head(h)
    assert inside.dtype == torch.float32 and torch.equal(inside, plain)


def test_toyworld_train_loop_with_bf16_autocast(tmp_path):
    from posttrain_probe.toyworld.train import train

    _, model = _tiny_llama(tmp_path)
    ids = torch.randint(4, 60, (16, 12), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids, dtype=torch.bool)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    kw = dict(epochs=2.0, batch_size=8, lr=3e-3, warmup_steps=1, seed=0, device="cpu", desc="t")
    fp32 = train(model, ids, mask, **kw)
    model.load_state_dict(state)
    again = train(model, ids, mask, **kw)
    model.load_state_dict(state)
    bf16 = train(model, ids, mask, **kw, autocast=torch.bfloat16)
    assert fp32 == again  # no autocast: deterministic, as before
    assert all(isinstance(x, float) and x == x for x in bf16) and len(bf16) == len(fp32) == 4
    assert bf16 != fp32 and max(abs(a - b) for a, b in zip(bf16, fp32)) < 0.1
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast never casts the weights


def _rlvr_run(tmp_path: Path, name: str, **kw) -> Path:
    from posttrain_probe.rlvr.losses import LossConfig
    from posttrain_probe.rlvr.trainer import train

    model = tmp_path / "tiny"
    if not model.exists():
        _tiny_llama(tmp_path)
    data = tmp_path / "problems.jsonl"
    if not data.exists():
        words = "one two three four five six seven eight nine".split()
        rng = random.Random(0)
        rows = [(rng.randint(1, 4), rng.randint(1, 4)) for _ in range(40)]
        lines = [json.dumps({"question": f"{words[a]} and {words[b]} is", "answer": "0"}) + "\n" for a, b in rows]
        data.write_text("".join(lines))
    cfg = RLVRConfig(
        model=str(model), data=str(data), task="digits", n_eval=8, eval_every=2, eval_samples=2, prompts_per_step=4,
        group_size=4, max_new_tokens=5, steps=2, minibatches=2, checkpoint_every=2, token_dump_every=2,
        progress=False, lr=3e-3, loss=LossConfig("clip_cov", cov_preset="toy", clip_cov_ratio=0.1), **kw,
    )  # fmt: skip
    return train(cfg, tmp_path / name)


@pytest.mark.slow
def test_rlvr_cpu_default_is_fp32_and_bf16_autocast_keeps_log_probs_fp32(tmp_path, monkeypatch):
    from posttrain_probe.rlvr.trainer import METRICS_FILE, TIMING_KEYS, read_jsonl

    digits = tasks.Task("digits", lambda c, p: sum(t.isdigit() for t in c.split()) / max(len(c.split()), 1), None)
    monkeypatch.setitem(tasks.TASKS, "digits", digits)
    runs = {a: _rlvr_run(tmp_path, a, autocast=a) for a in ("auto", "off", "bf16")}

    def rows(run):
        return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in read_jsonl(run / METRICS_FILE)]

    def weights(run):
        return load_file(str(run / "checkpoints" / "step_000002" / "model.safetensors"))

    assert json.dumps(rows(runs["auto"])) == json.dumps(rows(runs["off"]))  # auto on the CPU: fp32, bit for bit
    a, b, c = weights(runs["auto"]), weights(runs["off"]), weights(runs["bf16"])
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a) and all(v.dtype == torch.float32 for v in c.values())
    for r32, r16 in zip(rows(runs["off"]), rows(runs["bf16"])):
        assert abs(r32["entropy_mean"] - r16["entropy_mean"]) < 0.05
    dump = load_file(str(runs["bf16"] / "token_dumps" / "step_000002.safetensors"))
    assert dump["logp_old"].dtype == dump["entropy_new"].dtype == torch.float32
    assert torch.isfinite(dump["logp_new"]).all()


def _script(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k != "OUT" and not k.startswith("GPU_CHECK_")}
    full.update(PYTHON=sys.executable, OMP_NUM_THREADS="1", **env)
    cmd = ["bash", str(REPO / "scripts" / "gpu_check.sh"), *args]
    return subprocess.run(cmd, env=full, capture_output=True, text=True, timeout=timeout, cwd=REPO)


@pytest.mark.skipif(not NO_CUDA, reason="checks the message on a machine without CUDA")
def test_gpu_check_without_cuda_says_so_in_one_line(tmp_path):
    res = _script({"GPU_CHECK_OUT": str(tmp_path / "gc")})
    assert res.returncode == 2, res.stdout + res.stderr
    assert res.stdout == "" and len(res.stderr.strip().splitlines()) == 1
    assert "no CUDA GPU" in res.stderr and "--dry-run" in res.stderr
    assert not (tmp_path / "gc").exists()


@pytest.mark.slow
def test_gpu_check_dry_run_builds_runs_the_demo_and_prints_timings(toy_pair_quick, tmp_path):
    out = tmp_path / "gc"
    env = {"POSTTRAIN_PROBE_CACHE": str(toy_pair_quick.root.parent.parent), "GPU_CHECK_OUT": str(out)}
    t = time.perf_counter()
    res = _script(env, "--dry-run")
    took = time.perf_counter() - t
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    text = res.stdout
    assert "preset quick on cpu" in text and "torch " in text
    assert "(on cpu-fp32, " in text  # the build stages of the cached CPU build the test session made
    for line in ("toyworld (build)\t", "tracing\t", "rlvr_grpo\t", "drift\t", "demo total\t", "\ntotal\t", "PASS"):
        assert line in text, line
    assert (out / "report.html").exists() and (out / "timings.txt").exists()
    assert took < 400, f"dry run took {took:.0f} s"  # ≈ 60 s of CPU time, about half of it the report figures
    stopped = _script({**env, "GPU_CHECK_LIMIT_S": "1"}, "--dry-run")  # past the hard limit: stopped, loudly
    assert stopped.returncode == 1 and "FAIL: the demo was stopped" in stopped.stderr
    assert "total\t" in stopped.stdout
