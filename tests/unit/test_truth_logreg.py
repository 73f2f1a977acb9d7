"""The batched logistic regression of the truth probes (truth.logreg) against scikit-learn run to convergence,
against itself one problem at a time, under affine changes of the features, and on bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from posttrain_probe.probes.truth.fit import PROBE_KINDS, fit_probe, fit_probes
from posttrain_probe.probes.truth.logreg import LogRegInputError, fit_logreg


def _problem(n: int, d: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows like residuals (per-feature scales up to ~20, offsets in the hundreds, correlated features) with
    labels from a planted direction: noise 0.1 is nearly separable, 2.0 is noisy."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, d)) @ (np.eye(d) + 0.3 * rng.normal(size=(d, d)) / np.sqrt(d))
    X = latent * rng.uniform(0.5, 20, d) + rng.normal(size=d) * 100
    s = latent @ rng.normal(size=d) / np.sqrt(d)
    y = (s + noise * rng.normal(size=n) > np.median(s)).astype(np.int64)
    return X, y


def _sklearn(X: np.ndarray, y: np.ndarray, C: float, scale: bool = True) -> LogisticRegression:
    Z = StandardScaler().fit_transform(X) if scale else X
    return LogisticRegression(C=C, tol=1e-12, max_iter=100_000).fit(Z, y)


SHAPES = [(240, 24), (40, 120)]  # more rows than features (primal Cholesky) and fewer (Woodbury)


@pytest.mark.parametrize("n,d", SHAPES)
@pytest.mark.parametrize("C", [0.05, 1.0, 20.0])
@pytest.mark.parametrize("noise", [0.1, 2.0])
def test_coefficients_intercepts_and_predictions_equal_converged_sklearn(n, d, C, noise):
    X, y = _problem(n, d, noise, seed=n + d)
    ref = _sklearn(X, y, C)
    fit = fit_logreg(X, y, C=C)
    assert bool(fit.converged)
    w = fit.coef_std.numpy()
    scale = np.abs(ref.coef_[0]).max()
    np.testing.assert_allclose(w, ref.coef_[0], rtol=0, atol=1e-5 * scale)
    assert float(fit.intercept_std) == pytest.approx(ref.intercept_[0], rel=1e-5, abs=1e-5 * scale)
    Xt, _ = _problem(200, d, noise, seed=7)  # fresh rows of the same kind
    for rows in (X, Xt):
        ours = fit.decision(rows).numpy()
        theirs = ref.decision_function(StandardScaler().fit(X).transform(rows))
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5 * np.abs(theirs).max())
        sure = np.abs(theirs) > 1e-4 * np.abs(theirs).max()  # rows not on the boundary itself
        assert ((ours > 0) == (theirs > 0))[sure].all() and sure.mean() > 0.95


@pytest.mark.parametrize("n,d", SHAPES)
def test_raw_features_without_standardisation_equal_sklearn(n, d):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(n, d)) * 2 + 1
    y = (X[:, 0] - X[:, 1] + rng.normal(size=n) > 0).astype(int)
    ref = _sklearn(X, y, 0.7, scale=False)
    fit = fit_logreg(X, y, C=0.7, standardize=False)
    np.testing.assert_allclose(fit.coef.numpy(), ref.coef_[0], rtol=1e-5, atol=1e-6)
    assert float(fit.intercept) == pytest.approx(ref.intercept_[0], rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("n,d", SHAPES)
def test_solution_is_a_stationary_point_of_sklearns_objective(n, d):
    """0.5‖w‖² + C Σ logloss with the intercept unpenalised: the gradient vanishes at the solution, and moving
    the intercept (or scaling w) raises the objective."""
    X, y = _problem(n, d, 1.0, seed=11)
    C = 3.0
    fit = fit_logreg(X, y, C=C)
    Z = StandardScaler().fit_transform(X)
    w, b = fit.coef_std.numpy(), float(fit.intercept_std)

    def objective(w, b):
        f = Z @ w + b
        return 0.5 * w @ w + C * np.sum(np.logaddexp(0, f) - y * f)

    p = 1 / (1 + np.exp(-(Z @ w + b)))
    assert np.abs(w + C * Z.T @ (p - y)).max() < 1e-6 * max(1.0, np.abs(w).max())
    assert abs(C * np.sum(p - y)) < 1e-6
    base = objective(w, b)
    for dw, db in ((0, 1e-3), (0, -1e-3), (1e-3, 0), (-1e-3, 0)):
        assert objective(w * (1 + dw), b + db) > base


def _masked_batch(n: int, d: int, P: int = 5):
    rng = np.random.default_rng(n * d)
    X = np.stack([_problem(n, d, 0.5 + p, seed=p)[0] for p in range(P)])  # (P, N, D)
    y = np.stack([_problem(n, d, 0.5 + p, seed=p)[1] for p in range(P)])  # (P, N)
    mask = rng.random((P, n)) > 0.3
    return X, y, mask


@pytest.mark.parametrize("n,d", SHAPES)
def test_batched_fit_equals_one_problem_at_a_time(n, d):
    X, y, mask = _masked_batch(n, d)
    batched = fit_logreg(X, y, mask, C=0.5)
    chunked = fit_logreg(X, y, mask, C=0.5, max_chunk_bytes=1)  # one problem per chunk
    for p in range(len(X)):
        alone = fit_logreg(X[p][mask[p]], y[p][mask[p]], C=0.5)
        for got in (batched, chunked):
            np.testing.assert_allclose(got.coef[p].numpy(), alone.coef.numpy(), rtol=1e-9, atol=1e-12)
            assert float(got.intercept[p]) == pytest.approx(float(alone.intercept), rel=1e-9, abs=1e-12)


def test_large_problems_looped_in_place_equal_the_gathered_batch(monkeypatch):
    """Problems above `_SMALL` entries are read one at a time in place (no gathered copy); the fits equal the
    gathered, batched products' (forced here on small problems), with problems leaving the batch at different
    iterations and a broadcast X shared by several masks."""
    from posttrain_probe.probes.truth import logreg

    X, y, _ = _masked_batch(120, 10, P=3)
    masks = np.stack([np.arange(120) % 4 != k for k in range(4)])  # (F, N)
    gathered = fit_logreg(torch.from_numpy(X)[:, None], y[0], masks, C=2.0)
    monkeypatch.setattr(logreg, "_SMALL", 0)
    looped = fit_logreg(torch.from_numpy(X)[:, None], y[0], masks, C=2.0)
    assert len(set(gathered.n_iter.flatten().tolist())) > 1  # problems left at different iterations
    np.testing.assert_array_equal(looped.n_iter.numpy(), gathered.n_iter.numpy())
    np.testing.assert_allclose(looped.coef.numpy(), gathered.coef.numpy(), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(looped.intercept.numpy(), gathered.intercept.numpy(), rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("n,d", [(300, 40), (30, 40)])
def test_float32_gram_reaches_the_float64_gram_optimum(n, d):
    """The Hessian's Gram in float32 (the CPU default) changes the Newton directions, not the optimum: the solution
    equals the all-float64 solve's to the stopping tolerance, and both converge."""
    X, y = _problem(n, d, 0.3, seed=n)
    single = fit_logreg(X, y, C=5.0)  # on the CPU the default is float32
    torch.testing.assert_close(single.coef, fit_logreg(X, y, C=5.0, gram_dtype=torch.float32).coef, rtol=0, atol=0)
    double = fit_logreg(X, y, C=5.0, gram_dtype=torch.float64)
    assert bool(single.converged) and bool(double.converged)
    scale = float(double.coef_std.abs().max())
    np.testing.assert_allclose(single.coef_std.numpy(), double.coef_std.numpy(), rtol=0, atol=1e-7 * scale)
    assert float(single.intercept_std) == pytest.approx(float(double.intercept_std), abs=1e-7 * scale)


