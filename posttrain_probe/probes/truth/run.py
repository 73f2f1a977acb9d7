"""The truth analysis's run: `run_truth`, its inputs and steering vectors (what it computes: the package docstring)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from posttrain_probe.data import Statement
from posttrain_probe.pair import ModelPair
from posttrain_probe.probes.truth.config import TruthConfig, TruthData
from posttrain_probe.probes.truth.data import (
    ANALYSIS,
    activation_key,
    cached_activations,
    load_truth_statements,
    source_hashes,
    split_statements,
    subsample,
)
from posttrain_probe.probes.truth.fit import PROBE_KINDS
from posttrain_probe.probes.truth.model import answer_token_ids, collect_last_token_acts
from posttrain_probe.probes.truth.reach import reach_note
from posttrain_probe.probes.truth.tables import (
    ROLES,
    build_notes,
    build_summary,
    check_fewshot_lengths,
    choose_probe_layer,
    default_band,
    fewshot_shots,
    fit_all,
    intervention_reach,
    intervention_rows,
    lodo_table,
    probe_predictions,
    run_interventions,
    score_tables,
)
from posttrain_probe.results import RunResult, RunTimer, provenance
from posttrain_probe.utils.io import sha256_text

# ---------------------------------------------------------------------------------------------- the run


@dataclass(frozen=True)
class TruthInputs:
    """The statements, where they came from, and an earlier run dir whose activations may be reused."""

    statements: Sequence[Statement]
    data_sources: Sequence[str] = ()
    reuse_from: str | None = None


def load_inputs(data: TruthData, sources, cfg=None) -> TruthInputs:
    """The statements of `data` (default: the pair's default truth statements), grouped into datasets."""
    files = [str(s) for s in data.data] or [str(s) for s in sources.truth_statements]
    statements = load_truth_statements(files, list(data.datasets) or None, dataset_column=data.dataset_column)
    return TruthInputs(statements, files, data.reuse)


def run(pair: ModelPair, inputs: TruthInputs, config: TruthConfig | None = None) -> RunResult:
    """The probe contract's entry point: `run_truth` on `inputs`."""
    return run_truth(pair, inputs.statements, config, inputs.reuse_from, inputs.data_sources)


def run_truth(
    pair: ModelPair,
    statements: Sequence[Statement],
    config: TruthConfig | None = None,
    reuse_from: str | os.PathLike | None = None,
    data_sources: Sequence[str | os.PathLike] = (),
) -> RunResult:
    """The truthfulness analysis of `pair` on `statements` (see the module docstring); returns a RunResult
    for `write_run`. `reuse_from`: an earlier truth run dir whose cached activations are reused when their
    key (model + data hash) matches."""
    cfg = config or TruthConfig()
    with RunTimer() as timer:
        result = _run_truth(pair, statements, cfg, reuse_from, data_sources)
    return timer.record_into(result)


def _fit_device(model) -> torch.device | None:
    """The model's CUDA device, where the probe solve then runs too; None (the CPU) otherwise."""
    try:
        dev = model.device
    except (AttributeError, StopIteration):  # a model without local parameters (e.g. remote)
        return None
    return dev if dev.type == "cuda" else None


def _run_truth(pair, statements, cfg: TruthConfig, reuse_from, data_sources) -> RunResult:
    statements = subsample(list(statements), cfg.max_per_dataset, cfg.seed)
    y = np.array([s.label for s in statements])
    if len(statements) < 8 or y.sum() < 2 or (1 - y).sum() < 2:
        raise ValueError(f"{len(statements)} statements ({int(y.sum())} true): need ≥ 8 with ≥ 2 of each class")
    ds = np.array([s.dataset for s in statements])
    texts = [s.text for s in statements]
    test, split_source = split_statements(statements, cfg.test_frac, cfg.seed)
    if len(set(y[~test])) < 2 or not test.any():
        raise ValueError("the train split lacks a class or the test split is empty; add statements or change test_frac")
    answers = answer_token_ids(pair.tokenizer, cfg.true_label, cfg.false_label)
    n_blocks = pair.base.n_layers
    if cfg.probe_layer is not None and cfg.probe_layer > n_blocks:
        raise ValueError(f"probe_layer {cfg.probe_layer} > {n_blocks}: resid layers are 0..{n_blocks}")
    shots = fewshot_shots(statements, ~test, cfg)
    rows = intervention_rows(statements, test, shots, cfg)
    longest_prompt = check_fewshot_lengths(pair, statements, rows, shots, cfg)  # fail before the heavy work

    acts, keys, reused = {}, {}, {}
    reuse = Path(reuse_from) if reuse_from else None
    for role in ROLES:
        model = pair.models()[role]
        keys[role] = activation_key(model, texts)
        cached = cached_activations(reuse, keys[role], role)
        reused[role] = cached is not None
        acts[role] = (
            cached
            if cached is not None
            else collect_last_token_acts(
                model,
                texts,
                cfg.batch_size,
                progress=cfg.progress,
                desc=f"{role} activations",
                tokenizer=pair.tokenizer,
            )
        )
    acts_np = {r: a.float().numpy() for r, a in acts.items()}  # float32 views; probes fit in float64
    fit_dev = _fit_device(pair.base)

    fits = fit_all(acts_np, y, ~test, cfg, device=fit_dev)
    tables = score_tables(acts_np, y, ds, test, fits)
    lp = cfg.probe_layer
    if lp is None:
        lp = choose_probe_layer(tables["layer_accuracy"], cfg.direction_probe)
    if cfg.lodo != "none" and len(set(ds)) >= 2:
        layers = list(range(n_blocks + 1)) if cfg.lodo == "all" else [lp]
        tables["lodo"] = lodo_table(acts_np, y, ds, cfg, layers, device=fit_dev)
    tables["probe_predictions"] = probe_predictions(acts_np, y, test, fits, lp)
    band = default_band(lp, n_blocks) if cfg.band_start is None else list(range(cfg.band_start, lp + 1))
    deltas = {r: torch.from_numpy(fits[(r, cfg.direction_probe, lp)].delta).float() for r in ROLES}

    notes: list[str] = []
    reach: dict[str, dict] = {}
    if rows:
        per_stmt, nie, nie_ds, cells = run_interventions(pair, statements, rows, shots, deltas, band, answers, cfg)
        tables |= {"nie": nie, "nie_by_dataset": nie_ds, "intervention_pd": per_stmt}
        if cfg.reach_pairs:
            reach, tables["intervention_reach"] = intervention_reach(
                pair, statements, rows, shots, band, answers, cfg, per_stmt
            )
    else:
        cells = {}
        notes.append("no dataset could supply few-shot examples and held-out statements: no intervention was run")

    stmt_table = pd.DataFrame(
        dict(
            text=texts,
            label=y,
            dataset=ds,
            split=np.where(test, "test", "train"),
            intervened=np.isin(np.arange(len(texts)), rows),
        )
    )
    tables["statements"] = stmt_table
    summary = build_summary(statements, y, ds, test, split_source, tables, lp, band, deltas, acts_np, answers, cells)
    summary |= {
        "activation_keys": keys,
        "activations_reused": reused,
        "fewshot_datasets": sorted(shots),
        "longest_fewshot_prompt_tokens": longest_prompt,
    }
    notes += build_notes(pair, summary, statements)
    if reach:
        summary["intervention_reach"] = reach
        for role in ROLES:
            note = reach_note(role, reach[role], summary["nie"].get(f"{role}->{role}", float("nan")))
            if note:
                notes.append(note)
    tensors: dict[str, torch.Tensor] = {}
    for role in ROLES:
        L1 = acts_np[role].shape[1]
        for kind in PROBE_KINDS:
            tensors[f"directions.{kind}.{role}"] = torch.tensor(
                np.stack([fits[(role, kind, l)].direction for l in range(L1)]), dtype=torch.float32
            )  # (L+1, D)
        tensors[f"mu_true.{role}"] = torch.tensor(np.stack([fits[(role, "mass_mean", l)].mu_true for l in range(L1)]))
        tensors[f"mu_false.{role}"] = torch.tensor(np.stack([fits[(role, "mass_mean", l)].mu_false for l in range(L1)]))
        tensors[f"delta.{role}"] = deltas[role]
        if cfg.keep_activations:
            tensors[f"activations.{role}"] = acts[role]
    data_prov = {
        "sources": [str(s) for s in data_sources],
        "statements_sha256": sha256_text("\n".join(texts)),
    }
    data_prov["files"] = source_hashes(data_sources)
    return RunResult(
        analysis=ANALYSIS,
        config=asdict(cfg),
        summary=summary,
        tables=tables,
        tensors=tensors,
        provenance=provenance(pair, data=data_prov),
        seeds={
            "seed": cfg.seed,
            "split": cfg.seed,
            "fewshot": cfg.seed,
            "intervention_sample": cfg.seed + 1,
            "random_control": cfg.seed + 2,
        },
        notes=notes,
    )


def artifacts(result: RunResult, pair: ModelPair, run_dir: str | os.PathLike) -> list[Path]:
    """Files beside a written truth run: its steering vectors in RUN/steering."""
    return save_truth_vectors(result, pair, Path(run_dir) / "steering")


def save_truth_vectors(result: RunResult, pair: ModelPair, out_dir: str | os.PathLike) -> list[Path]:
    """Save each model's δ at the probe layer as a `SteeringVector` (`<out_dir>/truth_<role>.safetensors`
    + `.json`): mode "add" at resid[probe layer] (`resid_pre.{l}`, or `resid_post.{L-1}` for l = L), every
    position, scale 1 = +δ (towards TRUE; negative scales push towards FALSE). The run's own intervention
    used the band and the last two statement tokens; that is recorded in the metadata, not in the rule."""
    from posttrain_probe.steering import SteeringVector

    if result.analysis != ANALYSIS:
        raise ValueError(f"this is a {result.analysis!r} result, not a truth result; pass run_truth's output")
    s = result.summary
    lp, n_blocks = int(s["probe_layer"]), pair.base.n_layers
    site, layer = ("resid_pre", lp) if lp < n_blocks else ("resid_post", n_blocks - 1)
    texts_sha = result.provenance.get("data", {}).get("statements_sha256")
    paths = []
    for role in ROLES:
        la = result.tables["layer_accuracy"]
        at = la[(la.model == role) & (la.layer == lp)]
        scores = {f"{r.probe}.test_acc": float(r.test_acc) for r in at.itertuples()}
        scores |= {f"{r.probe}.test_auroc": float(r.test_auroc) for r in at.itertuples()}
        scores |= {k: v for k, v in s.get("nie", {}).items() if k.endswith(f"->{role}") or k.startswith(role)}
        sv = SteeringVector.from_model(
            result.tensors[f"delta.{role}"],
            pair.models()[role],
            tokenizer=pair.tokenizer,
            site=site,
            layer=layer,
            positions="all",
            mode="add",
            scale=1.0,
            description=f"truth direction of {role}: δ = ((μ_true − μ_false)·d̂) d̂ at resid[{lp}]",
            analysis=ANALYSIS,
            direction_probe=result.config.get("direction_probe"),
            resid_layer=lp,
            run_band=s.get("band"),
            run_positions="last two statement tokens, +δ on false / −δ on true statements",
            extraction_data_sha256=texts_sha,
            seed=result.seeds.get("seed"),
            selection_scores=scores,
        )
        path = Path(out_dir) / f"truth_{role}"
        sv.save(path)
        paths.append(path.with_name(path.name + ".safetensors"))
    return paths


def format_summary(summary: dict[str, Any]) -> str:
    """A few lines for the terminal: sizes, probe layer, accuracies, cosines and the NIE table."""
    lines = [
        f"{summary['n_statements']} statements in {len(summary['datasets'])} datasets; "
        f"probe layer {summary['probe_layer']} of 0..{summary['n_layers'] - 1}, band {summary['band']}",
        "held-out accuracy at the probe layer: "
        + ", ".join(f"{k} {v:.3f}" for k, v in summary["test_acc_at_probe_layer"].items()),
        "base·post cosine at the probe layer: "
        + ", ".join(f"{k} {v:.3f}" for k, v in summary["cosine_at_probe_layer"].items()),
    ]
    if "nie" in summary:
        lines.append("NIE (direction→model): " + ", ".join(f"{k} {v:.3f}" for k, v in summary["nie"].items()))
        lines.append("few-shot accuracy: " + ", ".join(f"{k} {v:.3f}" for k, v in summary["fewshot_accuracy"].items()))
    for role, r in summary.get("intervention_reach", {}).items():
        if r.get("n_pairs"):
            lines.append(
                f"{role}: true→false patch of the intervened cells restores {r['band_cells_share']:.3f} of the gap "
                f"({r['n_pairs']} pairs); the last position: " + "/".join(f"{v:.2f}" for v in r["last_position_share"])
            )
    return "\n".join(lines)
