"""The main job: build the toy pair, run every probe on base vs post, run the RLVR interventions from post,
analyse their entropy dynamics and internal drift, and write one self-contained HTML report.

The demo is a study like the others (`posttrain_probe.studies`): every probe in the registry runs through
`Study.run_probe` with the sizes its contract gives for the preset (`quick`, or `toy` for default/large), then
the RLVR runs, their dynamics and the drift along the GRPO run. Every step writes a run directory under `out/`;
a rerun reuses finished steps (their `result.json` exists) unless `force=True`. The report, its verdicts
(`verdicts.json`) and figures are drawn from the saved runs only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from posttrain_probe.results import is_run_dir, read_run, write_run
from posttrain_probe.utils.io import safe_join, safe_name


@dataclass
class DemoContext:
    out: Path
    preset: str  # toy-world preset: quick | default | organism | large
    seed: int
    force: bool
    rlvr_steps: int | None = None
    arms: tuple[str, ...] = ()
    device: str = "cpu"
    rlvr_seeds: int | None = None  # resolved: cpu | cuda | cuda:N
    toy: object = None
    pair: object = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def quick(self) -> bool:
        """The smoke-test sizes; `default` and `large` share the full ones."""
        return self.preset == "quick"

    @property
    def study(self):
        """The demo as a study of the built toy pair: probe sizes from the contract (quick, or toy)."""
        from .studies.common import Study

        # fp32 on every device: the toy models are small, and bf16 weights would blur small ablation effects
        return Study(
            name="demo", base=str(self.toy.base_dir), post=str(self.toy.post_dir), out=self.out, device=self.device,
            dtype="float32", seed=self.seed, force=True, progress=False, figures=False,
            size_name="quick" if self.quick else "toy",
        )  # fmt: skip

    def load_pair(self):
        if self.pair is None:
            self.pair = self.study.load_pair()
        return self.pair


def _probe_step(name: str) -> Callable:
    def step(ctx: DemoContext):
        from . import registry

        probe = registry.get(name)
        study, pair = ctx.study, ctx.load_pair()
        result = probe.execute(pair, study.sources, size=study.size, seed=ctx.seed, progress=False)
        return result, lambda rd: probe.write_artifacts(result, pair, rd)

    return step


# The demo's paired RLVR study: every arm on the same seeds (rlvr.paired), the null arm measuring chaos alone.
DEMO_ARMS = ("grpo", "null", "clip_cov", "kl_cov", "steer")
QUICK_ARMS = DEMO_ARMS
DEMO_RLVR_SEEDS = {"quick": 2, "default": 3}
# Sizes of the demo's runs (on top of studies.rlvr.TOY_RLVR). The 10-minute budget on 2 cores leaves ~4.5 min for
# 15 runs, ~36 core-seconds each (~0.7 s per 16-prompt step): the fastest collapse measured per second is lr 3e-4,
# where GRPO's held-out eval entropy fell 0.716 → 0.463 (−35%) in 40 steps (−49% at 100). The full study
# (`posttrain-probe rlvr study`, studies.rlvr.TOY_STUDY) runs 150 steps at lr 2e-4 (−61%).
DEMO_RLVR = {
    "quick": {"steps": 12, "prompts_per_step": 8, "n_eval": 32, "eval_samples": 2, "eval_every": 6},
    "default": {"steps": 40, "prompts_per_step": 16, "lr": 3.0e-4, "n_eval": 64, "eval_samples": 2, "eval_every": 10},
}


def _rlvr_base(ctx: DemoContext):
    """The demo's base RLVR config (GRPO; arms change the loss, lr and seed): TOY_RLVR with the demo's sizes, the
    built toy pair's post model and arithmetic problems, checkpoints and token dumps 4 times per run."""
    from posttrain_probe.rlvr import RLVRConfig

    from .studies.rlvr import TOY_RLVR

    sizes = dict(DEMO_RLVR["quick" if ctx.quick else "default"])
    if ctx.rlvr_steps:
        sizes.update(steps=ctx.rlvr_steps, eval_every=max(1, ctx.rlvr_steps // 4))
    steps = sizes["steps"]
    return dataclasses.replace(
        RLVRConfig.from_dict(TOY_RLVR),
        model=str(ctx.toy.post_dir),
        data=str(Path(ctx.toy.data_dir) / "arithmetic.jsonl"),
        checkpoint_every=max(1, steps // 4),
        token_dump_every=max(1, steps // 4),
        progress=False,
        device=ctx.device,
        **sizes,
    )


def _rlvr_configs(ctx: DemoContext) -> dict:
    """{run label: RLVRConfig} of the demo's arms × seeds (seeds ctx.seed, ctx.seed + 1, ...)."""
    from posttrain_probe.rlvr.paired import paired_configs

    arms = ctx.arms or (QUICK_ARMS if ctx.quick else DEMO_ARMS)
    n = ctx.rlvr_seeds or DEMO_RLVR_SEEDS["quick" if ctx.quick else "default"]
    return paired_configs(_rlvr_base(ctx), arms, range(ctx.seed, ctx.seed + n))


def _rlvr_runs(ctx: DemoContext) -> list[Path]:
    """OUT/rlvr/<arm>_seed<k> for every arm and seed, trained in parallel single-threaded workers on CPU; finished
    runs are reused (unless force), unfinished ones retrained."""
    from posttrain_probe.rlvr.pool import default_workers, train_many
    from posttrain_probe.rlvr.run import RLVRRun

    runs, pending = [], []
    for name, cfg in _rlvr_configs(ctx).items():
        rd = safe_join(ctx.out / "rlvr", safe_name(name, "RLVR run"), "RLVR run")  # it may be rmtree'd below
        if ctx.force or not (rd.is_dir() and RLVRRun(rd).is_finished):
            if rd.exists():
                shutil.rmtree(rd)
            pending.append((cfg, rd))
        runs.append(rd)

    def done(rd: Path, seconds: float) -> None:
        ctx.timings[f"rlvr_{rd.name}"] = seconds

    train_many(pending, default_workers(ctx.device, len(pending)), ctx.out / "rlvr", on_done=done)
    return runs


def _drift(ctx: DemoContext):
    from posttrain_probe.analysis.drift import DriftConfig, compare_checkpoints
    from posttrain_probe.data import load_facts, load_instructions, load_statements
    from posttrain_probe.rlvr.run import RLVRRun

    run = ctx.out / "rlvr" / drift_run(ctx.seed)
    grpo = RLVRRun(run)
    ckpts = [str(p) for _, p in grpo.checkpoints()]
    data = Path(ctx.toy.data_dir)
    statements = [s for s in load_statements(data / "statements.csv") if s.extra.get("family") == "comparison"][:200]
    harmful = [i.text for i in load_instructions(data / "harmful.json", harmful=True)]
    harmless = [i.text for i in load_instructions(data / "harmless.json", harmful=False)]
    corpus = (data / "corpus.txt").read_text().splitlines()
    texts = corpus[:64]
    facts = [f for f in load_facts(data / "facts.json") if f.split == "pretrain"]
    cfg = DriftConfig(
        max_facts=20 if ctx.quick else 50,
        tracing_samples=3 if ctx.quick else 5,
        seed=ctx.seed,
    )
    result = compare_checkpoints(
        str(ctx.toy.post_dir),
        ckpts,
        statements=statements,
        harmful=harmful,
        harmless=harmless,
        cka_texts=texts,
        metrics_jsonl=grpo.metrics_path,
        facts=facts,
        neuron_texts=corpus[64:512],
        config=cfg,
        device=ctx.device,
        dtype="float32",
    )
    return result, None


def _dynamics(ctx: DemoContext):
    from .analysis.dynamics import analyze_runs

    return analyze_runs(_rlvr_runs(ctx)), None


KEEP_CHECKPOINTS = ("analysed", "all")


def drift_run(seed: int) -> str:
    """The RLVR run whose checkpoints the drift step reads (and pruning keeps): GRPO at the demo's seed."""
    from posttrain_probe.rlvr.paired import label

    return label("grpo", seed)


def prune_checkpoints(out: Path, seed: int = 0) -> list[Path]:
    """Delete the checkpoints of the demo's RLVR runs that no analysis reads, once the dynamics and drift run
    dirs exist (their results are computed; the dynamics read only metrics.jsonl and token dumps). Returns what
    was deleted. A finished run keeps its metrics, so a rerun of the demo does not retrain it."""
    from .results import is_run_dir

    if not (is_run_dir(out / "dynamics") and is_run_dir(out / "drift")):
        return []
    gone = []
    keep = {drift_run(seed)}
    for run in sorted(p for p in (out / "rlvr").glob("*") if p.is_dir() and p.name not in keep):
        ckpts = run / "checkpoints"
        if ckpts.is_dir() and (run / "metrics.jsonl").is_file():
            shutil.rmtree(ckpts)
            gone.append(ckpts)
    return gone


def steps() -> list[tuple[str, Callable]]:
    """The demo's steps in order: every registered probe, then the RLVR runs with their dynamics, then drift.
    A step returns (result, write_artifacts or None)."""
    from . import registry

    return [(p.name, _probe_step(p.name)) for p in registry.probes()] + [("dynamics", _dynamics), ("drift", _drift)]


def _write_timings(ctx: DemoContext) -> None:
    """timings.txt (seconds per step), rewritten after every step so that a stopped run shows where time went."""
    (ctx.out / "timings.txt").write_text("\n".join(f"{k}\t{v:.1f}" for k, v in ctx.timings.items()) + "\n")


def _read_timings(out: Path) -> dict[str, float]:
    """The step times of an earlier (stopped) run in `out`, less its total; unreadable lines are skipped."""
    path = out / "timings.txt"
    rows = [line.split("\t") for line in path.read_text().splitlines()] if path.is_file() else []
    found = {}
    for row in rows:
        with contextlib.suppress(ValueError):
            if len(row) == 2 and row[0] != "total":
                found[row[0]] = float(row[1])
    return found


def run_demo(
    out: str | Path = "runs/demo",
    quick: bool = False,
    seed: int = 0,
    force: bool = False,
    progress: bool = True,
    rlvr_steps: int | None = None,
    arms: tuple[str, ...] = (),
    preset: str | None = None,
    device: str = "auto",
    keep_checkpoints: str = "analysed",
    rlvr_seeds: int | None = None,
) -> Path:
    """Run the whole study on the toy pair; returns the path of the HTML report.

    `preset` is the toy-world preset (quick | default | organism | large; `quick=True` is short for preset="quick").
    `device` (auto | cpu | cuda | cuda:N) runs the toy build, the probes and RLVR there; on CUDA the toy build and
    RLVR forward passes use bf16 autocast, the probes fp32. The RLVR part is a paired study: every arm of `arms`
    (default `DEMO_ARMS`, `QUICK_ARMS` for quick, names from `rlvr.paired.ARMS`; baselines are added) on
    `rlvr_seeds` seeds (default 3, quick 2) of `rlvr_steps` steps (default `DEMO_RLVR`). `keep_checkpoints=
    "analysed"` deletes the RLVR checkpoints no analysis reads (every run's but GRPO's at `seed`, which the drift
    step reads) once dynamics and drift are written; "all" keeps them (e.g. to resume or extend a run)."""
    from tqdm import tqdm

    from posttrain_probe.report import build_report
    from posttrain_probe.toyworld import PRESETS, build
    from posttrain_probe.utils.device import check_device, resolve_device

    if preset is None:
        preset = "quick" if quick else "default"
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    if quick and preset != "quick":
        raise ValueError(f"quick=True contradicts preset={preset!r}; pass one of them")
    check_device(device)
    if keep_checkpoints not in KEEP_CHECKPOINTS:
        raise ValueError(f"keep_checkpoints={keep_checkpoints!r}; choose one of {', '.join(KEEP_CHECKPOINTS)}")
    if rlvr_seeds is not None and rlvr_seeds < 1:
        raise ValueError(f"rlvr_seeds={rlvr_seeds} must be >= 1 (2 or more give intervals over seeds)")
    from posttrain_probe.rlvr.paired import resolve_arms

    resolve_arms(arms)  # an unknown arm fails before the build
    ctx = DemoContext(
        Path(out), preset, seed, force, rlvr_steps, tuple(arms), resolve_device(device), rlvr_seeds=rlvr_seeds
    )
    ctx.out.mkdir(parents=True, exist_ok=True)
    if not force:  # a resumed run skips the finished steps: keep their times
        ctx.timings.update(_read_timings(ctx.out))
    t0 = time.perf_counter()
    ctx.toy = build(ctx.preset, seed=seed, progress=progress, device=ctx.device)
    ctx.timings["toyworld"] = time.perf_counter() - t0
    _write_timings(ctx)
    run_dirs = []
    for name, fn in tqdm(steps(), desc="demo", disable=not progress):
        rd = ctx.out / name
        if not is_run_dir(rd) or force:
            t = time.perf_counter()
            try:
                result, write_artifacts = fn(ctx)
                write_run(rd, result, overwrite=True)
                if write_artifacts is not None:
                    write_artifacts(rd)
                ctx.timings[name] = time.perf_counter() - t
            finally:  # on Ctrl-C too: the RLVR runs a stopped step finished keep their times
                _write_timings(ctx)
        run_dirs.append(rd)
    if keep_checkpoints == "analysed":
        prune_checkpoints(ctx.out, ctx.seed)
    from .studies.organism import PROBES, mechanism_checks, store_checks
    from .toyworld.verdicts import new_knowledge_verdicts
    from .utils.io import atomic_write_json
    from .verdicts import collect_verdicts, write_verdicts

    probe_runs = {rd.name: read_run(rd) for rd in run_dirs if rd.name in PROBES}
    if probe_runs:  # does the toy pair hold the mechanisms the probes look for? (also in its report.json)
        checks = mechanism_checks(probe_runs, ctx.toy.config.d_model)
        atomic_write_json(ctx.out / "mechanisms.json", checks)
        store_checks(ctx.toy.root, checks)

    results = [read_run(rd) for rd in run_dirs]
    found = collect_verdicts(results, extra={"patching": new_knowledge_verdicts(ctx.toy.report)})
    write_verdicts(ctx.out / "verdicts.json", found)
    report = build_report(
        run_dirs,
        ctx.out / "report.html",
        title=f"posttrain_probe demo — toy world ({ctx.preset}, seed {seed})",
        verdicts=found,
        figures_dir=ctx.out / "figures",
        smoke_test=ctx.quick,
    )
    ctx.timings["total"] = time.perf_counter() - t0
    _write_timings(ctx)
    return report
