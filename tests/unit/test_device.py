"""Device and autocast plumbing (issue #9), checked on the CPU without models: one-line config errors, CPU
fp32 build keys unchanged, and scripts/gpu_check.sh's no-CUDA exit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

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
