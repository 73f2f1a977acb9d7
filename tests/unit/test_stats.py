"""posttrain_probe.stats against reference formulas (numpy, scipy), including the one zero-vector rule."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats as sps

from posttrain_probe.stats import cosine, cosine_batched, diff_in_means, pearson, split_by_label


def _ref_cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize("n", [2, 16, 300])
def test_cosine_matches_numpy_for_arrays_and_tensors(n):
    rng = np.random.default_rng(n)
    a, b = rng.normal(size=n), rng.normal(size=n)
    ref = _ref_cosine(a, b)
    assert cosine(a, b) == pytest.approx(ref, abs=1e-14)
    assert cosine(torch.tensor(a, dtype=torch.float32), torch.tensor(b)) == pytest.approx(ref, abs=1e-6)
    assert isinstance(cosine(a, b), float)
    assert cosine(a, 3.0 * a) == pytest.approx(1.0) and cosine(a, -a) == pytest.approx(-1.0)


def test_cosine_flattens_and_refuses_different_sizes():
    a = np.arange(6.0).reshape(2, 3) + 1
    assert cosine(a, a.flatten()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="entries"):
        cosine(np.ones(3), np.ones(4))


def test_zero_vector_rule_is_nan_everywhere():
    z, v = np.zeros(4), np.ones(4)
    assert math.isnan(cosine(z, v)) and math.isnan(cosine(v, torch.zeros(4))) and math.isnan(cosine(z, z))
    out = cosine_batched(torch.stack([torch.zeros(4), torch.ones(4)]), torch.ones(4))
    assert math.isnan(out[0]) and out[1] == pytest.approx(1.0)
    assert math.isnan(pearson(np.full(5, 2.0), np.arange(5.0)))  # constant series: zero vector after centring
    assert math.isnan(cosine(np.array([1.0, math.nan]), v[:2]))  # non-finite propagates


def test_cosine_batched_along_last_axis_with_broadcast_and_dtype():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(3, 5, 8)), rng.normal(size=(8,))
    out = cosine_batched(torch.tensor(a, dtype=torch.float32), torch.tensor(b, dtype=torch.float32))
    assert out.shape == (3, 5) and out.dtype == torch.float32
    ref = np.einsum("ijk,k->ij", a, b) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b))
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-6)
    assert cosine_batched(a, b).dtype == torch.float64  # numpy inputs: float64
    assert cosine_batched(torch.tensor(a[0, 0]), torch.tensor(b)).item() == pytest.approx(_ref_cosine(a[0, 0], b))


@pytest.mark.parametrize("n", [3, 10, 500])
def test_pearson_matches_scipy(n):
    rng = np.random.default_rng(n)
    x = rng.normal(size=n)
    y = 0.4 * x + rng.normal(size=n)
    ref = sps.pearsonr(x, y).statistic
    assert pearson(x, y) == pytest.approx(ref, abs=1e-12)
    assert pearson(torch.tensor(x), torch.tensor(y)) == pytest.approx(ref, abs=1e-12)
    assert pearson(x.reshape(-1, 1), y) == pytest.approx(ref, abs=1e-12)  # flattened


def test_pearson_drops_non_finite_cells_and_needs_min_n():
    x = np.array([1.0, 2.0, math.nan, 4.0, 5.0, 7.0])
    y = np.array([2.0, 1.0, 3.0, math.inf, 6.0, 6.5])
    keep = np.isfinite(x) & np.isfinite(y)
    assert pearson(x, y) == pytest.approx(sps.pearsonr(x[keep], y[keep]).statistic)
    assert math.isnan(pearson([1.0, 2.0], [2.0, 1.0]))  # < 3 cells by default
    assert pearson([1.0, 2.0], [2.0, 1.0], min_n=2) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="paired"):
        pearson([1.0, 2.0, 3.0], [1.0, 2.0])


def test_pearson_is_the_trainers_formula_bit_for_bit():
    """The RLVR trainer's dH correlations (float64, ‖x‖·‖y‖ denominator) are unchanged by the move."""
    g = torch.Generator().manual_seed(0)
    for n in (2, 7, 300):
        x, y = torch.randn(n, generator=g), torch.randn(n, generator=g)
        xc, yc = x.double() - x.double().mean(), y.double() - y.double().mean()
        old = float((xc * yc).sum()) / float(xc.norm() * yc.norm())
        assert pearson(x, y, min_n=2) == old


def test_diff_in_means_against_numpy():
    rng = np.random.default_rng(1)
    pos, neg = rng.normal(size=(7, 3, 4)), rng.normal(size=(5, 3, 4))
    out = diff_in_means(pos, neg)
    assert out.dtype == torch.float64 and out.shape == (3, 4)
    np.testing.assert_allclose(out.numpy(), pos.mean(0) - neg.mean(0), atol=1e-14)
    t32 = diff_in_means(torch.tensor(pos, dtype=torch.float32), torch.tensor(neg, dtype=torch.float32), torch.float32)
    assert t32.dtype == torch.float32
    np.testing.assert_allclose(t32.numpy(), pos.mean(0) - neg.mean(0), atol=1e-6)
    with pytest.raises(ValueError, match="shapes differ"):
        diff_in_means(pos, neg[:, :2])
    with pytest.raises(ValueError, match="both classes"):
        diff_in_means(pos[:0], neg)


def test_split_by_label():
    acts = torch.arange(12.0).reshape(6, 2)
    pos, neg = split_by_label(acts, np.array([1, 0, 1, 0, 0, 1]))
    assert pos[:, 0].tolist() == [0.0, 4.0, 10.0] and neg[:, 0].tolist() == [2.0, 6.0, 8.0]
    with pytest.raises(ValueError, match="both classes"):
        split_by_label(acts, torch.zeros(6))
    with pytest.raises(ValueError, match="one label per row"):
        split_by_label(acts, torch.ones(5))
