"""Truthfulness probe on a tiny pair: activations, the intervention plumbing, the reach check, and an
end-to-end run that writes a readable run dir (the math by hand: tests/unit/test_truth.py)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import AutoModelForCausalLM

from posttrain_probe.cli import build_parser
from posttrain_probe.data import Statement
from posttrain_probe.pair import load_pair
from posttrain_probe.probes.truth import (
    TruthConfig,
    run_truth,
)
from posttrain_probe.probes.truth.model import (
    FewShotFormat,
    answer_token_ids,
    collect_last_token_acts,
    encode_with_spans,
    prob_diff_under_addition,
)
from posttrain_probe.results import read_run, write_run
from posttrain_probe.testing import make_tiny_checkpoint

# ---------------------------------------------------------------------------------------------- probe math


# ---------------------------------------------------------------------------------------------- prompts


# ---------------------------------------------------------------------------------------------- tiny pair

NUMS = "one two three four five six seven eight nine zero".split()
PLACES = ["river", "bread", "city", "country"]


def _statements() -> list[Statement]:
    out = []
    for i, n in enumerate(NUMS):
        for j, p in enumerate(PLACES):
            out.append(Statement(f"{n} lives in {p} .", int((i + j) % 2 == 0), "lives"))
            out.append(Statement(f"{n} works at the {p} .", int((i * j) % 3 == 0), "works"))
    return out


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("truth")
    return make_tiny_checkpoint("llama", root / "base", seed=0), make_tiny_checkpoint("llama", root / "post", seed=1)


@pytest.fixture(scope="module")
def pair(tiny_dirs):
    return load_pair(*tiny_dirs)


def test_batched_activations_equal_hf_hidden_states_one_statement_at_a_time(pair, tiny_dirs):
    texts = ["one lives in river .", "two works at the big bread in the city .", "six ."]
    acts = collect_last_token_acts(pair.base, texts, batch_size=3, progress=False)  # (N, L+1, D)
    assert acts.shape == (3, pair.base.n_layers + 1, pair.base.d_model)
    hf = AutoModelForCausalLM.from_pretrained(tiny_dirs[0], attn_implementation="eager").eval()
    for i, t in enumerate(texts):
        ids = pair.tokenizer(t, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            hs = hf(ids, output_hidden_states=True).hidden_states  # embeddings, block outputs (last normed)
        for l in range(pair.base.n_layers):
            torch.testing.assert_close(acts[i, l], hs[l][0, -1], atol=1e-5, rtol=1e-5)
        single = collect_last_token_acts(pair.base, [t], batch_size=1, progress=False)
        torch.testing.assert_close(acts[i], single[0], atol=1e-5, rtol=1e-5)


def _fewshot_batch(pair):
    fmt = FewShotFormat()
    shots = [("two lives in bread .", 1), ("six lives in a .", 0)]
    built = [fmt.build(s, shots) for s in ("one lives in river .", "nine works at the city .", "zero is .")]
    ans = answer_token_ids(pair.tokenizer)
    return [b[0] for b in built], [b[1] for b in built], ans["true"]["id"], ans["false"]["id"]


def test_adding_with_scale_zero_is_the_identity(pair):
    texts, spans, t, f = _fewshot_batch(pair)
    delta = torch.randn(pair.base.d_model, generator=torch.Generator().manual_seed(0)) * 5
    clean, _ = prob_diff_under_addition(pair.base, texts, spans, [1, -1, 1], None, [1, 2], t, f, progress=False)
    zero, cells = prob_diff_under_addition(
        pair.base, texts, spans, [1, -1, 1], delta, [1, 2], t, f, scale=0.0, progress=False
    )
    assert cells == 3 * 2 * 2  # 3 prompts × 2 statement tokens × 2 layers: the addition ran
    np.testing.assert_array_equal(zero, clean)
    moved, _ = prob_diff_under_addition(
        pair.base, texts, spans, [1, -1, 1], delta, [1, 2], t, f, scale=50.0, progress=False
    )
    assert np.abs(moved - clean).max() > 1e-6


def test_addition_lands_on_the_last_two_statement_tokens_with_the_row_sign(pair):
    from posttrain_probe.pair import Add

    texts, spans, *_ = _fewshot_batch(pair)
    ids, mask, pos = encode_with_spans(pair.tokenizer, texts, spans, n_last=2)
    delta = torch.zeros(pair.base.d_model)
    delta[0] = 1.0
    signs = torch.tensor([1.0, -1.0, 1.0])
    clean = pair.base.run(ids, mask, read=["resid_pre.1"]).cache["resid_pre.1"]
    iv = Add("resid_pre.1", vector=signs[:, None, None] * delta, positions=pos)
    got = pair.base.run(ids, mask, read=["resid_pre.1"], interventions=[iv]).cache["resid_pre.1"]
    diff = (got - clean)[..., 0]  # (B, T)
    expected = torch.zeros_like(diff)
    for r in range(3):
        expected[r, pos[r]] = signs[r]
    torch.testing.assert_close(diff, expected)
    assert tuple(pair.tokenizer.convert_ids_to_tokens(ids[2, pos[2]].tolist())) == ("is", ".")


def test_intervention_adds_on_false_and_subtracts_on_true_statements(pair):
    # With no suffix the metric is read at the statement's last token; adding a large multiple of
    # W_U[:, TRUE] − W_U[:, FALSE] after the last block there must raise P(TRUE) − P(FALSE) (the final RMSNorm
    # of the tiny model has unit weights), and subtracting it must lower it.
    from posttrain_probe.probes.truth.tables import run_interventions

    W = pair.base.arch.unembed_weights()  # (D, V)
    ans = answer_token_ids(pair.tokenizer)
    push = 100 * (W[:, ans["true"]["id"]] - W[:, ans["false"]["id"]]).detach().float()
    st = _statements()[:6]
    cfg = TruthConfig(suffix="", n_shots=0, random_control=False, progress=False)
    L = pair.base.n_layers
    frame, nie, _, cells = run_interventions(
        pair, st, list(range(6)), {s.dataset: [] for s in st}, {"base": push, "post": push}, [L], ans, cfg
    )
    base = frame[(frame.applied_to == "base") & (frame.direction_from == "base")]
    assert (base[base.label == 0].pd_int > base[base.label == 0].pd).all()
    assert (base[base.label == 1].pd_int < base[base.label == 1].pd).all()
    row = nie[(nie.direction_from == "base") & (nie.applied_to == "base")].iloc[0]
    assert row.nie_false_to_true > 0 and row.nie_true_to_false > 0
    assert cells == {"base->base": 12, "post->base": 12, "base->post": 12, "post->post": 12}


def test_run_truth_end_to_end_writes_a_readable_run_dir(pair, tmp_path):
    cfg = TruthConfig(n_intervene=16, n_shots=2, progress=False, batch_size=16)
    res = run_truth(pair, _statements(), cfg)
    out = write_run(tmp_path / "run", res)
    back = read_run(out)
    assert back == res
    assert set(back.tables) >= {
        "layer_accuracy",
        "direction_cosine",
        "cross_model",
        "lodo",
        "nie",
        "statements",
    }
    nie = back.tables["nie"]
    assert {(r.direction_from, r.applied_to) for r in nie.itertuples()} == {
        (s, a) for s in ("base", "post", "random") for a in ("base", "post")
    }
    L1 = pair.base.n_layers + 1
    assert back.tensors["directions.mass_mean.base"].shape == (L1, pair.base.d_model)
    assert back.tensors["activations.post"].shape == (len(_statements()), L1, pair.base.d_model)
    la = back.tables["layer_accuracy"]
    assert len(la) == 2 * 2 * L1 and la.test_acc.between(0, 1).all()
    assert back.summary["probe_layer"] in range(1, L1) and back.summary["band"][-1] == back.summary["probe_layer"]
    assert any("P(TRUE) − P(FALSE)" in n for n in back.notes)
    # per-statement predictions at the probe layer reproduce the accuracy tables (verdicts bootstrap them)
    pp, lp = back.tables["probe_predictions"], back.summary["probe_layer"]
    acc = pp.groupby(["probe", "direction_from", "applied_to"]).correct.mean()
    for r in la[la.layer == lp].itertuples():
        assert acc[(r.probe, r.model, r.model)] == pytest.approx(r.test_acc)
    for r in back.tables["cross_model"][lambda t: t.layer == lp].itertuples():
        assert acc[(r.probe, r.direction_from, r.applied_to)] == pytest.approx(r.test_acc)
    from posttrain_probe.probes.truth.verdicts import verdicts as truth_verdicts

    shared = truth_verdicts(back)[0]
    assert shared.estimate == pytest.approx(back.summary["cosine_at_probe_layer"]["mass_mean"], abs=1e-5)
    # the patching check of the intervened cells ran for both models and is saved
    reach = back.summary["intervention_reach"]
    assert set(reach) == {"base", "post"} and reach["base"]["band"] == back.summary["band"]
    assert len(reach["base"]["last_position_share"]) == L1
    ir = back.tables["intervention_reach"]
    assert set(ir.cells) == {"band_statement_tokens", "last_position"} and set(ir.model) == {"base", "post"}
    # the activations are reused when model + data match, and the analysis does not change
    again = run_truth(pair, _statements(), cfg, reuse_from=out)
    assert again.summary["activations_reused"] == {"base": True, "post": True}
    pd.testing.assert_frame_equal(again.tables["layer_accuracy"], res.tables["layer_accuracy"])
    other = run_truth(
        pair, _statements()[:-2], TruthConfig(lodo="probe_layer", progress=False, n_shots=0), reuse_from=out
    )
    assert other.summary["activations_reused"] == {"base": False, "post": False}

    from posttrain_probe.probes.truth.figures import save_figures

    paths = save_figures(back, tmp_path / "figs")
    assert {p.stem for p in paths} >= {"truth_accuracy_by_layer", "truth_cosine", "truth_nie", "truth_lodo"}
    assert all(p.stat().st_size > 1000 for p in paths)


ACC_TOL = 0.005 + 1e-12  # the accuracy agreement asked of the batched probes (issue 17), with float slack


def test_run_probe_accuracies_equal_the_per_fit_sklearn_path(pair):
    """A `truth --lodo all` run's layer and leave-one-dataset-out accuracies (one batched solve per table) against
    one scikit-learn fit per model × kind × layer × fold on the run's own activations (the primal Newton
    path: more training statements than features), the previous path and the converged one: within ±0.005."""
    from posttrain_probe.probes.truth.tables import score_tables
    from tests.reference.sklearn_probes import CONVERGED_TOL, accuracy_gaps, sklearn_fit_all, sklearn_lodo_table

    cfg = TruthConfig(n_intervene=4, n_shots=2, reach_pairs=0, random_control=False, progress=False, lodo="all")
    res = run_truth(pair, _statements(), cfg)
    st = res.tables["statements"]
    y, ds, test = st.label.to_numpy(), st.dataset.to_numpy(), (st.split == "test").to_numpy()
    acts = {r: res.tensors[f"activations.{r}"].numpy() for r in ("base", "post")}
    assert (~test).sum() > acts["base"].shape[2]
    layers = list(range(acts["base"].shape[1]))
    for tol in (None, CONVERGED_TOL):
        kw = {} if tol is None else {"tol": tol}
        ref = score_tables(acts, y, ds, test, sklearn_fit_all(acts, y, ~test, cfg.C, cfg.max_iter, **kw))
        gaps = accuracy_gaps(res.tables["layer_accuracy"], ref["layer_accuracy"], ["model", "probe", "layer"])
        assert gaps.gap.max() <= ACC_TOL
        ref_lodo = sklearn_lodo_table(acts, y, ds, layers, cfg.C, cfg.max_iter, **kw)
        assert accuracy_gaps(res.tables["lodo"], ref_lodo, ["model", "probe", "layer", "held_out"]).gap.max() <= ACC_TOL


def _informative_statements() -> list[Statement]:
    """Statements without a shared final token, so a random-init model's last-token residuals carry the label."""
    out = []
    for i, n in enumerate(NUMS):
        for j, p in enumerate(PLACES):
            out.append(Statement(f"{n} lives in {p}", int((i + 2 * j) % 3 == 0), "lives"))
            out.append(Statement(f"the {p} is {n}", int((i + j) % 3 == 0), "is"))
            out.append(Statement(f"{p} works with {n}", int((i * j) % 3 == 0), "works"))
    return out


