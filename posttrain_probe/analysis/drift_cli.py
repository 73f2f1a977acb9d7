"""`posttrain-probe compare-checkpoints START CKPT... --out DIR`: internal change along a checkpoint series
(SPEC §6), with the inputs of every probe loaded from explicit sources or the defaults of
`posttrain_probe.data.defaults` (toy-world data for a toy-world START, else the shared public data sets)."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path

from posttrain_probe.analysis.drift import TRACING_KINDS, DriftConfig
from posttrain_probe.cli_args import finish_run, fresh_out_dir


@dataclass
class DriftInputs:
    """What `compare_checkpoints` probes with; `sources` records where each part came from."""

    facts: list = field(default_factory=list)
    statements: list = field(default_factory=list)
    harmful: list[str] = field(default_factory=list)
    harmless: list[str] = field(default_factory=list)
    cka_texts: list[str] = field(default_factory=list)
    neuron_texts: list[str] = field(default_factory=list)
    sources: dict[str, str | list[str] | None] = field(default_factory=dict)


def expand_checkpoints(items: list[str]) -> tuple[list[str], Path | None]:
    """CKPT arguments → checkpoint sources in order: an RLVR run directory contributes its complete step_*
    checkpoints (oldest first) and its metrics.jsonl; anything else is taken as one checkpoint."""
    from posttrain_probe.rlvr.run import RLVRRun

    out: list[str] = []
    metrics = None
    for item in items:
        if RLVRRun.is_run_dir(item):
            run = RLVRRun(item)
            found = run.checkpoints()
            if not found:
                raise FileNotFoundError(
                    f"RLVR run {run.path} has no complete checkpoint; train longer or pass step_* dirs"
                )
            out += [str(p) for _, p in found]
            if metrics is None and run.metrics_path.is_file():
                metrics = run.metrics_path
        else:
            out.append(item)
    return out, metrics


def load_drift_inputs(
    start: str | os.PathLike,
    facts: str | None = None,
    statements: list[str] | None = None,
    instructions: str | None = None,
    texts: str | None = None,
    max_facts: int = 50,
    max_statements: int = 200,
    max_instructions: int = 32,
    n_cka_texts: int = 64,
    n_neuron_texts: int = 96,
    tracing: bool = True,
    neurons: bool = True,
    seed: int = 0,
) -> DriftInputs:
    """Facts (first `max_facts`), statements and harmful/harmless train instructions (seeded samples of
    `max_statements` and `max_instructions` per class), CKA texts and neuron texts (seeded, disjoint samples)
    from the given sources, each defaulting to `default_sources(start)`."""
    from posttrain_probe.data import load_facts, load_refusal_splits, sample_records
    from posttrain_probe.data.defaults import default_sources
    from posttrain_probe.probes.neurons import load_texts
    from posttrain_probe.probes.truth.data import load_truth_statements

    found: list = []

    def d():  # the defaults, looked up (and a toy world built) only when a source is missing
        if not found:
            found.append(default_sources(start))
        return found[0]

    out = DriftInputs()
    if tracing:
        src = facts or str(d().facts)
        split = None if facts else d().facts_split
        out.facts = load_facts(src, split=split, limit=max_facts)
        out.sources["facts"] = src
    st_src = statements or [str(p) for p in d().truth_statements]
    out.statements = sample_records(load_truth_statements(st_src), max_statements, seed)
    out.sources["statements"] = list(st_src)
    folder = instructions or str(d().refusal)
    splits = load_refusal_splits(folder)
    out.harmful = [x.text for x in sample_records(splits.harmful_train, max_instructions, seed)]
    out.harmless = [x.text for x in sample_records(splits.harmless_train, max_instructions, seed + 1)]
    out.sources["instructions"] = folder
    text_src = texts or str(d().texts)
    all_texts = load_texts(text_src)
    picked = sample_records(all_texts, min(len(all_texts), n_cka_texts + n_neuron_texts), seed)
    out.cka_texts = picked[:n_cka_texts]
    out.neuron_texts = picked[n_cka_texts:] if neurons else []
    out.sources["texts"] = text_src
    return out


def add_cli(sub: argparse._SubParsersAction) -> None:
    """Register `compare-checkpoints START CKPT... --out DIR`."""
    p = sub.add_parser(
        "compare-checkpoints",
        help="internal change along a checkpoint series: weights, CKA, truth/refusal drift, tracing, entropy neurons",
    )
    p.add_argument("base", help="start of the series: hub id, local HF dir or toyworld:post (the RLVR start model)")
    p.add_argument("checkpoints", nargs="+", help="checkpoint dirs in order, or an RLVR run dir (all its checkpoints)")
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--force", action="store_true", help="overwrite --out")
    p.add_argument("--figures", action="store_true", help="also save figures into OUT/figures")
    p.add_argument("--backend", default="nnsight", choices=["bridge", "nnsight"])
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default=None)
    p.add_argument("--metrics", default=None, help="a run's metrics.jsonl to line up with (default: the RLVR run's)")
    p.add_argument("--facts", default=None, help="facts for causal tracing (known_1000-style json or folder)")
    p.add_argument("--statements", nargs="+", default=None, help="true/false statement csv files or folders")
    p.add_argument("--instructions", default=None, help="folder of harmful*/harmless* instruction splits")
    p.add_argument("--texts", default=None, help="text file (one per line) for CKA and entropy-neuron ablation")
    for name, default in (
        ("max_facts", 50),
        ("max_statements", 200),
        ("max_instructions", 32),
        ("n_cka_texts", 64),
        ("n_neuron_texts", 96),
        ("seed", 0),
    ):
        p.add_argument("--" + name.replace("_", "-"), type=int, default=default)
    d = DriftConfig()
    p.add_argument("--tracing-samples", type=int, default=d.tracing_samples)
    p.add_argument("--tracing-window", type=int, default=d.tracing_window)
    p.add_argument("--tracing-kinds", nargs="+", default=list(d.tracing_kinds), choices=TRACING_KINDS)
    p.add_argument("--n-select", type=int, default=d.n_select, help="entropy neurons per set (Du rule)")
    p.add_argument("--no-tracing", action="store_true", help="skip causal tracing per checkpoint")
    p.add_argument("--no-neuron-effects", action="store_true", help="skip entropy-neuron ablation per checkpoint")
    p.add_argument("--no-screens", action="store_true", help="skip the entropy-neuron weight screens")
    p.set_defaults(func=_cli_compare)


def _cli_compare(args: argparse.Namespace) -> int:
    from posttrain_probe.analysis.drift import compare_checkpoints
    from posttrain_probe.results import write_run

    out = fresh_out_dir(args)
    checkpoints, run_metrics = expand_checkpoints(args.checkpoints)
    n_eval = min(DriftConfig.n_eval, args.n_neuron_texts // 2)
    cfg = DriftConfig(
        tracing_kinds=tuple(args.tracing_kinds),
        tracing_samples=args.tracing_samples,
        tracing_window=args.tracing_window,
        max_facts=args.max_facts,
        n_select=args.n_select,
        n_ref=max(1, args.n_neuron_texts - n_eval),
        n_eval=max(1, n_eval),
        seed=args.seed,
    )
    inputs = load_drift_inputs(
        args.base,
        args.facts,
        args.statements,
        args.instructions,
        args.texts,
        args.max_facts,
        args.max_statements,
        args.max_instructions,
        args.n_cka_texts,
        args.n_neuron_texts,
        tracing=not args.no_tracing,
        neurons=not args.no_neuron_effects,
        seed=args.seed,
    )
    metrics = args.metrics or run_metrics
    if args.metrics and not Path(args.metrics).is_file():
        raise FileNotFoundError(f"--metrics {args.metrics} not found; pass a run's metrics.jsonl")
    result = compare_checkpoints(
        args.base,
        checkpoints,
        statements=inputs.statements,
        harmful=inputs.harmful,
        harmless=inputs.harmless,
        cka_texts=inputs.cka_texts,
        metrics_jsonl=metrics,
        backend=args.backend,
        screen_neurons=not args.no_screens,
        facts=inputs.facts or None,
        neuron_texts=inputs.neuron_texts or None,
        config=cfg,
        device=args.device,
        dtype=args.dtype,
    )
    result.config["data_sources"] = inputs.sources
    write_run(out, result, overwrite=args.force)
    return finish_run(args, out, "posttrain_probe.plots.drift", format_summary(result.summary))


def format_summary(summary: dict) -> str:
    """A few lines for the terminal."""
    lines = [
        f"{summary['n_checkpoints']} checkpoints, steps {summary['steps']}; largest relative weight change at the "
        f"last step {summary['max_relative_weight_change_last']:.3g} ({summary['module_most_changed_last']})"
    ]
    if "min_cka_last" in summary:
        lines.append(f"min CKA to start at the last step: {summary['min_cka_last']:.3f}")
    for name in ("truth", "refusal"):
        key = f"{name}_direction_min_cosine_last"
        if key in summary:
            lines.append(f"{name} direction, min cosine to start at the last step: {summary[key]:.3f}")
    for kind, v in summary.get("tracing", {}).items():
        if kind.endswith("_last"):
            lines.append(
                f"tracing {kind[:-5]}: r to start map {v['pearson_to_start']:.3f}, max |Δ| {v['max_abs_change']:.3g}, "
                f"peak {v['peak'][0]} layer {v['peak'][1]}"
            )
    n = summary.get("entropy_neurons")
    if n:
        lines.append(
            f"entropy {n['entropy_clean_first']:.3f}→{n['entropy_clean_last']:.3f}; own Du set ablation ΔH "
            f"{n['dH_total_own_set_first']:+.3g}→{n['dH_total_own_set_last']:+.3g}, IoU with start set "
            f"{n['iou_own_set_with_start_last']:.2f}"
        )
    return "\n".join(lines)
