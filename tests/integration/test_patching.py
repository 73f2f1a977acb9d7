"""True/false patching on a tiny model: the batched maps' invariants and agreement across backends,
cross-model patching between identical models, and an end-to-end run that writes a readable run dir
(pairs by hand: tests/unit/test_patching.py; against the naive oracle: tests/reference)."""

from __future__ import annotations

import random

import pytest
import torch

from posttrain_probe.cli import build_parser
from posttrain_probe.data import Statement
from posttrain_probe.pair import load_model, load_pair
from posttrain_probe.probes.patching import (
    PatchingConfig,
    label_token_ids,
    patch_maps,
    run_patching,
)
from posttrain_probe.probes.patching.pairs import (
    FewShotPrompt,
    build_pairs,
    choose_shots,
    encode_pair,
)
from posttrain_probe.results import read_run, write_run
from posttrain_probe.testing import make_tiny_checkpoint, tiny_tokenizer

SUBJECTS = "zero one two three four five six seven eight nine".split()
OBJECTS = ["city", "country", "river", "bread"]


def _statements(seed: int = 0) -> list[Statement]:
    """'<digit word> lives in <place> .' with one true place per subject and one false row each."""
    rng = random.Random(seed)
    out = []
    for s in SUBJECTS:
        o = rng.choice(OBJECTS)
        f = rng.choice([x for x in OBJECTS if x != o])
        out.append(Statement(f"{s} lives in {o} .", 1, "toy", {"subject": s, "object": o}))
        out.append(Statement(f"{s} lives in {f} .", 0, "toy", {"subject": s, "object": f}))
    return out


# ---------------------------------------------------------------------------------------------- pairs


# ---------------------------------------------------------------------------------------------- tiny models


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_tiny_checkpoint("llama", tmp_path_factory.mktemp("patching") / "m", seed=3)


@pytest.fixture(scope="module")
def encoded(ckpt):
    tok = tiny_tokenizer()
    st = _statements()
    shots = choose_shots(st, 2, seed=0)
    pairs, _ = build_pairs(st, tok, exclude_texts=[t for t, _ in shots])
    prompt = FewShotPrompt(shots)
    return [encode_pair(tok, p, prompt) for p in pairs[:3]]


def test_batched_maps_are_zero_before_the_subject_and_the_last_cell_is_the_full_gap(ckpt, encoded):
    """Cell by cell against one forward per patch: tests/reference/test_tracing_reference.py."""
    m = load_model(ckpt, backend="nnsight")
    t_id, f_id, _ = label_token_ids(m.tokenizer, " TRUE", " FALSE")
    maps, lds = patch_maps({"base": m}, encoded, t_id, f_id, [("base", "base")], {"base": True}, progress=False)
    L = m.n_layers
    for i, e in enumerate(encoded):
        assert torch.all(maps["base"][i, : e.subject[0]] == 0)
        gap = (lds["ld_true.base"][i] - lds["ld_false.base"][i]).item()
        assert maps["base"][i, e.n_tokens - 1, L - 1].item() == pytest.approx(gap, abs=1e-5)
    assert maps["base"].nan_to_num().abs().max() > 1e-4  # the maps are not all zeros


def test_bridge_nnsight_and_identical_cross_model_maps_agree(ckpt, encoded):
    ms = {"nnsight": load_model(ckpt, backend="nnsight"), "bridge": load_model(ckpt, backend="bridge")}
    t_id, f_id, _ = label_token_ids(ms["bridge"].tokenizer, " TRUE", " FALSE")
    a, _ = patch_maps({"base": ms["nnsight"], "post": ms["bridge"]}, encoded, t_id, f_id, progress=False)
    for name in ("post", "base_to_post", "post_to_base"):
        assert torch.allclose(a[name], a["base"], atol=1e-5, equal_nan=True), name


def test_run_patching_end_to_end_and_cli(tmp_path, ckpt):
    pair = load_pair(ckpt, ckpt, backend="nnsight")
    res = run_patching(pair, _statements(), PatchingConfig(n_shots=2, n_boot=30, min_gap=-1e9, progress=False))
    s = res.summary
    assert s["n_pairs_used"]["common"] == s["pair_counts"]["n_encoded"] > 0
    c = s["comparisons"]["base_vs_post"]
    assert c["pearson"] == pytest.approx(1.0, abs=1e-6) and c["max_abs_diff"] == pytest.approx(0.0, abs=1e-6)
    assert s["position_classes"][-1] == "last"
    write_run(tmp_path / "run", res)
    back = read_run(tmp_path / "run")
    assert back.tensors["map.common.base_to_post"].shape == (len(s["position_classes"]), pair.base.n_layers)
    from posttrain_probe.probes.patching.figures import save_figures

    assert all(p.stat().st_size > 0 for p in save_figures(back, tmp_path / "figs"))

    (tmp_path / "st.csv").write_text(
        "statement,label,subject,object\n"
        + "".join(f"{x.text},{x.label},{x.extra['subject']},{x.extra['object']}\n" for x in _statements())
    )
    parser = build_parser()
    flags = "--n-shots 2 --n-boot 10 --min-gap=-1e9 --no-progress --no-cross-model".split()
    out = tmp_path / "o"
    args = parser.parse_args(
        ["patch", str(ckpt), str(ckpt), "--data", str(tmp_path / "st.csv"), "--out", str(out), *flags]
    )
    assert args.func(args) == 0
    assert "map.common.base_to_post" not in read_run(tmp_path / "o").tensors
