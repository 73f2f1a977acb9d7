"""Pure math of the truthfulness analysis: linear probes, metrics, splits and the normalized indirect effect.

No model is run here. Activations come in as (N, D) arrays (numpy or torch), labels as 1 = true, 0 = false.
Probes are fitted in float64 by the batched Newton solver of `logreg` (scikit-learn's L2 logistic objective, every
layer and fold in one solve) and expressed in the *raw* activation space, so their directions can be compared
across layers and models and added back into a residual stream.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from posttrain_probe.probes.truth.config import PROBE_KINDS  # noqa: E402  (one definition, in config)


class ProbeDataError(ValueError):
    """Activations or labels a probe cannot be fitted or scored on."""


def as_numpy(x: np.ndarray | torch.Tensor | Sequence[float]) -> np.ndarray:
    """`x` as a float64 numpy array (torch tensors are detached and moved to the CPU)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def _check_xy(X, y, need_both: bool = True) -> tuple[np.ndarray, np.ndarray]:
    X = as_numpy(X)
    y = np.asarray(as_numpy(y), dtype=np.int64)
    if X.ndim != 2:
        raise ProbeDataError(f"activations must be (N, D), got shape {X.shape}; select one layer first")
    if y.shape != (X.shape[0],):
        raise ProbeDataError(f"labels have shape {y.shape}, activations {X.shape}; give one label per row")
    if not np.isin(y, (0, 1)).all():
        raise ProbeDataError("labels must be 1 (true) or 0 (false)")
    if need_both and (y.sum() == 0 or y.sum() == len(y)):
        raise ProbeDataError(
            f"a probe needs both true and false examples, got {int(y.sum())} true of {len(y)}; "
            "add statements of the missing class"
        )
    if not np.isfinite(X).all():
        raise ProbeDataError("activations contain NaN or Inf; check the model dtype (try float32)")
    return X, y


def class_means(X, y) -> tuple[np.ndarray, np.ndarray]:
    """(μ_true, μ_false), each (D,)."""
    X, y = _check_xy(X, y)
    return X[y == 1].mean(0), X[y == 0].mean(0)


def unit(v: np.ndarray | torch.Tensor) -> np.ndarray:
    """v / ‖v‖; a zero vector is an error (it has no direction)."""
    v = as_numpy(v)
    n = float(np.linalg.norm(v))
    if n == 0.0 or not math.isfinite(n):
        raise ProbeDataError("the vector has zero (or non-finite) norm, so it has no direction")
    return v / n


def _is_zero(v: np.ndarray, scale: float = 1.0) -> bool:
    return float(np.linalg.norm(v)) <= 1e-10 * max(scale, 1.0)


