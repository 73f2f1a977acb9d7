"""The inputs of `compare_checkpoints` (SPEC §6) from explicit sources or the defaults of
`posttrain_probe.data.defaults` (toy-world data for a toy-world start, else the shared public data sets), the
checkpoints of an RLVR run directory, and the terminal summary of a drift result."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


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
