"""Every probe on the quick toy pair gives the same result with each forward sent to a simulated NDIF
(the simulation: tests/integration/test_nnsight_remote.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from posttrain_probe.pair import load_pair
from tests.integration.test_nnsight_remote import _guard, _set_remote, simulate_ndif


@pytest.fixture
def ndif(monkeypatch):
    return simulate_ndif(monkeypatch)


def _tracing(pair, data: Path, small: bool):
    from posttrain_probe.data import load_facts
    from posttrain_probe.probes.tracing import TracingConfig, run_tracing

    facts = [f for f in load_facts(data / "facts.json") if f.split == "pretrain"]
    cfg = TracingConfig(max_facts=2 if small else 4, n_samples=2, window=1, n_boot=10, progress=False)
    return run_tracing(pair, facts, cfg, reference_texts=(data / "corpus.txt").read_text().splitlines()[:10])


def _patching(pair, data: Path, small: bool):
    from posttrain_probe.data import load_statements
    from posttrain_probe.probes.patching import PatchingConfig, run_patching

    cfg = PatchingConfig(max_pairs=3, n_shots=2, n_boot=10, progress=False)
    return run_patching(pair, load_statements(data / "statements.csv"), cfg)


def _truth(pair, data: Path, small: bool):
    from posttrain_probe.data import load_statements
    from posttrain_probe.probes.truth import TruthConfig, run_truth

    cfg = TruthConfig(max_per_dataset=20, n_intervene=4, n_shots=2, progress=False)
    return run_truth(pair, load_statements(data / "statements.csv"), cfg)


def _refusal(pair, data: Path, small: bool):
    from posttrain_probe.probes.refusal import RefusalConfig, load_refusal_data, run_refusal

    n = dict(n_train=4, n_val=2, n_eval=2)
    # the weight-orthogonalization check reloads the weights locally by design; it is off here
    cfg = RefusalConfig(**n, max_new_tokens=2, progress=False, check_orthogonalization=False)
    return run_refusal(pair, load_refusal_data(data, seed=0, **n), cfg)


def _neurons(pair, data: Path, small: bool):
    from posttrain_probe.probes.neurons import NeuronsConfig, load_texts, run_neurons

    cfg = NeuronsConfig(n_ref=8, n_eval=4, n_select=3, n_null=3, n_control_sets=2, progress=False)
    return run_neurons(pair, load_texts(data / "corpus.txt"), cfg)


PROBES = {"tracing": _tracing, "patching": _patching, "truth": _truth, "refusal": _refusal, "neurons": _neurons}


@pytest.fixture(scope="module")
def toy_pair(toy_pair_quick):
    pair = load_pair(toy_pair_quick.base_dir, toy_pair_quick.post_dir, backend="nnsight")
    return pair, Path(toy_pair_quick.data_dir)


def _same(a, b) -> None:
    assert json.dumps(a.summary, sort_keys=True, default=str) == json.dumps(b.summary, sort_keys=True, default=str)
    assert a.tables.keys() == b.tables.keys() and all(a.tables[k].equals(b.tables[k]) for k in a.tables)
    assert a.tensors.keys() == b.tensors.keys()
    assert all(torch.equal(a.tensors[k].nan_to_num(), b.tensors[k].nan_to_num()) for k in a.tensors)


@pytest.mark.parametrize(
    "name, ship",
    [("tracing", False), ("patching", False), ("truth", False), ("refusal", False), ("neurons", False)]
    + [("tracing", True), ("refusal", True)],
)
def test_a_probe_runs_the_same_with_every_forward_sent_remote(name, ship, toy_pair, ndif):
    pair, data = toy_pair
    models = [pair.base, pair.post]
    _guard(models, ndif)
    try:
        local = PROBES[name](pair, data, ship)
        assert ndif["calls"] and not any(ndif["calls"])
        _set_remote(models, ndif, True)
        ndif["ship"] = ship
        remote = PROBES[name](pair, data, ship)
        assert ndif["calls"] and all(c is True for c in ndif["calls"])  # every forward went remote
        assert ndif["shipped"] == (len(ndif["calls"]) if ship else 0)
    finally:
        _set_remote(models, ndif, False)
        for m in models:
            m.hf._forward_pre_hooks.clear()
    _same(local, remote)
