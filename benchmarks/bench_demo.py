"""Wall time of the main job, `posttrain-probe demo`, against its budgets: `--quick` ≤ 90 s, default ≤ 10 min.

Each run goes into a new output folder. `--cold` also gives it a new, empty toy-world cache, so the time includes
building the toy pair (the first run a user sees); without it a cached build is reused (a rerun). The demo's own
per-step timings (`timings.txt`) are printed next to the total, with the machine's load average before and after,
because on a shared 2-core box another process can double every number.

    python benchmarks/bench_demo.py --preset quick --cold [--out bench_demo.json]
    python benchmarks/bench_demo.py --preset default --cold
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BUDGET_S = {"quick": 90.0, "default": 600.0}


def run_once(preset: str, cold: bool, keep: Path | None) -> dict:
    work = Path(tempfile.mkdtemp(prefix="bench_demo_"))
    env = dict(os.environ)
    if cold:
        env["POSTTRAIN_PROBE_CACHE"] = str(work / "cache")
    out = work / "demo"
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "posttrain_probe.cli", "demo", "--preset", preset, "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"demo failed (exit {proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
    steps = {}
    for line in (out / "timings.txt").read_text().splitlines():
        name, seconds = line.split("\t")
        steps[name] = float(seconds)
    if keep is not None:
        shutil.copytree(out, keep, dirs_exist_ok=True)
    shutil.rmtree(work, ignore_errors=True)
    return {
        "preset": preset,
        "cold_cache": cold,
        "wall_s": wall,
        "steps_s": steps,
        "budget_s": BUDGET_S.get(preset),
        "within_budget": wall <= BUDGET_S[preset] if preset in BUDGET_S else None,
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="quick", choices=["quick", "default", "large"])
    ap.add_argument("--cold", action="store_true", help="empty toy-world cache: include the toy-pair build")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--keep", default=None, help="copy the last demo output here (report, figures)")
    ap.add_argument("--out", default=None, help="write the measurements as JSON here")
    args = ap.parse_args()
    import torch

    runs = [run_once(args.preset, args.cold, Path(args.keep) if args.keep else None) for _ in range(args.repeats)]
    report = {
        "benchmark": "demo",
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "platform": platform.platform()},
        "runs": runs,
    }
    for r in runs:
        steps = ", ".join(f"{k} {v:.0f}s" for k, v in r["steps_s"].items())
        verdict = {True: "within", False: "OVER", None: "no"}[r["within_budget"]]
        print(
            f"demo --preset {r['preset']} ({'cold' if r['cold_cache'] else 'warm'} cache): {r['wall_s']:.0f} s, "
            f"{verdict} budget {r['budget_s']} s; load {r['loadavg_before'][0]:.1f}→{r['loadavg_after'][0]:.1f}"
        )
        print(f"  steps: {steps}")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return 0 if all(r["within_budget"] is not False for r in runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