def test_finite_check_catches_nan_and_inf_and_overflowing_finite_sums():
    """The one-sum check of X: NaN or ±Inf anywhere fails, finite values whose sum overflows float32 pass."""
    from posttrain_probe.probes.truth.logreg import _all_finite

    X = torch.ones(50, 7)
    assert _all_finite(X)
    big = torch.full((50, 7), 3e38)  # finite, but the float32 sum overflows to Inf
    assert _all_finite(big) and not bool(torch.isfinite(big.sum()))
    for bad in (float("nan"), float("inf"), -float("inf")):
        Y = X.clone()
        Y[31, 4] = bad
        assert not _all_finite(Y)
    Y = X.clone()
    Y[0, 0], Y[1, 1] = float("inf"), -float("inf")  # sums to NaN
    assert not _all_finite(Y)


def test_first_hessians_shared_by_problems_on_one_x_equal_each_problems_own():
    """Folds of one X (leave-one-group-out masks, a feature constant within one group): the Hessian at θ = 0 derived
    from the atoms' Grams equals the one `_factor` forms from each problem's standardised rows (weights ¼)."""
    from posttrain_probe.probes.truth.logreg import _factor, _first_factors, _standardise

    X, _ = _problem(90, 12, 1.0, seed=6)
    X = torch.from_numpy(X)
    groups = torch.arange(90) % 4
    X[groups != 0, 5] = 3.0  # constant on the rows of every fold that leaves group 0 out
    masks = torch.stack([groups != k for k in range(4)])  # (4, 90)
    C, D = 0.8, X.shape[1]
    sds, consts, own = [], [], []
    for mk in masks:
        Z = X[mk].clone()
        _, sd, const = _standardise(Z, len(Z), True)
        Zt = torch.cat([Z, torch.ones(len(Z), 1, dtype=Z.dtype)], -1)
        pen = torch.ones(D + 1, dtype=Z.dtype)
        pen[-1] = 0
        L = _factor(Zt, None, torch.full((len(Z),), 0.25, dtype=Z.dtype), pen, C)[0]
        sds.append(sd), consts.append(const), own.append(L @ L.T)
    assert consts[0][5] and not consts[1][5]
    shared = _first_factors(X, masks, torch.stack(sds), torch.stack(consts), C, torch.float64, X.device)
    for (L,), H in zip(shared, own):
        torch.testing.assert_close(L @ L.T, H, rtol=1e-10, atol=1e-10)
    scattered = torch.rand(7, 90, generator=torch.Generator().manual_seed(1)) > 0.5  # ~2^7 atoms: not shared
    assert (
        _first_factors(X, scattered, sds[0].expand(7, -1), consts[1].expand(7, -1), C, torch.float64, None) == [()] * 7
    )


