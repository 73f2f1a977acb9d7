"""SteeringVector: save/load round trip, apply on HookedModels (both backends) and plain HF models (also
during `generate`), modes and positions rules, nesting, receipts, refusal of mismatched models."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from posttrain_probe.pair import load_model
from posttrain_probe.steering import SITES, SteeringMismatchError, SteeringVector
from posttrain_probe.testing import make_tiny_checkpoint

IDS = torch.tensor([[2, 5, 6, 7, 8, 9], [2, 11, 12, 13, 14, 15]])


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("steer")
    return {
        "llama": make_tiny_checkpoint("llama", root / "llama"),
        "gpt2": make_tiny_checkpoint("gpt2", root / "gpt2"),
        "llama_wide": make_tiny_checkpoint("llama", root / "wide", d_model=48),
        "llama_vocab": make_tiny_checkpoint("llama", root / "vocab", vocab_extra=70),
    }


@pytest.fixture(scope="module")
def hf(ckpts):
    return {k: AutoModelForCausalLM.from_pretrained(v, attn_implementation="eager").eval() for k, v in ckpts.items()}


@pytest.fixture(scope="module")
def hooked(ckpts):
    return {(f, b): load_model(ckpts[f], backend=b) for f in ("llama", "gpt2") for b in ("bridge", "nnsight")}


def _vec(model, seed=0, **kw):
    g = torch.Generator().manual_seed(seed)
    d = model.get_input_embeddings().weight.shape[1] if hasattr(model, "get_input_embeddings") else model.d_model
    return SteeringVector.from_model(torch.randn(d, generator=g), model, **kw)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
@pytest.mark.parametrize("backend", ["bridge", "nnsight"])
def test_apply_on_hooked_and_plain_hf_equals_intervention_run(hooked, hf, family, backend):
    m = hooked[(family, backend)]
    for site in SITES:
        for mode, positions in (("add", "all"), ("ablate", "last:2"), ("add_normalized", "last")):
            sv = _vec(m, site=site, layer=None if site == "resid_all" else 1, mode=mode, positions=positions)
            sv.scale = 0.7
            ref = m.run(IDS, interventions=sv.to_interventions(m.n_layers)).logits
            with sv.apply(m) as h1:
                got_hooked = m.run(IDS).logits
            with sv.apply(hf[family], tokenizer=m.tokenizer) as h2:
                got_hf = hf[family](IDS).logits
            clean = m.run(IDS).logits
            assert (got_hooked - ref).abs().max() < 1e-5, (site, mode)
            assert (got_hf - ref).abs().max() < 1e-5, (site, mode)
            assert (ref - clean).abs().max() > 1e-4, f"{site}/{mode} changed nothing"
            n_sites = 3 * m.n_layers if site == "resid_all" else 1
            assert h1.calls == h2.calls == n_sites and h1.fired and h2.fired


def test_scale_zero_is_identity(hf, ckpts):
    model = hf["llama"]
    clean = model(IDS).logits
    for site in SITES:
        for mode in ("add", "ablate", "add_normalized"):
            sv = _vec(model, site=site, layer=None, mode=mode)
            with sv.apply(model, scale=0.0) as h:
                out = model(IDS).logits
            assert torch.equal(out, clean), (site, mode)
            assert h.fired


def test_save_load_apply_roundtrip_is_bit_exact(hf, hooked, tmp_path):
    m = hooked[("llama", "bridge")]
    sv = _vec(m, site="resid_mid", layer=1, mode="add", positions="last:2", seed=3, description="test")
    sv.scale = 2.5
    sv.save(tmp_path / "v")
    assert (tmp_path / "v.safetensors").exists() and (tmp_path / "v.json").exists()
    back = SteeringVector.load(tmp_path / "v.safetensors")
    assert torch.equal(back.vector, sv.vector) and back.vector.dtype == sv.vector.dtype
    for k in ("site", "layer", "positions", "mode", "scale", "normalization"):
        assert getattr(back, k) == getattr(sv, k)
    assert back.metadata["description"] == "test"
    assert back.metadata["tokenizer_sha256"] == m.provenance["tokenizer_sha256"]
    assert back.metadata["weights_sha256"] == m.provenance["weights_sha256"]
    with sv.apply(hf["llama"]):
        a = hf["llama"](IDS).logits
    with back.apply(hf["llama"]):
        b = hf["llama"](IDS).logits
    assert torch.equal(a, b)


def test_load_detects_swapped_files(hooked, tmp_path):
    m = hooked[("llama", "bridge")]
    _vec(m, seed=1).save(tmp_path / "a")
    _vec(m, seed=2).save(tmp_path / "b")
    (tmp_path / "a.json").write_text((tmp_path / "b.json").read_text())
    with pytest.raises(ValueError, match="does not match the hash"):
        SteeringVector.load(tmp_path / "a")
    doc = json.loads((tmp_path / "b.json").read_text())
    doc["format"] = "something else"
    (tmp_path / "b.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="not a steering vector"):
        SteeringVector.load(tmp_path / "b")
    with pytest.raises(FileNotFoundError):
        SteeringVector.load(tmp_path / "missing")


def test_mismatched_model_is_refused(hooked, hf, tmp_path):
    m = hooked[("llama", "bridge")]
    sv = _vec(m, site="resid_pre", layer=0)
    sv.save(tmp_path / "v")
    sv = SteeringVector.load(tmp_path / "v")
    for force in (False, True):  # a d_model mismatch cannot be applied, so its error never suggests force
        with pytest.raises(SteeringMismatchError, match="d_model 48") as e:
            with sv.apply(hf["llama_wide"], force=force):
                pass
        assert "not even with force=True" in str(e.value) and "pass force=True" not in str(e.value)
    with pytest.raises(SteeringMismatchError, match="vocab size.*pass force=True"):
        with sv.apply(hf["llama_vocab"]):
            pass
    with sv.apply(hf["llama_vocab"], force=True) as h:
        hf["llama_vocab"](IDS)
    assert h.fired
    other_tok = load_model(hf["llama_vocab"].name_or_path).tokenizer
    with pytest.raises(SteeringMismatchError, match="tokenizer hash"):
        with sv.apply(hf["llama"], tokenizer=other_tok):
            pass
    with sv.apply(hf["llama"], tokenizer=other_tok, force=True) as h:  # a tokenizer mismatch can be forced
        hf["llama"](IDS)
    assert h.fired
    too_deep = SteeringVector(sv.vector, "resid_pre", 5, metadata=sv.metadata)
    with pytest.raises(ValueError, match="model has 2 layers"):
        with too_deep.apply(hf["llama"]):
            pass


def test_hooks_are_removed_and_nesting_composes(hf, hooked):
    model, m = hf["llama"], hooked[("llama", "nnsight")]
    clean = model(IDS).logits
    a = _vec(m, seed=1, site="resid_pre", layer=1, mode="add")
    b = _vec(m, seed=2, site="resid_pre", layer=1, mode="ablate")
    ref = m.run(IDS, interventions=a.to_interventions(2) + b.to_interventions(2)).logits
    with a.apply(model) as ha:
        with b.apply(model) as hb:
            both = model(IDS).logits
        only_a = model(IDS).logits
    assert (both - ref).abs().max() < 1e-5
    assert (only_a - m.run(IDS, interventions=a.to_interventions(2)).logits).abs().max() < 1e-5
    assert ha.calls == 2 and hb.calls == 1
    assert torch.equal(model(IDS).logits, clean)
    with a.apply(model) as h:
        h.remove()
        assert torch.equal(model(IDS).logits, clean)
    assert not h.fired
    with pytest.raises(RuntimeError, match="never fired"):
        h.check_fired()
    with pytest.raises(KeyError):
        with a.apply(model):
            raise KeyError("boom")
    assert torch.equal(model(IDS).logits, clean)


def test_ablation_leaves_no_component_along_the_direction(hf, hooked):
    model = hf["gpt2"]
    sv = _vec(hooked[("gpt2", "bridge")], site="resid_all", layer=None, mode="ablate", seed=4)
    r = sv.vector / sv.vector.norm()
    seen = []
    with sv.apply(model):
        hooks = [
            blk.register_forward_hook(lambda mod, a, o: seen.append(o[0] if isinstance(o, tuple) else o))
            for blk in model.transformer.h
        ]
        try:
            model(IDS)
        finally:
            for h in hooks:
                h.remove()
    assert len(seen) == 2
    for out in seen:
        assert (out @ r).abs().max() <= 1e-5


def test_positions_rules_and_generate(hf, hooked):
    model, m = hf["llama"], hooked[("llama", "bridge")]
    clean = model(IDS).logits
    sv = _vec(m, site="resid_pre", layer=0, mode="add", positions="last", seed=5)
    sv.scale = 5.0
    with sv.apply(model) as h:
        out = model(IDS).logits
    assert torch.equal(out[:, :-1], clean[:, :-1]) and not torch.equal(out[:, -1], clean[:, -1])
    assert h.n_cells == IDS.shape[0]
    gen_kw = dict(max_new_tokens=5, do_sample=False, min_new_tokens=5, pad_token_id=1)
    plain = model.generate(IDS, **gen_kw)
    for rule in ("all", "prompt"):
        sv.positions = rule
        with sv.apply(model) as h:
            steered = model.generate(IDS, **gen_kw)
        assert h.calls == 5  # one forward per new token (KV-cached decode)
        cells = [r.n_cells for r in h.receipts]
        if rule == "prompt":
            assert cells[0] == IDS.numel() and cells[1:] == [0] * 4
        else:
            assert cells[0] == IDS.numel() and cells[1:] == [IDS.shape[0]] * 4
    sv.positions = "all"
    with sv.apply(model):
        steered = model.generate(IDS, **gen_kw)
    assert not torch.equal(steered, plain)
    assert torch.equal(model.generate(IDS, **gen_kw), plain)


def test_bad_inputs_raise_clear_errors(hooked):
    m = hooked[("llama", "bridge")]
    v = torch.randn(m.d_model)
    for kw, msg in (
        (dict(site="resid"), "unknown site"),
        (dict(site="resid_pre", mode="multiply"), "unknown mode"),
        (dict(site="resid_pre", positions="first"), "unknown positions rule"),
        (dict(site="resid_pre", positions="last:0"), "k ≥ 1"),
        (dict(site="resid_pre", normalization="l2"), "unknown normalization"),
    ):
        with pytest.raises(ValueError, match=msg):
            SteeringVector(v, layer=0, **{**dict(positions="all"), **kw})
    with pytest.raises(ValueError, match="1-D tensor"):
        SteeringVector(torch.randn(2, m.d_model), "resid_pre", 0)
    with pytest.raises(ValueError, match="d_model is 32"):
        SteeringVector.from_model(torch.randn(7), m, site="resid_pre", layer=0)
    unit = SteeringVector.from_model(3 * torch.ones(m.d_model), m, site="resid_pre", layer=0, normalization="unit")
    assert abs(float(unit.vector.norm()) - 1) < 1e-6 and unit.metadata["raw_norm"] == pytest.approx(3 * m.d_model**0.5)


def test_tokenizer_hash_ignores_the_padding_state_of_the_last_call(ckpts, hf):
    """A fast tokenizer keeps the padding/truncation of its last call; a vector made right after a padded batch
    (what every probe does before saving one) must still apply with a freshly loaded tokenizer."""
    from transformers import AutoTokenizer

    from posttrain_probe.pair.loading import tokenizer_sha256

    used = AutoTokenizer.from_pretrained(ckpts["llama"])
    fresh_hash = tokenizer_sha256(used)
    used(["a b", "a b c d"], padding=True, truncation=True, max_length=3)
    assert used.backend_tokenizer.padding is not None  # the state this test is about
    assert tokenizer_sha256(used) == fresh_hash
    sv = _vec(hf["llama"], tokenizer=used)
    assert sv.metadata["tokenizer_sha256"] == fresh_hash
    with sv.apply(hf["llama"], tokenizer=AutoTokenizer.from_pretrained(ckpts["llama"])) as h:
        hf["llama"](IDS)
    assert h.fired