def truth_delta(mu_true: np.ndarray, mu_false: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """δ = ((μ_true − μ_false)·d̂) d̂: the class-mean gap along the probe direction (SPEC §2a); zero for a
    zero direction."""
    direction = as_numpy(direction)
    if _is_zero(direction):
        return np.zeros_like(direction)
    d = unit(direction)
    return float((as_numpy(mu_true) - as_numpy(mu_false)) @ d) * d


def _constant_probe(kind: str, y: np.ndarray, mu_t: np.ndarray, mu_f: np.ndarray) -> LinearProbe:
    """The probe for classes that do not differ at all (e.g. the token embedding of a shared final "."):
    zero direction, predicts the majority class."""
    zero = np.zeros_like(mu_t)
    return LinearProbe(kind, zero, zero, 1e-9 if y.mean() >= 0.5 else -1e-9, mu_t, mu_f)


@dataclass(frozen=True)
class LinearProbe:
    """A fitted linear truth probe in raw activation space: decision(x) = x·coef + intercept (> 0 ⇒ true).

    `direction` is the unit vector the probe reads (mass-mean: μ_true − μ_false normalised; logistic: the
    normal of its hyperplane), oriented towards *true*. `mu_true` / `mu_false` are the training class means.
    """

    kind: str
    direction: np.ndarray  # (D,)
    coef: np.ndarray  # (D,)
    intercept: float
    mu_true: np.ndarray  # (D,)
    mu_false: np.ndarray  # (D,)

    def decision(self, X) -> np.ndarray:
        X = as_numpy(X)
        if X.ndim != 2 or X.shape[1] != self.coef.shape[0]:
            raise ProbeDataError(f"activations of shape {X.shape} do not fit a probe of width {self.coef.shape[0]}")
        return X @ self.coef + self.intercept

    def predict(self, X) -> np.ndarray:
        return (self.decision(X) > 0).astype(np.int64)

    def accuracy(self, X, y) -> float:
        X, y = _check_xy(X, y, need_both=False)
        return float((self.predict(X) == y).mean())

    def auroc(self, X, y) -> float:
        return auroc(self.decision(X), y)

    @property
    def delta(self) -> np.ndarray:
        """δ for this probe's direction (see `truth_delta`)."""
        return truth_delta(self.mu_true, self.mu_false, self.direction)


def fit_probes(
    X,
    y,
    masks,
    C: float = 1.0,
    max_iter: int = 2000,
    kinds: Sequence[str] = PROBE_KINDS,
    device: str | torch.device | None = None,
) -> dict[tuple, LinearProbe]:
    """Every probe of `kinds` for every group g of X (*G, N, D) (e.g. model × layer) and every training mask f
    of `masks` (F, N), in one batched solve per kind (`logreg.fit_logreg`): {(kind, *g, f): LinearProbe}, each
    the probe `fit_probe(kind, X[g][masks[f]], y[masks[f]])` returns. Labels y (N,): 1 = true, 0 = false."""
    from posttrain_probe.probes.truth.logreg import _all_finite, fit_logreg

    for kind in kinds:
        if kind not in PROBE_KINDS:
            raise ValueError(f"unknown probe kind {kind!r}; choose one of {', '.join(PROBE_KINDS)}")
    X = X if isinstance(X, torch.Tensor) else torch.from_numpy(np.asarray(X))
    if X.ndim < 2:
        raise ProbeDataError(f"activations must be (..., N, D), got shape {tuple(X.shape)}")
    N, D = X.shape[-2:]
    y = np.asarray(as_numpy(y), dtype=np.int64)
    if y.shape != (N,):
        raise ProbeDataError(f"labels have shape {y.shape}, activations {tuple(X.shape)}; give one label per row")
    if not np.isin(y, (0, 1)).all():
        raise ProbeDataError("labels must be 1 (true) or 0 (false)")
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim != 2 or masks.shape[1] != N:
        raise ProbeDataError(f"masks have shape {masks.shape}, need (F, {N}): one training-row mask per fit")
    for f, mk in enumerate(masks):
        if y[mk].sum() == 0 or y[mk].sum() == mk.sum():
            raise ProbeDataError(
                f"a probe needs both true and false examples, got {int(y[mk].sum())} true of {int(mk.sum())} in "
                f"training mask {f}; add statements of the missing class"
            )
    if X.is_floating_point() and not _all_finite(X):
        raise ProbeDataError("activations contain NaN or Inf; check the model dtype (try float32)")
    groups = tuple(X.shape[:-2])
    mt, mf = masks & (y == 1), masks & (y == 0)  # (F, N)
    wt = torch.from_numpy(mt / mt.sum(1, keepdims=True))  # (F, N) averaging weights of the true rows
    wf = torch.from_numpy(mf / mf.sum(1, keepdims=True))
    mk = torch.from_numpy(masks)
    F = len(masks)
    mu_t, mu_f = torch.empty(*groups, F, D, dtype=torch.float64), torch.empty(*groups, F, D, dtype=torch.float64)
    big = torch.empty(*groups, F, dtype=torch.float64)  # largest |x| on each fit's rows
    proj = torch.empty(*groups, F, N, dtype=torch.float64)  # projections on the mass-mean directions
    for g in np.ndindex(*groups):
        Xg = X[g].to(torch.float64)  # (N, D)
        mu_t[g], mu_f[g] = wt @ Xg, wf @ Xg
        big[g] = torch.where(mk, Xg.abs().amax(1), 0.0).amax(1)
        diff = mu_t[g] - mu_f[g]  # (F, D)
        proj[g] = (diff / diff.norm(dim=1, keepdim=True).clamp_min(1e-300)) @ Xg.T
    kw = dict(mask=mk, C=C, max_iter=max_iter, device=device)
    lr = fit_logreg(proj.unsqueeze(-1), torch.from_numpy(y), **kw) if "mass_mean" in kinds else None
    full = fit_logreg(X.unsqueeze(-3), torch.from_numpy(y), **kw) if "logistic" in kinds else None
    out: dict[tuple, LinearProbe] = {}
    for kind in kinds:
        for g in np.ndindex(*groups):
            for f in range(F):
                at = (*g, f)
                t, fl = mu_t[at].numpy(), mu_f[at].numpy()
                yf = y[masks[f]]
                if kind == "mass_mean":
                    if _is_zero(t - fl, float(big[at])):
                        out[(kind, *at)] = _constant_probe(kind, yf, t, fl)
                        continue
                    d = unit(t - fl)
                    a, b = float(lr.coef[at][0]), float(lr.intercept[at])
                    out[(kind, *at)] = LinearProbe(kind, d, a * d, b, t, fl)
                else:
                    if _is_zero(full.coef_std[at].cpu().numpy()):
                        out[(kind, *at)] = _constant_probe(kind, yf, t, fl)
                        continue
                    w = full.coef[at].cpu().numpy()
                    out[(kind, *at)] = LinearProbe(kind, unit(w), w, float(full.intercept[at]), t, fl)
    return out


def fit_mass_mean(X, y, C: float = 1.0, max_iter: int = 1000) -> LinearProbe:
    """Mass-mean probe (Marks & Tegmark 2023): direction θ̂ = unit(μ_true − μ_false); the threshold comes
    from a 1-D logistic regression on the projections x·θ̂ (standardised for the fit, mapped back)."""
    X, y = _check_xy(X, y)
    return fit_probes(X, y, np.ones((1, len(y)), bool), C, max_iter, kinds=("mass_mean",))[("mass_mean", 0)]


def fit_logistic(X, y, C: float = 1.0, max_iter: int = 2000) -> LinearProbe:
    """L2 logistic-regression probe (scikit-learn's objective, solved by `logreg.fit_logreg`) on standardised
    features, mapped back to raw space: coef = w / σ, intercept = b − (w / σ)·μ, so decision() equals the
    fitted standardise-then-classify pipeline's."""
    X, y = _check_xy(X, y)
    return fit_probes(X, y, np.ones((1, len(y)), bool), C, max_iter, kinds=("logistic",))[("logistic", 0)]


def fit_probe(kind: str, X, y, C: float = 1.0, max_iter: int = 2000) -> LinearProbe:
    if kind == "mass_mean":
        return fit_mass_mean(X, y, C=C, max_iter=max_iter)
    if kind == "logistic":
        return fit_logistic(X, y, C=C, max_iter=max_iter)
    raise ValueError(f"unknown probe kind {kind!r}; choose one of {', '.join(PROBE_KINDS)}")


def auroc(scores, y) -> float:
    """Area under the ROC curve of `scores` for labels `y` (ties count one half): the Mann–Whitney statistic from
    mid-ranks, U / (n_true · n_false). NaN when only one class is present."""
    from scipy.stats import rankdata

    s, y = as_numpy(scores).reshape(-1), np.asarray(as_numpy(y), dtype=np.int64).reshape(-1)
    if s.shape != y.shape:
        raise ProbeDataError(f"{s.size} scores for {y.size} labels; give one score per label")
    n_true = int(y.sum())
    n_false = len(y) - n_true
    if n_true == 0 or n_false == 0:
        return float("nan")
    u = rankdata(s)[y == 1].sum() - n_true * (n_true + 1) / 2
    return float(u / (n_true * n_false))


def prob_diff(logits: torch.Tensor, true_id: int, false_id: int) -> torch.Tensor:
    """P(TRUE) − P(FALSE) under the full next-token softmax; logits (N, V) → (N,)."""
    p = torch.softmax(logits.float(), dim=-1)
    return p[:, true_id] - p[:, false_id]


def normalized_indirect_effect(pd: float, pd_int: float, target: float) -> float:
    """(pd_int − pd) / (target − pd): the share of the way from pd to `target` that an intervention moved
    the metric. target = +1 for false→true (add δ), −1 for true→false (subtract δ). NaN when pd = target."""
    denom = target - pd
    return float("nan") if denom == 0 else (pd_int - pd) / denom


def nie_summary(pd_true, pd_true_int, pd_false, pd_false_int) -> dict[str, float]:
    """NIE of a truth intervention from per-statement P(TRUE) − P(FALSE) without / with the intervention.

    The NIE is computed on the group means (per-statement ratios blow up where pd ≈ ±1):
    nie_true_to_false = NIE(mean pd_true, mean pd_true_int, −1), nie_false_to_true = NIE(mean pd_false,
    mean pd_false_int, +1), nie_mean = their average (SPEC §2a "report the mean")."""
    arrays = [as_numpy(a).reshape(-1) for a in (pd_true, pd_true_int, pd_false, pd_false_int)]
    if arrays[0].shape != arrays[1].shape or arrays[2].shape != arrays[3].shape:
        raise ProbeDataError("each statement needs a pd with and without the intervention")
    pt, pti, pf, pfi = (float(a.mean()) if a.size else float("nan") for a in arrays)
    t2f = normalized_indirect_effect(pt, pti, -1.0)
    f2t = normalized_indirect_effect(pf, pfi, 1.0)
    return {
        "pd_true": pt,
        "pd_true_int": pti,
        "pd_false": pf,
        "pd_false_int": pfi,
        "nie_true_to_false": t2f,
        "nie_false_to_true": f2t,
        "nie_mean": (t2f + f2t) / 2,
        "n_true": int(arrays[0].size),
        "n_false": int(arrays[2].size),
    }


def stratified_split(labels: Sequence[int], groups: Sequence[str], test_frac: float, seed: int) -> np.ndarray:
    """Boolean mask of held-out rows: within every (group, label) cell, round(n·test_frac) rows (at least
    one when the cell has two or more) drawn by a seeded RNG, so every dataset keeps its class balance."""
    if not 0 < test_frac < 1:
        raise ValueError(f"test_frac must be in (0, 1), got {test_frac}")
    labels, groups = list(labels), list(groups)
    if len(labels) != len(groups):
        raise ValueError(f"{len(labels)} labels but {len(groups)} groups; give one group per row")
    rng = np.random.default_rng(seed)
    is_test = np.zeros(len(labels), dtype=bool)
    cells: dict[tuple[str, int], list[int]] = {}
    for i, key in enumerate(zip(groups, labels)):
        cells.setdefault(key, []).append(i)
    for key in sorted(cells):
        idx = np.asarray(cells[key])
        n = len(idx)
        k = min(max(round(n * test_frac), 1 if n >= 2 else 0), n - 1 if n >= 2 else 0)
        is_test[rng.permutation(idx)[:k]] = True
    return is_test


__all__ = [
    "PROBE_KINDS",
    "LinearProbe",
    "ProbeDataError",
    "as_numpy",
    "auroc",
    "class_means",
    "fit_logistic",
    "fit_mass_mean",
    "fit_probe",
    "fit_probes",
    "nie_summary",
    "normalized_indirect_effect",
    "prob_diff",
    "stratified_split",
    "truth_delta",
    "unit",
]