def test_shared_first_hessians_do_not_change_the_fits(monkeypatch):
    """LODO-shaped batch (X broadcast over 5 fold masks, more rows than features): fits with the shared first
    Hessians equal those with every problem's own, and the folds are still fitted one by one's."""
    from posttrain_probe.probes.truth import logreg

    X, y, _ = _masked_batch(200, 9, P=2)
    masks = np.stack([np.arange(200) % 5 != k for k in range(5)])  # (F, N)
    calls = {"n": 0}
    factor = logreg._factor

    def counted(*a, **kw):
        calls["n"] += 1
        return factor(*a, **kw)

    monkeypatch.setattr(logreg, "_factor", counted)
    shared = fit_logreg(torch.from_numpy(X)[:, None], y[0], masks, C=1.5, gram_dtype=torch.float64)
    n_shared = calls["n"]
    monkeypatch.setattr(logreg, "_SHARE_MIN", 10**9)
    own = fit_logreg(torch.from_numpy(X)[:, None], y[0], masks, C=1.5, gram_dtype=torch.float64)
    assert calls["n"] - n_shared == n_shared + 10  # every problem's first factor came from the shared Grams
    assert bool(shared.converged.all()) and bool(own.converged.all())
    np.testing.assert_allclose(shared.coef.numpy(), own.coef.numpy(), rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(shared.intercept.numpy(), own.intercept.numpy(), rtol=1e-7, atol=1e-9)
    alone = fit_logreg(X[1][masks[3]], y[0][masks[3]], C=1.5)
    np.testing.assert_allclose(shared.coef[1, 3].numpy(), alone.coef.numpy(), rtol=1e-7, atol=1e-9)


def test_masks_broadcast_over_shared_activations_without_copies():
    """X (G, 1, N, D) with masks (F, N) fits G × F problems, each the one of its own rows."""
    X, y, _ = _masked_batch(60, 8, P=3)
    y = y[0]
    masks = np.stack([np.arange(60) % 3 != k for k in range(3)])  # (F, N) three folds
    fit = fit_logreg(torch.from_numpy(X)[:, None], y, masks)
    assert fit.coef.shape == (3, 3, 8) and fit.intercept.shape == (3, 3)
    for g in range(3):
        for f in range(3):
            alone = fit_logreg(X[g][masks[f]], y[masks[f]])
            np.testing.assert_allclose(fit.coef[g, f].numpy(), alone.coef.numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("n,d", SHAPES)
def test_affine_changes_of_the_features_do_not_change_the_probe(n, d):
    """Standardisation inside: x → a x + c (a > 0 per feature) leaves the standardised solution and every decision
    value unchanged; raw coefficients scale by 1/a."""
    X, y = _problem(n, d, 1.0, seed=5)
    a = np.random.default_rng(0).uniform(0.01, 100, d)
    c = np.random.default_rng(1).normal(size=d) * 1e3
    fit, moved = fit_logreg(X, y), fit_logreg(X * a + c, y)
    np.testing.assert_allclose(moved.coef_std.numpy(), fit.coef_std.numpy(), rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(moved.coef.numpy() * a, fit.coef.numpy(), rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(moved.decision(X * a + c).numpy(), fit.decision(X).numpy(), rtol=1e-6, atol=1e-7)


def test_float32_input_reaches_the_float64_optimum():
    X, y = _problem(300, 16, 1.0, seed=2)
    cold = fit_logreg(X, y, C=2.0)
    single = fit_logreg(torch.tensor(X, dtype=torch.float32), y, C=2.0)
    np.testing.assert_allclose(single.decision(X).numpy(), cold.decision(X).numpy(), rtol=1e-4, atol=1e-4)


def test_constant_features_get_no_weight_and_all_constant_gives_the_log_odds():
    X, y = _problem(100, 6, 1.0, seed=4)
    X[:, 2] = 37.25
    fit = fit_logreg(X, y)
    assert float(fit.coef[2]) == 0.0 and float(fit.coef_std[2]) == 0.0
    flat = fit_logreg(np.full((10, 3), 4.0), np.array([1] * 7 + [0] * 3))
    assert not flat.coef.any() and float(flat.intercept) == pytest.approx(np.log(7 / 3), abs=1e-9)


def test_iteration_limit_is_reported():
    X, y = _problem(200, 10, 0.1, seed=9)
    one = fit_logreg(X, y, max_iter=1)
    assert int(one.n_iter) == 1 and not bool(one.converged)
    full = fit_logreg(X, y)
    assert bool(full.converged) and 1 < int(full.n_iter) <= 100


@pytest.mark.parametrize(
    "args,kw,match",
    [
        ((np.zeros(5), np.zeros(5)), {}, r"X must be \(\.\.\., N, D\)"),
        ((np.zeros((4, 2)), np.array([0, 1, 0])), {}, "one y entry per row"),
        ((np.zeros((4, 2)), np.array([0, 1, 2, 1])), {}, "labels must be 0 or 1"),
        ((np.array([[np.nan, 0], [1, 1]]), np.array([0, 1])), {}, "NaN or Inf"),
        ((np.zeros((4, 2)), np.array([1, 1, 0, 0])), {"mask": np.array([1, 1, 0, 0])}, "both classes"),
        ((np.zeros((4, 2)), np.array([1, 1, 0, 0])), {"C": 0.0}, "C .* must be a finite number > 0"),
        ((np.zeros((3, 4, 2)), np.zeros((2, 4))), {}, "do not broadcast"),
        ((np.zeros((4, 2)), np.array([1, 1, 0, 0])), {"mask": np.ones(3, bool)}, "one mask entry per row"),
    ],
)
def test_bad_input_is_refused_with_the_fix(args, kw, match):
    with pytest.raises(LogRegInputError, match=match):
        fit_logreg(*args, **kw)


def test_fit_probes_equals_fit_probe_for_every_group_and_fold():
    """The truth probes' batched entry point: groups × folds in one solve per kind equal one fit each."""
    rng = np.random.default_rng(8)
    X = rng.normal(size=(2, 3, 90, 12)) * 10 + 50  # (model, layer, N, D)
    y = (X[0, 0, :, 0] + rng.normal(size=90) * 5 > 50).astype(int)
    masks = np.stack([np.arange(90) % 3 != k for k in range(3)])
    fits = fit_probes(X, y, masks, C=0.5)
    assert len(fits) == len(PROBE_KINDS) * 2 * 3 * 3
    for kind in PROBE_KINDS:
        for g in np.ndindex(2, 3):
            for f in range(3):
                alone = fit_probe(kind, X[g][masks[f]], y[masks[f]], C=0.5)
                got = fits[(kind, *g, f)]
                np.testing.assert_allclose(got.coef, alone.coef, rtol=1e-8, atol=1e-12)
                np.testing.assert_allclose(got.direction, alone.direction, rtol=1e-8, atol=1e-12)
                assert got.intercept == pytest.approx(alone.intercept, rel=1e-8, abs=1e-12)
                np.testing.assert_array_equal(got.mu_true, alone.mu_true)


def test_lower_gram_by_panels_equals_the_full_gram():
    from posttrain_probe.probes.truth.logreg import _gram_lower

    A = torch.randn(70, 23, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    full = A.T @ A
    for parts in (1, 2, 3, 4, 7):
        G = _gram_lower(A, parts)
        torch.testing.assert_close(G.tril(), full.tril(), rtol=1e-13, atol=1e-12)
        upper = G.triu(1)  # outside the diagonal blocks left at zero, inside them AᵀA's own entries
        torch.testing.assert_close(torch.where(upper != 0, upper - full, 0.0), torch.zeros_like(G), atol=1e-12, rtol=0)
        assert parts == 1 or bool((upper == 0).any())  # blocks above the diagonal ones are skipped


@pytest.mark.parametrize("n,d", [(30, 8), (8, 30), (300, 260)])  # 260: the Gram by lower panels
def test_newton_system_solves_equal_a_dense_solve(n, d):
    """The Hessian solve (primal Cholesky for n ≥ d, Woodbury + block elimination of the intercept for n < d)
    equals H⁻¹g with H = diag(1, …, 1, 0) + C Ẑᵀ diag(W) Ẑ formed densely, so Newton keeps its quadratic rate."""
    from posttrain_probe.probes.truth.logreg import _factor, _solve

    gen = torch.Generator().manual_seed(n)
    Zt = torch.cat([torch.randn(3, n, d, generator=gen, dtype=torch.float64), torch.ones(3, n, 1).double()], -1)
    W = torch.rand(3, n, generator=gen, dtype=torch.float64) * 0.25
    g = torch.randn(3, d + 1, generator=gen, dtype=torch.float64)
    pen = torch.ones(d + 1, dtype=torch.float64)
    pen[-1] = 0
    C = 0.7
    H = torch.diag_embed(pen.expand(3, -1)) + C * Zt.transpose(1, 2) @ (W.unsqueeze(-1) * Zt)
    K = Zt[..., :-1] @ Zt[..., :-1].transpose(1, 2) if n < d else None
    for i in range(3):
        got = _solve(Zt[i], _factor(Zt[i], None if K is None else K[i], W[i], pen, C), g[i], C)
        torch.testing.assert_close(got, torch.linalg.solve(H[i], g[i]), rtol=1e-9, atol=1e-10)


def test_auroc_equals_sklearns_with_ties_and_is_nan_for_one_class():
    from sklearn.metrics import roc_auc_score

    from posttrain_probe.probes.truth.fit import auroc

    rng = np.random.default_rng(12)
    for n in (2, 7, 300):
        y = rng.integers(0, 2, n)
        y[:2] = [0, 1]
        s = np.round(rng.normal(size=n) + y, 1)  # rounded: many ties
        assert auroc(s, y) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert auroc([0.3, 0.3], [1, 0]) == 0.5 and np.isnan(auroc([1.0, 2.0], [1, 1]))
