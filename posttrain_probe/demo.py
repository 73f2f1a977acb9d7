"""The main job: build the toy pair, run every probe on base vs post, run the RLVR interventions from post,
analyse their entropy dynamics and internal drift, and write one self-contained HTML report.

Every step writes a run directory under `out/`; a rerun reuses finished steps (their `result.json` exists)
unless `force=True`. Steps are plain functions in `STEPS`, run in order.
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

from .results import is_run_dir, read_run, write_run
from .utils.io import safe_join, safe_name


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

    def load_pair(self):
        if self.pair is None:
            from .pair import load_pair

            # fp32 on every device: the toy models are small, and bf16 weights would blur small ablation effects
            self.pair = load_pair(
                self.toy.base_dir, self.toy.post_dir, backend="nnsight", device=self.device, dtype="float32"
            )
        return self.pair


def _truth(ctx: DemoContext):
    from .data import load_statements
    from .probes.truth import TruthConfig, run_truth

    cfg = TruthConfig(
        seed=ctx.seed, progress=False, max_per_dataset=300 if ctx.quick else 2000, n_intervene=40 if ctx.quick else 200
    )
    return run_truth(ctx.load_pair(), load_statements(Path(ctx.toy.data_dir) / "statements.csv"), cfg)


def _tracing(ctx: DemoContext):
    from .data import load_facts
    from .probes.tracing import TracingConfig, run_tracing

    facts = [f for f in load_facts(Path(ctx.toy.data_dir) / "facts.json") if f.split == "pretrain"]
    # ROME restores a window of 10 of GPT-2 XL's 48 layers (~1/5 of the depth); the same share of a 4-layer toy model
    # is 1 layer, while a window of 10 would cover every layer and make the MLP/attention maps flat in the layer.
    window = max(1, round(ctx.toy.config.n_layers / 5))
    cfg = TracingConfig(
        seed=ctx.seed,
        progress=False,
        max_facts=40 if ctx.quick else 180,
        n_samples=4 if ctx.quick else 10,
        window=window,
    )
    texts = (Path(ctx.toy.data_dir) / "corpus.txt").read_text().splitlines()[:200]
    return run_tracing(ctx.load_pair(), facts, cfg, reference_texts=texts)


def _patching(ctx: DemoContext):
    from .data import load_statements
    from .probes.patching import PatchingConfig, run_patching

    statements = load_statements(Path(ctx.toy.data_dir) / "statements.csv")
    cfg = PatchingConfig(seed=ctx.seed, progress=False, max_pairs=40 if ctx.quick else 200)
    return run_patching(ctx.load_pair(), statements, cfg)


def _neurons(ctx: DemoContext):
    from .probes.neurons import NeuronsConfig, load_texts, run_neurons

    cfg = NeuronsConfig(
        seed=ctx.seed,
        progress=False,
        n_ref=64 if ctx.quick else 256,
        n_eval=32 if ctx.quick else 64,
        n_control_sets=3 if ctx.quick else 10,
    )
    return run_neurons(ctx.load_pair(), load_texts(Path(ctx.toy.data_dir) / "corpus.txt"), cfg)


def _refusal(ctx: DemoContext):
    from .probes.refusal import RefusalConfig, load_refusal_data, run_refusal

    data = load_refusal_data(ctx.toy.data_dir, seed=ctx.seed)
    # the quick preset is a smoke test: skip the where-does-refusal-live diagnostics (patching sweeps, ~4 s)
    return run_refusal(ctx.load_pair(), data, RefusalConfig(seed=ctx.seed, diagnostics=not ctx.quick))


RLVR_LOSSES = ("grpo", "clip_higher", "entropy_bonus", "clip_cov", "kl_cov", "steer")


def _rlvr_config(ctx: DemoContext, loss: str):
    from .rlvr import RLVRConfig

    base = Path(__file__).resolve().parent.parent / "experiments" / "configs" / "rlvr_toy_grpo.yaml"
    cfg = RLVRConfig.from_yaml(base) if base.exists() else RLVRConfig()
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
    from .rlvr import train

    runs, pending = [], []
    for loss in ctx.losses or RLVR_LOSSES:
        rd = safe_join(ctx.out / "rlvr", safe_name(loss, "RLVR loss"), "RLVR loss")  # it may be rmtree'd below
        if not (rd / "metrics.jsonl").exists() or ctx.force:
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
    from .analysis.dynamics import analyze_runs

    return analyze_runs(_rlvr_runs(ctx))


def _drift(ctx: DemoContext):
    from .analysis.drift import DriftConfig, compare_checkpoints
    from .data import load_facts, load_instructions, load_statements
    from .rlvr.checkpoint import list_checkpoints

    run = ctx.out / "rlvr" / "grpo"
    ckpts = [str(p) for _, p in list_checkpoints(run)]
    data = Path(ctx.toy.data_dir)
    statements = [s for s in load_statements(data / "statements.csv") if s.extra.get("family") == "comparison"][:200]
    harmful = [i.text for i in load_instructions(data / "harmful.json", harmful=True)]
    harmless = [i.text for i in load_instructions(data / "harmless.json", harmful=False)]
    corpus = (data / "corpus.txt").read_text().splitlines()
    texts = corpus[:64]
    facts = [f for f in load_facts(data / "facts.json") if f.split == "pretrain"]
    cfg = DriftConfig(
        tracing_window=max(1, round(ctx.toy.config.n_layers / 5)),  # as in the tracing step
        max_facts=20 if ctx.quick else 50,
        tracing_samples=3 if ctx.quick else 5,
        seed=ctx.seed,
    )
    return compare_checkpoints(
        str(ctx.toy.post_dir),
        ckpts,
        statements=statements,
        harmful=harmful,
        harmless=harmless,
        cka_texts=texts,
        metrics_jsonl=run / "metrics.jsonl",
        facts=facts,
        neuron_texts=corpus[64:512],
        config=cfg,
        device=ctx.device,
        dtype="float32",
    )


STEPS: list[tuple[str, Callable]] = [
    ("tracing", _tracing),
    ("patching", _patching),
    ("truth", _truth),
    ("neurons", _neurons),
    ("refusal", _refusal),
    ("dynamics", _dynamics),
    ("drift", _drift),
]


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
) -> Path:
    """Run the whole study on the toy pair; returns the path of the HTML report.

    `preset` is the toy-world preset (quick | default | large; `quick=True` is short for preset="quick").
    `device` (auto | cpu | cuda | cuda:N) runs the toy build, the probes and RLVR there; on CUDA the toy build and
    RLVR forward passes use bf16 autocast, the probes fp32. `rlvr_steps` and `losses` shorten the RLVR part
    (default: 12 steps quick / 60 otherwise, all six losses)."""
    from tqdm.auto import tqdm

    from .report import build_report
    from .toyworld import PRESETS, build
    from .utils.device import check_device, resolve_device

    if preset is None:
        preset = "quick" if quick else "default"
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    if quick and preset != "quick":
        raise ValueError(f"quick=True contradicts preset={preset!r}; pass one of them")
    check_device(device)
    ctx = DemoContext(Path(out), preset, seed, force, rlvr_steps, tuple(losses), resolve_device(device))
    ctx.out.mkdir(parents=True, exist_ok=True)
    if not force:  # a resumed run skips the finished steps: keep their times
        ctx.timings.update(_read_timings(ctx.out))
    t0 = time.perf_counter()
    ctx.toy = build(ctx.preset, seed=seed, progress=progress, device=ctx.device)
    ctx.timings["toyworld"] = time.perf_counter() - t0
    _write_timings(ctx)
    run_dirs = []
    for name, fn in tqdm(STEPS, desc="demo", disable=not progress):
        rd = ctx.out / name
        if not is_run_dir(rd) or force:
            t = time.perf_counter()
            try:
                result = fn(ctx)
                write_run(rd, result, overwrite=True)
                ctx.timings[name] = time.perf_counter() - t
            finally:  # on Ctrl-C too: the RLVR runs a stopped step finished keep their times
                _write_timings(ctx)
        run_dirs.append(rd)
    from .verdicts import verdicts

    results = {name: read_run(rd) for (name, _), rd in zip(STEPS, run_dirs)}
    report = build_report(
        run_dirs,
        ctx.out / "report.html",
        title=f"posttrain_probe demo — toy world ({ctx.preset}, seed {seed})",
        verdicts=verdicts(results, ctx.toy.report),
        figures_dir=ctx.out / "figures",
    )
    ctx.timings["total"] = time.perf_counter() - t0
    _write_timings(ctx)
    return report
