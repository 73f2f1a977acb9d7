"""Assembling a patching run's `RunResult`: position-class maps normalized by the receiving model's gap,
bootstrap intervals, and the base / post / cross-model comparisons."""

from __future__ import annotations

import math
from dataclasses import asdict

import pandas as pd
import torch

from posttrain_probe.probes.patching.pairs import STATEMENT_CLASSES, EncodedPair, position_classes
from posttrain_probe.results import RunResult, provenance
from posttrain_probe.stats import bootstrap_ci, class_means, nanmean0, pearson
from posttrain_probe.utils.io import sha256_text

ANALYSIS = "truth_patching"
ROLES = ("base", "post")
DIRECTIONS = (("base", "base"), ("post", "post"), ("base", "post"), ("post", "base"))


def direction_name(src: str, dst: str) -> str:
    """'base' / 'post' for within-model maps, 'base_to_post' / 'post_to_base' across models."""
    return src if src == dst else f"{src}_to_{dst}"


def _class_masks(enc: EncodedPair, n_suffix: int) -> torch.Tensor:
    classes = position_classes(enc, n_suffix)
    m = torch.zeros(len(classes), enc.n_tokens, dtype=torch.bool)
    for c, pos in enumerate(classes):
        m[c, pos] = True
    return m


def assemble_result(pair, cfg, encoded, maps, lds, dirs) -> RunResult:
    n_suffix = min(e.n_tokens - e.statement[1] for e in encoded)
    class_names = list(STATEMENT_CLASSES) + [f"suffix_{i}" for i in range(n_suffix - 1)] + ["last"]
    masks = [_class_masks(e, n_suffix) for e in encoded]
    gap = {r: lds[f"ld_true.{r}"] - lds[f"ld_false.{r}"] for r in ROLES}
    valid = {r: gap[r] > cfg.min_gap for r in ROLES}
    both = valid["base"] & valid["post"]
    tensors = dict(lds)
    tensors["valid.base"], tensors["valid.post"] = valid["base"], valid["post"]
    rows, norm_maps = [], {}
    for d_i, (src, dst) in enumerate(dirs):
        name = direction_name(src, dst)
        tensors[f"delta.{name}"] = maps[name]
        for scope, keep in (("own", valid[dst]), ("common", both)):
            sel = keep.nonzero().flatten().tolist()
            per = (
                torch.stack([class_means(maps[name][i, : encoded[i].n_tokens], masks[i]) for i in sel]) if sel else None
            )
            mean_gap = float(gap[dst][sel].mean()) if sel else math.nan
            if per is None:
                per = torch.full((0, len(class_names), maps[name].shape[-1]), math.nan)
            norm = per / mean_gap if sel else per
            mean = nanmean0(norm) if sel else torch.full(per.shape[1:], math.nan)
            lo, hi = bootstrap_ci(norm, cfg.n_boot, cfg.ci, seed=cfg.seed + 10 * d_i + (scope == "common"))
            tensors[f"map.{scope}.{name}"] = mean.float()
            tensors[f"map_ci.{scope}.{name}"] = torch.stack([lo, hi]).float()
            if scope == "common":
                norm_maps[name] = mean
            for c, cname in enumerate(class_names):
                for l in range(mean.shape[1]):
                    rows.append(
                        {
                            "scope": scope,
                            "direction": name,
                            "position_class": cname,
                            "layer": l,
                            "effect": float(mean[c, l]),
                            "ci_lo": float(lo[c, l]),
                            "ci_hi": float(hi[c, l]),
                            "n_pairs": len(sel),
                            "mean_gap": mean_gap,
                        }
                    )
    summary = {
        "n_pairs_used": {
            "base": int(valid["base"].sum()),
            "post": int(valid["post"].sum()),
            "common": int(both.sum()),
        },
        "accuracy": {
            r: float(((lds[f"ld_true.{r}"] > 0).float().mean() + (lds[f"ld_false.{r}"] < 0).float().mean()) / 2)
            for r in ROLES
        },
        "mean_ld": {
            r: {"true": float(lds[f"ld_true.{r}"].mean()), "false": float(lds[f"ld_false.{r}"].mean())} for r in ROLES
        },
        "position_classes": class_names,
        "n_layers": pair.base.n_layers,
        "maps_common": {k: v.tolist() for k, v in norm_maps.items()},
        "comparisons": _comparisons(norm_maps, class_names),
    }
    table = pd.DataFrame(
        [
            {
                "true": e.pair.true_text,
                "false": e.pair.false_text,
                "true_subject": e.pair.true_subject,
                "false_subject": e.pair.false_subject,
                "object": e.pair.object,
                "dataset": e.pair.dataset,
                "n_tokens": e.n_tokens,
                "subject_start": e.subject[0],
                "subject_end": e.subject[1],
                "object_start": e.object[0],
                "object_end": e.object[1],
                **{f"ld_{w}_{r}": float(lds[f"ld_{w}.{r}"][i]) for r in ROLES for w in ("true", "false")},
                **{f"valid_{r}": bool(valid[r][i]) for r in ROLES},
            }
            for i, e in enumerate(encoded)
        ]
    )
    return RunResult(
        analysis=ANALYSIS,
        config=asdict(cfg),
        summary=summary,
        tables={"maps": pd.DataFrame(rows), "pairs": table},
        tensors=tensors,
        provenance=provenance(
            pair,
            data={
                "n_pairs": len(encoded),
                "pairs_sha256": sha256_text("\n".join(f"{e.pair.true_text}\t{e.pair.false_text}" for e in encoded)),
            },
        ),
        seeds={"pairs": cfg.seed, "shots": cfg.seed, "bootstrap": cfg.seed},
        notes=[
            "patched site: resid_post.l (block l output) at one token; "
            "effect = (LD_patched − LD_false) / mean "
            "(LD_true − LD_false) of the receiving model over the pairs used",
            "maps are averaged per position class; subject classes follow ROME, 'last' is the final prompt token",
            "both models see the same raw few-shot prompt (no chat template), so positions align across models",
        ],
    )


def _comparisons(maps: dict[str, torch.Tensor], class_names: list[str]) -> dict:
    """Pearson and max |difference| between map pairs, overall and at subject / object / last positions."""
    groups = {
        "subject": [i for i, c in enumerate(class_names) if c.startswith("subject")],
        "object": [class_names.index("object")],
        "last": [len(class_names) - 1],
    }
    wanted = [("base", "post"), ("base_to_post", "post"), ("post_to_base", "base"), ("base_to_post", "base")]
    out = {}
    for a, b in wanted:
        if a not in maps or b not in maps:
            continue
        d = (maps[a] - maps[b]).abs()
        entry = {"pearson": pearson(maps[a], maps[b]), "max_abs_diff": _nanmax(d)}
        entry.update({f"max_abs_diff_{g}": _nanmax(d[rows]) for g, rows in groups.items()})
        out[f"{a}_vs_{b}"] = entry
    return out


def _nanmax(x: torch.Tensor) -> float:
    x = x[torch.isfinite(x)]
    return float(x.max()) if x.numel() else math.nan
