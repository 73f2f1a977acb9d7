"""The causal-tracing run: `run_tracing` and its inputs (what it computes: the package docstring)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from posttrain_probe.data import Fact
from posttrain_probe.pair import ModelPair
from posttrain_probe.pair.restore import resolve_kv_reuse
from posttrain_probe.probes.tracing.config import TracingConfig, TracingData
from posttrain_probe.probes.tracing.core import (
    NOISE_SITE,
    clean_answer_probs,
    embedding_std,
    prepare_facts,
    trace_model,
)
from posttrain_probe.probes.tracing.result import ROLES, assemble_result
from posttrain_probe.results import RunResult, RunTimer


@dataclass(frozen=True)
class TracingInputs:
    """The facts to trace, optional reference texts for σ, and where the facts came from."""

    facts: Sequence[Fact]
    reference_texts: Sequence[str] | None = None
    data_source: str | None = None


def load_inputs(data: TracingData, sources, cfg=None) -> TracingInputs:
    """The facts of `data` (default: the pair's default facts); for a toy pair, whose subjects are one token,
    σ comes from the first 200 corpus lines instead of the subjects."""
    from posttrain_probe.data import load_facts

    source = data.data or str(sources.facts)
    split = data.split if data.split is not None else (None if data.data else sources.facts_split)
    reference = None
    if data.reference:
        reference = [line for line in Path(data.reference).read_text().splitlines() if line.strip()]
    elif sources.kind == "toyworld":
        reference = [t for t in Path(sources.texts).read_text().splitlines() if t.strip()][:200]
    return TracingInputs(load_facts(source, split=split), reference, str(source))


def run(pair: ModelPair, inputs: TracingInputs, config: TracingConfig | None = None) -> RunResult:
    """The probe contract's entry point: `run_tracing` on `inputs`."""
    return run_tracing(pair, inputs.facts, config, inputs.reference_texts, inputs.data_source)


def run_tracing(
    pair: ModelPair,
    facts: Sequence[Fact],
    config: TracingConfig | None = None,
    reference_texts: Sequence[str] | None = None,
    data_source: str | None = None,
) -> RunResult:
    """Trace base and post on `facts`; see the module docstring for what the result holds."""
    cfg = (config or TracingConfig()).for_model(pair.base.n_layers)
    if not facts:
        raise ValueError("no facts to trace; pass a non-empty list (e.g. load_facts(...))")
    facts = list(facts)[: cfg.max_facts] if cfg.max_facts else list(facts)
    models = pair.models()
    with RunTimer() as timer:
        prepared, skipped = prepare_facts(pair.tokenizer, facts, max_tokens=pair.base.max_context)
        if not prepared:
            raise ValueError(
                f"none of the {len(facts)} facts could be traced (e.g. {skipped[0]['reason']}); check the data"
            )
        ref = list(reference_texts) if reference_texts else [f.fact.subject for f in prepared]
        sigma = {r: embedding_std(m, ref, pair.tokenizer) for r, m in models.items()}
        used = {r: sigma[cfg.noise_calibration] if cfg.noise_calibration in ROLES else sigma[r] for r in ROLES}
        clean = {r: clean_answer_probs(m, prepared) for r, m in models.items()}
        known = {r: {prepared[i].index for i in range(len(prepared)) if clean[r][1][i]} for r in ROLES}
        common = known["base"] & known["post"]
        reuse = {r: resolve_kv_reuse(m, cfg.kv_reuse) for r, m in models.items()}
        traces = {}
        for r, m in models.items():
            mine = [f for f in prepared if f.index in known[r]]
            traces[r] = trace_model(
                m,
                mine,
                cfg.noise_scale * used[r],
                cfg.n_samples,
                cfg.kinds,
                cfg.window,
                cfg.seed,
                reuse[r],
                cfg.facts_per_batch,
                cfg.max_batch_tokens,
                cfg.progress,
                desc=f"tracing {r}",
            )
        result = assemble_result(pair, facts, prepared, skipped, clean, known, common, traces, cfg)
    timer.record_into(result)
    result.summary["noise"] = {
        "site": NOISE_SITE,
        "scale": cfg.noise_scale,
        "calibration": cfg.noise_calibration,
        "embedding_std": sigma,
        "sigma_used": used,
        "noise_std_used": {r: cfg.noise_scale * used[r] for r in ROLES},
        "same_draws_for_both_models": True,
        "reference": "given texts" if reference_texts else "the facts' subjects (ROME)",
        "n_reference_texts": len(ref),
    }
    result.summary["kv_prefix_reuse"] = reuse
    result.config["data_source"] = data_source
    return result


def format_summary(summary: dict) -> str:
    """A few lines for the terminal."""
    lines = [
        f"facts: {summary['n_facts_loaded']} loaded, {summary['n_skipped']} skipped, known base "
        f"{summary['n_known']['base']}, post {summary['n_known']['post']}, common {summary['n_common']}"
    ]
    for r, pk in summary["peak"].items():
        for k, v in pk.items():
            lines.append(f"{r} {k} peak: {v['token_class']} layer {v['layer']} AIE {v['aie']:.3f}")
    for k, v in summary["pearson_base_post"].items():
        lines.append(f"pearson base/post {k}: class map {v['class_map']:.3f}, per-fact cells {v['per_fact_cells']:.3f}")
    return "\n".join(lines)
