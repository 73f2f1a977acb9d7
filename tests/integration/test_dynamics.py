"""Entropy dynamics over fake RLVR run dirs: report figures drawn in a second process equal in-process ones."""

from __future__ import annotations

import numpy as np


def _fake_run(path, loss, n=12, seed=0):
    import json

    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"loss": {"name": loss}}))
    h = np.linspace(0.6, 0.1, n)
    rows = [
        {
            "step": i,
            "accuracy": float(-0.4 * np.exp(h[i]) + 1.2),
            "reward_mean": 0.5,
            "entropy_mean": float(h[i]),
            "dH_realized": float(-0.05 + rng.normal(0, 0.01)),
            "dH_pred_cov": (-0.04),
            "cov_mean": 0.01,
        }
        for i in range(n)
    ]
    (path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (path / "token_dumps").mkdir()
    B, T = 8, 5
    cov = rng.normal(size=(B, T))
    save_file(
        {
            "response_mask": np.ones((B, T), dtype=np.uint8),
            "advantage": rng.normal(size=(B, T)),
            "entropy_old": np.full((B, T), 0.5),
            "entropy_new": 0.5 - 0.1 * cov,  # realized ΔH = −0.1·Cov exactly
            "logp_old": np.log(rng.uniform(0.05, 0.95, size=(B, T))),
            "cov": cov,
            "prompt_index": np.repeat(np.arange(2), 4),
            "reward": np.array([1, 0, 1, 1, 0, 0, 0, 1], dtype=float),
        },
        str(path / "token_dumps" / "step_000010.safetensors"),
    )
    return path


def test_report_figures_from_a_second_process_equal_in_process_ones_and_survive_its_failure(tmp_path, monkeypatch):
    from posttrain_probe import report
    from posttrain_probe.analysis.dynamics import analyze_runs
    from posttrain_probe.results import read_run, write_run

    res = analyze_runs([_fake_run(tmp_path / "a", "grpo"), _fake_run(tmp_path / "b", "clip_cov", seed=1)])
    dirs = [write_run(tmp_path / "dyn1", res), write_run(tmp_path / "dyn2", res)]
    results = [read_run(d) for d in dirs]
    monkeypatch.setattr(report.os, "cpu_count", lambda: 2)
    split = report._all_figures(dirs, results)  # dyn1 drawn by the second process
    monkeypatch.setattr(report.os, "cpu_count", lambda: 1)
    serial = report._all_figures(dirs, results)
    names = {name for name, _ in split[0]}
    assert names == {"curves", "entropy_law", "predicted_vs_realized", "quadrants", "paired"} and split == serial
    monkeypatch.setattr(report.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(report.sys, "executable", "false")  # the second process fails: its share is drawn here
    assert report._all_figures(dirs, results) == serial