def test_batched_probes_on_fewer_statements_than_features_equal_sklearn(tmp_path):
    """The kernel-space (Woodbury) Newton path, on a wider checkpoint where the probes are far from trivial
    (train accuracy up to ~0.9): accuracies equal the converged scikit-learn fits within ±0.005, and the
    previous path (which stops at scikit-learn's default tol) within one held-out statement per cell."""
    from posttrain_probe.probes.truth.data import split_statements
    from posttrain_probe.probes.truth.tables import fit_all, lodo_table, score_tables
    from tests.reference.sklearn_probes import CONVERGED_TOL, accuracy_gaps, sklearn_fit_all, sklearn_lodo_table

    st = _informative_statements()
    y, ds = np.array([s.label for s in st]), np.array([s.dataset for s in st])
    test, _ = split_statements(st, 0.2, 0)
    dirs = [
        make_tiny_checkpoint("llama", tmp_path / r, seed=s, d_model=128, n_layers=3) for r, s in (("b", 2), ("p", 3))
    ]
    wide = load_pair(*dirs)
    texts = [s.text for s in st]
    acts = {r: collect_last_token_acts(m, texts, 64, progress=False).numpy() for r, m in wide.models().items()}
    assert (~test).sum() < acts["base"].shape[2]  # fewer training rows than features
    cfg, layers = TruthConfig(), list(range(acts["base"].shape[1]))
    ours = score_tables(acts, y, ds, test, fit_all(acts, y, ~test, cfg))["layer_accuracy"]
    ours_lodo = lodo_table(acts, y, ds, cfg, layers)
    assert ours.train_acc.max() > 0.8 and ours_lodo.test_acc.nunique() > 3
    lodo_keys = ["model", "probe", "layer", "held_out"]
    tight = score_tables(acts, y, ds, test, sklearn_fit_all(acts, y, ~test, tol=CONVERGED_TOL))["layer_accuracy"]
    assert accuracy_gaps(ours, tight, ["model", "probe", "layer"]).gap.max() <= ACC_TOL
    tight_lodo = sklearn_lodo_table(acts, y, ds, layers, tol=CONVERGED_TOL)
    assert accuracy_gaps(ours_lodo, tight_lodo, lodo_keys).gap.max() <= ACC_TOL
    before = score_tables(acts, y, ds, test, sklearn_fit_all(acts, y, ~test))["layer_accuracy"]
    assert accuracy_gaps(ours, before, ["model", "probe", "layer"]).gap.max() <= 1 / test.sum() + 1e-12
    gaps = accuracy_gaps(ours_lodo, sklearn_lodo_table(acts, y, ds, layers), lodo_keys)
    assert (gaps.gap <= 1 / gaps.n + 1e-12).all() and (gaps.gap <= ACC_TOL).mean() >= 0.9


