"""Causal tracing on a base model and its post-trained twin (SPEC §1a; Meng et al. 2022, Du et al. 2025).

`run_tracing(pair, facts, config)` tokenizes the facts once (subject spans by offset alignment; facts whose
subject cannot be aligned are reported and skipped), keeps per model the facts it answers correctly (the
answer's first token is the argmax at the last prompt position), traces each model on its own known facts
(batched restorations, see `_tracing_batch`), and summarizes:
- AIE per kind × ROME token class × layer, per model over its own known facts ("own") and over the facts
  both models know ("common"), with percentile-bootstrap 95% intervals over facts;
- base − post per-fact differences on the common facts (paired bootstrap);
- Pearson correlation of the base and post maps per kind (class maps, and all per-fact cells);
- each model's peak (token class, layer) per kind.
Noise conventions are in `_tracing_core`'s docstring. Prompts are the facts' raw text for both models
(byte-identical ids; no chat template), as in Du et al.'s knowledge-storage tracing.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from posttrain_probe.cli_args import add_pair_arguments, finish_run, fresh_out_dir
from posttrain_probe.data import Fact
from posttrain_probe.pair import ModelPair
from posttrain_probe.pair.restore import KINDS, resolve_kv_reuse
from posttrain_probe.pair.spans import TOKEN_CLASSES, SubjectNotFoundError, find_token_span
from posttrain_probe.probes.tracing.core import (
    NOISE_SITE,
    clean_answer_probs,
    embedding_std,
    prepare_facts,
    trace_model,
)
from posttrain_probe.probes.tracing.result import ANALYSIS, ROLES, assemble_result
from posttrain_probe.results import RunResult, RunTimer, write_run

NOISE_CALIBRATIONS = ("base", "post", "per_model")

__all__ = [
    "ANALYSIS",
    "KINDS",
    "TOKEN_CLASSES",
    "TracingConfig",
    "SubjectNotFoundError",
    "find_token_span",
    "prepare_facts",
    "embedding_std",
    "trace_model",
    "run_tracing",
    "add_cli",
]


@dataclass
class TracingConfig:
    """Settings of one tracing run (defaults: ROME / SPEC §1a); every field is recorded in result.json."""

    n_samples: int = 10
    noise_scale: float = 3.0
    noise_calibration: str = "base"
    kinds: tuple[str, ...] = KINDS
    window: int = 10
    seed: int = 0
    max_facts: int | None = None
    n_boot: int = 1000
    ci: float = 0.95
    kv_reuse: str = "auto"
    facts_per_batch: int = 16
    max_batch_tokens: int = 8192
    progress: bool = True

    def __post_init__(self) -> None:
        self.kinds = tuple(self.kinds)
        if self.n_samples < 1:
            raise ValueError(f"n_samples={self.n_samples}; use at least 1 noise sample (ROME: 10)")
        if not math.isfinite(self.noise_scale) or self.noise_scale < 0:
            raise ValueError(f"noise_scale={self.noise_scale}; use a finite multiple of σ ≥ 0 (ROME: 3)")
        if self.noise_calibration not in NOISE_CALIBRATIONS:
            raise ValueError(
                f"noise_calibration={self.noise_calibration!r}; choose one of {', '.join(NOISE_CALIBRATIONS)}"
            )
        bad = [k for k in self.kinds if k not in KINDS] or ([] if self.kinds else ["(none)"])
        if bad or len(set(self.kinds)) != len(self.kinds):
            raise ValueError(f"kinds={self.kinds}; pass distinct kinds from {', '.join(KINDS)}")
        if self.window < 1:
            raise ValueError(f"window={self.window}; use a window of at least 1 layer (ROME: 10)")
        if self.max_facts is not None and self.max_facts < 1:
            raise ValueError(f"max_facts={self.max_facts}; use a positive number or None for all facts")
        if not 0 < self.ci < 1 or self.n_boot < 0:
            raise ValueError(f"ci={self.ci}, n_boot={self.n_boot}; use 0 < ci < 1 and n_boot ≥ 0")
        if self.kv_reuse not in ("auto", "on", "off"):
            raise ValueError(f"kv_reuse={self.kv_reuse!r}; choose auto, on or off")
        if self.facts_per_batch < 1 or self.max_batch_tokens < 1:
            raise ValueError("facts_per_batch and max_batch_tokens must be ≥ 1")


def run_tracing(
    pair: ModelPair,
    facts: Sequence[Fact],
    config: TracingConfig | None = None,
    reference_texts: Sequence[str] | None = None,
    data_source: str | None = None,
) -> RunResult:
    """Trace base and post on `facts`; see the module docstring for what the result holds."""
    cfg = config or TracingConfig()
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


def _default_facts(base: str) -> str:
    if not str(base).startswith("toyworld:"):
        raise ValueError("no --data given; pass a known_1000-style json (e.g. ../shared/data/known_1000)")
    from posttrain_probe.toyworld import build

    parts = str(base).split(":")
    return str(Path(build(preset=parts[1] if len(parts) == 3 else "default").data_dir) / "facts.json")


def add_cli(sub: argparse._SubParsersAction) -> None:
    """Register `trace BASE POST --data ... --out DIR`."""
    p = sub.add_parser("trace", help="ROME causal tracing on both models (AIE maps, base − post)")
    add_pair_arguments(p)
    p.add_argument("--data", default=None, help="facts: known_1000-style json, folder or hub id")
    p.add_argument("--split", default=None, help="keep only facts with this 'split'")
    p.add_argument("--reference", default=None, help="text file (one text a line) for the embedding std")
    d = TracingConfig()
    for name, typ in (
        ("n_samples", int),
        ("noise_scale", float),
        ("window", int),
        ("seed", int),
        ("max_facts", int),
        ("n_boot", int),
        ("facts_per_batch", int),
        ("max_batch_tokens", int),
    ):
        p.add_argument("--" + name.replace("_", "-"), type=typ, default=getattr(d, name))
    p.add_argument("--noise-calibration", default=d.noise_calibration, choices=NOISE_CALIBRATIONS)
    p.add_argument("--kinds", nargs="+", default=list(d.kinds), choices=KINDS)
    p.add_argument("--kv-reuse", default=d.kv_reuse, choices=["auto", "on", "off"])
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cli_trace)


def _cli_trace(args: argparse.Namespace) -> int:
    from posttrain_probe.data import load_facts
    from posttrain_probe.pair import load_pair

    out = fresh_out_dir(args)
    cfg = TracingConfig(
        n_samples=args.n_samples,
        noise_scale=args.noise_scale,
        noise_calibration=args.noise_calibration,
        kinds=tuple(args.kinds),
        window=args.window,
        seed=args.seed,
        max_facts=args.max_facts,
        n_boot=args.n_boot,
        kv_reuse=args.kv_reuse,
        facts_per_batch=args.facts_per_batch,
        max_batch_tokens=args.max_batch_tokens,
        progress=not args.no_progress,
    )
    source = args.data or _default_facts(args.base)
    facts = load_facts(source, split=args.split)
    reference = None
    if args.reference:
        reference = [line for line in Path(args.reference).read_text().splitlines() if line.strip()]
    pair = load_pair(args.base, args.post, backend=args.backend, device=args.device, dtype=args.dtype)
    result = run_tracing(pair, facts, cfg, reference_texts=reference, data_source=str(source))
    write_run(out, result, overwrite=args.force)
    return finish_run(args, out, "posttrain_probe.probes.tracing.figures", format_summary(result.summary))
