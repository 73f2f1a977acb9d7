"""The main job end to end on the quick pair (short RLVR runs) and its parallel RLVR workers."""

from __future__ import annotations

import pytest


def test_demo_quick_writes_every_run_dir_and_a_self_contained_report(toy_pair_quick, tmp_path, monkeypatch):
    import json

    from posttrain_probe.demo import run_demo, steps
    from posttrain_probe.results import is_run_dir
    from posttrain_probe.verdict import FIELDS

    monkeypatch.setenv("POSTTRAIN_PROBE_CACHE", str(toy_pair_quick.root.parent.parent))
    report = run_demo(tmp_path / "demo", quick=True, progress=False, rlvr_steps=3, losses=("grpo", "clip_cov"))
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
    run_demo(tmp_path / "demo", quick=True, progress=False, rlvr_steps=3, losses=("grpo", "clip_cov"))
    assert (tmp_path / "demo" / "neurons" / "result.json").exists() and report.stat().st_mtime_ns >= mtime


def test_a_failing_parallel_rlvr_run_raises_one_line_and_leaves_no_run_dir(toy_pair_quick, tmp_path, monkeypatch):
    import dataclasses

    from posttrain_probe import demo

    monkeypatch.setenv("POSTTRAIN_PROBE_CACHE", str(toy_pair_quick.root.parent.parent))
    ctx = demo.DemoContext(tmp_path / "demo", "quick", 0, False, 2, ("grpo", "clip_cov"), "cpu", toy=toy_pair_quick)
    good = demo._rlvr_config

    def config(ctx, loss):  # clip_cov gets a data file that does not exist, so its subprocess fails
        cfg = good(ctx, loss)
        return dataclasses.replace(cfg, data=str(tmp_path / "missing.jsonl")) if loss == "clip_cov" else cfg

    monkeypatch.setattr(demo, "_rlvr_workers", lambda ctx, n: 2)
    monkeypatch.setattr(demo, "_rlvr_config", config)
    with pytest.raises(RuntimeError, match=r"RLVR run 'clip_cov' failed .*missing\.jsonl") as err:
        demo._rlvr_runs(ctx)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "demo" / "rlvr" / "clip_cov").exists()


def test_a_failing_worker_keeps_the_runs_that_finished_and_removes_the_rest(toy_pair_quick, tmp_path, monkeypatch):
    import dataclasses

    from posttrain_probe import demo

    monkeypatch.setenv("POSTTRAIN_PROBE_CACHE", str(toy_pair_quick.root.parent.parent))
    losses = ("grpo", "clip_cov", "steer")  # worker 0: grpo then steer (fails), worker 1: clip_cov
    ctx = demo.DemoContext(tmp_path / "demo", "quick", 0, False, 2, losses, "cpu", toy=toy_pair_quick)
    good = demo._rlvr_config

    def config(ctx, loss):
        cfg = good(ctx, loss)
        return dataclasses.replace(cfg, data=str(tmp_path / "missing.jsonl")) if loss == "steer" else cfg

    monkeypatch.setattr(demo, "_rlvr_workers", lambda ctx, n: 2)
    monkeypatch.setattr(demo, "_rlvr_config", config)
    with pytest.raises(RuntimeError, match=r"RLVR run 'steer' failed"):
        demo._rlvr_runs(ctx)
    rlvr = tmp_path / "demo" / "rlvr"
    assert len((rlvr / "grpo" / "metrics.jsonl").read_text().splitlines()) == 2  # finished before steer failed
    assert not (rlvr / "steer").exists()
    if (rlvr / "clip_cov").exists():  # finished before the failure was seen, else killed and removed
        assert len((rlvr / "clip_cov" / "metrics.jsonl").read_text().splitlines()) == 2
    monkeypatch.setattr(demo, "_rlvr_config", good)
    runs = demo._rlvr_runs(ctx)  # the rerun trains only what is missing
    assert all(len((r / "metrics.jsonl").read_text().splitlines()) == 2 for r in runs)
    assert "rlvr_steer" in ctx.timings


def test_parallel_rlvr_runs_finish_in_their_own_processes(toy_pair_quick, tmp_path, monkeypatch):
    from posttrain_probe import demo

    monkeypatch.setenv("POSTTRAIN_PROBE_CACHE", str(toy_pair_quick.root.parent.parent))
    ctx = demo.DemoContext(tmp_path / "demo", "quick", 0, False, 2, ("grpo", "steer"), "cpu", toy=toy_pair_quick)
    monkeypatch.setattr(demo, "_rlvr_workers", lambda ctx, n: 2)
    runs = demo._rlvr_runs(ctx)
    assert [r.name for r in runs] == ["grpo", "steer"]
    for r in runs:
        assert len((r / "metrics.jsonl").read_text().splitlines()) == 2
        assert (r.parent / f"{r.name}.yaml").exists()
    assert set(ctx.timings) == {"rlvr_grpo", "rlvr_steer"}
