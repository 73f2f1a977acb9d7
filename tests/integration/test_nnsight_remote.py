"""The nnsight backend with remote=True (NDIF), checked without a network.

nnsight 0.8 routes `remote=` through `Remotable.trace` (which `generate` also calls). The tests replace it with a
recorder that runs the trace through `NDIFSimulation`: either in place (the probe code path, with HF forwards
outside a trace refused) or shipped like NDIF does it — the block serialized, rebuilt with only installed modules
importable, run on copies of its variables, and only `save()`d values sent back.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from nnsight.modeling.mixins.remotable import Remotable
from nnsight.tracing.backend import Backend

from posttrain_probe.pair import Ablate, Add, ModelLoadError, Patch, load_model, load_pair
from posttrain_probe.testing import make_tiny_checkpoint

pytestmark = pytest.mark.slow


class NDIFSimulation(Backend):
    """Run a traced block as the NDIF server would (`ship=True`) or in place (`ship=False`); flags the run so
    that HF forwards outside any trace can be refused."""

    def __init__(self, model: Any, state: dict[str, Any], ship: bool):
        self.model, self.state, self.ship = model, state, ship

    def __call__(self, tracer: Any) -> None:
        self.state["in_trace"] += 1
        try:
            if self.ship:
                self._ship(tracer)
            else:
                tracer.execute(tracer.info.code)
        finally:
            self.state["in_trace"] -= 1

    def _ship(self, tracer: Any) -> None:
        from nnsight.intervention.backends.local import LocalSimulationBackend
        from nnsight.ndif import pull_env
        from nnsight.schema.request import RequestModel
        from nnsight.tracing.tracer import _saves, save
        from nnsight.tracing.util import push

        self.state["shipped"] += 1
        pull_env()  # local modules (this package) travel by value, as for a real request
        blob = RequestModel.serialize(tracer)
        hider = LocalSimulationBackend(self.model)
        hidden = hider._hide_local_modules()
        try:
            restored = RequestModel.deserialize(blob, self.model._remoteable_persistent_objects())
        finally:
            hider._restore(hidden)
        restored.execute(restored.info.code)  # on the server's copies of the block's variables
        saves = _saves()
        result = {k: v for k, v in restored.info.frame.f_locals.items() if id(v) in saves}
        for v in result.values():
            save(v)
        push(tracer.info.frame, result)  # what RemoteBackend does with the downloaded saves


@pytest.fixture
def ndif(monkeypatch):
    """Record the `remote=` of every nnsight trace/generate call; remote ones run through NDIFSimulation."""
    state: dict[str, Any] = {"calls": [], "in_trace": 0, "ship": False, "remote": False, "shipped": 0}
    real = Remotable.trace

    def trace(self, *args, remote=False, backend=None, **kwargs):
        state["calls"].append(remote)
        if remote:
            backend = NDIFSimulation(self, state, state["ship"])
        return real(self, *args, backend=backend, **kwargs)

    monkeypatch.setattr(Remotable, "trace", trace)
    return state


def _guard(models, state) -> None:
    """While a model is remote, an HF forward outside the engine's traces is an error."""

    def hook(module, args, kwargs):
        if state["remote"] and not state["in_trace"]:
            raise AssertionError("an HF forward ran outside the engine while the model is remote")

    for m in models:
        m.hf.register_forward_pre_hook(hook, with_kwargs=True)


def _set_remote(models, state, on: bool) -> None:
    for m in models:
        m.engine.remote = on
    state["remote"] = on
    state["calls"].clear()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_checkpoint("llama", tmp_path_factory.mktemp("remote") / "m")


def test_a_shipped_trace_returns_reads_receipts_and_cache_like_a_local_one(tiny, ndif):
    m = load_model(tiny, backend="nnsight")
    ids = torch.tensor([[2, 5, 7, 9], [1, 2, 6, 8]])
    mask = torch.tensor([[1, 1, 1, 1], [0, 1, 1, 1]])
    ivs = [
        Add("resid_pre.1", vector=torch.ones(32)),
        Patch("resid_mid.0", value=torch.zeros(32), positions=[1]),
        Ablate("mlp_out.1", direction=torch.ones(32)),
        Patch("final_norm_scale", value=torch.ones(1), rows=[0]),
    ]
    read = ["resid_post.0", "mlp_act.1", "attn_out.0", "final_norm_scale", "logits"]
    local = m.run(ids, mask, read=read, interventions=ivs, use_cache=True)
    assert ndif["calls"] == [False]
    _set_remote([m], ndif, True)
    ndif["ship"] = True
    remote = m.run(ids, mask, read=read, interventions=ivs, use_cache=True)
    assert ndif["calls"] == [True] and ndif["shipped"] == 1
    assert torch.equal(local.logits, remote.logits)
    assert local.cache.keys() == remote.cache.keys()
    assert all(torch.equal(local.cache[k], remote.cache[k]) for k in local.cache)

    def receipts(out):
        return [[(r.site, r.kind, r.n_cells, r.norm_before, r.norm_after) for r in rs] for rs in out.receipts]

    assert receipts(remote) == receipts(local) and all(remote.receipts)
    assert torch.equal(local.past_key_values.layers[0].keys, remote.past_key_values.layers[0].keys)


def test_the_guard_refuses_a_direct_hf_forward_while_remote(tiny, ndif):
    m = load_model(tiny, backend="nnsight")
    _guard([m], ndif)
    m.hf(torch.tensor([[2, 5]]))  # local: fine
    _set_remote([m], ndif, True)
    with pytest.raises(AssertionError, match="outside the engine"):
        m.hf(torch.tensor([[2, 5]]))
    m.run(torch.tensor([[2, 5]]))  # through the engine: fine


# ------------------------------------------------------------------------------------------------ probes


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


# ------------------------------------------------------------------------------------------- load options


def test_remote_needs_nnsight_and_a_hub_model(tiny):
    with pytest.raises(ModelLoadError, match="needs backend='nnsight'"):
        load_model(tiny, backend="bridge", remote=True)
    with pytest.raises(ModelLoadError, match="serves hub models only") as e:
        load_model(tiny, remote=True)
    assert "\n" not in str(e.value)


def test_remote_local_is_nnsights_dry_run_and_matches(tiny):
    ids = torch.tensor([[2, 5, 7]])
    a = load_model(tiny).run(ids, read=["resid_post.1"])
    b = load_model(tiny, remote="local").run(ids, read=["resid_post.1"])
    assert torch.equal(a.logits, b.logits) and torch.equal(a.cache["resid_post.1"], b.cache["resid_post.1"])


def test_device_auto_loads_with_device_map_auto_in_bf16(tiny, monkeypatch):
    import transformers

    seen: list[dict] = []
    real = transformers.AutoModelForCausalLM.from_pretrained.__func__

    def record(cls, *args, **kwargs):
        seen.append(kwargs)
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", classmethod(record))
    m = load_model(tiny, device="auto", dtype="bfloat16")
    assert seen[0]["device_map"] == "auto" and seen[0]["dtype"] == torch.bfloat16
    assert m.hf.dtype == torch.bfloat16 and m.provenance["device"] == "auto"
    out = m.run(torch.tensor([[2, 5, 7]]), read=["resid_post.0"])
    assert out.cache["resid_post.0"].dtype == torch.bfloat16 and torch.isfinite(out.logits).all()


def test_device_auto_without_accelerate_is_one_line(tiny, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "accelerate" else real(name, *a))
    with pytest.raises(ModelLoadError, match="pip install accelerate") as e:
        load_model(tiny, device="auto", dtype="bfloat16")
    assert "\n" not in str(e.value)
