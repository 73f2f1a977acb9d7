"""Figures of a causal-tracing run, drawn from its saved `RunResult` only (`read_run(dir)`); no model is run.

Built on `matplotlib.figure.Figure` (Agg canvas), so importing this module never changes pyplot's backend.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from posttrain_probe.plots import write_figures
from posttrain_probe.results import RunResult

KIND_TITLES = {
    "resid": "hidden state (resid)",
    "mlp": "MLP output (window)",
    "attn": "attention output (window)",
}
KIND_CMAPS = {"resid": "Purples", "mlp": "Greens", "attn": "Reds"}
ROLE_COLORS = {"base": "tab:blue", "post": "tab:orange"}
CLASS_LABELS = {
    "first_subject": "first subject token",
    "middle_subject": "middle subject tokens",
    "last_subject": "last subject token",
    "first_subsequent": "first subsequent token",
    "further": "further tokens",
    "last": "last token",
}


def _check(result: RunResult) -> None:
    if result.analysis != "causal_tracing":
        raise ValueError(f"this is a {result.analysis!r} run, not a causal_tracing run; pass a `trace` run dir")


def _kinds(result: RunResult) -> list[str]:
    return list(result.summary["kinds"])


def _map(result: RunResult, scope: str, role: str, kind: str) -> np.ndarray:
    key = f"aie.{scope}.{role}.{kind}"
    if key not in result.tensors:
        raise ValueError(f"the run has no {key!r}; pass scope 'own' or 'common' and a role of the run")
    return result.tensors[key].numpy()


def _class_axis(ax, result: RunResult, labels: bool = True) -> None:
    names = result.summary["token_classes"]
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels([CLASS_LABELS.get(n, n) for n in names] if labels else [])
    ax.set_xlabel("layer")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def heatmaps(result: RunResult, role: str = "base", scope: str = "own") -> Figure:
    """ROME-style maps (token class × layer) of the AIE for each restoration kind of one model."""
    _check(result)
    kinds = _kinds(result)
    fig = Figure(figsize=(4.2 * len(kinds), 3.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(kinds)))
    n = result.summary["n_known"][role] if scope == "own" else result.summary["n_common"]
    for i, (ax, kind) in enumerate(zip(axes, kinds)):
        m = _map(result, scope, role, kind)
        im = ax.imshow(m, aspect="auto", cmap=KIND_CMAPS[kind], vmin=min(0.0, np.nanmin(m)), interpolation="nearest")
        fig.colorbar(im, ax=ax, label="AIE" if i == len(kinds) - 1 else None)
        ax.set_title(KIND_TITLES[kind])
        _class_axis(ax, result, labels=i == 0)
    fig.suptitle(f"{role}: average indirect effect over {n} facts ({scope})")
    return fig


def fact_heatmaps(result: RunResult, role: str = "base", fact: int | None = None) -> Figure:
    """Token × layer IE maps of one traced fact (default: the first one the model knows), one panel per kind,
    with the prompt's tokens as row labels (subject tokens marked with *)."""
    _check(result)
    idx = result.tensors[f"fact_index.{role}"].tolist()
    if not idx:
        raise ValueError(f"{role} knows no fact in this run; nothing to draw")
    fact = idx[0] if fact is None else fact
    if fact not in idx:
        raise ValueError(f"fact {fact} was not traced for {role}; choose one of {idx[:10]}...")
    row = result.tables["facts"].set_index("index").loc[fact]
    tokens = str(row["tokens"]).split(" | ")
    s0, s1 = int(row["subject_start"]), int(row["subject_end"])
    labels = [f"{t}*" if s0 <= i < s1 else t for i, t in enumerate(tokens)]
    kinds = _kinds(result)
    fig = Figure(figsize=(4.2 * len(kinds), 0.35 * len(tokens) + 1.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(kinds)))
    j = idx.index(fact)
    for i, (ax, kind) in enumerate(zip(axes, kinds)):
        m = result.tensors[f"ie.{role}.{kind}"][j, : len(tokens)].numpy()
        im = ax.imshow(m, aspect="auto", cmap=KIND_CMAPS[kind], interpolation="nearest")
        fig.colorbar(im, ax=ax)
        ax.set_yticks(range(len(tokens)))
        ax.set_yticklabels(labels if i == 0 else [])
        ax.set_xlabel("layer")
        ax.set_title(KIND_TITLES[kind])
    fig.suptitle(f"{role}: {row['prompt']!s} → {row['answer']!s}")
    return fig


