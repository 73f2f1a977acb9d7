"""Paired loading, canonical sites and interventions on tiny random checkpoints of real architectures."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from posttrain_probe.pair import (
    Ablate,
    Add,
    Edit,
    InterventionNotFired,
    ModelLoadError,
    PairMismatchError,
    Patch,
    all_sites,
    load_model,
    load_pair,
)
from posttrain_probe.testing import make_tiny_checkpoint

FAMILIES = ["gpt2", "llama", "qwen2", "gemma", "gemma2"]
ALL_READ = None  # filled per model


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {f: make_tiny_checkpoint(f, root / f) for f in FAMILIES}


@pytest.fixture(scope="module")
def models(ckpts):
    return {(f, b): load_model(ckpts[f], backend=b) for f in FAMILIES for b in ("bridge", "nnsight")}


IDS = torch.tensor([[2, 5, 6, 7, 8, 9, 10], [2, 11, 12, 13, 14, 15, 16]])


def every_site(m):
    return [s.name for s in all_sites(m.n_layers)] + ["final_norm_scale", "logits"]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("backend", ["bridge", "nnsight"])
def test_unhooked_forward_equals_raw_hf_logits(ckpts, models, family, backend):
    raw = AutoModelForCausalLM.from_pretrained(ckpts[family], attn_implementation="eager").eval()
    with torch.no_grad():
        ref = raw(IDS).logits
    got = models[(family, backend)].forward(IDS)
    assert (got - ref).abs().max().item() <= 1e-5


@pytest.mark.parametrize("family", FAMILIES)
def test_sites_have_documented_shapes_and_agree_across_backends(models, family):
    b, n = models[(family, "bridge")], models[(family, "nnsight")]
    sites = every_site(b)
    cb, cn = b.run(IDS, read=sites).cache, n.run(IDS, read=sites).cache
    B, T = IDS.shape
    for s in sites:
        kind = s.split(".")[0]
        expected = {
            "mlp_act": (B, T, b.d_mlp),
            "final_norm_scale": (B, T),
            "logits": (B, T, b.arch.vocab_size),
        }.get(kind, (B, T, b.d_model))
        assert tuple(cb[s].shape) == expected, s
        assert (cb[s] - cn[s]).abs().max().item() <= 1e-5, s
    for l in range(b.n_layers):  # the residual decomposition the docs promise
        torch.testing.assert_close(cb[f"resid_mid.{l}"], cb[f"resid_pre.{l}"] + cb[f"attn_out.{l}"])
        torch.testing.assert_close(cb[f"resid_post.{l}"], cb[f"resid_mid.{l}"] + cb[f"mlp_out.{l}"])


@pytest.mark.parametrize("family", ["gpt2", "llama", "gemma2"])
@pytest.mark.parametrize("backend", ["bridge", "nnsight"])
def test_patching_clean_into_clean_and_adding_zero_change_nothing(models, family, backend):
    m = models[(family, backend)]
    sites = [s for s in every_site(m) if s != "logits"]
    clean = m.run(IDS, read=sites)
    patched = m.run(IDS, interventions=[Patch(s, value=clean.cache[s][:, [1, 4]], positions=[1, 4]) for s in sites])
    # the bridge rebuilds the final norm from a written scale: equal up to float rounding
    assert (patched.logits - clean.logits).abs().max().item() <= 1e-5
    zero = [Add(s, vector=torch.zeros(clean.cache[s].shape[-1]), scale=3.0) for s in sites if "scale" not in s]
    added = m.run(IDS, interventions=zero)
    assert (added.logits - clean.logits).abs().max().item() == 0.0
    assert all(len(r) == 1 and r[0].n_cells == IDS.numel() for r in added.receipts)


@pytest.mark.parametrize("backend", ["bridge", "nnsight"])
def test_writing_resid_mid_changes_the_stream_not_only_the_mlp_input(models, backend):
    m = models[("llama", backend)]
    target = torch.randn(m.d_model)
    out = m.run(
        IDS,
        read=["resid_mid.0", "resid_pre.0"],
        interventions=[Patch("resid_mid.0", value=target, positions=[3])],
    )
    torch.testing.assert_close(out.cache["resid_mid.0"][:, 3], target.expand(2, -1))
    via_attn = m.run(
        IDS,
        interventions=[Patch("attn_out.0", value=target - out.cache["resid_pre.0"][:, 3:4], positions=[3])],
    )
    torch.testing.assert_close(out.logits, via_attn.logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_final_norm_scale_write_agrees_across_backends(models, family):
    outs = []
    for backend in ("bridge", "nnsight"):
        m = models[(family, backend)]
        clean = m.run(IDS, read=["final_norm_scale"])
        doubled = m.run(IDS, interventions=[Edit("final_norm_scale", fn=lambda s: 2 * s)])
        outs.append(doubled.logits)
        if family == "llama":  # RMSNorm, no unembedding bias: logits scale by exactly 1/2
            torch.testing.assert_close(doubled.logits, clean.logits / 2, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(outs[0], outs[1], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("backend", ["bridge", "nnsight"])
def test_ablated_projection_is_zero_and_receipt_records_norms(models, backend):
    m = models[("qwen2", backend)]
    r = torch.randn(m.d_model)
    out = m.run(IDS, read=["resid_post.0"], interventions=[Ablate("resid_post.0", direction=r)])
    proj = out.cache["resid_post.0"] @ (r / r.norm())
    assert proj.abs().max().item() <= 1e-5
    (rec,) = out.receipts[0]
    assert rec.site == "resid_post.0" and rec.kind == "ablate" and rec.n_cells == IDS.numel()
    assert rec.norm_after < rec.norm_before


def test_an_intervention_that_never_fires_raises(models, monkeypatch):
    m = models[("llama", "bridge")]
    monkeypatch.setattr(m.engine, "_hooks", lambda plan: [])
    with pytest.raises(InterventionNotFired, match="resid_pre.1"):
        m.run(IDS, interventions=[Add("resid_pre.1", vector=torch.ones(m.d_model))])


def test_pair_parity_and_provenance(ckpts, tmp_path):
    post = make_tiny_checkpoint("llama", tmp_path / "post", seed=1, added_specials=("<|user|>", "<|assistant|>"))
    pair = load_pair(ckpts["llama"], post, backend="nnsight")
    assert pair.parity.ok and pair.parity.added_tokens == ["<|user|>", "<|assistant|>"]
    prov = pair.provenance()
    for key in ("weights_sha256", "tokenizer_sha256", "dtype", "device", "resolved", "shapes"):
        assert prov["base"][key] is not None, key
    assert prov["base"]["weights_sha256"] != prov["post"]["weights_sha256"]


def test_mismatched_pairs_raise_one_error_naming_every_difference(ckpts, tmp_path):
    wide = make_tiny_checkpoint("llama", tmp_path / "wide", d_model=64)
    with pytest.raises(PairMismatchError, match=r"d_model \(base 32, post 64\)"):
        load_pair(ckpts["llama"], wide)
    other_vocab = make_tiny_checkpoint("llama", tmp_path / "vocab", vocab_extra=10)
    with pytest.raises(PairMismatchError, match="vocabulary"):
        load_pair(ckpts["llama"], other_vocab)
    both = make_tiny_checkpoint("llama", tmp_path / "both", d_model=64, vocab_extra=10)
    with pytest.raises(PairMismatchError) as e:
        load_pair(ckpts["llama"], both)
    assert "d_model" in str(e.value) and "vocab" in str(e.value) and "\n" not in str(e.value)


def test_bad_sources_give_one_line_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)  # read at import: set it too (no retries)
    with pytest.raises(ModelLoadError, match="not found"):
        load_model(str(tmp_path / "missing" / "dir"))
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(tmp_path)
    with pytest.raises(ModelLoadError, match="hub"):
        load_model("nobody-xyz/not-a-model")
    with pytest.raises(ModelLoadError, match="unknown backend"):
        load_model(tmp_path, backend="tl")


def test_prompt_longer_than_context_is_refused(models):
    m = models[("llama", "nnsight")]
    with pytest.raises(ValueError, match="longer than the model's context of 128"):
        m.run(torch.full((1, 129), 5))


def test_corrupt_safetensors_gives_one_line_error(tmp_path):
    path = make_tiny_checkpoint("llama", tmp_path / "m")
    (path / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ModelLoadError, match="could not load") as e:
        load_model(path)
    assert "\n" not in str(e.value)
