"""Batched true/false patching maps against the independent naive oracle (plain HF hooks, one forward per
cell), within and across two sharpened tiny Llamas."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from posttrain_probe.data import Statement
from posttrain_probe.pair import load_model
from posttrain_probe.probes.patching import label_token_ids, patch_maps
from posttrain_probe.probes.patching.pairs import FewShotPrompt, build_pairs, choose_shots, encode_pair
from posttrain_probe.testing import make_tiny_checkpoint
from tests.reference import naive_patching

ATOL = 1e-5


def _sharp(family: str, path, seed: int = 0, n_layers: int = 4, scale: float = 40.0):
    """A tiny random-init model whose final norm is scaled up: peaked predictions, large restoration effects."""
    make_tiny_checkpoint(family, path, seed=seed, n_layers=n_layers)
    hf = AutoModelForCausalLM.from_pretrained(path)
    norm = hf.model.norm if family == "llama" else hf.transformer.ln_f
    with torch.no_grad():
        for p in norm.parameters():
            p.mul_(scale)
    hf.save_pretrained(path)
    return path


def _statements() -> list[Statement]:
    out = []
    for i, s in enumerate("zero one two three four five".split()):
        o, f = ("city", "river") if i % 2 else ("river", "bread")
        out.append(Statement(f"{s} lives in {o} .", 1, "toy", {"subject": s, "object": o}))
        out.append(Statement(f"{s} lives in {f} .", 0, "toy", {"subject": s, "object": f}))
    return out


@pytest.fixture(scope="module")
def patched(tmp_path_factory):
    """Two sharpened tiny Llamas (base, post), plain HF copies, two encoded pairs and their batched maps."""
    root = tmp_path_factory.mktemp("patching")
    paths = [_sharp("llama", root / f"m{s}", seed=s, n_layers=3) for s in (0, 1)]
    models = {"base": load_model(paths[0], backend="nnsight"), "post": load_model(paths[1], backend="nnsight")}
    hf = {r: AutoModelForCausalLM.from_pretrained(p).eval() for r, p in zip(("base", "post"), paths)}
    tok = models["base"].tokenizer
    st = _statements()
    shots = choose_shots(st, 2, seed=0)
    pairs, _ = build_pairs(st, tok, exclude_texts=[t for t, _ in shots])
    encoded = [encode_pair(tok, p, FewShotPrompt(shots)) for p in pairs[:2]]
    assert encoded[0].n_tokens == encoded[1].n_tokens  # one batch: a restoration row may be mixed up with another
    t_id, f_id, _ = label_token_ids(tok, " TRUE", " FALSE")
    combos = [("base", "base"), ("post", "post"), ("base", "post"), ("post", "base")]
    maps, _ = patch_maps(models, encoded, t_id, f_id, combos, {"base": True, "post": True}, progress=False)
    return hf, encoded, (t_id, f_id), maps


NAMES = {
    ("base", "base"): "base",
    ("post", "post"): "post",
    ("base", "post"): "base_to_post",
    ("post", "base"): "post_to_base",
}


def test_batched_patching_maps_equal_the_naive_oracle_within_and_across_models(patched):
    hf, encoded, (t_id, f_id), maps = patched
    biggest = 0.0
    for (src, dst), name in NAMES.items():
        for i, e in enumerate(encoded[: 2 if src == dst == "base" else 1]):
            # within a model, from one token before the subject (a no-op); across models from the subject on
            cells = range(e.subject[0] - (src == dst), e.n_tokens)
            ref = naive_patching.patch_map(hf[src], hf[dst], e.true_ids, e.false_ids, t_id, f_id, cells)
            got, ref = maps[name][i, cells.start : e.n_tokens], ref[cells.start :]
            assert torch.allclose(got, ref, atol=ATOL), (name, (got - ref).abs().max().item())
            biggest = max(biggest, ref.abs().max().item())
    assert biggest > 1e-2


@pytest.mark.xfail(
    strict=True,
    reason="patch_maps leaves every cell before the subject 0 without a forward, which holds within a model "
    "(identical true/false prefixes) but not across models, where the source's activations differ there",
)
def test_cross_model_cells_before_the_subject_equal_the_naive_oracle(patched):
    hf, encoded, (t_id, f_id), maps = patched
    e = encoded[0]
    cells = range(e.subject[0] - 1, e.subject[0])
    ref = naive_patching.patch_map(hf["base"], hf["post"], e.true_ids, e.false_ids, t_id, f_id, cells)
    assert torch.allclose(maps["base_to_post"][0, cells.start], ref[cells.start], atol=ATOL)
