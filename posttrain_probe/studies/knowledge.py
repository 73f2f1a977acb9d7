"""Study: where are facts stored, and did post-training move them? Causal tracing (ROME) of both models, then
true/false patching within each model and across them (Du et al. 2025)."""

from __future__ import annotations

from pathlib import Path

from posttrain_probe.studies.common import Study

RUNS = ("tracing", "patching")


def run_knowledge_localization(study: Study) -> list[Path]:
    """OUT/tracing and OUT/patching (with cross-model directions), each with figures."""
    from posttrain_probe.data import load_facts, load_statements
    from posttrain_probe.probes.patching import PatchingConfig, run_patching
    from posttrain_probe.probes.tracing import TracingConfig, run_tracing

    study.check_out(RUNS)
    src = study.sources
    facts = load_facts(src.facts, split=src.facts_split)
    statements = load_statements(src.pair_statements)
    reference = None
    if src.kind == "toyworld":  # the toy subjects are one token each: σ from the corpus, as the demo does
        reference = [t for t in Path(src.texts).read_text().splitlines() if t.strip()][:200]
    pair = study.load_pair()
    tracing = TracingConfig(
        n_samples=study.pick(2, 4, 10, 10),
        max_facts=study.pick(6, 40, 180, 400),
        n_boot=study.pick(50, 1000, 1000, 1000),
        seed=study.seed,
        progress=study.progress,
    )
    res = run_tracing(pair, facts, tracing, reference_texts=reference, data_source=str(src.facts))
    out = [study.save("tracing", res, "posttrain_probe.probes.tracing.figures")]
    patching = PatchingConfig(
        max_pairs=study.pick(6, 40, 200, 200),
        n_boot=study.pick(50, 1000, 1000, 1000),
        seed=study.seed,
        progress=study.progress,
    )
    res = run_patching(pair, statements, patching, data_source=str(src.pair_statements))
    out.append(study.save("patching", res, "posttrain_probe.probes.patching.figures"))
    return out
