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
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from posttrain_probe.results import is_run_dir, read_run, write_run
from posttrain_probe.utils.io import safe_join, safe_name


@dataclass
class DemoContext:
    out: Path
    preset: str  # toy-world preset: quick | default | large
    seed: int
    force: bool
    rlvr_steps: int | None = None
    losses: tuple[str, ...] = ()
    device: str = "cpu"  # resolved: cpu | cuda | cuda:N
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


RLVR_LOSSES = ("grpo", "clip_higher", "entropy_bonus", "clip_cov", "kl_cov", "steer")


def _rlvr_config(ctx: DemoContext, loss: str):
    from posttrain_probe.rlvr import RLVRConfig

    from .studies.rlvr import TOY_RLVR

    cfg = RLVRConfig.from_dict(TOY_RLVR)
    steps = ctx.rlvr_steps or (12 if ctx.quick else 60)
    return dataclasses.replace(
        cfg,
        model=str(ctx.toy.post_dir),
        data=str(Path(ctx.toy.data_dir) / "arithmetic.jsonl"),
        steps=steps,
        checkpoint_every=max(1, steps // 4),
        token_dump_every=max(1, steps // 4),
        eval_every=steps,
        n_eval=32 if ctx.quick else 128,
        prompts_per_step=8 if ctx.quick else 16,
        seed=ctx.seed,
        progress=False,
        device=ctx.device,
        loss=dataclasses.replace(cfg.loss, name=loss, clip_high=None),
    )


def _rlvr_workers(ctx: DemoContext, n_pending: int) -> int:
    """Parallel RLVR workers: one single-threaded process per core on CPU (a d128 model keeps one core busy, and two
    2-thread runs on 2 cores would spin-wait on each other), one at a time on a GPU. Measured on the quick preset
    (2 cores): six 12-step runs took 24 s in two worker processes, 52 s with one process per run (each paying
    ~7 s of transformers import) and 92 s one after another in-process."""
    if ctx.device != "cpu" or n_pending < 2:
        return 1
    return max(1, min(os.cpu_count() or 1, n_pending))


def _start_worker(jobs: list[tuple[str, Path]], ctx: DemoContext, log: Path) -> subprocess.Popen:
    """One process (`python -m posttrain_probe.rlvr.batch`) that trains `jobs` one after another, each exactly as
    `posttrain-probe rlvr train` would from a YAML copy of its config kept beside the run (rlvr/<loss>.yaml); the
    worker's stderr goes to `log`."""
    import yaml

    cmd = [sys.executable, "-m", "posttrain_probe.rlvr.batch"]
    for loss, rd in jobs:
        cfg = dataclasses.replace(_rlvr_config(ctx, loss), threads=1)
        cfg_file = rd.parent / f"{rd.name}.yaml"
        cfg_file.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        cmd += [str(cfg_file), str(rd)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    with open(log, "w") as err:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=err, text=True)


def _rlvr_runs(ctx: DemoContext) -> list[Path]:
    from posttrain_probe.rlvr import train
    from posttrain_probe.rlvr.run import RLVRRun

    runs, pending = [], []
    for loss in ctx.losses or RLVR_LOSSES:
        rd = safe_join(ctx.out / "rlvr", safe_name(loss, "RLVR loss"), "RLVR loss")  # it may be rmtree'd below
        if ctx.force or not (rd.is_dir() and RLVRRun(rd).is_finished):
            if rd.exists():
                shutil.rmtree(rd)
            pending.append((loss, rd))
        runs.append(rd)
    workers = _rlvr_workers(ctx, len(pending))
    if workers == 1:
        for loss, rd in pending:
            t = time.perf_counter()
            train(_rlvr_config(ctx, loss), rd)
            ctx.timings[f"rlvr_{loss}"] = time.perf_counter() - t
        return runs
    (ctx.out / "rlvr").mkdir(parents=True, exist_ok=True)
    # runs dealt round-robin to the workers; each worker trains its share in one process (one interpreter start)
    shares = [pending[i::workers] for i in range(min(workers, len(pending)))]
    procs = [(_start_worker(share, ctx, ctx.out / "rlvr" / f"worker{i}.log"), share) for i, share in enumerate(shares)]
    done: set[Path] = set()

    def collect(proc: subprocess.Popen, share: list[tuple[str, Path]]) -> None:
        """Runs the worker reported finished (`OUT<TAB>seconds` lines) count as done, with their times."""
        for line in proc.stdout.read().splitlines():
            out, _, seconds = line.rpartition("\t")
            for loss, rd in share:
                if str(rd) == out:
                    ctx.timings[f"rlvr_{loss}"] = float(seconds)
                    done.add(rd)

    waiting = dict(enumerate(procs))  # workers whose output is not collected yet
    try:
        while waiting:
            time.sleep(0.2)
            for i, (proc, share) in list(waiting.items()):
                if proc.poll() is None:
                    continue
                del waiting[i]
                collect(proc, share)
                if proc.returncode != 0:
                    loss, rd = next((loss, rd) for loss, rd in share if rd not in done)
                    err = (ctx.out / "rlvr" / f"worker{i}.log").read_text().strip().splitlines()
                    raise RuntimeError(
                        f"RLVR run {loss!r} failed (exit {proc.returncode}): {err[-1] if err else 'no message'}; "
                        f"rerun `posttrain-probe rlvr train --config {rd.parent / (rd.name + '.yaml')} --out {rd}`"
                    )
    finally:
        # stop what still runs (another worker failed, or Ctrl-C); runs it had finished are kept, so a rerun
        # of the demo reuses them, and the unfinished ones are removed
        for i, (proc, share) in enumerate(procs):
            if i in waiting:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                collect(proc, share)
            proc.stdout.close()
            for _, rd in share:
                if rd not in done:
                    shutil.rmtree(rd, ignore_errors=True)
    return runs


def _dynamics(ctx: DemoContext):
    from posttrain_probe.analysis.dynamics import analyze_runs

    return analyze_runs(_rlvr_runs(ctx))


def _drift(ctx: DemoContext):
    from posttrain_probe.analysis.drift import DriftConfig, compare_checkpoints
    from posttrain_probe.data import load_facts, load_instructions, load_statements
    from posttrain_probe.rlvr.run import RLVRRun

    run = ctx.out / "rlvr" / "grpo"
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
ANALYSED_RUNS = ("grpo",)  # RLVR runs whose checkpoints an analysis reads (drift: the GRPO run)


def prune_checkpoints(out: Path) -> list[Path]:
    """Delete the checkpoints of the demo's RLVR runs that no analysis reads, once the dynamics and drift run
    dirs exist (their results are computed; the dynamics read only metrics.jsonl and token dumps). Returns what
    was deleted. A finished run keeps its metrics, so a rerun of the demo does not retrain it."""
    from .results import is_run_dir

    if not (is_run_dir(out / "dynamics") and is_run_dir(out / "drift")):
        return []
    gone = []
    for run in sorted(p for p in (out / "rlvr").glob("*") if p.is_dir() and p.name not in ANALYSED_RUNS):
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
    losses: tuple[str, ...] = (),
    preset: str | None = None,
    device: str = "auto",
    keep_checkpoints: str = "analysed",
) -> Path:
    """Run the whole study on the toy pair; returns the path of the HTML report.

    `preset` is the toy-world preset (quick | default | large; `quick=True` is short for preset="quick").
    `device` (auto | cpu | cuda | cuda:N) runs the toy build, the probes and RLVR there; on CUDA the toy build and
    RLVR forward passes use bf16 autocast, the probes fp32. `rlvr_steps` and `losses` shorten the RLVR part
    (default: 12 steps quick / 60 otherwise, all six losses). `keep_checkpoints="analysed"` deletes the RLVR
    checkpoints no analysis reads (every run's but GRPO's, which the drift step reads) once dynamics and drift
    are written; "all" keeps them (e.g. to resume or extend a run)."""
    from tqdm.auto import tqdm

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
    ctx = DemoContext(Path(out), preset, seed, force, rlvr_steps, tuple(losses), resolve_device(device))
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
        prune_checkpoints(ctx.out)
    from .toyworld.verdicts import new_knowledge_verdicts
    from .verdicts import collect_verdicts, write_verdicts

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
