"""What changes inside the model along an RLVR run, and from base to post? Drift measures per checkpoint.

    python experiments/checkpoint_drift.py --preset quick --steps 12
    python experiments/checkpoint_drift.py --preset quick --run runs/experiments/rlvr_dynamics/toyworld-quick/rlvr/grpo
    python experiments/checkpoint_drift.py --pair qwen2.5-0.5b --steps 100   # GSM8K GRPO run, GPU

Without --run, trains a GRPO run from the post model into OUT/rlvr/grpo first. Writes OUT/drift_rlvr (lined up
with the run's entropy curve) and OUT/drift_base_to_post with figures.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from posttrain_probe.studies import run_checkpoint_drift, run_script

CONFIGS = Path(__file__).resolve().parent / "configs"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", default=None, help="an existing RLVR run directory (default: train a GRPO run)")
    p.add_argument("--steps", type=int, default=None, help="steps of the GRPO run it trains (default: the config's)")
    p.add_argument("--task", default=None, choices=["gsm8k", "math500", "countdown"], help="real pairs only")


def main(argv: Sequence[str] | None = None) -> int:
    return run_script("checkpoint_drift", __doc__.splitlines()[0], run_checkpoint_drift, argv, add_arguments, CONFIGS)


if __name__ == "__main__":
    raise SystemExit(main())
