"""experiments/*.py end to end at the smallest sizes: on the quick toy pair, and on tiny random-init
checkpoints of a real architecture standing in for hub ids with the real data sets; `figures` redraws from
saved results only."""

from __future__ import annotations

import builtins
import importlib.util
import io
import json
import shutil
from pathlib import Path

import pytest

from posttrain_probe.paths import shared_data_dir
from posttrain_probe.results import is_run_dir, read_run

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
SCRIPTS = ("knowledge_localization", "directions", "entropy_neurons", "rlvr_dynamics", "checkpoint_drift")
CHAT = (
    "{% for m in messages %}{% if m['role'] == 'user' %}User {{ m['content'] }} {% endif %}{% endfor %}"
    "{% if add_generation_prompt %}Assistant :{% endif %}"
)


def _main(name: str):
    spec = importlib.util.spec_from_file_location(f"experiment_{name}", EXPERIMENTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.fixture(scope="module")
def toy_runs(toy_pair_quick, tmp_path_factory):
    """Every script on the quick toy pair (smoke sizes); returns (output root, exit codes)."""
    out = tmp_path_factory.mktemp("experiments_toy")
    flags = ["--preset", "quick", "--smoke", "--no-progress"]
    extra = {
        "knowledge_localization": ["--no-figures"],
        "directions": ["--no-figures"],
        "entropy_neurons": [],  # this one draws its figures
        "rlvr_dynamics": ["--losses", "grpo,clip_cov", "--no-figures"],
        "checkpoint_drift": ["--run", str(out / "rlvr_dynamics" / "rlvr" / "grpo"), "--no-figures"],
    }
    codes = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("POSTTRAIN_PROBE_CACHE", str(toy_pair_quick.root.parent.parent))
        for name in SCRIPTS:
            codes[name] = _main(name)([*flags, "--out", str(out / name), *extra[name]])
    return out, codes


def test_every_script_runs_on_the_quick_toy_pair(toy_runs):
    out, codes = toy_runs
    assert codes == dict.fromkeys(SCRIPTS, 0)
    expect = {
        "knowledge_localization/tracing": "causal_tracing",
        "knowledge_localization/patching": "truth_patching",
        "directions/truth": "truth",
        "directions/refusal": "refusal",
        "entropy_neurons/neurons": "neurons",
        "rlvr_dynamics/dynamics": "rlvr_dynamics",
        "checkpoint_drift/drift_rlvr": "checkpoint_drift",
        "checkpoint_drift/drift_base_to_post": "checkpoint_drift",
    }
    for rel, analysis in expect.items():
        assert read_run(out / rel).analysis == analysis, rel
    assert sorted(p.name for p in (out / "entropy_neurons" / "neurons" / "figures").glob("*.png"))
    assert not (out / "directions" / "truth" / "figures").exists()  # --no-figures
    assert list((out / "directions" / "truth" / "steering").glob("*.safetensors"))
    assert list((out / "directions" / "refusal" / "steering").glob("*.safetensors"))
    assert set(read_run(out / "rlvr_dynamics" / "dynamics").summary) == {"grpo", "clip_cov"}
    drift = read_run(out / "checkpoint_drift" / "drift_rlvr")
    assert drift.summary["steps"] == [0, 1, 2, 3] and "entropy_curve" in drift.tables
    assert {"tracing_change", "neuron_effects", "direction_drift", "cka"} <= set(drift.tables)
    assert drift.config["data_sources"]["facts"].endswith("facts.json")  # the toy world's data
    # a second run refuses to overwrite, in one line, before any work
    assert _main("entropy_neurons")(["--preset", "quick", "--smoke", "--out", str(out / "entropy_neurons")]) == 1


def _results_only(src: Path, dst: Path) -> Path:
    """Copy the run dirs below `src` without their figures (and nothing else) into `dst`."""
    for rd in (p.parent for p in src.rglob("result.json")):
        shutil.copytree(rd, dst / rd.relative_to(src), ignore=shutil.ignore_patterns("figures", "steering"))
    return dst


def test_figures_are_redrawn_from_saved_results_only(toy_runs, tmp_path, monkeypatch, capsys):
    from posttrain_probe.cli import main
    from posttrain_probe.pair import loading

    out, _ = toy_runs
    results = _results_only(out / "checkpoint_drift", tmp_path / "results" / "drift")
    _results_only(out / "rlvr_dynamics", tmp_path / "results" / "rlvr")
    shutil.copytree(out / "rlvr_dynamics" / "rlvr" / "grpo", tmp_path / "results" / "trainer_run_is_skipped")
    results = results.parent
    opened: list[str] = []
    real_open = io.open

    def recording_open(file, *args, **kwargs):
        opened.append(str(file))
        return real_open(file, *args, **kwargs)

    def no_models(*a, **k):
        raise AssertionError("figures must not load a model")

    monkeypatch.setattr(loading, "load_model", no_models)
    monkeypatch.setattr(io, "open", recording_open)
    monkeypatch.setattr(builtins, "open", recording_open)
    code = main(["figures", str(results), "--out", str(tmp_path / "figures"), "--dpi", "40"])
    monkeypatch.undo()
    assert code == 0
    names = sorted(p.name for p in (tmp_path / "figures").iterdir())
    assert names == [
        "checkpoint_drift__drift_drift_base_to_post__drift_vs_entropy.png",
        "checkpoint_drift__drift_drift_base_to_post__tracing_maps.png",
        "checkpoint_drift__drift_drift_rlvr__drift_vs_entropy.png",
        "checkpoint_drift__drift_drift_rlvr__tracing_maps.png",
        "rlvr_dynamics__curves.png",
        "rlvr_dynamics__entropy_law.png",
        "rlvr_dynamics__paired.png",
        "rlvr_dynamics__predicted_vs_realized.png",
        "rlvr_dynamics__quadrants.png",
    ]
    base = str(tmp_path.parent)  # pytest's temp root: the toy cache, checkpoints and the toy runs live below it
    touched = [p for p in opened if p.startswith(base)]
    assert touched and all(p.startswith((str(results), str(tmp_path / "figures"))) for p in touched), touched
    assert "wrote 9 figures" in capsys.readouterr().err
    assert main(["figures", str(tmp_path / "empty"), "--out", str(tmp_path / "f2")]) == 1


@pytest.mark.skipif(
    shared_data_dir() is None or not (shared_data_dir() / "known_1000").is_dir(),
    reason="shared data folder not found (set POSTTRAIN_PROBE_DATA)",
)
def test_real_pair_path_runs_on_tiny_checkpoints_with_the_real_data(tmp_path):
    """Local random-init Llama checkpoints stand in for hub ids: the scripts read known_1000, the truth csvs,
    the refusal_direction splits, TinyStories and Countdown from the shared data folder."""
    from posttrain_probe.probes.refusal import DEFAULT_REFUSAL_PHRASES
    from posttrain_probe.testing import make_tiny_checkpoint

    facts = json.loads((shared_data_dir() / "known_1000" / "known_1000.json").read_text())
    answers = {w for f in facts for w in f["attribute"].split()}  # so that facts can be scored
    words = sorted(answers | {w for p in DEFAULT_REFUSAL_PHRASES for w in p.split()})
    kw = dict(words=words, max_positions=512)
    base = make_tiny_checkpoint("llama", tmp_path / "base", seed=0, **kw)
    post = make_tiny_checkpoint("llama", tmp_path / "post", seed=1, chat_template=CHAT, **kw)
    flags = ["--base", str(base), "--post", str(post), "--smoke", "--device", "cpu", "--no-progress", "--no-figures"]
    for name in ("knowledge_localization", "directions", "entropy_neurons", "checkpoint_drift"):
        more = ["--task", "countdown"] if name == "checkpoint_drift" else []
        assert _main(name)([*flags, "--out", str(tmp_path / name), *more]) == 0, name
    tracing = read_run(tmp_path / "knowledge_localization" / "tracing")
    assert tracing.config["data_source"].endswith("known_1000.json") and tracing.summary["n_facts_loaded"] == 6
    assert read_run(tmp_path / "knowledge_localization" / "patching").config["data_source"].endswith("cities.csv")
    truth = read_run(tmp_path / "directions" / "truth")
    assert {"cities", "animal_class"} <= set(truth.summary["datasets"])
    refusal = read_run(tmp_path / "directions" / "refusal")
    assert refusal.provenance["data"]["sources"]["folder"].endswith("refusal_direction")
    assert refusal.provenance["data"]["sources"]["advbench"].endswith("advbench.csv")
    neurons = read_run(tmp_path / "entropy_neurons" / "neurons")
    assert neurons.provenance["data"]["source"].endswith("tinystories_val.txt")
    run = json.loads((tmp_path / "checkpoint_drift" / "rlvr" / "grpo" / "config.json").read_text())
    assert run["task"] == "countdown" and run["model"] == str(post) and run["prompt_format"] == "auto"
    assert is_run_dir(tmp_path / "checkpoint_drift" / "drift_rlvr")
    assert is_run_dir(tmp_path / "checkpoint_drift" / "drift_base_to_post")


def test_figures_only_keeps_the_matching_names_and_refuses_a_pattern_that_matches_nothing(toy_runs, tmp_path):
    from posttrain_probe.plots.export import make_figures

    out, _ = toy_runs
    results = _results_only(out / "rlvr_dynamics", tmp_path / "results")
    paths = make_figures(results, tmp_path / "f", dpi=40, only=["rlvr_dynamics__curves", "*entropy_law"])
    assert sorted(p.name for p in paths) == ["rlvr_dynamics__curves.png", "rlvr_dynamics__entropy_law.png"]
    assert sorted(p.name for p in (tmp_path / "f").iterdir()) == sorted(p.name for p in paths)
    with pytest.raises(ValueError, match="--only truth__nope matched no figure"):
        make_figures(results, tmp_path / "g", dpi=40, only=["truth__nope"])
