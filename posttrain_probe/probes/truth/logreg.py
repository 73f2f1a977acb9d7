"""Batched L2-regularised logistic regression in torch: many independent problems (e.g. every layer × fold of a
probe sweep) fitted in one Newton solve in float64, with the standardisation inside.

Problem p minimises scikit-learn's objective on the standardised features z = (x − μ_p) / σ_p of its rows:

    0.5 ‖w‖² + C Σ_i m_pi [log(1 + exp(z_i·w + b)) − y_pi (z_i·w + b)]

where m_pi = 1 marks the problem's training rows and the intercept b is not penalised. μ_p and σ_p are the
per-feature mean and population standard deviation of those rows (scikit-learn's StandardScaler); a feature that
is constant on them gets σ = 1 and weight 0. Results come back in raw space, coef = w / σ and
intercept = b − coef·μ, so x·coef + intercept is the fitted decision value of a raw row x.

Newton's method from w = 0, b = 0 with a backtracking (Armijo) line search and steps capped at `_MAX_STEP`. The
Newton system is solved through the (D+1) × (D+1) Hessian (Cholesky) when a problem has at least as many rows as
features, and in the N × N kernel space by the Woodbury identity when it has fewer, so a factorisation costs
O(N·D·min(N, D)); in the quadratic phase the last factor is reused. On the CPU the Hessian's Gram is accumulated
and factored in float32 (the direction it gives is exact to ~1e-7 × cond(H); gradients, objective and solves are
float64, so the optimum is float64's). Rows are compacted per problem, converged problems leave the batch, and
problems are solved in chunks of bounded memory. The passes over a large problem's rows (its gradient, its
decision values, its Gram) run one problem at a time in place: batched products over strided views and gathered
copies of the active problems cost more than the arithmetic itself on a CPU. Problems that read one X under
different masks (leave-one-dataset-out folds) get their first Hessian (at θ = 0, every weight ¼) from one pass
over the shared rows: per-atom Grams, re-centred and re-scaled per problem.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

ArrayLike = np.ndarray | torch.Tensor
_ARMIJO = 1e-4  # sufficient-decrease constant of the line search
_HALVINGS = 60  # line-search step halvings before a problem is left where it is
_CONSTANT = 1e-10  # a feature whose std is below this share of its largest |x| is constant
_MAX_STEP = 20.0  # longest Newton step (max-norm, standardised units): where every row is saturated H ≈ I
_REUSE = 2.0  # a full step that cut the gradient at least this many times over lets its Hessian factor serve again


class LogRegInputError(ValueError):
    """Inputs the batched logistic regression cannot be fitted on."""


@dataclass(frozen=True)
class LogRegFit:
    """Solutions of a batch of problems with leading shape B (the broadcast of X, y and mask's batch dims)."""

    coef: torch.Tensor  # (*B, D) raw space: decision = x·coef + intercept
    intercept: torch.Tensor  # (*B,)
    coef_std: torch.Tensor  # (*B, D) on the standardised features (scikit-learn's coef_ after a StandardScaler)
    intercept_std: torch.Tensor  # (*B,)
    n_iter: torch.Tensor  # (*B,) Newton iterations taken (with a fresh or a reused Hessian factor)
    converged: torch.Tensor  # (*B,) whether a full Newton step fell below tol within max_iter

    def decision(self, X: ArrayLike) -> torch.Tensor:
        """x·coef + intercept for raw rows X (*B, M, D) → (*B, M), in float64."""
        X = torch.as_tensor(X).to(self.coef.device, torch.float64)
        return (X @ self.coef.unsqueeze(-1)).squeeze(-1) + self.intercept.unsqueeze(-1)


def _as_tensor(x: ArrayLike, name: str) -> torch.Tensor:
    try:
        return x.detach() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    except (TypeError, ValueError) as e:
        raise LogRegInputError(f"{name} is not an array ({e}); pass a numpy array or a torch tensor") from None


def _all_finite(X: torch.Tensor) -> bool:
    """Whether every entry of X is finite: one sum first (a NaN or ±Inf entry makes it non-finite), the entrywise
    test only when the sum is not finite (such an entry, or finite values whose sum overflowed)."""
    return bool(torch.isfinite(X.sum())) or bool(torch.isfinite(X).all())


def _checked(X, y, mask, C: float, tol: float, max_iter: int):
    """Tensors of the inputs, each expanded (no copy) to the batch shape B, and B itself."""
    X, y = _as_tensor(X, "X"), _as_tensor(y, "y")
    if X.ndim < 2 or X.shape[-1] < 1:
        raise LogRegInputError(f"X must be (..., N, D) with D >= 1, got shape {tuple(X.shape)}; add a row axis")
    if X.is_complex() or X.dtype == torch.bool:
        raise LogRegInputError(f"X must hold real numbers, got {X.dtype}; cast it to float")
    N, D = X.shape[-2:]
    y = y.to(X.device)
    mask = torch.ones(N, dtype=torch.bool) if mask is None else _as_tensor(mask, "mask").to(torch.bool)
    mask = mask.to(X.device)
    for name, t in (("y", y), ("mask", mask)):
        if t.ndim < 1 or t.shape[-1] != N:
            raise LogRegInputError(
                f"{name} has shape {tuple(t.shape)} but X has {N} rows; give one {name} entry per row (..., N)"
            )
    try:
        batch = torch.broadcast_shapes(X.shape[:-2], y.shape[:-1], mask.shape[:-1])
    except RuntimeError:
        raise LogRegInputError(
            f"batch dims of X {tuple(X.shape[:-2])}, y {tuple(y.shape[:-1])} and mask {tuple(mask.shape[:-1])} "
            "do not broadcast; give them one batch shape"
        ) from None
    if not (math.isfinite(C) and C > 0):
        raise LogRegInputError(f"C (inverse L2 strength) must be a finite number > 0, got {C}")
    if not tol > 0 or max_iter < 1:
        raise LogRegInputError(f"need tol > 0 and max_iter >= 1, got tol={tol}, max_iter={max_iter}")
    if not ((y == 0) | (y == 1)).all():
        raise LogRegInputError("labels must be 0 or 1; map the two classes to 0/1 first")
    if X.is_floating_point() and not _all_finite(X):
        raise LogRegInputError("X contains NaN or Inf; drop or fix those rows (a float16 model: try float32)")
    yb, mb = y.to(torch.bool).expand(*batch, N), mask.expand(*batch, N)
    n_pos, n_all = (mb & yb).sum(-1), mb.sum(-1)  # (*B,)
    bad = (n_pos == 0) | (n_pos == n_all)
    if bad.any():
        at = tuple(int(i) for i in bad.nonzero()[0])
        raise LogRegInputError(
            f"problem {at} has {int(n_pos[at])} positive rows of {int(n_all[at])}; every problem needs both "
            "classes among its masked rows"
        )
    return X.expand(*batch, N, D), yb, mb, batch


def _softplus(f: torch.Tensor) -> torch.Tensor:
    """log(1 + exp(f)) without overflow or the threshold shortcut of torch's softplus."""
    return f.clamp_min(0) + torch.log1p(torch.exp(-f.abs()))


def _objective(theta, f, y, m, pen, C: float) -> torch.Tensor:
    """0.5 Σ pen θ² + C Σ m [softplus(f) − y f]: theta (p, D+1), f/y/m (p, n) → (p,)."""
    return 0.5 * (pen * theta * theta).sum(-1) + C * (m * (_softplus(f) - y * f)).sum(-1)


def _cholesky(H: torch.Tensor) -> torch.Tensor:
    """Cholesky factor of SPD matrices H (p, k, k), with a small ridge where rounding made one indefinite."""
    scale = H.diagonal(dim1=-2, dim2=-1).amax(-1).clamp_min(1e-300)  # (p,)
    eye = torch.eye(H.shape[-1], dtype=H.dtype, device=H.device)
    L, info = torch.linalg.cholesky_ex(H)
    ridge = 1e-14
    while bool((info > 0).any()):
        bad = info > 0
        L[bad], info[bad] = torch.linalg.cholesky_ex(H[bad] + (ridge * scale[bad])[:, None, None] * eye)
        ridge *= 100
        if ridge > 1:
            raise FloatingPointError("the Newton system is not positive definite; check X for huge values")
    return L


def _chol_solve(L: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(L Lᵀ)⁻¹ b for a lower Cholesky factor L (k, k) and b (k, r): two triangular solves (torch's cholesky_solve
    copies and re-lays out L on every call, several times slower at k ≈ 640)."""
    return torch.linalg.solve_triangular(L.mT, torch.linalg.solve_triangular(L, b, upper=False), upper=True)


def _gram_lower(A: torch.Tensor, parts: int) -> torch.Tensor:
    """AᵀA's lower triangle (above the diagonal blocks: zeros) for A (n, k), by `parts` column panels: block-row a
    is A_aᵀ A[:, :e_a], (parts + 1) / (2 parts) of the products of A.T @ A (a symmetric rank-k update, which torch
    does not expose). Only for a consumer that reads the lower triangle alone (the Cholesky factorisation)."""
    k = A.shape[-1]
    if parts <= 1:
        return A.T @ A
    G = torch.zeros(k, k, dtype=A.dtype, device=A.device)
    edges = [round(i * k / parts) for i in range(parts + 1)]
    for lo, hi in zip(edges[:-1], edges[1:]):
        G[lo:hi, :hi] = A[:, lo:hi].T @ A[:, :hi]
    return G


def _factor(Zt, K, W, pen, C: float, gram_dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, ...]:
    """What `_solve` needs to apply H⁻¹, H = diag(pen) + C Ẑᵀ diag(W) Ẑ, for one problem Zt (n, D+1), W (n,).

    n ≥ D: the Cholesky factor of H ((D+1, D+1), O(n D²)), its Gram Ẑᵀ diag(W) Ẑ (lower triangle only, by
    panels) accumulated and factored in `gram_dtype` (float32: half the time, a Newton direction exact to
    ~1e-7 × cond(H), applied to float64 gradients). n < D
    (K = Z Zᵀ (n, n) given): Woodbury, A⁻¹ = I − C Zᵀ S (I + C S K S)⁻¹ S Z with A = I + C Zᵀ W Z and S = W^½
    (an n × n factor, O(n² D)), the unpenalised intercept by block elimination (q = A⁻¹a with a = Zᵀ W 1, and
    the Schur complement)."""
    s = W.sqrt()  # (n,)
    if K is None:
        Zs = Zt.to(gram_dtype, copy=True).mul_(s.to(gram_dtype).unsqueeze(-1))  # (n, D+1) W^½ Ẑ
        H = _gram_lower(Zs, min(4, Zs.shape[-1] // 128)).mul_(C)  # (D+1, D+1), lower triangle
        H.diagonal().add_(pen.to(gram_dtype))
        return (_cholesky(H.unsqueeze(0))[0].to(Zt.dtype),)  # factored in gram_dtype too, applied in float64
    M = C * (s.unsqueeze(-1) * K * s)  # (n, n)
    M.diagonal().add_(1.0)
    L = _cholesky(M.unsqueeze(0))[0]
    Z = Zt[:, :-1]
    a = W @ Z  # (D,)
    q = _a_inv(Z, s, L, a, C)  # (D,)
    sw = C * W.sum()
    schur = (sw - C * C * (a @ q)).clamp_min(1e-14 * sw.clamp_min(1e-300))  # ()
    return L, s, a, q, schur


def _a_inv(Z, s, L, v, C: float) -> torch.Tensor:
    """A⁻¹v by Woodbury: Z (n, D), s (n,), L the factor of I + C S K S, v (D,) → (D,)."""
    t = ((Z @ v) * s).unsqueeze(-1)  # (n, 1)
    t = _chol_solve(L, t).squeeze(-1) * s
    return v - C * (t @ Z)


def _solve(Zt, fac: tuple[torch.Tensor, ...], g, C: float) -> torch.Tensor:
    """H⁻¹g (D+1,) for one problem from its `_factor` result."""
    if len(fac) == 1:
        return _chol_solve(fac[0], g.unsqueeze(-1)).squeeze(-1)
    L, s, a, q, schur = fac
    u = _a_inv(Zt[:, :-1], s, L, g[:-1], C)  # A⁻¹ g_w
    db = (g[-1] - C * (a @ u)) / schur
    return torch.cat([u - C * db * q, db.unsqueeze(-1)])


_SMALL = 2**16  # problems of at most this many entries n (D+1) are gathered and batched; larger ones looped


def _rows_dot(Zt, act: list[int], v) -> torch.Tensor:
    """Ẑ_i v_j for the active problems i = act[j]: Zt (p, n, D+1), v (a, D+1) → (a, n). Large problems one at a
    time (a matrix–vector product each, reading Ẑ_i in place: no gathered copy, no badly strided batched kernel)."""
    if Zt.shape[1] * Zt.shape[2] <= _SMALL:
        return (Zt[act] @ v.unsqueeze(-1)).squeeze(-1)
    return torch.stack([Zt[i] @ v[j] for j, i in enumerate(act)])


def _cols_dot(Zt, act: list[int], r) -> torch.Tensor:
    """r_j Ẑ_i for the active problems i = act[j]: Zt (p, n, D+1), r (a, n) → (a, D+1)."""
    if Zt.shape[1] * Zt.shape[2] <= _SMALL:
        return (r.unsqueeze(1) @ Zt[act]).squeeze(1)
    return torch.stack([r[j] @ Zt[i] for j, i in enumerate(act)])


def _newton(Zt, y, m, C: float, tol: float, max_iter: int, gram_dtype: torch.dtype = torch.float64, fac0=None):
    """Newton iterations from θ = 0 for problems Zt (p, n, D+1) (last column: the row mask, for
    the intercept), labels y and mask m (p, n). Returns (θ (p, D+1), n_iter (p,), converged (p,)).

    The Hessian is refactored every iteration, except after a full step that shrank the gradient by `_REUSE`×
    or more (the quadratic phase): then the last factor serves again, which saves the costly factorisation on
    the last iterations (a step that does less well brings a fresh factor next time). Ẑ is never copied:
    finished problems leave the active list, their rows stay where they are."""
    p, n, D1 = Zt.shape
    kw = dict(dtype=Zt.dtype, device=Zt.device)
    pen = torch.ones(D1, **kw)
    pen[-1] = 0.0
    K = Zt[..., :-1] @ Zt[..., :-1].transpose(1, 2) if n < D1 - 1 else None  # (p, n, n)
    act = list(range(p))  # problems still iterating
    theta = torch.zeros(p, D1, **kw)
    f = torch.zeros_like(y)  # (a, n) decision values Ẑθ, carried along the steps (one pass over Ẑ fewer)
    out_theta = theta.clone()
    n_iter = torch.zeros(p, dtype=torch.int64, device=Zt.device)
    converged = torch.zeros(p, dtype=torch.bool, device=Zt.device)
    fac: list[tuple[torch.Tensor, ...]] = [()] * p if fac0 is None else [f or () for f in fac0]
    reuse = torch.tensor([bool(f) for f in fac], device=Zt.device)  # whether the factor of the last iterate serves
    g_prev = torch.full((p,), math.inf, **kw)
    for it in range(1, max_iter + 1):
        obj = _objective(theta, f, y, m, pen, C)
        prob = torch.sigmoid(f)
        g = pen * theta + C * _cols_dot(Zt, act, m * (prob - y))  # (a, D+1)
        g_norm = g.abs().amax(-1)
        reuse &= g_norm <= g_prev / _REUSE
        fresh = ~reuse
        W = m * prob * (1 - prob)  # (a, n)
        for j in fresh.nonzero().flatten().tolist():
            fac[j] = _factor(Zt[act[j]], None if K is None else K[act[j]], W[j], pen, C, gram_dtype)
        d = -torch.stack([_solve(Zt[i], fac[j], g[j], C) for j, i in enumerate(act)])  # (a, D+1)
        d = d * (_MAX_STEP / d.abs().amax(-1, keepdim=True).clamp_min(_MAX_STEP))  # saturated start: no leaps
        slope = (g * d).sum(-1)  # (a,) ≤ 0
        df = _rows_dot(Zt, act, d)  # (a, n)
        t = torch.ones_like(slope)
        ok = torch.zeros_like(slope, dtype=torch.bool)
        slack = 1e-12 * obj.abs()
        for _ in range(_HALVINGS):
            trial = _objective(theta + t.unsqueeze(-1) * d, f + t.unsqueeze(-1) * df, y, m, pen, C)
            ok |= trial <= obj + _ARMIJO * t * slope + slack
            if bool(ok.all()):
                break
            t = torch.where(ok, t, 0.5 * t)
        t = torch.where(ok, t, torch.zeros_like(t))
        step = t.unsqueeze(-1) * d
        theta = theta + step
        f = f + t.unsqueeze(-1) * df
        at = torch.tensor(act, device=Zt.device)
        n_iter[at] = it
        done = (t == 1) & (step.abs().amax(-1) <= tol * theta.abs().amax(-1).clamp_min(1.0))
        stuck = ~ok & fresh  # no decrease along a fresh Newton direction: leave it where it is
        reuse = t == 1  # after a full step the factor may serve the next iterate (if the gradient fell enough)
        g_prev = g_norm
        out_theta[at] = theta
        converged[at] = done
        leave = done | stuck
        if bool(leave.all()):
            break
        if bool(leave.any()):
            keep = ~leave
            kept = keep.nonzero().flatten().tolist()
            act, fac = [act[j] for j in kept], [fac[j] for j in kept]
            theta, f, y, m, reuse, g_prev = (x[keep] for x in (theta, f, y, m, reuse, g_prev))
    return out_theta, n_iter, converged


def _standardise(Z, c: int, standardize: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """In place, one problem: rows Z[:c] (its masked rows) standardised, the rest zeroed. Returns (μ, σ, constant)
    (D,), σ = 1 and the column zeroed for a feature constant on the rows (std ≤ `_CONSTANT` × its largest |x|)."""
    Z[c:].zero_()
    if not standardize:
        return torch.zeros_like(Z[0]), torch.ones_like(Z[0]), torch.zeros_like(Z[0], dtype=torch.bool)
    big = torch.maximum(Z[:c].amax(0), -Z[:c].amin(0))  # (D,) largest |x| on the rows
    ones = torch.ones(c, dtype=Z.dtype, device=Z.device)
    mu = (ones @ Z[:c]) / c  # (D,) (sums as matrix–vector products: faster than column reductions)
    Z[:c].sub_(mu)
    sd = ((ones @ Z[:c].square()) / c).sqrt()  # (D,) population std, of the centred rows
    const = sd <= _CONSTANT * big
    sd = torch.where(const, torch.ones_like(sd), sd)
    Z[:c].div_(sd).mul_(~const)
    return mu, sd, const


_SHARE_MIN = 3  # problems that read one X from which their first Hessians are derived together


def _shared_block(Xe: torch.Tensor, batch: tuple[int, ...]) -> int:
    """How many consecutive problems read the same X: the product of the trailing batch dims that X is broadcast
    over (stride 0 in the expanded X), e.g. F for X (*G, 1, N, D) against masks (F, N)."""
    block = 1
    for d in reversed(range(len(batch))):
        if Xe.stride(d) != 0 or batch[d] == 1:
            break
        block *= batch[d]
    return block


def _first_factors(X, masks, sd, const, C: float, gram_dtype: torch.dtype, dev) -> list[tuple[torch.Tensor]]:
    """The Hessian factors at θ = 0 of problems that share rows X (N, D) under their own masks (k, N) and
    standardisations (σ, constant: (k, D)), from one pass over the rows instead of k.

    At θ = 0 every weight is ¼, so H = diag(1, …, 1, 0) + C/4 [ẐᵀẐ, 0; 0, c] (standardised columns are centred).
    The rows fall into atoms (the sets of problems they belong to, e.g. a LODO fold's datasets); with the rows
    centred on their common mean, each problem's Σ (x − μ)(x − μ)ᵀ = Σ_atoms S_a − s sᵀ / c, S_a the atom's Gram
    (lower triangle) and s its row sum, then scaled by 1/σ. Problems with too many atoms get no shared factor."""
    k, D = masks.shape[0], X.shape[-1]
    union = masks.any(0)
    pattern, atom = torch.unique(masks[:, union].T, dim=0, return_inverse=True)  # (A, k), (n_U,)
    if len(pattern) > 2 * k:
        return [()] * k
    Xc = X[union].to(device=dev, dtype=torch.float64)  # (n_U, D)
    Xc -= Xc.mean(0)
    atom = atom.to(dev)
    grams, sums, counts = [], [], []
    for a in range(len(pattern)):
        rows = Xc[atom == a]
        grams.append(_gram_lower(rows.to(gram_dtype), min(4, D // 128)))  # (D, D) lower triangle
        sums.append(rows.sum(0))
        counts.append(len(rows))
    out: list[tuple[torch.Tensor]] = []
    for j in range(k):
        member = pattern[:, j].tolist()
        S = sum(g for g, keep in zip(grams, member) if keep)
        s = sum(v for v, keep in zip(sums, member) if keep)
        c = sum(n for n, keep in zip(counts, member) if keep)
        cov = S - (torch.outer(s, s) / c).to(gram_dtype)  # (D, D) Σ (x − μ_j)(x − μ_j)ᵀ, lower triangle
        scale = torch.where(const[j], 0.0, 1.0 / sd[j]).to(gram_dtype)
        H = torch.zeros(D + 1, D + 1, dtype=gram_dtype, device=dev)
        H[:D, :D] = cov * (0.25 * C * scale.unsqueeze(-1) * scale)
        H.diagonal()[:D] += 1.0
        H[D, D] = 0.25 * C * c
        out.append((_cholesky(H.unsqueeze(0))[0].to(torch.float64),))
    return out


def fit_logreg(
    X: ArrayLike,
    y: ArrayLike,
    mask: ArrayLike | None = None,
    *,
    C: float = 1.0,
    tol: float = 1e-8,
    max_iter: int = 100,
    standardize: bool = True,
    device: str | torch.device | None = None,
    max_chunk_bytes: int = 2**29,
    gram_dtype: torch.dtype | None = None,
) -> LogRegFit:
    """Fit every problem of X (*B, N, D) with labels y (*B, N) (0/1) on the rows where mask (*B, N) is true (None:
    all rows); y and mask broadcast against X's batch dims, so one X can serve many masks without a copy.

    C is scikit-learn's inverse L2 strength. A problem has converged when a full Newton step (in standardised
    coordinates) is at most tol × max(1, |θ|∞); it stops there or after max_iter iterations (steps with a reused
    factor count). standardize=False fits the raw features. device: where to solve (default: X's).
    max_chunk_bytes bounds the float64 working set of one chunk of problems. gram_dtype: the dtype the Hessian's
    Gram is accumulated and factored in (gradients, objective and solves stay float64, so the optimum does not
    depend on it); None: float32 on the CPU (twice float64's matmul rate there), float64 on other devices (a GPU
    may run float32 products in TF32, and H100-class ones multiply float64 as fast)."""
    Xe, ye, me, batch = _checked(X, y, mask, C, tol, max_iter)
    N, D = Xe.shape[-2:]
    dev = torch.device(device) if device is not None else Xe.device
    if gram_dtype is None:
        gram_dtype = torch.float32 if dev.type == "cpu" else torch.float64
    P = math.prod(batch)
    kw = dict(dtype=torch.float64, device=dev)
    coef, coef_std = torch.zeros(P, D, **kw), torch.zeros(P, D, **kw)
    intercept, intercept_std = torch.zeros(P, **kw), torch.zeros(P, **kw)
    n_iter = torch.zeros(P, dtype=torch.int64, device=dev)
    converged = torch.zeros(P, dtype=torch.bool, device=dev)
    mf, yf = me.reshape(P, N), ye.reshape(P, N)  # (P, N) small copies; X is read one problem at a time
    n_max = int(mf.sum(-1).max())
    per_problem = 8 * (2 * n_max * (D + 1) + 2 * min(n_max, D + 1) ** 2)
    chunk = max(1, min(P, max_chunk_bytes // per_problem))
    block = _shared_block(Xe, batch)  # consecutive problems reading one X (e.g. the folds of one layer)
    share = block >= _SHARE_MIN and chunk >= block
    if share:
        chunk -= chunk % block  # whole blocks per chunk
    buf = torch.empty(chunk * n_max * (D + 1), **kw)  # one chunk's Ẑ, reused by every chunk
    for start in range(0, P, chunk):
        idx = torch.arange(start, min(P, start + chunk))
        m_all = mf[idx]  # (p, N)
        cnt = m_all.sum(-1)  # (p,)
        n = int(cnt.max())
        rows = torch.argsort((~m_all).to(torch.int8), dim=-1, stable=True)[:, :n]  # (p, n): masked rows first
        m = m_all.gather(-1, rows).to(**kw)  # (p, n)
        yc = yf[idx].gather(-1, rows).to(**kw)  # (p, n)
        Zt = buf[: len(idx) * n * (D + 1)].view(len(idx), n, D + 1)
        mu, sd = torch.empty(len(idx), D, **kw), torch.empty(len(idx), D, **kw)
        const = torch.empty(len(idx), D, dtype=torch.bool, device=dev)
        for j, i in enumerate(idx.tolist()):
            Z = Zt[j, :, :D]
            Z.copy_(Xe[np.unravel_index(i, batch)].index_select(0, rows[j].to(Xe.device)))  # (n, D) its rows
            mu[j], sd[j], const[j] = _standardise(Z, int(cnt[j]), standardize)
        Zt[..., D] = m
        fac0 = None
        if share and n >= D + 1:  # primal Newton: the first Hessian from the block's shared Grams
            fac0 = []
            for b0 in range(0, len(idx), block):
                sl = slice(b0, min(len(idx), b0 + block))
                src = Xe[np.unravel_index(int(idx[b0]), batch)]
                fac0 += _first_factors(src, m_all[sl], sd[sl], const[sl], C, gram_dtype, dev)
        at = idx.to(dev)
        theta, n_iter[at], converged[at] = _newton(Zt, yc, m, C, tol, max_iter, gram_dtype, fac0)
        w, b = theta[:, :D], theta[:, D]
        coef_std[at], intercept_std[at] = w, b
        coef[at] = w / sd
        intercept[at] = b - (coef[at] * mu).sum(-1)
    return LogRegFit(
        coef=coef.reshape(*batch, D),
        intercept=intercept.reshape(batch),
        coef_std=coef_std.reshape(*batch, D),
        intercept_std=intercept_std.reshape(batch),
        n_iter=n_iter.reshape(batch),
        converged=converged.reshape(batch),
    )


__all__ = ["LogRegFit", "LogRegInputError", "fit_logreg"]
