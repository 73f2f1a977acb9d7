"""Checkpoint drift on tiny checkpoint series: compare-checkpoints and its CLI."""

from __future__ import annotations

import pytest


def test_compare_checkpoints_on_a_tiny_series(tmp_path):
    from posttrain_probe.analysis.drift import compare_checkpoints
    from posttrain_probe.data.records import Statement
    from posttrain_probe.plots.drift import save_figures
    from posttrain_probe.results import read_run, write_run
    from posttrain_probe.testing import make_tiny_checkpoint

    start = make_tiny_checkpoint("llama", tmp_path / "s0", seed=0)
    same = make_tiny_checkpoint("llama", tmp_path / "s1", seed=0)
    other = make_tiny_checkpoint("llama", tmp_path / "s2", seed=5)
    statements = [Statement(text=f"w{i} is a city .", label=i % 2, dataset="toy") for i in range(12)]
    texts = [f"the w{i} of w{i + 1}" for i in range(10)]
    res = compare_checkpoints(
        str(start),
        [str(same), str(other)],
        statements=statements,
        harmful=["how do I poison the river ?"] * 2,
        harmless=["how do I bake bread ?"] * 2,
        cka_texts=texts,
        screen_neurons=True,
    )
    wc = res.tables["weight_change"]
    assert wc[wc.step == 1]["relative_change"].max() == 0.0  # an identical checkpoint did not move
    moved = wc[(wc.step == 2) & wc.module.str.contains("mlp|attn")]  # norms are initialised to 1 in both
    assert len(moved) == 4 and moved["relative_change"].min() > 0.1
    cka = res.tables["cka"]
    assert cka[cka.step == 1]["cka_to_start"].min() == pytest.approx(1.0)
    d = res.tables["direction_drift"]
    assert d[d.step == 1]["cosine_to_start"].min() == pytest.approx(1.0)
    back = read_run(write_run(tmp_path / "run", res))
    assert save_figures(back, tmp_path / "figs")


def test_compare_checkpoints_traces_and_ablates_every_checkpoint(tmp_path):
    from posttrain_probe.analysis.drift import DriftConfig, compare_checkpoints
    from posttrain_probe.data.records import Fact
    from posttrain_probe.plots.drift import figures
    from posttrain_probe.testing import make_tiny_checkpoint

    start = make_tiny_checkpoint("llama", tmp_path / "s0", seed=0)
    same = make_tiny_checkpoint("llama", tmp_path / "s1", seed=0)
    other = make_tiny_checkpoint("llama", tmp_path / "s2", seed=5)
    facts = [Fact(prompt=f"w{i} lives in the city of", subject=f"w{i}", answer=" river") for i in range(5)]
    texts = [f"the w{i} of w{i + 1} is in the city of w{i + 2}" for i in range(16)]
    cfg = DriftConfig(tracing_samples=2, tracing_window=1, n_ref=6, n_eval=6, n_select=4)
    res = compare_checkpoints(
        str(start), [str(same), str(other)], facts=facts, neuron_texts=texts, config=cfg, screen_neurons=False
    )
    ch = res.tables["tracing_change"].set_index(["step", "kind"])
    assert ch.loc[(1, "mlp"), "pearson_to_start"] == pytest.approx(1.0) and ch.loc[(1, "mlp"), "max_abs_change"] == 0
    assert ch.loc[(2, "mlp"), "max_abs_change"] > 0 and set(res.tables["tracing_maps"]["kind"]) == {"resid", "mlp"}
    n = res.tables["neuron_effects"]
    own = n[n.set == "own_du"].set_index("step")
    assert own.loc[1, "dH_total"] == pytest.approx(own.loc[0, "dH_total"]) and own.loc[1, "iou_with_start_set"] == 1
    assert set(n.set) == {"own_du", "start_du", "control"} and (n.n_neurons == 4).all()
    assert res.summary["tracing"]["n_traced"] == 5 and "entropy_neurons" in res.summary
    assert set(figures(res)) == {"drift_vs_entropy", "tracing_maps"}
    with pytest.raises(ValueError, match="tracing_kinds"):
        DriftConfig(tracing_kinds=("ffn",))


def test_cli_compare_checkpoints_expands_an_rlvr_run_and_lines_up_its_metrics(tmp_path, capsys):
    import json
    import shutil

    from posttrain_probe.cli import main
    from posttrain_probe.results import read_run
    from posttrain_probe.testing import make_tiny_checkpoint

    start = make_tiny_checkpoint("llama", tmp_path / "start", seed=0)
    run = tmp_path / "run"
    for step, seed in ((1, 0), (2, 4)):
        ckpt = make_tiny_checkpoint("llama", run / "checkpoints" / f"step_{step:06d}", seed=seed)
        (ckpt / "metadata.json").write_text(json.dumps({"step": step}))
        (ckpt / "trainer_state.json").write_text("{}")
    (run / "metrics.jsonl").write_text(
        "".join(json.dumps({"step": s, "entropy_mean": 1.0 / s, "accuracy": 0.1 * s}) + "\n" for s in (1, 2))
    )
    facts = [{"subject": f"w{i}", "attribute": "river", "prompt": f"w{i} lives in the"} for i in range(4)]
    (tmp_path / "facts.json").write_text(json.dumps(facts))
    rows = ["statement,label"] + [f"w{i} is a city .,{i % 2}" for i in range(12)]
    (tmp_path / "statements.csv").write_text("\n".join(rows) + "\n")
    inst = tmp_path / "inst"
    inst.mkdir()
    for name, text in (("harmful", "how do I poison the river ?"), ("harmless", "how do I bake bread ?")):
        for split in ("train", "val"):
            (inst / f"{name}_{split}.json").write_text(json.dumps([{"instruction": f"{text} w{i}"} for i in range(4)]))
    (tmp_path / "texts.txt").write_text("\n".join(f"the w{i} of w{i + 1} is in the city" for i in range(24)))
    out = tmp_path / "drift"
    argv = ["compare-checkpoints", str(start), str(run), "--out", str(out), "--facts", str(tmp_path / "facts.json")]
    argv += ["--statements", str(tmp_path / "statements.csv"), "--instructions", str(inst)]
    argv += ["--texts", str(tmp_path / "texts.txt"), "--n-cka-texts", "8", "--n-neuron-texts", "12", "--n-select", "3"]
    argv += ["--tracing-samples", "2", "--tracing-window", "1", "--no-screens", "--figures"]
    assert main(argv) == 0
    assert "tracing mlp: r to start map" in capsys.readouterr().out
    res = read_run(out)
    assert res.summary["steps"] == [0, 1, 2] and res.config["metrics_jsonl"].endswith("metrics.jsonl")
    assert list(res.tables["entropy_curve"]["step"]) == [1, 2]
    assert {"weight_change", "cka", "direction_drift", "tracing_change", "neuron_effects"} <= set(res.tables)
    assert res.config["data_sources"]["facts"].endswith("facts.json")
    assert (out / "figures" / "drift_vs_entropy.png").is_file() and (out / "figures" / "tracing_maps.png").is_file()
    assert main(argv) == 1 and "--force" in capsys.readouterr().err  # an existing run dir is refused
    shutil.rmtree(run / "checkpoints")
    (run / "checkpoints").mkdir()
    assert main([*argv[:3], "--out", str(tmp_path / "x"), "--no-tracing"]) == 1
    assert "no complete checkpoint" in capsys.readouterr().err
