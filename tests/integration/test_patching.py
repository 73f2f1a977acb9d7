"""True/false patching: pair construction and position classes by hand, the batched maps against one forward
per patch and across backends, the last-layer/last-token invariant, cross-model patching between identical
models, and an end-to-end run that writes a readable run dir."""

from __future__ import annotations

import argparse
import random

import pytest
import torch

from posttrain_probe.data import Statement, load_statements
from posttrain_probe.pair import load_model, load_pair
from posttrain_probe.pair.restore import restore_naive
from posttrain_probe.paths import shared_data_dir
from posttrain_probe.probes.patching import (
    PatchingConfig,
    add_cli,
    label_token_ids,
    patch_maps,
    run_patching,
)
from posttrain_probe.probes.patching.pairs import (
    FewShotPrompt,
    build_pairs,
    choose_shots,
    encode_pair,
    position_classes,
    true_objects,
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


def test_pairs_differ_only_in_subject_and_are_false_by_the_data():
    st = _statements()
    tok = tiny_tokenizer()
    truth = true_objects(st, "subject", "object")
    pairs, counts = build_pairs(st, tok, seed=1)
    assert counts["n_pairs"] == len(pairs) > 5
    for p in pairs:
        assert p.true_text.replace(p.true_subject, p.false_subject) == p.false_text
        assert p.object in truth[p.true_subject] and p.object not in truth[p.false_subject]
        assert len(tok(p.true_text)["input_ids"]) == len(tok(p.false_text)["input_ids"])
    again, _ = build_pairs(st, tok, seed=1)
    assert again == pairs


def test_subjects_of_the_shots_are_not_used_in_pairs():
    st = _statements()
    shots = choose_shots(st, 4, seed=0)
    assert sorted(y for _, y in shots) == [0, 0, 1, 1]
    pairs, _ = build_pairs(st, tiny_tokenizer(), exclude_texts=[t for t, _ in shots])
    used = {p.true_subject for p in pairs} | {p.false_subject for p in pairs}
    assert not any(s in t for s in used for t, _ in shots)


def test_cities_columns_are_detected_and_correct_country_defines_truth():
    st = [
        Statement("The city of Paris is in France.", 1, "cities", {"city": "Paris", "country": "France"}),
        Statement(
            "The city of Rome is in France.",
            0,
            "cities",
            {"city": "Rome", "country": "France", "correct_country": "Italy"},
        ),
    ]
    pairs, counts = build_pairs(st, tiny_tokenizer())
    assert counts["subject_column"] == "city" and counts["object_column"] == "country"
    assert [(p.true_text, p.false_text) for p in pairs] == [
        ("The city of Paris is in France.", "The city of Rome is in France.")
    ]


def test_position_classes_by_hand():
    tok = tiny_tokenizer()
    st = _statements()
    pairs, _ = build_pairs(st, tok)
    prompt = FewShotPrompt(shots=(), suffix=" This statement :")
    enc = encode_pair(tok, pairs[0], prompt)
    # "<subj> lives in <obj> . This statement :" → subj 0, lives 1, in 2, obj 3, . 4, suffix 5 6 7
    assert enc.statement == (0, 5) and enc.subject == (0, 1) and enc.object == (3, 4)
    cls = [c.tolist() for c in position_classes(enc, n_suffix=3)]
    assert cls == [[], [0], [], [0], [1, 2], [3], [4], [5], [6], [7]]


def test_label_tokens_and_errors():
    tok = tiny_tokenizer()
    t, f, notes = label_token_ids(tok, " TRUE", " FALSE")
    assert tok.convert_ids_to_tokens([t, f]) == ["TRUE", "FALSE"] and notes == []
    _, _, notes = label_token_ids(tok, " TRUE .", " FALSE")
    assert "first token" in notes[0]
    with pytest.raises(ValueError, match="vocabulary"):
        label_token_ids(tok, " YES", " FALSE")
    with pytest.raises(ValueError, match="same token"):
        label_token_ids(tok, " TRUE", " TRUE .")
    with pytest.raises(ValueError, match="are equal"):
        PatchingConfig(true_label=" A", false_label=" A")


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


def test_batched_maps_equal_one_forward_per_patch_and_last_cell_is_the_full_gap(ckpt, encoded):
    m = load_model(ckpt, backend="nnsight")
    t_id, f_id, _ = label_token_ids(m.tokenizer, " TRUE", " FALSE")
    maps, lds = patch_maps({"base": m}, encoded, t_id, f_id, [("base", "base")], {"base": True}, progress=False)
    L = m.n_layers
    biggest = 0.0
    scored = torch.tensor([[t_id, f_id]])
    for i, e in enumerate(encoded):
        true = m.run(e.true_ids[None], read=[f"resid_post.{l}" for l in range(L)])
        for t in range(e.subject[0], e.n_tokens):
            for l in range(L):
                patch = [(f"resid_post.{l}", [t], true.cache[f"resid_post.{l}"][:, t : t + 1])]
                lp = restore_naive(m, e.false_ids[None], scored, {}, patch)[0]
                ref = (lp[0] - lp[1]).item() - lds["ld_false.base"][i].item()
                assert maps["base"][i, t, l].item() == pytest.approx(ref, abs=1e-5)
                biggest = max(biggest, abs(ref))
        assert torch.all(maps["base"][i, : e.subject[0]] == 0)
        gap = (lds["ld_true.base"][i] - lds["ld_false.base"][i]).item()
        assert maps["base"][i, e.n_tokens - 1, L - 1].item() == pytest.approx(gap, abs=1e-5)
    assert biggest > 1e-4


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
    parser = argparse.ArgumentParser()
    add_cli(parser.add_subparsers())
    flags = "--n-shots 2 --n-boot 10 --min-gap=-1e9 --no-progress --no-cross-model".split()
    out = tmp_path / "o"
    args = parser.parse_args(
        ["patch", str(ckpt), str(ckpt), "--data", str(tmp_path / "st.csv"), "--out", str(out), *flags]
    )
    assert args.func(args) == 0
    assert "map.common.base_to_post" not in read_run(tmp_path / "o").tensors


def test_pairs_from_cities_csv_via_the_shared_loader():
    root = shared_data_dir()
    if root is None or not (root / "geometry_of_truth" / "cities.csv").is_file():
        pytest.skip("shared data folder with geometry_of_truth/cities.csv not found (set POSTTRAIN_PROBE_DATA)")
    st = load_statements(root / "geometry_of_truth" / "cities.csv")
    correct = {s.extra["city"]: s.extra["correct_country"] for s in st}
    pairs, counts = build_pairs(st, tiny_tokenizer(), max_pairs=20)
    assert counts["subject_column"] == "city" and len(pairs) == 20
    for p in pairs:
        assert correct[p.true_subject] == p.object != correct[p.false_subject]
