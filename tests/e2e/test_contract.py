"""The probe contract end to end: a probe written outside the package and registered with one line appears in
the CLI, the demo, the report and the verdict table; every caller gets the same depth-derived sizes."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from posttrain_probe import registry
from posttrain_probe.results import read_run

pytestmark = pytest.mark.slow


@pytest.fixture
def example_registered():
    registry.register("example", "tests.example_probe:PROBE")  # the one registry line
    yield registry.get("example")
    registry.unregister("example")


def test_a_registered_probe_appears_in_the_cli_demo_report_and_verdicts(
    example_registered, toy_pair_quick, tmp_path, monkeypatch
):
    from posttrain_probe import demo
    from posttrain_probe.cli import main
    from posttrain_probe.report import build_report
    from posttrain_probe.verdicts import collect_verdicts

    monkeypatch.setenv("POSTTRAIN_PROBE_CACHE", str(toy_pair_quick.root.parent.parent))
    base, post = str(toy_pair_quick.base_dir), str(toy_pair_quick.post_dir)
    out = tmp_path / "cli"
    assert main(["example-entropy", base, post, "--out", str(out), "--n-texts", "3", "--figures"]) == 0
    res = read_run(out)
    assert res.analysis == "example_entropy" and res.config["n_texts"] == 3
    assert (out / "figures" / "entropy.png").is_file()

    steps = dict(demo.steps())
    assert "example" in steps
    ctx = demo.DemoContext(tmp_path / "demo", "quick", 0, False, toy=toy_pair_quick)
    result, _ = steps["example"](ctx)
    assert result.config["n_texts"] == example_registered.workload["quick"]["n_texts"]

    html = build_report([out], tmp_path / "report.html", verdicts=collect_verdicts([res])).read_text()
    assert example_registered.question in html and "data:image/png;base64," in html
    (verdict,) = collect_verdicts([res])
    assert verdict.section == "example" and verdict.claim.startswith("post-training lowers")


def test_the_same_model_gets_the_same_tracing_window_from_every_caller(toy_pair_quick, tmp_path, monkeypatch):
    """CLI, demo and studies run tracing through the contract; the notebook and drift leave the window to it."""
    from posttrain_probe import demo
    from posttrain_probe.analysis.drift import DriftConfig
    from posttrain_probe.cli import main
    from posttrain_probe.probes.tracing.config import tracing_window
    from posttrain_probe.studies.common import Study

    monkeypatch.setenv("POSTTRAIN_PROBE_CACHE", str(toy_pair_quick.root.parent.parent))
    base, post = str(toy_pair_quick.base_dir), str(toy_pair_quick.post_dir)
    expected = tracing_window(toy_pair_quick.config.n_layers)
    small = ["--max-facts", "4", "--n-samples", "1", "--n-boot", "10", "--no-progress", "--kinds", "mlp"]
    assert main(["trace", base, post, "--out", str(tmp_path / "cli"), *small]) == 0
    windows = {"cli": read_run(tmp_path / "cli").config["window"]}

    study = Study(name="t", base=base, post=post, out=tmp_path / "study", size_name="smoke", progress=False)
    _, res = study.run_probe("tracing", kinds=("mlp",), max_facts=4, n_samples=1)
    windows["studies"] = res.config["window"]

    ctx = demo.DemoContext(tmp_path / "demo", "quick", 0, False, toy=toy_pair_quick)
    tiny = {"max_facts": 4, "n_samples": 1, "n_boot": 10, "kinds": ("mlp",)}  # the demo's path, smaller
    smaller = dataclasses.replace(registry.get("tracing"), workload={"quick": tiny})
    monkeypatch.setitem(registry._CACHE, "tracing", smaller)
    res, _ = dict(demo.steps())["tracing"](ctx)
    windows["demo"] = res.config["window"]
    assert set(windows.values()) == {expected}, windows
    assert DriftConfig().tracing_window is None  # drift's tracer derives it the same way
    notebook = json.loads(
        (Path(__file__).resolve().parents[2] / "notebooks" / "02_knowledge_localization.ipynb").read_text()
    )
    code = "".join("".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "code")
    assert "window=" not in code  # the notebook leaves the window to the contract
