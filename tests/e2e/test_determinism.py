"""Same inputs and seed, same numbers: every analysis run twice into two run dirs writes identical result.json
(apart from `VOLATILE_META_KEYS` and input paths), byte-identical tables and bit-identical tensors.

Small configs on the quick toy pair; dynamics and drift run on two RLVR runs trained with the same seed (so
the trainer's determinism is checked too); the toy-world build runs twice into two caches.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from posttrain_probe.results import TABLES_DIR, TENSORS_FILE, reproducible_json, write_run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def toy(toy_pair_quick):
    return toy_pair_quick


@pytest.fixture(scope="module")
def pair(toy):
    from posttrain_probe.pair import load_pair

    return load_pair(toy.base_dir, toy.post_dir, backend="nnsight")


@pytest.fixture(scope="module")
def rlvr_runs(toy, tmp_path_factory) -> list[Path]:
    """The same tiny RLVR run trained twice (same seed) into two folders with the same leaf name."""
    from posttrain_probe.rlvr import RLVRConfig, train

    cfg = RLVRConfig(
        model=str(toy.post_dir), data=str(Path(toy.data_dir) / "arithmetic.jsonl"), n_eval=8, eval_every=0,
        prompts_per_step=4, group_size=4, max_new_tokens=6, steps=3, minibatches=2, checkpoint_every=1,
        token_dump_every=1, lr=1e-3, progress=False,
    )  # fmt: skip
    root = tmp_path_factory.mktemp("rlvr")
    return [train(cfg, root / f"copy{i}" / "grpo") for i in (1, 2)]


def _tracing(toy, pair, run):
    from posttrain_probe.data import load_facts
    from posttrain_probe.probes.tracing import TracingConfig, run_tracing

    data = Path(toy.data_dir)
    facts = [f for f in load_facts(data / "facts.json") if f.split == "pretrain"]
    cfg = TracingConfig(max_facts=6, n_samples=2, window=1, n_boot=20, progress=False)
    return run_tracing(pair, facts, cfg, reference_texts=(data / "corpus.txt").read_text().splitlines()[:20])


def _patching(toy, pair, run):
    from posttrain_probe.data import load_statements
    from posttrain_probe.probes.patching import PatchingConfig, run_patching

    cfg = PatchingConfig(max_pairs=6, n_shots=2, n_boot=20, progress=False)
    return run_patching(pair, load_statements(Path(toy.data_dir) / "statements.csv"), cfg)


def _truth(toy, pair, run):
    from posttrain_probe.data import load_statements
    from posttrain_probe.probes.truth import TruthConfig, run_truth

    cfg = TruthConfig(max_per_dataset=40, n_intervene=8, n_shots=2, progress=False)
    return run_truth(pair, load_statements(Path(toy.data_dir) / "statements.csv"), cfg)


def _refusal(toy, pair, run):
    from posttrain_probe.probes.refusal import RefusalConfig, load_refusal_data, run_refusal

    data = load_refusal_data(toy.data_dir, n_train=8, n_val=4, n_eval=4, seed=0)
    return run_refusal(pair, data, RefusalConfig(n_train=8, n_val=4, n_eval=4, max_new_tokens=3, progress=False))


def _neurons(toy, pair, run):
    from posttrain_probe.probes.neurons import NeuronsConfig, load_texts, run_neurons

    cfg = NeuronsConfig(n_ref=16, n_eval=8, n_select=3, n_null=3, n_control_sets=2, progress=False)
    return run_neurons(pair, load_texts(Path(toy.data_dir) / "corpus.txt"), cfg)


def _dynamics(toy, pair, run):
    from posttrain_probe.analysis.dynamics import analyze_runs

    return analyze_runs([run])


def _drift(toy, pair, run):
    from posttrain_probe.analysis.drift import compare_checkpoints
    from posttrain_probe.data import load_instructions, load_statements
    from posttrain_probe.rlvr.checkpoint import list_checkpoints

    data = Path(toy.data_dir)
    comparisons = [s for s in load_statements(data / "statements.csv") if s.extra.get("family") == "comparison"]
    statements = [s for s in comparisons if s.label][:10] + [s for s in comparisons if not s.label][:10]
    return compare_checkpoints(
        str(toy.post_dir),
        [str(p) for _, p in list_checkpoints(run)],
        statements=statements,
        harmful=[i.text for i in load_instructions(data / "harmful.json", harmful=True)][:8],
        harmless=[i.text for i in load_instructions(data / "harmless.json", harmful=False)][:8],
        cka_texts=(data / "corpus.txt").read_text().splitlines()[:16],
        metrics_jsonl=run / "metrics.jsonl",
    )


ANALYSES: dict[str, Callable] = {
    "tracing": _tracing,
    "patching": _patching,
    "truth": _truth,
    "refusal": _refusal,
    "neurons": _neurons,
    "dynamics": _dynamics,
    "drift": _drift,
}


def assert_same_run(a: Path, b: Path, roots: tuple[Path, Path] | None = None) -> None:
    """result.json equal up to volatile keys (and `roots`, the differing input folders); tables and tensors
    byte for byte."""
    ja = reproducible_json(a, [roots[0]] if roots else [])
    jb = reproducible_json(b, [roots[1]] if roots else [])
    # NaN == NaN here: compare the JSON text, which writes NaN as a token
    assert json.dumps(ja, sort_keys=True) == json.dumps(jb, sort_keys=True), _first_difference(ja, jb)
    tables = sorted(p.name for p in (a / TABLES_DIR).glob("*.csv"))
    assert tables == sorted(p.name for p in (b / TABLES_DIR).glob("*.csv"))
    for name in tables:
        assert (a / TABLES_DIR / name).read_bytes() == (b / TABLES_DIR / name).read_bytes(), f"table {name} differs"
    if (a / TENSORS_FILE).exists():
        ta, tb = load_file(str(a / TENSORS_FILE)), load_file(str(b / TENSORS_FILE))
        assert ta.keys() == tb.keys()
        for k in ta:
            same = ta[k].dtype == tb[k].dtype and ta[k].shape == tb[k].shape
            assert same and torch.equal(_bits(ta[k]), _bits(tb[k])), f"tensor {k} differs"
    else:
        assert not (b / TENSORS_FILE).exists()


def _bits(t: torch.Tensor) -> torch.Tensor:
    """The raw bytes, so NaNs with the same bit pattern compare equal."""
    return t.contiguous().view(-1).view(torch.uint8) if t.numel() else t


def _first_difference(a, b, where: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                return f"{where}.{k} only in one run"
            if json.dumps(a[k], sort_keys=True) != json.dumps(b[k], sort_keys=True):
                return _first_difference(a[k], b[k], f"{where}.{k}")
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            if json.dumps(x, sort_keys=True) != json.dumps(y, sort_keys=True):
                return _first_difference(x, y, f"{where}[{i}]")
    return f"{where}: {str(a)[:200]} != {str(b)[:200]}"


@pytest.mark.parametrize("name", list(ANALYSES))
def test_same_seed_writes_identical_results_twice(name, toy, pair, rlvr_runs, tmp_path):
    fn = ANALYSES[name]
    runs = rlvr_runs if name in ("dynamics", "drift") else [None, None]
    a = write_run(tmp_path / "a", fn(toy, pair, runs[0]))
    b = write_run(tmp_path / "b", fn(toy, pair, runs[1]))
    roots = (runs[0].parent, runs[1].parent) if runs[0] is not None else None
    assert_same_run(a, b, roots)
    assert json.loads((a / "result.json").read_text())["summary"]  # something was computed


def test_the_rlvr_runs_behind_dynamics_and_drift_are_identical(rlvr_runs):
    from posttrain_probe.rlvr.trainer import TIMING_KEYS, read_jsonl

    a, b = (read_jsonl(r / "metrics.jsonl") for r in rlvr_runs)
    strip = [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in a]
    assert json.dumps(strip) == json.dumps([{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in b])
    for step in ("step_000001", "step_000003"):
        wa, wb = (load_file(str(r / "checkpoints" / step / "model.safetensors")) for r in rlvr_runs)
        assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_quick_toy_world_build_is_identical_twice(tmp_path):
    from posttrain_probe.toyworld import build, preset_config

    cfg = preset_config("quick", seed=0, pretrain_epochs=0.05, sft_epochs=0.05, eval_samples=5)
    a = build(config=cfg, cache_root=tmp_path / "a", progress=False)
    b = build(config=cfg, cache_root=tmp_path / "b", progress=False)
    files = sorted(str(p.relative_to(a.root)) for p in a.root.rglob("*") if p.is_file())
    assert files == sorted(str(p.relative_to(b.root)) for p in b.root.rglob("*") if p.is_file())
    for rel in files:
        fa, fb = a.root / rel, b.root / rel
        if rel.endswith("report.json"):
            ra, rb = (json.loads(f.read_text()) for f in (fa, fb))
            assert set(ra) == set(rb) and "times_s" in ra  # build timings are the only volatile part
            ra.pop("times_s"), rb.pop("times_s")
            assert json.dumps(ra, sort_keys=True) == json.dumps(rb, sort_keys=True)
        elif rel.endswith(".safetensors"):
            ta, tb = load_file(str(fa)), load_file(str(fb))
            assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta), rel
        else:
            assert fa.read_bytes() == fb.read_bytes(), rel
