"""Does the toy world contain the mechanisms the instruments look for? The model-organism checks.

Each instrument first has to *find* a mechanism we know should be there before its base-vs-post comparison
means anything. These checks read the probes' saved results of one toy pair and compare each number with the
bar a working mechanism must clear (one model at a time; nothing here compares base with post):

- tracing: the last subject token carries the fact — MLP AIE there peaks in the lower half of the layers at
  ≥ 10% of the last position's resid peak, and its resid AIE reaches ≥ 25% of that peak in the lower half
  (ROME's subject enrichment), in both models;
- refusal: in the post model, ablating its selected direction drops held-out harmful refusal from ≥ 0.9 to
  ≤ 0.2 while harmless stays ≤ 0.1, and adding it makes ≥ 0.8 of harmless prompts refused (Arditi et al.);
- truth: the post model's own direction moves the few-shot answer: NIE ≥ 0.3 of the TRUE/FALSE gap;
- patching: both models judge the patched true/false statements correctly (accuracy ≥ 0.8);
- neurons: some neurons of the base model's probed layer write into the unembedding's null space far beyond
  a random direction (ρ² more than 3 SD above its isotropic law, ≥ 3 neurons), and the random control sets
  spread little enough (1.96 SD < 0.2 of the entropy gap) for the ±20% claim to be judged.

`mechanism_checks` is pure over saved results; `check_toy_pair` runs the probes on a built pair and writes the
numbers into the pair's report.json (`mechanisms`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from posttrain_probe.results import RunResult

PROBES = ("tracing", "refusal", "truth", "patching", "neurons")
MLP_SHARE, RESID_SHARE = 0.10, 0.25
REFUSAL_BASELINE, REFUSAL_ABLATED, HARMLESS_ABLATED, HARMLESS_ADDED = 0.9, 0.2, 0.1, 0.8
TRUTH_NIE, JUDGE_ACC = 0.3, 0.8
NULL_SD, MIN_NULL_NEURONS, CONTROL_HALF_WIDTH = 3.0, 3, 0.2
Z = 1.959964


def tracing_checks(summary: Mapping[str, Any]) -> dict[str, Any]:
    """Subject enrichment per model from the tracing summary's own-model class maps (token class × layer)."""
    classes = list(summary["token_classes"])
    n_layers = int(summary["n_layers"])
    lower = max(1, n_layers // 2)
    out: dict[str, Any] = {}
    for role in ("base", "post"):
        aie = summary["aie"]["own"][role]
        last = aie["resid"][classes.index("last")]
        peak = max(v for v in last if v is not None)
        mlp = [v if v is not None else math.nan for v in aie["mlp"][classes.index("last_subject")]]
        resid = [v if v is not None else math.nan for v in aie["resid"][classes.index("last_subject")]]
        mlp_layer = int(np.nanargmax(mlp))
        mlp_share = float(np.nanmax(mlp) / peak) if peak > 0 else math.nan
        resid_share = float(np.nanmax(resid[:lower]) / peak) if peak > 0 else math.nan
        out[role] = {
            "last_resid_peak": peak,
            "mlp_last_subject_peak_layer": mlp_layer,
            "mlp_last_subject_share": mlp_share,
            "resid_last_subject_early_share": resid_share,
            "pass": bool(mlp_layer < lower and mlp_share >= MLP_SHARE and resid_share >= RESID_SHARE),
        }
    out["pass"] = out["base"]["pass"] and out["post"]["pass"]
    return out


def refusal_checks(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The post model's refusal direction: baseline, ablated and induced refusal rates on held-out prompts."""
    r = summary["refusal_rate"]
    out = {
        "harmful_baseline": r["harmful.baseline"]["post"],
        "harmful_ablated": r["harmful.ablation"]["post->post"],
        "harmless_baseline": r["harmless.baseline"]["post"],
        "harmless_ablated": r["harmless.ablation"]["post->post"],
        "harmless_added": r["harmless.addition"]["post->post"],
        "direction": {k: summary["selected"]["post"].get(k) for k in ("layer", "position_token", "passed_filters")},
    }
    out["pass"] = bool(
        out["harmful_baseline"] >= REFUSAL_BASELINE
        and out["harmful_ablated"] <= REFUSAL_ABLATED
        and out["harmless_ablated"] <= HARMLESS_ABLATED
        and out["harmless_added"] >= HARMLESS_ADDED
    )
    return out


def truth_checks(summary: Mapping[str, Any]) -> dict[str, Any]:
    """NIE of the post model's own truth direction, with the few-shot accuracies and the patch reach."""
    nie = summary.get("nie", {})
    reach = summary.get("intervention_reach", {})
    out = {
        "nie_post_own": nie.get("post->post", math.nan),
        "nie_base_own": nie.get("base->base", math.nan),
        "fewshot_accuracy": summary.get("fewshot_accuracy", {}),
        "band_cells_share": {k: v.get("band_cells_share") for k, v in reach.items()},
    }
    out["pass"] = bool(out["nie_post_own"] >= TRUTH_NIE)
    return out


def patching_checks(summary: Mapping[str, Any]) -> dict[str, Any]:
    acc = summary.get("accuracy", {})
    out = {"accuracy": acc, "n_pairs_used": summary.get("n_pairs_used", {})}
    out["pass"] = bool(acc and min(acc.values()) >= JUDGE_ACC)
    return out


def null_fraction_law(k: int, d: int) -> tuple[float, float]:
    """Mean and SD of ρ² = ‖U_nullᵀ u‖² for a uniformly random unit vector u in R^d: Beta(k/2, (d−k)/2)."""
    mean = k / d
    return mean, math.sqrt(2 * k * (d - k) / (d * d * (d + 2)))


def neuron_checks(result: RunResult, d_model: int) -> dict[str, Any]:
    """Null-space neurons of the base model's probed layer above the isotropic law, and the control spread."""
    s = result.summary
    k, layer = int(s["null_k"]), int(s["layer"])
    mean, sd = null_fraction_law(k, d_model)
    screen = result.tables["screen"]
    rows = screen[(screen.role == "base") & (screen.layer == layer)]
    rho2 = rows.null_frac.to_numpy() ** 2
    z = (rho2 - mean) / sd
    shares = {key: v for key, v in s.get("explained_share", {}).items() if "_own_" in key and key.endswith("_total")}
    half = {key: Z * v["control_share_both_std"] for key, v in shares.items()}
    out = {
        "layer": layer,
        "null_k": k,
        "rho2_random_mean": mean,
        "rho2_random_sd": sd,
        "max_z": float(z.max()) if z.size else math.nan,
        "n_above_3sd": int((z > NULL_SD).sum()),
        "entropy_gap": s.get("entropy_gap_post_minus_base", math.nan),
        "control_half_width": half,
    }
    spread_ok = bool(half) and max(half.values()) < CONTROL_HALF_WIDTH
    out["pass"] = bool(out["n_above_3sd"] >= MIN_NULL_NEURONS and spread_ok)
    return out


def mechanism_checks(results: Mapping[str, RunResult], d_model: int) -> dict[str, Any]:
    """{probe: numbers + pass} for the probes present in `results` (run dirs of one toy pair)."""
    out: dict[str, Any] = {}
    if "tracing" in results:
        out["tracing"] = tracing_checks(results["tracing"].summary)
    if "refusal" in results:
        out["refusal"] = refusal_checks(results["refusal"].summary)
    if "truth" in results:
        out["truth"] = truth_checks(results["truth"].summary)
    if "patching" in results:
        out["patching"] = patching_checks(results["patching"].summary)
    if "neurons" in results:
        out["neurons"] = neuron_checks(results["neurons"], d_model)
    return out


def check_toy_pair(toy: Any, out: str | Path, seed: int = 0, progress: bool = False) -> dict[str, Any]:
    """Run the probes on a built toy pair (their toy sizes), write each run under `out`, and store the checks in
    the pair's report.json under `mechanisms`. Returns the checks."""
    from posttrain_probe import registry
    from posttrain_probe.results import write_run
    from posttrain_probe.studies.common import Study

    size = "quick" if toy.config.preset == "quick" else "toy"
    study = Study(
        name="organism", base=str(toy.base_dir), post=str(toy.post_dir), out=Path(out), device="cpu",
        dtype="float32", seed=seed, force=True, progress=progress, figures=False, size_name=size,
    )  # fmt: skip
    pair = study.load_pair()
    results = {}
    for name in PROBES:
        res = registry.get(name).execute(pair, study.sources, size=size, seed=seed, progress=progress)
        write_run(Path(out) / name, res, overwrite=True)
        results[name] = res
    checks = mechanism_checks(results, pair.base.d_model)
    store_checks(toy.root, checks)
    return checks


def store_checks(toy_root: str | Path, checks: Mapping[str, Any]) -> None:
    """Write `checks` into the toy build's report.json (`mechanisms`), atomically."""
    import json

    from posttrain_probe.utils.io import atomic_write_json

    path = Path(toy_root) / "report.json"
    report = json.loads(path.read_text())
    report["mechanisms"] = dict(checks)
    atomic_write_json(path, report)


def _row(name: str, checks: Mapping[int, Mapping[str, Any]], cell) -> str:
    cells = [f"seed {seed}: {cell(c[name])} ({'pass' if c[name]['pass'] else 'FAIL'})" for seed, c in checks.items()]
    return f"  {name:<9}" + "; ".join(cells)


def format_checks(per_seed: Mapping[int, Mapping[str, Any]]) -> str:
    """Terminal lines: each mechanism's deciding numbers and pass/FAIL per seed, and how many hold on every seed."""
    rows = {
        "tracing": lambda c: "MLP@last-subject {:.2f} of peak (layer {}), resid {:.2f} / {:.2f}".format(
            min(c["base"]["mlp_last_subject_share"], c["post"]["mlp_last_subject_share"]),
            max(c["base"]["mlp_last_subject_peak_layer"], c["post"]["mlp_last_subject_peak_layer"]),
            c["base"]["resid_last_subject_early_share"],
            c["post"]["resid_last_subject_early_share"],
        ),
        "refusal": lambda c: "harmful {:.2f} → ablated {:.2f}; harmless ablated {:.2f}, added {:.2f}".format(
            c["harmful_baseline"], c["harmful_ablated"], c["harmless_ablated"], c["harmless_added"]
        ),
        "truth": lambda c: f"NIE of the post direction {c['nie_post_own']:+.2f}",
        "patching": lambda c: "judgement accuracy " + ", ".join(f"{k} {v:.2f}" for k, v in c["accuracy"].items()),
        "neurons": lambda c: (
            f"{c['n_above_3sd']} null-space neurons > 3 SD (max z {c['max_z']:.1f}); control "
            f"half-width {max(c['control_half_width'].values(), default=math.nan):.2f} of the gap"
        ),
    }
    present = [n for n in rows if all(n in c for c in per_seed.values())]
    lines = ["mechanisms of the toy pair (bars: studies/organism.py)"]
    lines += [_row(n, per_seed, rows[n]) for n in present]
    held = sum(all(c[n]["pass"] for c in per_seed.values()) for n in present)
    lines.append(f"{held} of {len(present)} mechanisms present on every seed ({len(per_seed)} seeds)")
    return "\n".join(lines)
