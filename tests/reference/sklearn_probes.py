"""The truth probes as they were fitted before the batched solver: one scikit-learn LogisticRegression (lbfgs)
per model × kind × layer × fold. The oracle that the batched path's accuracies are held to: with tol=1e-4
(scikit-learn's default, what the package used) it is the previous path itself, which stops short of the
optimum; with a tiny tol it is the same objective solved to convergence."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from posttrain_probe.probes.truth.fit import PROBE_KINDS, LinearProbe, _check_xy, _constant_probe, _is_zero, unit

ROLES = ("base", "post")


PREVIOUS_TOL = 1e-4  # scikit-learn's default, which the package's fits used
CONVERGED_TOL = 1e-10


def _fit_quietly(X: np.ndarray, y: np.ndarray, C: float, max_iter: int, tol: float):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return LogisticRegression(C=C, max_iter=max_iter, tol=tol).fit(X, y)


def sklearn_probe(kind: str, X, y, C: float = 1.0, max_iter: int = 2000, tol: float = PREVIOUS_TOL) -> LinearProbe:
    """`fit_probe` before the batched solver (mass-mean: 1-D fit on the standardised projections; logistic: the
    standardised features), in raw space."""
    X, y = _check_xy(X, y)
    mu_t, mu_f = X[y == 1].mean(0), X[y == 0].mean(0)
    if kind == "mass_mean":
        if _is_zero(mu_t - mu_f, float(np.abs(X).max())):
            return _constant_probe(kind, y, mu_t, mu_f)
        d = unit(mu_t - mu_f)
        s = X @ d
        m, sd = float(s.mean()), max(float(s.std()), 1e-12)
        lr = _fit_quietly(((s - m) / sd)[:, None], y, C, max_iter, tol)
        a, b = float(lr.coef_[0, 0]), float(lr.intercept_[0])
        return LinearProbe(kind, d, (a / sd) * d, b - a * m / sd, mu_t, mu_f)
    m, sd = X.mean(0), X.std(0)
    sd = np.where(sd > 0, sd, 1.0)
    lr = _fit_quietly((X - m) / sd, y, C, max_iter, tol)
    if _is_zero(lr.coef_[0]):
        return _constant_probe(kind, y, mu_t, mu_f)
    w = lr.coef_[0] / sd
    return LinearProbe(kind, unit(w), w, float(lr.intercept_[0] - w @ m), mu_t, mu_f)


def sklearn_fit_all(
    acts, y, train, C: float = 1.0, max_iter: int = 2000, tol: float = PREVIOUS_TOL
) -> dict[tuple[str, str, int], LinearProbe]:
    """`tables.fit_all` with one scikit-learn fit per (role, kind, layer)."""
    return {
        (role, kind, l): sklearn_probe(kind, acts[role][train, l], y[train], C, max_iter, tol)
        for role in ROLES
        for kind in PROBE_KINDS
        for l in range(acts["base"].shape[1])
    }


def sklearn_lodo_table(
    acts, y, ds, layers, C: float = 1.0, max_iter: int = 2000, tol: float = PREVIOUS_TOL
) -> pd.DataFrame:
    """`tables.lodo_table` with one scikit-learn fit per (held-out dataset, role, kind, layer)."""
    rows = []
    for held in sorted(set(ds)):
        tr, te = ds != held, ds == held
        if len(set(y[tr])) < 2:
            continue
        for role in ROLES:
            for kind in PROBE_KINDS:
                for l in layers:
                    X = acts[role][:, l]
                    probe = sklearn_probe(kind, X[tr], y[tr], C, max_iter, tol)
                    rows.append(
                        dict(
                            model=role,
                            probe=kind,
                            layer=l,
                            held_out=held,
                            test_acc=probe.accuracy(X[te], y[te]),
                            test_auroc=probe.auroc(X[te], y[te]),
                            n=int(te.sum()),
                        )
                    )
    return pd.DataFrame(rows)


def accuracy_gaps(ours: pd.DataFrame, ref: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """The rows of two accuracy tables matched on `keys`, with gap = |test_acc − reference test_acc|."""
    both = ours.merge(ref, on=keys, suffixes=("", "_ref"), validate="one_to_one")
    if not len(both) == len(ours) == len(ref) > 0:
        raise AssertionError(f"tables do not match row for row on {keys}: {len(ours)}, {len(ref)}, {len(both)}")
    return both.assign(gap=(both.test_acc - both.test_acc_ref).abs())
