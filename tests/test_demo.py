"""The main job end to end on the quick pair (short RLVR runs), and the report/verdict layer on its own."""

from __future__ import annotations

import pytest

from posttrain_probe.results import RunResult
from posttrain_probe.verdicts import dynamics_verdicts


def test_demo_quick_writes_every_run_dir_and_a_self_contained_report(toy_pair_quick, tmp_path, monkeypatch):
    from posttrain_probe.demo import STEPS, run_demo
    from posttrain_probe.results import is_run_dir

    monkeypatch.setenv("POSTTRAIN_PROBE_CACHE", str(toy_pair_quick.root.parent.parent))
    report = run_demo(tmp_path / "demo", quick=True, progress=False, rlvr_steps=3, losses=("grpo", "clip_cov"))
    assert {name for name, _ in STEPS} >= {"neurons", "refusal", "dynamics", "drift"}
    for name, _ in STEPS:
        assert is_run_dir(tmp_path / "demo" / name), name
    html = report.read_text()
    assert "Verdicts" in html and "data:image/png;base64," in html
    assert "http://" not in html and "https://" not in html  # opens with no network
    assert any((tmp_path / "demo" / "figures").glob("*.png"))
    mtime = report.stat().st_mtime_ns
    run_demo(tmp_path / "demo", quick=True, progress=False, rlvr_steps=3, losses=("grpo", "clip_cov"))
    assert (tmp_path / "demo" / "neurons" / "result.json").exists() and report.stat().st_mtime_ns >= mtime


def _dyn(grpo_entropy_last: float, cov_entropy_last: float) -> RunResult:
    def s(h0, h1, a0, a1):
        return {
            "steps": 50,
            "accuracy_first": a0,
            "accuracy_last": a1,
            "entropy_first": h0,
            "entropy_last": h1,
            "entropy_drop_frac": 1 - h1 / h0,
            "law_a": 0.3,
            "law_b": 1.0,
            "law_r2": 0.9,
            "law_ceiling": 0.7,
            "share_steps_cov_positive": 0.95,
        }

    return RunResult(
        "rlvr_dynamics",
        {},
        {
            "grpo": s(0.5, grpo_entropy_last, 0.3, 0.6),
            "clip_cov": s(0.5, cov_entropy_last, 0.3, 0.6),
            "kl_cov": s(0.5, cov_entropy_last, 0.3, 0.6),
        },
    )


@pytest.mark.parametrize(("cov_last", "expected"), [(0.3, "reproduced"), (0.1, "not reproduced")])
def test_cov_intervention_verdict_follows_the_numbers(cov_last, expected):
    rows = {v["claim"]: v for v in dynamics_verdicts(_dyn(0.1, cov_last))}
    assert rows["Clip-Cov and KL-Cov keep entropy higher than GRPO"]["verdict"] == expected
    assert rows["without intervention, entropy collapses while performance rises"]["verdict"] == "reproduced"


def test_no_reward_signal_is_inconclusive_not_a_negative_result():
    res = _dyn(0.1, 0.3)
    res.summary["grpo"].update(accuracy_first=0.0, accuracy_last=0.0)
    (v,) = dynamics_verdicts(res)
    assert v["verdict"] == "inconclusive"


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


def test_every_probe_and_the_toy_report_reach_the_verdicts_in_paper_order():
    from posttrain_probe.verdicts import verdicts

    tracing = RunResult(
        "causal_tracing",
        {},
        {
            "n_common": 40,
            "n_known": {"base": 41, "post": 40},
            "pearson_base_post": {"resid": {"class_map": 0.95}, "mlp": {"class_map": 0.6}},
        },
    )
    patching = RunResult(
        "truth_patching",
        {},
        {
            "accuracy": {"base": 0.9, "post": 0.85},
            "comparisons": {"base_to_post_vs_post": {"pearson": 0.9}, "base_vs_post": {"pearson": 0.8}},
        },
    )
    toy = {"fact_recall": {"base_sft_new_facts": 0.05, "post_sft_new_facts": 0.8, "n_sft_new": 20}}
    out = verdicts({"dynamics": _dyn(0.2, 0.3), "patching": patching, "tracing": tracing}, toy)
    claims = [(v["claim"].split(" (")[0], v["verdict"]) for v in out]
    assert claims[:3] == [
        ("post-training does not move where facts are stored", "mixed"),  # mlp 0.6 < 0.8
        ("post-training adapts base representations", "reproduced"),
        ("post-training develops new knowledge", "reproduced"),
    ]
    assert all(v["paper"].startswith("Cui") or v["paper"].startswith("Hao") for v in out[3:])
    assert verdicts({}, {"fact_recall": {"base_sft_new_facts": 0.6, "post_sft_new_facts": 0.7}})[0]["verdict"] == (
        "not reproduced"
    )


