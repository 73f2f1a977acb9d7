"""Study: are truth and refusal linear directions, shared by base and post? Truth probes per layer with the
few-shot intervention 2×2, the refusal direction with ablation/addition and transfer, and both exported as
steering vectors (OUT/<run>/steering/*.safetensors + .json)."""

from __future__ import annotations

from pathlib import Path

from posttrain_probe.studies.common import Study

RUNS = ("truth", "refusal")


def run_directions(study: Study) -> list[Path]:
    """OUT/truth and OUT/refusal with figures and steering vectors."""
    from posttrain_probe.data.defaults import shared_path
    from posttrain_probe.probes.refusal import RefusalConfig, load_refusal_data, run_refusal, save_refusal_vectors
    from posttrain_probe.probes.truth import TruthConfig, load_truth_statements, run_truth, save_truth_vectors

    study.check_out(RUNS)
    src = study.sources
    statements = load_truth_statements(src.truth_statements)
    rcfg = RefusalConfig(
        n_train=study.pick(4, 32, 128, 128),
        n_val=study.pick(4, 16, 32, 32),
        n_eval=study.pick(4, 32, 64, 100),
        max_new_tokens=study.pick(4, 16, 16, 32),
        batch_size=study.pick(8, 32, 32, 32),
        seed=study.seed,
        progress=study.progress,
    )
    # real pairs: AdvBench is the held-out harmful set (the refusal_direction splits have no held-out split)
    advbench = shared_path("advbench") if src.kind == "shared" else None
    data = load_refusal_data(src.refusal, advbench, rcfg.n_train, rcfg.n_val, rcfg.n_eval, study.seed)
    pair = study.load_pair()
    tcfg = TruthConfig(
        max_per_dataset=study.pick(8, 300, 2000, 1000),
        n_intervene=study.pick(8, 40, 200, 200),
        lodo=study.pick("none", "all", "all", "all"),
        seed=study.seed,
        progress=study.progress,
    )
    sources = [str(s) for s in src.truth_statements]
    res = run_truth(pair, statements, tcfg, data_sources=sources)
    truth = study.save("truth", res, "posttrain_probe.probes.truth.figures")
    save_truth_vectors(res, pair, truth / "steering")
    res = run_refusal(pair, data, rcfg)
    refusal = study.save("refusal", res, "posttrain_probe.probes.refusal.figures")
    save_refusal_vectors(res, pair, refusal / "steering")
    return [truth, refusal]
