"""The refusal analysis's run: `run_refusal`, its inputs and artefacts (what it computes: the package docstring)."""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd

from posttrain_probe.pair import ModelPair
from posttrain_probe.probes.refusal.config import RefusalConfig, RefusalDataSpec
from posttrain_probe.probes.refusal.core import (
    select_candidate,
)
from posttrain_probe.probes.refusal.data import ANALYSIS, ROLES, RefusalData, load_refusal_data
from posttrain_probe.probes.refusal.diagnostics import diagnose, diagnosis_note, locus_table
from posttrain_probe.probes.refusal.evaluate import (
    _fmt,
    evaluate,
    orthogonalization_gap,
    prepare_model,
    score_candidates,
)
from posttrain_probe.probes.refusal.model import format_prompts
from posttrain_probe.results import RunResult, RunTimer, provenance
from posttrain_probe.stats import cosine_batched

# ---------------------------------------------------------------------------------------------- the run


def load_inputs(data: RefusalDataSpec, sources, cfg: RefusalConfig) -> RefusalData:
    """The instruction splits of `data` (default: the pair's default refusal data); for the shared data sets,
    AdvBench is the held-out harmful set (the refusal_direction splits have none)."""
    folder = data.data or str(sources.refusal)
    advbench = data.advbench
    if advbench is None and not data.data and sources.kind == "shared":
        candidate = Path(sources.refusal) / "advbench.csv"
        advbench = str(candidate) if candidate.is_file() else None
    return load_refusal_data(folder, advbench, cfg.n_train, cfg.n_val, cfg.n_eval, cfg.seed)


def run(pair: ModelPair, inputs: RefusalData, config: RefusalConfig | None = None) -> RunResult:
    """The probe contract's entry point: `run_refusal` on `inputs`."""
    return run_refusal(pair, inputs, config)


def run_refusal(pair: ModelPair, data: RefusalData, config: RefusalConfig | None = None) -> RunResult:
    """The refusal analysis of `pair` (see the module docstring); returns a RunResult for `write_run`."""
    cfg = config or RefusalConfig()
    with RunTimer() as timer:
        result = _run(pair, data, cfg)
    return timer.record_into(result)


