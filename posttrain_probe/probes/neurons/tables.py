"""Conditions, result tables and the summary of an entropy-neuron run (pure pandas over computed numbers).

Conditions ablated in each model: every neuron selected by either rule in *either* model alone (so the same
neuron's effect can be read side by side in base and post; fine-tuning keeps neuron identity, which the
matching table checks), `n_controls` norm-decile-matched random neurons per such neuron, optionally every
neuron, the model's own selected sets, the other model's selected sets, and random sets matched decile by
decile to the own sets.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from posttrain_probe.probes.neurons.ablate import COPIES, METRICS, AblationStats
from posttrain_probe.probes.neurons.screen import control_sets, iou, match_neurons, matched_controls

ROLES = ("base", "post")
RULES = ("du", "null")
SOURCES = ("own", "base", "post")  # whose selected set is ablated in both models for the explained share


def union(sel: dict[str, list[int]]) -> list[int]:
    """Neurons of both rules, Du rule first, without repeats."""
    return list(dict.fromkeys(sel["du"] + sel["null"]))


def build_conditions(
    screen_layer: pd.DataFrame,
    own: dict[str, list[int]],
    other: dict[str, list[int]],
    n_controls: int,
    n_control_sets: int,
    all_neurons: bool,
    seed: int,
) -> tuple[list[tuple[str, str, list[int]]], dict[int, list[int]], dict[str, int]]:
    """(kind, name, neurons) conditions, the single-neuron controls {neuron: controls} and the number of
    control sets per rule. Controls never include a neuron selected in either model."""
    both = list(dict.fromkeys(union(own) + union(other)))
    ctrl = matched_controls(screen_layer, both, n_controls, both, seed + 1)
    singles = list(dict.fromkeys(both + [c for cs in ctrl.values() for c in cs]))
    if all_neurons:
        singles = list(dict.fromkeys(singles + [int(i) for i in screen_layer.neuron]))
    conds: list[tuple[str, str, list[int]]] = [("single", str(i), [i]) for i in singles]
    n_sets = {}
    for k, rule in enumerate(RULES):
        conds.append(("set", f"{rule}_set", own[rule]))
        conds.append(("set", f"{rule}_set_other", other[rule]))
        sets = control_sets(screen_layer, own[rule], n_control_sets, both, seed + 2 + k)
        conds += [("set", f"{rule}_set_control_{j}", s) for j, s in enumerate(sets)]
        n_sets[rule] = len(sets)
    return conds, ctrl, n_sets


def single_group(i: int, own: dict[str, list[int]], other: dict[str, list[int]], controls) -> str:
    """'du', 'null', 'du+null' (selected in this model), 'other_model' (selected only in the other model),
    'control', or 'rest' (ablated because all_neurons was asked for)."""
    tags = [r for r in RULES if i in own[r]]
    if tags:
        return "+".join(tags)
    if i in union(other):
        return "other_model"
    return "control" if any(i in cs for cs in controls.values()) else "rest"


def effects_table(
    role: str,
    conds: Sequence[tuple[str, str, list[int]]],
    stats: AblationStats,
    screen_layer: pd.DataFrame,
    own: dict[str, list[int]],
    other: dict[str, list[int]],
    controls: dict[int, list[int]],
) -> pd.DataFrame:
    """One row per condition: group, neurons, norm (singles), every metric × copy with its standard error,
    and dH_via_norm = dH_total − dH_direct (the part mediated by the final norm's scale)."""
    mean, se = stats.aggregate()  # (C, copy, metric)
    norms = screen_layer.set_index("neuron").norm
    rows = []
    for c, (kind, name, neurons) in enumerate(conds):
        if kind == "single":
            group = single_group(neurons[0], own, other, controls)
        else:
            group = "control" if "_control_" in name else ("other_model" if name.endswith("_other") else "own")
        row: dict[str, Any] = {
            "role": role,
            "condition": name,
            "kind": kind,
            "group": group,
            "neurons": " ".join(map(str, neurons)),
            "n_neurons": len(neurons),
            "norm": float(norms[neurons[0]]) if kind == "single" else float("nan"),
        }
        for m, metric in enumerate(METRICS):
            for k, copy in enumerate(COPIES):
                row[f"{metric}_{copy}"] = float(mean[c, k, m])
                row[f"{metric}_{copy}_se"] = float(se[c, k, m])
        row["dH_via_norm"] = row["dH_total"] - row["dH_direct"]
        rows.append(row)
    return pd.DataFrame(rows)


def side_by_side(effects: dict[str, pd.DataFrame], selections: dict[str, dict[str, list[int]]]) -> pd.DataFrame:
    """Every neuron selected in either model, its single-neuron effects in base and in post."""
    cols = ["norm", "dH_total", "dH_direct", "dH_via_norm", "dL_total", "dL_direct", "absdH_total"]
    frames = []
    for r in ROLES:
        e = effects[r]
        e = e[e.kind == "single"].assign(neuron=lambda d: d.condition.astype(int)).set_index("neuron")[cols]
        frames.append(e.add_suffix(f"_{r}"))
    neurons = list(dict.fromkeys(union(selections["base"]) + union(selections["post"])))
    out = frames[0].join(frames[1], how="inner").loc[neurons].reset_index()
    for r in ROLES:
        for rule in RULES:
            out[f"{rule}_{r}"] = out.neuron.isin(selections[r][rule])
    return out


def explained_share(clean_entropy: dict[str, float], effects: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Share of the base→post entropy gap G = H_post − H_base explained by mean-ablating a selected set:
    share_both = 1 − G_ablated / G = (ΔH_base − ΔH_post) / G, share_post = −ΔH_post / G, share_base =
    ΔH_base / G; `source` says whose set is ablated (own: each model its own; base / post: that model's
    set in both). Controls (own sets only): the k-th random set of each model, paired."""
    gap = clean_entropy["post"] - clean_entropy["base"]
    inv_gap = 1.0 / gap if gap != 0 else float("nan")  # identical models: no gap, no share
    rows = []
    for rule in RULES:
        for copy in COPIES:
            col = f"dH_{copy}"

            def val(role: str, name: str, col=col) -> float:
                e = effects[role]
                return float(e.loc[(e.kind == "set") & (e.condition == name), col].iloc[0])

            own, other = f"{rule}_set", f"{rule}_set_other"
            pairs = {
                "own": (val("base", own), val("post", own)),
                "base": (val("base", own), val("post", other)),
                "post": (val("base", other), val("post", own)),
            }
            ctrl = {
                r: effects[r].loc[effects[r].condition.str.startswith(f"{rule}_set_control_"), col].to_numpy()
                for r in ROLES
            }
            n = min(len(ctrl["base"]), len(ctrl["post"]))
            ctrl_both = (ctrl["base"][:n] - ctrl["post"][:n]) * inv_gap
            for source in SOURCES:
                d_base, d_post = pairs[source]
                rows.append(
                    {
                        "rule": rule,
                        "source": source,
                        "effect": copy,
                        "H_base": clean_entropy["base"],
                        "H_post": clean_entropy["post"],
                        "gap": gap,
                        "dH_base": d_base,
                        "dH_post": d_post,
                        "share_both": (d_base - d_post) * inv_gap,
                        "share_post": -d_post * inv_gap,
                        "share_base": d_base * inv_gap,
                        "control_share_both_mean": float(ctrl_both.mean()) if n else float("nan"),
                        "control_share_both_std": float(ctrl_both.std(ddof=1)) if n > 1 else float("nan"),
                    }
                )
    return pd.DataFrame(rows)


def matching_table(directions: dict[str, torch.Tensor], selections: dict[str, dict[str, list[int]]]):
    """Each model's selected neurons matched into the other model by cosine of the write vectors."""
    frames = []
    for role, other in (("base", "post"), ("post", "base")):
        sel = selections[role]
        df = match_neurons(directions[role], directions[other], union(sel))
        df.insert(0, "from_role", role)
        df["rules"] = ["+".join(r for r in RULES if n in sel[r]) for n in df.neuron]
        df["match_selected_in_other"] = df.match.isin(set(union(selections[other])))
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def set_summary(effects: pd.DataFrame, rule: str) -> dict[str, float]:
    """The own set's effects and the mean / std of its control sets."""
    sets = effects[effects.kind == "set"]
    main = sets[sets.condition == f"{rule}_set"].iloc[0]
    other = sets[sets.condition == f"{rule}_set_other"].iloc[0]
    ctrl = sets[sets.condition.str.startswith(f"{rule}_set_control_")]
    out = {}
    for col in ("dH_total", "dH_direct", "dL_total", "dL_direct", "dH_via_norm"):
        out[col] = float(main[col])
        out[f"{col}_other_model_set"] = float(other[col])
        out[f"{col}_control_mean"] = float(ctrl[col].mean()) if len(ctrl) else float("nan")
        out[f"{col}_control_std"] = float(ctrl[col].std(ddof=1)) if len(ctrl) > 1 else float("nan")
    return out


def singles_summary(effects: pd.DataFrame) -> dict[str, float]:
    """Medians of the single-neuron effects per group (selected by this model, by a rule, controls)."""
    s = effects[effects.kind == "single"]
    out = {}
    for grp, mask in (
        ("selected", s.group.isin(["du", "null", "du+null"])),
        ("du", s.group.isin(["du", "du+null"])),
        ("null", s.group.isin(["null", "du+null"])),
        ("control", s.group == "control"),
    ):
        for col in ("dH_total", "dH_direct", "dH_via_norm", "absdH_total", "absdH_direct"):
            out[f"{grp}_{col}_median"] = float(s[mask][col].median()) if mask.any() else float("nan")
    return out


def build_summary(per: dict[str, dict[str, Any]], k: int, share: pd.DataFrame, matching: pd.DataFrame):
    """The run's summary dict (see `run_neurons`)."""
    sel = {r: per[r]["selection"] for r in ROLES}
    s: dict[str, Any] = {
        "layer": per["base"]["layer"],
        "null_k": k,
        "n_eval_predictions": int(per["base"]["stats"].n_tokens.sum()),
        "selection": sel,
        "iou": {rule: iou(sel["base"][rule], sel["post"][rule]) for rule in RULES},
        "iou_du_vs_null": {r: iou(sel[r]["du"], sel[r]["null"]) for r in ROLES},
    }
    for r in ROLES:
        h, loss = per[r]["stats"].clean_means()
        sv = per[r]["svals"]
        screen = per[r]["screen"]
        sl = screen[screen.layer == s["layer"]]
        s[r] = {
            "entropy": h,
            "loss": loss,
            "unembed_sigma_min_over_max": float(sv[0] / sv[-1]),
            "null_frac_max": float(sl.null_frac.max()),
            "null_frac_median": float(sl.null_frac.median()),
            "null_frac_random_expectation": float(np.sqrt(k / len(sv))),
            "n_control_sets": per[r]["n_control_sets"],
            "sets": {rule: set_summary(per[r]["effects"], rule) for rule in RULES},
            "singles": singles_summary(per[r]["effects"]),
        }
    s["entropy_gap_post_minus_base"] = s["post"]["entropy"] - s["base"]["entropy"]
    s["explained_share"] = {
        f"{row.rule}_{row.source}_{row.effect}": {
            "share_both": row.share_both,
            "share_post": row.share_post,
            "share_base": row.share_base,
            "control_share_both_mean": row.control_share_both_mean,
            "control_share_both_std": row.control_share_both_std,
        }
        for row in share.itertuples()
    }
    d0, d1 = per["base"]["directions"].double(), per["post"]["directions"].double()
    s["same_index_cosine_mean"] = float(torch.nn.functional.cosine_similarity(d0, d1, dim=1).mean())
    s["matched_to_same_index"] = {r: float(matching[matching.from_role == r].same_index.mean()) for r in ROLES}
    return s


def build_notes(s: dict[str, Any]) -> list[str]:
    """Plain-language lines with the numbers that answer the questions of the analysis."""
    notes = []
    for r in ROLES:
        for rule in RULES:
            e = s[r]["sets"][rule]
            notes.append(
                f"{r}, {rule} set: ΔH total {e['dH_total']:+.3g} (controls {e['dH_total_control_mean']:+.3g} "
                f"± {e['dH_total_control_std']:.2g}), direct {e['dH_direct']:+.3g} (controls "
                f"{e['dH_direct_control_mean']:+.3g}); Δloss total {e['dL_total']:+.3g}"
            )
    notes.append(
        f"IoU base vs post: Du rule {s['iou']['du']:.2f}, null-space rule {s['iou']['null']:.2f}; "
        f"mean same-index cosine of write vectors {s['same_index_cosine_mean']:.3f}"
    )
    for r in ROLES:
        notes.append(
            f"{r}: max null-space fraction ρ {s[r]['null_frac_max']:.3f} "
            f"(median {s[r]['null_frac_median']:.3f}; "
            f"a random direction gives ≈ {s[r]['null_frac_random_expectation']:.3f})"
        )
    gap = s["entropy_gap_post_minus_base"]
    for key, v in s["explained_share"].items():
        if "_own_" in key:
            notes.append(
                f"entropy gap post − base {gap:+.4f} nats; {key}: ablating both sets explains "
                f"{v['share_both']:+.1%} (control sets {v['control_share_both_mean']:+.1%} ± "
                f"{v['control_share_both_std']:.1%})"
            )
    if abs(gap) < 1e-3:
        notes.append("the entropy gap is below 1e-3 nats: explained shares are ratios of tiny numbers")
    return notes
