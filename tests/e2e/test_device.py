"""scripts/gpu_check.sh dry run on the CPU: builds the quick toy pair, runs the demo and prints timings."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _script(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k != "OUT" and not k.startswith("GPU_CHECK_")}
    full.update(PYTHON=sys.executable, OMP_NUM_THREADS="1", **env)
    cmd = ["bash", str(REPO / "scripts" / "gpu_check.sh"), *args]
    return subprocess.run(cmd, env=full, capture_output=True, text=True, timeout=timeout, cwd=REPO)


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
    lines = ("toyworld (build)\t", "tracing\t", "rlvr_grpo_seed0\t", "drift\t", "demo total\t", "\ntotal\t", "PASS")
    for line in lines:
        assert line in text, line
    assert (out / "report.html").exists() and (out / "timings.txt").exists()
    assert took < 400, f"dry run took {took:.0f} s"  # ≈ 60 s of CPU time, about half of it the report figures
    stopped = _script({**env, "GPU_CHECK_LIMIT_S": "1"}, "--dry-run")  # past the hard limit: stopped, loudly
    assert stopped.returncode == 1 and "FAIL: the demo was stopped" in stopped.stderr
    assert "total\t" in stopped.stdout
