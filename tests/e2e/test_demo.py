"""The main job end to end on the quick pair (short RLVR runs) and its parallel RLVR workers."""

from __future__ import annotations

import dataclasses

import pytest


def test_demo_quick_writes_every_run_dir_and_a_self_contained_report(toy_pair_quick, tmp_path, monkeypatch):
    import json

    from posttrain_probe.demo import run_demo, steps
    from posttrain_probe.results import is_run_dir
    from posttrain_probe.verdict import FIELDS

    monkeypatch.setenv("POSTTRAIN_PROBE_CACHE", str(toy_pair_quick.root.parent.parent))
    report = run_demo(tmp_path / "demo", quick=True, progress=False, rlvr_steps=3, arms=("grpo", "clip_cov"))
    assert {name for name, _ in steps()} >= {"tracing", "patching", "truth", "neurons", "refusal", "dynamics", "drift"}
    for name, _ in steps():
        assert is_run_dir(tmp_path / "demo" / name), name
    rows = json.loads((tmp_path / "demo" / "verdicts.json").read_text())
    assert rows and all(set(FIELDS) <= set(r) for r in rows)
    html = report.read_text()
    assert "Verdicts" in html and "data:image/png;base64," in html
    assert "http://" not in html and "https://" not in html  # opens with no network
    assert any((tmp_path / "demo" / "figures").glob("*.png"))
    mtime = report.stat().st_mtime_ns
    run_demo(tmp_path / "demo", quick=True, progress=False, rlvr_steps=3, arms=("grpo", "clip_cov"))
    assert (tmp_path / "demo" / "neurons" / "result.json").exists() and report.stat().st_mtime_ns >= mtime


def _ctx(demo, tmp_path, toy, arms):
    """A quick demo context with 2-step runs of `arms` on one seed."""
    return demo.DemoContext(tmp_path / "demo", "quick", 0, False, 2, arms, "cpu", toy=toy, rlvr_seeds=1)


def _break(monkeypatch, demo, tmp_path, arm: str) -> None:
    """The runs of `arm` get a data file that does not exist, so their worker fails; two workers always."""
    from posttrain_probe.rlvr import pool

    good = demo._rlvr_configs

    def configs(ctx):
        out = good(ctx)
        return {
            k: dataclasses.replace(c, data=str(tmp_path / "missing.jsonl")) if k.startswith(f"{arm}_seed") else c
            for k, c in out.items()
        }

    monkeypatch.setattr(demo, "_rlvr_configs", configs)
    monkeypatch.setattr(pool, "default_workers", lambda device, n: 2)


def test_a_failing_parallel_rlvr_run_raises_one_line_and_leaves_no_run_dir(toy_pair_quick, tmp_path, monkeypatch):
    from posttrain_probe import demo

    monkeypatch.setenv("POSTTRAIN_PROBE_CACHE", str(toy_pair_quick.root.parent.parent))
    ctx = _ctx(demo, tmp_path, toy_pair_quick, ("grpo", "clip_cov"))
    _break(monkeypatch, demo, tmp_path, "clip_cov")
    with pytest.raises(RuntimeError, match=r"RLVR run 'clip_cov_seed0' failed .*missing\.jsonl") as err:
        demo._rlvr_runs(ctx)
    assert "\n" not in str(err.value) and "posttrain-probe rlvr train --config" in str(err.value)
    assert not (tmp_path / "demo" / "rlvr" / "clip_cov_seed0").exists()


def test_a_failing_worker_keeps_the_runs_that_finished_and_removes_the_rest(toy_pair_quick, tmp_path, monkeypatch):
    from posttrain_probe import demo

    monkeypatch.setenv("POSTTRAIN_PROBE_CACHE", str(toy_pair_quick.root.parent.parent))
    ctx = _ctx(demo, tmp_path, toy_pair_quick, ("grpo", "clip_cov", "steer"))  # worker 0: grpo, steer; 1: clip_cov
    good = demo._rlvr_configs
    _break(monkeypatch, demo, tmp_path, "steer")
    with pytest.raises(RuntimeError, match=r"RLVR run 'steer_seed0' failed"):
        demo._rlvr_runs(ctx)
    rlvr = tmp_path / "demo" / "rlvr"
    assert len((rlvr / "grpo_seed0" / "metrics.jsonl").read_text().splitlines()) == 2  # finished before steer failed
    assert not (rlvr / "steer_seed0").exists()
    if (rlvr / "clip_cov_seed0").exists():  # finished before the failure was seen, else killed and removed
        assert len((rlvr / "clip_cov_seed0" / "metrics.jsonl").read_text().splitlines()) == 2
    monkeypatch.setattr(demo, "_rlvr_configs", good)
    runs = demo._rlvr_runs(ctx)  # the rerun trains only what is missing
    assert all(len((r / "metrics.jsonl").read_text().splitlines()) == 2 for r in runs)
    assert "rlvr_steer_seed0" in ctx.timings


def test_parallel_rlvr_runs_are_paired_arms_times_seeds_in_their_own_processes(toy_pair_quick, tmp_path, monkeypatch):
    import json

    from posttrain_probe import demo
    from posttrain_probe.rlvr import pool

    monkeypatch.setenv("POSTTRAIN_PROBE_CACHE", str(toy_pair_quick.root.parent.parent))
    ctx = _ctx(demo, tmp_path, toy_pair_quick, ("null", "steer"))
    ctx.rlvr_seeds = 2
    monkeypatch.setattr(pool, "default_workers", lambda device, n: 2)
    runs = demo._rlvr_runs(ctx)
    names = ["grpo_seed0", "grpo_seed1", "null_seed0", "null_seed1", "steer_seed0", "steer_seed1"]
    assert [r.name for r in runs] == names  # the null arm's baseline (grpo) is added
    cfg = {r.name: json.loads((r / "config.json").read_text()) for r in runs}
    for r in runs:
        assert len((r / "metrics.jsonl").read_text().splitlines()) == 2
        assert (r.parent / f"{r.name}.yaml").exists() and cfg[r.name]["arm"] == r.name
    assert cfg["null_seed1"]["lr"] == pytest.approx(cfg["grpo_seed1"]["lr"] * 1.01)
    assert cfg["steer_seed0"]["seed"] == 0 and cfg["steer_seed1"]["seed"] == 1
    assert cfg["steer_seed1"]["loss"]["name"] == "steer" and cfg["grpo_seed1"]["loss"]["name"] == "grpo"
    assert set(ctx.timings) == {f"rlvr_{n}" for n in names}