def test_cli_writes_run_dir_and_refuses_to_overwrite_before_computing(tiny_dirs, tmp_path, capsys):
    csv = tmp_path / "stmts.csv"
    pd.DataFrame([dict(statement=s.text, label=s.label, dataset=s.dataset) for s in _statements()]).to_csv(
        csv, index=False
    )
    parser = build_parser()
    out = tmp_path / "run"
    argv = ["truth", str(tiny_dirs[0]), str(tiny_dirs[1]), "--data", str(csv), "--out", str(out)]
    args = parser.parse_args(argv + ["--no-progress", "--n-intervene", "8", "--n-shots", "2", "--figures"])
    assert args.func(args) == 0
    assert "probe layer" in capsys.readouterr().out
    assert read_run(out).analysis == "truth" and (out / "figures" / "truth_nie.png").is_file()
    from posttrain_probe.steering import SteeringVector

    res = read_run(out)
    lp = res.summary["probe_layer"]
    for role in ("base", "post"):
        sv = SteeringVector.load(out / "steering" / f"truth_{role}")
        assert torch.equal(sv.vector, res.tensors[f"delta.{role}"])
        assert (sv.site, sv.layer) == (("resid_pre", lp) if lp < 2 else ("resid_post", 1))
        assert sv.metadata["extraction_data_sha256"] == res.provenance["data"]["statements_sha256"]
    with pytest.raises(FileExistsError, match="--force"):
        args = parser.parse_args(argv)
        args.func(args)


