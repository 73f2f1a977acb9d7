"""The paired multi-seed design (rlvr.paired), its effects table (analysis.paired) and the noise-calibrated verdict,
checked against hand computations on synthetic summaries."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from posttrain_probe.analysis.paired import dose_table, paired_effects
from posttrain_probe.analysis.verdicts import dynamics_verdicts
from posttrain_probe.results import RunResult
from posttrain_probe.rlvr.config import ConfigError, RLVRConfig
from posttrain_probe.rlvr.losses import LossConfig
from posttrain_probe.rlvr.paired import ARMS, dose_arms, label, paired_configs, parse_label, resolve_arms
from posttrain_probe.rlvr.run import same_config


def test_paired_configs_share_everything_but_the_intervention_and_add_baselines():
    base = RLVRConfig(steps=5, lr=2e-4, threads=2)
    cfgs = paired_configs(base, ["null", "steer_paper"], seeds=[3, 4])
    assert list(cfgs) == [
        "grpo_seed3", "grpo_seed4", "steer_baseline_paper_seed3", "steer_baseline_paper_seed4",
        "null_seed3", "null_seed4", "steer_paper_seed3", "steer_paper_seed4",
    ]  # fmt: skip
    g, n, sp = cfgs["grpo_seed4"], cfgs["null_seed4"], cfgs["steer_paper_seed4"]
    assert g.seed == n.seed == sp.seed == 4 and g.arm == "grpo_seed4"
    assert n.lr == pytest.approx(2e-4 * 1.01) and n.loss == g.loss and g.lr == 2e-4
    assert sp.loss == LossConfig.from_recipe("steer_paper") and sp.lr == g.lr
    strip = {"loss", "lr", "seed", "arm"}
    assert {k: v for k, v in n.to_dict().items() if k not in strip} == {
        k: v for k, v in cfgs["grpo_seed3"].to_dict().items() if k not in strip
    }
    assert ARMS["steer_paper"].baseline == "steer_baseline_paper" and ARMS["clip_cov"].baseline == "grpo"
    with pytest.raises(ConfigError, match="seeds"):
        paired_configs(base, ["grpo"], seeds=[1, 1])
    with pytest.raises(ConfigError, match="unknown arm 'sgd'"):
        paired_configs(base, ["sgd"], seeds=[0])


def test_labels_round_trip_and_dose_arms_reuse_the_plain_arm_at_its_preset():
    assert parse_label(label("clip_cov@clip_cov_ratio=0.05", 12)) == ("clip_cov@clip_cov_ratio=0.05", 12)
    assert parse_label("grpo") == ("grpo", 0)
    arms = dose_arms("clip_cov:clip_cov_ratio=0.005,0.02;steer:steer_lambda_min=0.5")
    assert [a.name for a in arms] == ["clip_cov@clip_cov_ratio=0.005", "clip_cov", "steer@steer_lambda_min=0.5"]
    assert arms[1].dose == ("clip_cov_ratio", 0.02)  # the toy preset's own ratio: the plain arm, trained once
    cfg = arms[0].config(RLVRConfig(), 0)
    assert cfg.loss.clip_cov_ratio == 0.005 and cfg.loss.name == "clip_cov" and cfg.loss.cov_window == "percentile"
    (a,) = resolve_arms(["kl_cov@kl_cov_coef=4"])
    assert a.config(RLVRConfig(), 1).loss.kl_cov_coef == 4.0 and a.method == "kl_cov"
    with pytest.raises(ConfigError, match="no dose–response for 'grpo'"):
        dose_arms("grpo:lr=1")
    with pytest.raises(ConfigError, match="METHOD:PARAM=V1,V2"):
        dose_arms("clip_cov:clip_cov_ratio")
    with pytest.raises(ConfigError, match="clip_cov_ratio"):
        dose_arms("clip_cov:clip_cov_ratio=2")  # outside (0, 1]


def test_same_config_ignores_only_how_a_run_is_executed():
    a = RLVRConfig(threads=2, progress=True)
    assert same_config(a.to_dict(), RLVRConfig(threads=1, progress=False))
    assert not same_config(a.to_dict(), RLVRConfig(threads=1, seed=1))


def _row(h_eval: float, acc: float = 0.5, h0: float = 1.0) -> dict:
    return dict(
        steps=50, accuracy_first=0.2, accuracy_last=acc, entropy_first=h0, entropy_last=h_eval * 1.1,
        entropy_drop_frac=1 - h_eval * 1.1 / h0, law_a=0.3, law_b=1.0, law_r2=0.9, law_ceiling=0.7,
        share_steps_cov_positive=0.9, eval_k=2, eval_entropy_first=h0, eval_entropy_last_k=h_eval,
        eval_entropy_drop_frac=1 - h_eval / h0, eval_accuracy_first=0.1, eval_accuracy_last_k=acc,
        loss={"name": "clip_cov", "clip_cov_ratio": 0.02},
    )  # fmt: skip


def _study(arm_ratios: dict[str, list[float]], null: list[float] | None = None) -> dict:
    s = {}
    grpo = [0.40, 0.45, 0.38, 0.42, 0.50]
    for k, h in enumerate(grpo):
        s[f"grpo_seed{k}"] = _row(h, acc=0.6)
        for arm, ratios in arm_ratios.items():
            s[f"{arm}_seed{k}"] = _row(h * ratios[k], acc=0.55 + 0.01 * k)
        if null is not None:
            s[f"null_seed{k}"] = _row(h * null[k], acc=0.6)
    return s


def test_paired_effects_are_per_seed_ratios_with_a_t_interval():
    ratios = [1.5, 1.2, 1.4, 0.9, 1.3]
    eff = paired_effects(_study({"clip_cov": ratios})).set_index("arm")
    row = eff.loc["clip_cov"]
    r = np.array(ratios)
    half = stats.t.ppf(0.975, 4) * r.std(ddof=1) / math.sqrt(5)
    assert row.entropy_ratio == pytest.approx(r.mean()) and row.measure == "eval" and row.n_seeds == 5
    assert (row.ratio_lo, row.ratio_hi) == pytest.approx((r.mean() - half, r.mean() + half))
    d = np.array([0.55 + 0.01 * k - 0.6 for k in range(5)])
    assert row.acc_diff == pytest.approx(d.mean()) and row.baseline == "grpo"
    assert "grpo" not in eff.index  # a baseline is not compared with itself


def test_without_evaluations_the_effects_fall_back_to_the_last_training_step():
    s = _study({"kl_cov": [1.1] * 5})
    for v in s.values():
        v["eval_entropy_last_k"] = math.nan
    row = paired_effects(s).set_index("arm").loc["kl_cov"]
    assert row.measure == "train" and row.entropy_ratio == pytest.approx(1.1)


@pytest.mark.parametrize(
    ("null", "ratios", "word"),
    [
        (None, [1.06, 1.05, 1.07, 1.06, 1.05], "reproduced"),  # above 1, no null arm to calibrate against
        ([0.98, 1.10, 1.02, 1.12, 0.97], [1.06, 1.05, 1.07, 1.06, 1.05], "refuted"),  # inside what chaos does
        ([0.99, 1.01, 1.0, 1.02, 0.98], [1.06, 1.05, 1.07, 1.06, 1.05], "reproduced"),  # beyond chaos
        ([0.99, 1.01, 1.0, 1.02, 0.98], [0.8, 1.3, 0.9, 1.2, 1.0], "inconclusive"),
    ],
)
def test_keep_entropy_verdict_is_calibrated_by_the_null_arm(null, ratios, word):
    res = RunResult("rlvr_dynamics", {}, _study({"clip_cov": ratios}, null))
    v = {x.claim: x for x in dynamics_verdicts(res)}["Clip-Cov keeps entropy higher than GRPO"]
    assert v.verdict == word, v.evidence
    assert v.estimate == pytest.approx(np.mean(ratios)) and v.n == 5
    if null is not None:
        n = np.array(null)
        hi = n.mean() + stats.t.ppf(0.975, 4) * n.std(ddof=1) / math.sqrt(5)
        assert v.threshold == pytest.approx(max(1.0, hi)) and "null arm" in v.evidence and "null arm" in v.rule
    else:
        assert v.threshold == 1.0


def test_collapse_over_seeds_reads_the_held_out_evaluations():
    res = RunResult("rlvr_dynamics", {}, _study({}))
    v = {x.claim: x for x in dynamics_verdicts(res)}["without intervention, entropy collapses while performance rises"]
    drops = [1 - h for h in (0.40, 0.45, 0.38, 0.42, 0.50)]
    assert v.estimate == pytest.approx(np.mean(drops)) and "held-out eval" in v.rule and v.verdict == "reproduced"


def test_steer_paper_is_judged_against_its_matched_baseline():
    s = _study({"steer_baseline_paper": [1.0] * 5, "steer_paper": [1.2, 1.25, 1.22, 1.18, 1.2]})
    v = {x.claim: x for x in dynamics_verdicts(RunResult("rlvr_dynamics", {}, s))}["STEER mitigates entropy collapse"]
    assert v.estimate == pytest.approx(1.21) and "its vanilla baseline" in v.evidence and v.verdict == "reproduced"


def test_dose_table_places_the_plain_arm_at_its_preset_value():
    s = _study(
        {"clip_cov": [1.2] * 5, "clip_cov@clip_cov_ratio=0.005": [1.05] * 5, "clip_cov@clip_cov_ratio=0.08": [1.6] * 5}
    )
    t = dose_table(s)
    assert list(t.dose_value) == [0.005, 0.02, 0.08] and list(t.entropy_ratio) == pytest.approx([1.05, 1.2, 1.6])
    assert set(t.method) == {"clip_cov"} and set(t.dose_param) == {"clip_cov_ratio"}


def test_curves_and_paired_figures_leave_dose_arms_to_the_dose_figures():
    from posttrain_probe.plots import dynamics as plots

    s = _study({"clip_cov": [1.2] * 5, "clip_cov@clip_cov_ratio=0.08": [1.6] * 5})
    paired = paired_effects(s)
    runs = sorted(s)
    curves = pd.DataFrame(
        [{"run": r, "step": k, "entropy_mean": 1.0 - 0.1 * k, "accuracy": 0.1 * k} for r in runs for k in range(3)]
    )
    res = RunResult("rlvr_dynamics", {}, s, tables={"curves": curves, "paired": paired})
    labels = [t.get_text() for t in plots.curves(res).legends[0].get_texts()]
    assert sorted(labels) == ["clip_cov (n=5)", "grpo (n=5)"]
    ticks = [t.get_text() for t in plots.paired(res).axes[0].get_yticklabels()]
    assert ticks == ["clip_cov / grpo"]
    assert set(plots.dose_response(RunResult("rlvr_dynamics", {}, s, tables={"dose_response": dose_table(s)})))
    only_doses = curves[curves.run.str.contains("@")]
    labels = [t.get_text() for t in plots.curves(RunResult("rlvr_dynamics", {}, s, tables={"curves": only_doses}))
              .legends[0].get_texts()]  # fmt: skip
    assert labels == ["clip_cov@clip_cov_ratio=0.08 (n=5)"]