def _run(pair: ModelPair, data: RefusalData, cfg: RefusalConfig) -> RunResult:
    models = pair.models()
    states = {r: prepare_model(r, models[r], data, cfg) for r in ROLES}
    L = pair.base.n_layers
    cand_tables, chosen, sel_summary, baselines = [], {}, {}, {}
    for r, st in states.items():
        table, baselines[r] = score_candidates(st, cfg)
        idx, table = select_candidate(table, L, cfg.kl_max, cfg.max_layer_frac, cfg.induce_min)
        row = table.loc[idx]
        l, p = int(row.layer), int(row.position)
        chosen[r] = (st.candidates[l, p].clone(), l)
        sel_summary[r] = {
            "layer": l,
            "position": p,
            "position_token": row.position_token,
            "bypass_score": float(row.bypass_score),
            "induce_score": float(row.induce_score),
            "kl": float(row.kl),
            "norm": float(row.norm),
            "passed_filters": bool(row.passes_all),
            "n_passing": int(table.passes_all.sum()),
            **baselines[r],
        }
        cand_tables.append(table)
    candidates = pd.concat(cand_tables, ignore_index=True)
    diagnostics = {}
    if cfg.diagnostics:
        for r, st in states.items():
            t = candidates[candidates.model == r]
            train = [
                format_prompts(st.model, r, xs, _fmt(cfg, r), cfg.base_template)
                for xs in (data.harmful_train, data.harmless_train)
            ]
            diagnostics[r] = diagnose(st, t, *train, cfg.diagnostic_scales, cfg.batch_size)
    evaluation, generations = evaluate(states, chosen, data, cfg)

    b, p_ = states["base"], states["post"]
    pb, pp = sel_summary["base"]["position"], sel_summary["post"]["position"]
    cos_rows = pd.DataFrame(
        {
            "layer": list(range(L)),
            "cos_last_position": cosine_batched(b.candidates[:, -1], p_.candidates[:, -1]).tolist(),
            "cos_selected_positions": cosine_batched(b.candidates[:, pb], p_.candidates[:, pp]).tolist(),
            "cos_base_to_selected_base": cosine_batched(b.candidates[:, pb], chosen["base"][0]).tolist(),
            "cos_post_to_selected_post": cosine_batched(p_.candidates[:, pp], chosen["post"][0]).tolist(),
            "norm_base": b.candidates[:, pb].norm(dim=-1).tolist(),
            "norm_post": p_.candidates[:, pp].norm(dim=-1).tolist(),
        }
    )
    notes = list(data.notes)
    ortho = {}
    if cfg.check_orthogonalization:
        from posttrain_probe.pair import UnsupportedArchitectureError

        for r in ROLES:
            try:
                ortho[r] = orthogonalization_gap(states[r], chosen[r][0])
            except UnsupportedArchitectureError as e:
                ortho[r] = None
                notes.append(f"weight orthogonalization skipped for {r}: {e}")
    for r in ROLES:
        if not sel_summary[r]["passed_filters"]:
            notes.append(
                f"{r}: no candidate passed every filter (layer < {cfg.max_layer_frac}·L, KL < {cfg.kl_max}, "
                f"induce > {cfg.induce_min}); the lowest bypass score among layer-eligible candidates "
                "was taken"
            )
    summary = _summary(sel_summary, evaluation, cos_rows, chosen, states, ortho, L)
    tables = {"candidates": candidates, "evaluation": evaluation, "generations": generations, "cosines": cos_rows}
    if diagnostics:
        summary["diagnostics"] = diagnostics
        tables["locus"] = pd.concat([locus_table(r, d["locus"]) for r, d in diagnostics.items()], ignore_index=True)
        for r, d in diagnostics.items():
            note = diagnosis_note(r, d, baselines[r], summary["refusal_rate"], cfg.add_scale)
            if note:
                notes.append(note)
    tensors = {f"candidates.{r}": states[r].candidates for r in ROLES}
    tensors |= {f"direction.{r}": chosen[r][0] for r in ROLES}
    return RunResult(
        analysis=ANALYSIS,
        config=asdict(cfg),
        summary=summary,
        tables=tables,
        tensors=tensors,
        provenance=provenance(
            pair,
            data={"sources": data.sources, "sha256": data.hashes()},
            model_extra={
                r: {
                    "prompt_format": states[r].fmt,
                    "refusal_start_tokens": states[r].model.tokenizer.convert_ids_to_tokens(states[r].score_ids),
                }
                for r in ROLES
            },
        ),
        seeds={"seed": cfg.seed},
        notes=notes,
    )


def _summary(sel, evaluation: pd.DataFrame, cos_rows: pd.DataFrame, chosen, states, ortho, L: int) -> dict:
    rates: dict[str, dict[str, float]] = {}
    for row in evaluation.itertuples():
        key = f"{row.direction_from}->{row.applied_to}" if row.condition != "baseline" else f"{row.applied_to}"
        rates.setdefault(f"{row.prompt_set}.{row.condition}", {})[key] = round(row.refusal_rate, 4)
    kl = {
        f"{r.condition}:{r.direction_from}->{r.applied_to}": round(r.kl, 4)
        for r in evaluation[(evaluation.prompt_set == "harmless") & (evaluation.condition != "baseline")].itertuples()
    }
    return {
        "n_layers": L,
        "formats": {r: states[r].fmt for r in ROLES},
        "post_instruction_tokens": {r: states[r].post_tokens for r in ROLES},
        "selected": sel,
        # float32, like the table of cosines
        "cosine_selected_directions": float(cosine_batched(chosen["base"][0], chosen["post"][0])),
        "cosine_by_layer_last_position": [round(x, 4) for x in cos_rows.cos_last_position],
        "refusal_rate": rates,
        "kl_harmless": kl,
        "orthogonalization_max_abs_logit_diff": ortho,
    }


# ---------------------------------------------------------------------------------------------- artefacts