def test_rlvr_batch_needs_config_and_out_pairs(capsys):
    from posttrain_probe.rlvr import batch

    assert batch.main([]) == 2
    assert batch.main(["only-a-config.yaml"]) == 2
    assert "CONFIG OUT" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("gap", "total_share", "control_std", "expected"),
    [
        (0.05, 0.05, 0.10, "reproduced"),  # small share, resolvable
        (0.05, 0.80, 0.10, "not reproduced"),  # the selected neurons carry most of the gap
        (0.05, 0.30, 0.10, "mixed"),
        (0.05, 0.05, 0.37, "inconclusive"),  # random sets swing the gap more than the 20% threshold
        (0.005, 0.05, 0.10, "inconclusive"),  # no gap to explain
    ],
)
def test_entropy_neuron_verdict_needs_a_gap_and_resolution(gap, total_share, control_std, expected):
    from posttrain_probe.verdicts import neuron_verdicts

    direct = {"share_both": 0.9, "control_share_both_mean": 0.0, "control_share_both_std": 0.9}  # listed, not judged
    total = {"share_both": total_share, "control_share_both_mean": 0.0, "control_share_both_std": control_std}
    res = RunResult(
        "entropy_neurons",
        {},
        {
            "explained_share": {"du_own_total": total, "du_own_direct": direct, "du_base_total": direct},
            "base": {"entropy": 1.0},
            "post": {"entropy": 1.0 + gap},
        },
    )
    (v,) = neuron_verdicts(res)
    assert v["verdict"] == expected
    assert "du_own_direct" in v["evidence"] and "du_base_total" not in v["evidence"]


def test_a_resumed_demo_keeps_the_times_of_the_steps_it_skips(tmp_path, monkeypatch):
    """Ctrl-C during the second step, then a rerun: timings.txt still has the first step's time."""
    from types import SimpleNamespace

    from posttrain_probe import demo, report, toyworld, verdicts

    calls = {"b": 0}

    def step_b(ctx):
        calls["b"] += 1
        if calls["b"] == 1:
            raise KeyboardInterrupt
        return RunResult("b", {}, {})

    monkeypatch.setattr(toyworld, "build", lambda *a, **k: SimpleNamespace(report={}))
    monkeypatch.setattr(demo, "STEPS", [("a", lambda ctx: RunResult("a", {}, {})), ("b", step_b)])
    monkeypatch.setattr(report, "build_report", lambda run_dirs, out, **kw: out)
    monkeypatch.setattr(verdicts, "verdicts", lambda *a: [])
    with pytest.raises(KeyboardInterrupt):
        demo.run_demo(tmp_path / "demo", progress=False)

    def times() -> dict[str, str]:
        return dict(line.split("\t") for line in (tmp_path / "demo" / "timings.txt").read_text().splitlines())

    first = times()
    assert set(first) == {"toyworld", "a"}
    demo.run_demo(tmp_path / "demo", progress=False)
    assert set(times()) == {"toyworld", "a", "b", "total"} and times()["a"] == first["a"]  # was: a lost


def test_a_null_rate_in_the_toy_report_reads_as_nan_in_the_verdicts():
    from posttrain_probe.verdicts import new_knowledge_verdicts

    fr = {"base_sft_new_facts": None, "post_sft_new_facts": None, "n_sft_new": 0}  # written as null, was NaN
    (v,) = new_knowledge_verdicts({"fact_recall": fr})
    assert v["verdict"] == "not reproduced" and "base nan, post nan" in v["evidence"]
