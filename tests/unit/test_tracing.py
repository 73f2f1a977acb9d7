"""Causal tracing, pure parts: token classes, span alignment, answer tokens and statistics against hand
references, ROME's window, seeded noise, config errors, known_1000 subjects on a word tokenizer."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from posttrain_probe.data import load_facts
from posttrain_probe.pair.restore import (
    restoration_sites,
    resume_plan,
    window_layers,
)
from posttrain_probe.pair.spans import answer_token, char_span_to_tokens, token_class_masks
from posttrain_probe.paths import shared_data_dir
from posttrain_probe.probes.tracing import (
    SubjectNotFoundError,
    TracingConfig,
    find_token_span,
    prepare_facts,
)
from posttrain_probe.probes.tracing.core import noise_unit
from posttrain_probe.stats import argmax_2d, bootstrap_ci, class_means, nanmean0, pearson
from posttrain_probe.testing import tiny_tokenizer


def test_token_classes_match_rome_definition_by_hand():
    # 8 tokens, subject at [1, 4): first=1, middle=2, last=3, first subsequent=4, further=5..6, last=7
    m = token_class_masks(8, 1, 4)
    got = [m[c].nonzero().flatten().tolist() for c in range(6)]
    assert got == [[1], [2], [3], [4], [5, 6], [7]]
    # one-token subject right before the last token: first == last subject, subsequent == last token
    m = token_class_masks(3, 1, 2)
    got = [m[c].nonzero().flatten().tolist() for c in range(6)]
    assert got == [[1], [], [1], [2], [], [2]]
    with pytest.raises(ValueError, match="not inside"):
        token_class_masks(3, 2, 5)


def test_char_span_alignment_includes_straddling_tokens_and_skips_specials():
    offsets = [(0, 0), (0, 3), (3, 9), (9, 12), (12, 15)]  # BOS, "The", " Eiffe", "l T", "ower"
    assert char_span_to_tokens(offsets, 4, 15) == (2, 5)
    assert char_span_to_tokens(offsets, 0, 3) == (1, 2)
    assert char_span_to_tokens(offsets, 20, 25) is None


def test_find_token_span_on_word_tokenizer_and_missing_subject_raises():
    tok = tiny_tokenizer()
    text = "the city of river is in"
    ids = tok(text)["input_ids"]
    a, b = find_token_span(tok, text, "city of river")
    assert tok.convert_ids_to_tokens(ids[a:b]) == ["city", "of", "river"]
    with pytest.raises(SubjectNotFoundError, match="does not occur"):
        find_token_span(tok, text, "bread")


def test_answer_token_is_the_first_token_after_the_prompt():
    tok = tiny_tokenizer()
    t, by_prefix = answer_token(tok, "the city of", " river is")
    assert by_prefix and tok.convert_ids_to_tokens(t) == "river"


def test_class_means_by_hand_and_empty_class_is_nan():
    ie = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])  # (T=3, L=2)
    masks = torch.tensor([[True, True, False], [False, False, False], [False, False, True]])
    out = class_means(ie, masks)
    assert torch.allclose(out[0], torch.tensor([2.0, 3.0]))
    assert torch.isnan(out[1]).all()
    assert torch.allclose(out[2], torch.tensor([5.0, 6.0]))


def test_nanmean_and_bootstrap_interval_properties():
    x = torch.tensor([[1.0, math.nan], [3.0, 2.0], [5.0, math.nan]])
    assert torch.allclose(nanmean0(x), torch.tensor([3.0, 2.0]))
    const = torch.full((10, 2), 0.7)
    lo, hi = bootstrap_ci(const, n_boot=50)
    assert torch.allclose(lo, const[0]) and torch.allclose(hi, const[0])
    g = torch.Generator().manual_seed(1)
    data = torch.randn(200, 3, generator=g) + torch.tensor([0.0, 1.0, -1.0])
    lo, hi = bootstrap_ci(data, n_boot=400, seed=3)
    mean = data.mean(0)
    assert ((lo < mean) & (mean < hi)).all()
    # the 95% interval of a mean is about ±1.96 σ/√n
    half = (hi - lo) / 2
    assert torch.allclose(half, 1.96 * data.std(0) / math.sqrt(200), rtol=0.25)
    assert torch.isnan(bootstrap_ci(data[:1])[0]).all()


def test_pearson_and_argmax_against_numpy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=30), rng.normal(size=30)
    assert pearson(torch.tensor(a), torch.tensor(b)) == pytest.approx(np.corrcoef(a, b)[0, 1], abs=1e-12)
    a[3] = np.nan
    keep = ~np.isnan(a)
    assert pearson(torch.tensor(a), torch.tensor(b)) == pytest.approx(np.corrcoef(a[keep], b[keep])[0, 1])
    assert argmax_2d(torch.tensor([[0.0, math.nan], [2.0, 1.0]]))[:2] == (1, 0)


def test_window_follows_rome():
    assert list(window_layers(0, 48, 10)) == [0, 1, 2, 3, 4]
    assert list(window_layers(20, 48, 10)) == list(range(15, 25))
    assert list(window_layers(47, 48, 10)) == list(range(42, 48))
    assert list(window_layers(3, 4, 1)) == [3]
    assert restoration_sites("mlp", 1, 4, 3) == ("mlp_out.0", "mlp_out.1", "mlp_out.2")
    assert restoration_sites("resid", 2, 4, 10) == ("resid_post.2",)


def test_noise_draws_are_seeded_per_fact_and_shared():
    a, b = noise_unit(5, 3, 2, 8, seed=0), noise_unit(5, 3, 2, 8, seed=0)
    assert torch.equal(a, b)
    assert not torch.equal(a, noise_unit(6, 3, 2, 8, seed=0))
    assert not torch.equal(a, noise_unit(5, 3, 2, 8, seed=1))


def test_config_rejects_bad_values_with_a_fix():
    with pytest.raises(ValueError, match="noise_calibration"):
        TracingConfig(noise_calibration="mean")
    with pytest.raises(ValueError, match="kinds"):
        TracingConfig(kinds=("mlp", "ffn"))
    with pytest.raises(ValueError, match="n_samples"):
        TracingConfig(n_samples=0)


def test_known_1000_subjects_align_with_a_word_tokenizer():
    root = shared_data_dir()
    if root is None or not (root / "known_1000").is_dir():
        pytest.skip("shared data folder with known_1000 not found (set POSTTRAIN_PROBE_DATA)")
    facts = load_facts(root / "known_1000", limit=50)
    prepared, skipped = prepare_facts(tiny_tokenizer(), facts)
    assert len(prepared) + len(skipped) == 50
    for p in prepared:
        s0, s1 = p.subject
        assert 0 <= s0 < s1 <= p.n_tokens


def test_resume_plan_trades_blocks_rerun_against_forwards():
    lows, counts = [0, 2, 3, 7], [10, 10, 10, 10]
    # no cost per forward: every lowest block resumes at itself; a huge one: one forward from block 0
    assert resume_plan(lows, counts, 1, 8, 0) == {0: 0, 2: 2, 3: 3, 7: 7}
    assert resume_plan(lows, counts, 1, 8, 10**6) == {0: 0, 2: 0, 3: 0, 7: 0}
    # overhead 5: by hand, {0}, {2, 3}, {7} costs (10+5)·8 + (20+5)·6 + (10+5)·1 + 3·5 = 300, the cheapest
    assert resume_plan(lows, counts, 1, 8, 5) == {0: 0, 2: 2, 3: 2, 7: 7}
    assert resume_plan([], [], 1, 8, 5) == {}
