"""The demo's verdicts from numbers (no models) and the RLVR batch entry point's argument check."""

from __future__ import annotations

import pytest

from posttrain_probe.analysis.verdicts import dynamics_verdicts
from posttrain_probe.results import RunResult


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


def test_cov_intervention_verdict_has_one_row_per_method():
    rows = {v["claim"]: v for v in dynamics_verdicts(_dyn(0.1, 0.3))}
    assert {"Clip-Cov keeps entropy higher than GRPO", "KL-Cov keeps entropy higher than GRPO"} <= set(rows)
    assert all(v["verdict"] in ("reproduced", "refuted", "inconclusive") for v in rows.values())


def test_no_reward_signal_is_inconclusive_not_a_negative_result():
    res = _dyn(0.1, 0.3)
    res.summary["grpo"].update(accuracy_first=0.0, accuracy_last=0.0)
    (v,) = dynamics_verdicts(res)
    assert v["verdict"] == "inconclusive"


def test_every_probe_and_the_toy_report_reach_the_verdicts_in_paper_order():
    from posttrain_probe.toyworld.verdicts import new_knowledge_verdicts
    from posttrain_probe.verdicts import collect_verdicts

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
    out = collect_verdicts([_dyn(0.2, 0.3), patching, tracing], extra={"patching": new_knowledge_verdicts(toy)})
    claims = [(v["claim"].split(" (")[0], v["verdict"]) for v in out]
    assert claims[:3] == [
        ("post-training does not move where facts are stored", "inconclusive"),  # no per-fact maps saved
        ("post-training adapts base representations", "inconclusive"),  # no per-pair maps saved
        ("post-training develops new knowledge", "reproduced"),
    ]
    assert all(v["paper"].startswith("Cui") or v["paper"].startswith("Hao") for v in out[3:])
    toy = {"fact_recall": {"base_sft_new_facts": 0.6, "post_sft_new_facts": 0.7, "n_sft_new": 400}}
    assert new_knowledge_verdicts(toy)[0]["verdict"] == "refuted"


def test_rlvr_batch_needs_config_and_out_pairs(capsys):
    from posttrain_probe.rlvr import batch

    assert batch.main([]) == 2
    assert batch.main(["only-a-config.yaml"]) == 2
    assert "CONFIG OUT" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("gap", "total_share", "control_std", "expected"),
    [
        (0.05, 0.05, 0.05, "reproduced"),  # small share, resolvable: 0.05 ± 1.96·0.05 < 0.2
        (0.05, 0.80, 0.10, "refuted"),  # the selected neurons carry most of the gap
        (0.05, 0.30, 0.10, "inconclusive"),  # interval straddles 0.2
        (0.05, 0.05, 0.37, "inconclusive"),  # random sets swing the gap more than the 20% threshold
        (0.005, 0.05, 0.10, "inconclusive"),  # no gap to explain
    ],
)
def test_entropy_neuron_verdict_needs_a_gap_and_resolution(gap, total_share, control_std, expected):
    from posttrain_probe.probes.neurons.verdicts import verdicts as neuron_verdicts

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
        return RunResult("b", {}, {}), None

    monkeypatch.setattr(toyworld, "build", lambda *a, **k: SimpleNamespace(report={}))
    monkeypatch.setattr(demo, "steps", lambda: [("a", lambda ctx: (RunResult("a", {}, {}), None)), ("b", step_b)])
    monkeypatch.setattr(report, "build_report", lambda run_dirs, out, **kw: out)
    monkeypatch.setattr(verdicts, "collect_verdicts", lambda *a, **k: [])
    with pytest.raises(KeyboardInterrupt):
        demo.run_demo(tmp_path / "demo", progress=False)

    def times() -> dict[str, str]:
        return dict(line.split("\t") for line in (tmp_path / "demo" / "timings.txt").read_text().splitlines())

    first = times()
    assert set(first) == {"toyworld", "a"}
    demo.run_demo(tmp_path / "demo", progress=False)
    assert set(times()) == {"toyworld", "a", "b", "total"} and times()["a"] == first["a"]  # was: a lost


def test_a_null_rate_in_the_toy_report_reads_as_nan_in_the_verdicts():
    from posttrain_probe.toyworld.verdicts import new_knowledge_verdicts

    fr = {"base_sft_new_facts": None, "post_sft_new_facts": None, "n_sft_new": 0}  # written as null, was NaN
    (v,) = new_knowledge_verdicts({"fact_recall": fr})
    assert v.verdict == "inconclusive"