# ---------------------------------------------------------------------------------------------- real data


def test_prompts_longer_than_the_context_are_refused_before_any_model_runs(pair, monkeypatch):

    def never(*a, **k):
        raise AssertionError("activations were collected before the length check")

    monkeypatch.setattr("posttrain_probe.probes.truth.run.collect_last_token_acts", never)
    with pytest.raises(ValueError, match="fewer few-shot examples"):
        run_truth(pair, _statements(), TruthConfig(n_shots=30, progress=False))


# ---------------------------------------------------------------------------------------------- reach check


def _reach_prompts(pair):
    """Few-shot prompts of statements that differ only in their second-last token ('river' / 'bread'), so true and
    false prompts of a pair have the same length and statement positions."""
    fmt = FewShotFormat()
    shots = [("two lives in bread .", 1), ("six lives in city .", 0)]
    stmts = [("one lives in river .", 1), ("one lives in bread .", 0), ("nine lives in city .", 1)]
    stmts += [("nine lives in country .", 0)]
    built = [fmt.build(s, shots) for s, _ in stmts]
    return [b[0] for b in built], [b[1] for b in built], [y for _, y in stmts]


def test_reach_check_is_zero_where_the_answer_cannot_look_and_one_where_it_is_the_whole_difference(pair):
    from posttrain_probe.probes.truth.reach import patch_reach

    texts, spans, labels = _reach_prompts(pair)
    ans = answer_token_ids(pair.tokenizer)
    L = pair.base.n_layers
    fake_pd = [1.0 if y else -1.0 for y in labels]  # the clean pd only selects correctly judged prompts
    kw = dict(true_id=ans["true"]["id"], false_id=ans["false"]["id"])
    # resid[L] at the statement tokens: after the last block nothing reads them, so the share is exactly 0
    after = patch_reach(pair.base, pair.tokenizer, texts, spans, labels, ["d"] * 4, fake_pd, [L], **kw)
    assert after["n_pairs"] == 2  # 'river'/'bread' and 'city'/'country' pairs (equal lengths), same group
    assert after["band_cells_share"] == pytest.approx(0.0, abs=1e-6)
    # the last position: a no-op at resid[0] (both prompts end with ':'), the whole answer at resid[L]
    assert after["last_position_share"][0] == pytest.approx(0.0, abs=1e-6)
    assert after["last_position_share"][L] == pytest.approx(1.0, abs=1e-4)
    # resid[0] at the last two statement tokens holds every token the two prompts differ in: share 1
    emb = patch_reach(pair.base, pair.tokenizer, texts, spans, labels, ["d"] * 4, fake_pd, [0], **kw)
    assert emb["band_cells_share"] == pytest.approx(1.0, abs=1e-3)
    # no correctly judged pair: nothing to patch, NaN shares rather than a number
    none = patch_reach(pair.base, pair.tokenizer, texts, spans, labels, ["d"] * 4, [-1.0] * 4, [0], **kw)
    assert none["n_pairs"] == 0 and math.isnan(none["band_cells_share"])
    # prompts of different groups (datasets: different shots) are never paired
    split = patch_reach(pair.base, pair.tokenizer, texts, spans, labels, ["a", "b", "a", "b"], fake_pd, [0], **kw)
    assert split["n_pairs"] == 0