def artifacts(result: RunResult, pair: ModelPair, run_dir: str | os.PathLike) -> list[Path]:
    """Files beside a written refusal run: its steering vectors in RUN/steering and, when the config asks,
    weight-orthogonalized HF checkpoints in RUN/orthogonalized/<role>."""
    paths = save_refusal_vectors(result, pair, Path(run_dir) / "steering")
    if result.config.get("export_orthogonalized"):
        from posttrain_probe.probes.refusal.orthogonalize import export_orthogonalized

        for role in ROLES:
            export_orthogonalized(
                pair.models()[role],
                result.tensors[f"direction.{role}"],
                Path(run_dir) / "orthogonalized" / role,
                metadata={"analysis": ANALYSIS, "selected": result.summary["selected"][role]},
                overwrite=True,
            )
            paths.append(Path(run_dir) / "orthogonalized" / role)
    return paths


def save_refusal_vectors(result: RunResult, pair: ModelPair, out_dir: str | os.PathLike) -> list[Path]:
    """Save each model's selected direction twice as a `SteeringVector`: `refusal_<role>_ablate` (mode
    "ablate", resid_all at every layer: the bypass intervention) and `refusal_<role>_add` (mode "add" of the
    raw mean difference at resid_pre[l], every position: the induce intervention)."""
    from posttrain_probe.steering import SteeringVector

    if result.analysis != ANALYSIS:
        raise ValueError(f"this is a {result.analysis!r} result, not a refusal result; pass run_refusal's output")
    paths = []
    hashes = result.provenance.get("data", {}).get("sha256", {})
    for role in ROLES:
        sel = result.summary["selected"][role]
        vec = result.tensors[f"direction.{role}"]
        common = dict(
            analysis=ANALYSIS,
            extraction_data_sha256={k: v for k, v in hashes.items() if "train" in k},
            selection_data_sha256={k: v for k, v in hashes.items() if "val" in k},
            seed=result.seeds.get("seed"),
            selection_scores={k: sel[k] for k in ("bypass_score", "induce_score", "kl", "passed_filters")},
            source_layer=sel["layer"],
            source_position=sel["position"],
            prompt_format=result.summary["formats"][role],
        )
        for mode, kw in (
            ("ablate", dict(site="resid_all", layer=None, mode="ablate")),
            (
                "add",
                dict(
                    site="resid_pre",
                    layer=sel["layer"],
                    mode="add",
                    scale=result.config.get("add_scale", 1.0),
                ),
            ),
        ):
            sv = SteeringVector.from_model(
                vec,
                pair.models()[role],
                tokenizer=pair.tokenizer,
                positions="all",
                description=f"refusal direction of {role} (difference in means at resid_pre[{sel['layer']}], "
                f"post-instruction position {sel['position']}); {mode}",
                **kw,
                **common,
            )
            path = Path(out_dir) / f"refusal_{role}_{mode}"
            sv.save(path)
            paths.append(path.with_name(path.name + ".safetensors"))
    return paths


def format_summary(summary: dict[str, Any]) -> str:
    """A few lines for the terminal: the selected candidates, refusal rates, cosine, orthogonalization gap."""
    lines = []
    for r, s in summary["selected"].items():
        lines.append(
            f"{r}: selected layer {s['layer']} position {s['position']} ({s['position_token']!r}); bypass "
            f"{s['bypass_score']:.2f}, induce {s['induce_score']:.2f}, KL {s['kl']:.3f}"
            + ("" if s["passed_filters"] else " [no candidate passed every filter]")
        )
    for k, v in summary["refusal_rate"].items():
        lines.append(f"refusal rate {k}: " + ", ".join(f"{a} {b:.2f}" for a, b in v.items()))
    lines.append(f"cosine of the selected directions (base·post): {summary['cosine_selected_directions']:.3f}")
    gap = summary.get("orthogonalization_max_abs_logit_diff") or {}
    if gap:
        lines.append(
            "orthogonalized weights vs runtime ablation, max |Δlogit|: "
            + ", ".join(f"{r} {'n/a' if g is None else f'{g:.1e}'}" for r, g in gap.items())
        )
    return "\n".join(lines)
