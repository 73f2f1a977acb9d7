"""The nnsight backend with remote=True (NDIF), checked without a network.

nnsight 0.8 routes `remote=` through `Remotable.trace` (which `generate` also calls). The tests replace it with a
recorder that runs the trace through `NDIFSimulation`: either in place (the probe code path, with HF forwards
outside a trace refused) or shipped like NDIF does it — the block serialized, rebuilt with only installed modules
importable, run on copies of its variables, and only `save()`d values sent back.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from nnsight.modeling.mixins.remotable import Remotable
from nnsight.tracing.backend import Backend

from posttrain_probe.pair import Ablate, Add, ModelLoadError, Patch, load_model
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


def simulate_ndif(monkeypatch) -> dict[str, Any]:
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


@pytest.fixture
def ndif(monkeypatch):
    """The NDIF simulation's state (`simulate_ndif`)."""
    return simulate_ndif(monkeypatch)


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
