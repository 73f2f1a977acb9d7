"""Train many RLVR runs at once: single-threaded worker processes, one per core (the demo's and the paired
study's runs).

On CPU a d128 toy model keeps one core busy, and two 2-thread runs on 2 cores spin-wait on each other, so the
runs are dealt round-robin to `workers` processes (`python -m posttrain_probe.rlvr.batch`), each training its
share one after another with one thread. Measured on the quick preset (2 cores): six 12-step runs took 24 s in
two worker processes, 52 s with one process per run (each paying ~7 s of transformers import) and 92 s one after
another in-process. Each run is trained exactly as `posttrain-probe rlvr train --config RUN.yaml --out RUN` would
(the YAML copy of its config is kept beside the run directory), so a failed run can be rerun by hand.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from posttrain_probe.rlvr.config import RLVRConfig

OnDone = Callable[[Path, float], None]


def default_workers(device: str, n_jobs: int) -> int:
    """One worker per core on CPU (at most one per job); one at a time on a GPU."""
    if device != "cpu" or n_jobs < 2:
        return 1
    return max(1, min(os.cpu_count() or 1, n_jobs))


def train_many(
    jobs: Sequence[tuple[RLVRConfig, Path]],
    workers: int,
    log_dir: Path,
    on_done: OnDone | None = None,
    keep_unfinished: bool = False,
) -> None:
    """Train every (config, run directory) job; a directory that holds an interrupted run of the same config is
    resumed exactly. `workers` = 1 trains them in this process; more start that many single-threaded worker
    processes (stderr to log_dir/worker<i>.log). `on_done(run_dir, seconds)` is called for each finished run. On a
    failure or Ctrl-C the other workers are stopped and finished runs kept; unfinished ones are removed, or kept to
    be resumed with `keep_unfinished`. A failure raises one line that names the run and the command that reruns it."""
    from posttrain_probe.rlvr.batch import train_one

    jobs = list(jobs)
    if not jobs:
        return
    if workers <= 1:
        for cfg, rd in jobs:
            t = time.perf_counter()
            rd.parent.mkdir(parents=True, exist_ok=True)
            config_file(rd).write_text(_yaml(cfg))
            try:
                train_one(str(config_file(rd)), str(rd))
            except BaseException:
                if not keep_unfinished:
                    shutil.rmtree(rd, ignore_errors=True)
                raise
            if on_done:
                on_done(rd, time.perf_counter() - t)
        return
    log_dir.mkdir(parents=True, exist_ok=True)
    shares = [jobs[i::workers] for i in range(min(workers, len(jobs)))]
    procs = [(_start_worker(share, log_dir / f"worker{i}.log"), share) for i, share in enumerate(shares)]
    done: set[Path] = set()

    def collect(proc: subprocess.Popen, share: list[tuple[RLVRConfig, Path]]) -> None:
        """Runs the worker reported finished (`OUT<TAB>seconds` lines) count as done."""
        for line in proc.stdout.read().splitlines():
            out, _, seconds = line.rpartition("\t")
            for _, rd in share:
                if str(rd) == out:
                    done.add(rd)
                    if on_done:
                        on_done(rd, float(seconds))

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
                    rd = next(rd for _, rd in share if rd not in done)
                    err = (log_dir / f"worker{i}.log").read_text().strip().splitlines()
                    raise RuntimeError(
                        f"RLVR run {rd.name!r} failed (exit {proc.returncode}): {err[-1] if err else 'no message'}; "
                        f"rerun `posttrain-probe rlvr train --config {config_file(rd)} --out {rd}`"
                    )
    finally:
        for i, (proc, share) in enumerate(procs):
            if i in waiting:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                collect(proc, share)
            proc.stdout.close()
            for _, rd in share:
                if rd not in done and not keep_unfinished:
                    shutil.rmtree(rd, ignore_errors=True)


def config_file(run_dir: Path) -> Path:
    """Where a pooled run's YAML config is kept: beside its run directory, as <run>.yaml."""
    return run_dir.parent / f"{run_dir.name}.yaml"


def _yaml(cfg: RLVRConfig) -> str:
    import yaml

    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


def _start_worker(jobs: list[tuple[RLVRConfig, Path]], log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "posttrain_probe.rlvr.batch"]
    for cfg, rd in jobs:
        rd.parent.mkdir(parents=True, exist_ok=True)
        config_file(rd).write_text(_yaml(dataclasses.replace(cfg, threads=1)))
        cmd += [str(config_file(rd)), str(rd)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    with open(log, "w") as err:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=err, text=True)


__all__ = ["config_file", "default_workers", "train_many"]