def aie_last_subject(result: RunResult, scope: str = "own") -> Figure:
    """AIE by layer at the last subject token, base and post, with bootstrap intervals."""
    _check(result)
    kinds = _kinds(result)
    c = result.summary["token_classes"].index("last_subject")
    fig = Figure(figsize=(4.0 * len(kinds), 3.2), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(kinds), sharey=True))
    for ax, kind in zip(axes, kinds):
        for role in ("base", "post"):
            m = _map(result, scope, role, kind)[c]
            lo, hi = result.tensors[f"aie_ci.{scope}.{role}.{kind}"].numpy()[:, c]
            x = np.arange(len(m))
            ax.plot(x, m, marker="o", color=ROLE_COLORS[role], label=role)
            if np.isfinite(lo).any():
                ax.fill_between(x, lo, hi, color=ROLE_COLORS[role], alpha=0.2, lw=0)
        ax.axhline(0, color="k", lw=0.6)
        ax.set_title(KIND_TITLES[kind])
        ax.set_xlabel("layer")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].set_ylabel("AIE at last subject token")
    axes[0].legend()
    return fig


def triptych(result: RunResult, kind: str = "mlp") -> Figure:
    """Base, post and base − post AIE maps (token class × layer) on the facts both models know."""
    _check(result)
    if kind not in _kinds(result):
        raise ValueError(f"kind {kind!r} was not traced; choose one of {_kinds(result)}")
    maps = [_map(result, "common", r, kind) for r in ("base", "post", "base_minus_post")]
    top = np.nanmax(np.abs(np.stack(maps[:2]))) if np.isfinite(np.stack(maps[:2])).any() else 1.0
    dmax = np.nanmax(np.abs(maps[2])) if np.isfinite(maps[2]).any() else 1.0
    fig = Figure(figsize=(13, 3.4), layout="constrained")
    axes = fig.subplots(1, 3)
    titles = ("base", "post", "base − post")
    for i, (ax, m, title) in enumerate(zip(axes, maps, titles)):
        if i < 2:
            im = ax.imshow(m, aspect="auto", cmap=KIND_CMAPS[kind], vmin=min(0.0, np.nanmin(m)), vmax=top)
        else:
            im = ax.imshow(m, aspect="auto", cmap="RdBu_r", vmin=-dmax or -1, vmax=dmax or 1)
        fig.colorbar(im, ax=ax)
        ax.set_title(title)
        _class_axis(ax, result, labels=i == 0)
    r = result.summary["pearson_base_post"][kind]["class_map"]
    rs = "nan" if r is None or (isinstance(r, float) and math.isnan(r)) else f"{r:.2f}"
    fig.suptitle(f"{KIND_TITLES[kind]}: {result.summary['n_common']} common facts, Pearson r = {rs}")
    return fig


def figures(result: RunResult) -> dict[str, Figure]:
    """Every figure of a tracing run, by file stem."""
    _check(result)
    out = {f"heatmaps_{r}": heatmaps(result, r) for r in ("base", "post") if result.summary["n_known"][r]}
    if any(result.summary["n_known"].values()):
        out["aie_last_subject"] = aie_last_subject(result)
    for r in ("base", "post"):
        if result.summary["n_known"][r]:
            out[f"fact_{r}"] = fact_heatmaps(result, r)
    if result.summary["n_common"]:
        out.update({f"triptych_{k}": triptych(result, k) for k in _kinds(result)})
    return out


def save_figures(result: RunResult, out_dir: str | Path, fmt: str = "png", dpi: int = 130) -> list[Path]:
    """Write every figure of `result` to `out_dir` (created); returns the paths."""
    return write_figures(figures(result), out_dir, fmt, dpi)


__all__ = ["aie_last_subject", "fact_heatmaps", "figures", "heatmaps", "save_figures", "triptych"]
