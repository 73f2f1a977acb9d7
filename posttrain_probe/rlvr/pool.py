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
import queue
import shutil
import subprocess
import sys
import threading
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
    procs = [_start_worker(share, log_dir / f"worker{i}.log") for i, share in enumerate(shares)]
    lines: queue.Queue[tuple[int, str | None]] = queue.Queue()
    readers = [threading.Thread(target=_read_lines, args=(i, p, lines), daemon=True) for i, p in enumerate(procs)]
    for r in readers:
        r.start()
    by_out = {str(rd): rd for share in shares for _, rd in share}
    done: set[Path] = set()

    def finished(line: str) -> None:
        """A worker's `OUT<TAB>seconds` line: that run is done."""
        out, _, seconds = line.rpartition("\t")
        if out in by_out and by_out[out] not in done:
            done.add(by_out[out])
            if on_done:
                on_done(by_out[out], float(seconds))

    open_streams = len(procs)
    try:
        while open_streams:
            try:
                i, line = lines.get(timeout=0.2)
            except queue.Empty:
                continue
            if line is not None:
                finished(line)
                continue
            open_streams -= 1  # worker i's stdout closed: it exited
            proc = procs[i]
            if proc.wait() != 0:
                rd = next(rd for _, rd in shares[i] if rd not in done)
                err = (log_dir / f"worker{i}.log").read_text().strip().splitlines()
                raise RuntimeError(
                    f"RLVR run {rd.name!r} failed (exit {proc.returncode}): {err[-1] if err else 'no message'}; "
                    f"rerun `posttrain-probe rlvr train --config {config_file(rd)} --out {rd}`"
                )
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        for r in readers:
            r.join(timeout=5)
        while not lines.empty():  # lines a stopped worker wrote before it was killed
            _, line = lines.get_nowait()
            if line is not None:
                finished(line)
        for share in shares:
            for _, rd in share:
                if rd not in done and not keep_unfinished:
                    shutil.rmtree(rd, ignore_errors=True)


def _read_lines(i: int, proc: subprocess.Popen, lines: queue.Queue) -> None:
    """Forward worker i's stdout lines as they come, then None when it closes."""
    with proc.stdout:
        for line in proc.stdout:
            lines.put((i, line.rstrip("\n")))
    lines.put((i, None))


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
