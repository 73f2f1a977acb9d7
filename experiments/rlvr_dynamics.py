"""Why does entropy collapse under RLVR, and what do Clip-Cov, KL-Cov, STEER and friends change?

    python experiments/rlvr_dynamics.py --preset quick --steps 12
    python experiments/rlvr_dynamics.py --pair qwen2.5-0.5b --losses grpo,clip_cov   # GSM8K, GPU

Trains every loss from the post model with experiments/configs/rlvr_{toy,gsm8k}_*.yaml into OUT/rlvr/<loss>
(finished runs are reused, interrupted ones resumed), then writes OUT/dynamics with figures.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from posttrain_probe.studies import LOSSES, run_rlvr_dynamics, run_script

CONFIGS = Path(__file__).resolve().parent / "configs"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--losses", type=_losses, default=LOSSES, help=f"comma-separated, from {','.join(LOSSES)}")
    p.add_argument("--steps", type=int, default=None, help="RL steps per run (default: the config's)")
    p.add_argument("--task", default=None, choices=["gsm8k", "math500", "countdown"], help="real pairs only")


def _losses(text: str) -> tuple[str, ...]:
    out = tuple(x.strip() for x in text.split(",") if x.strip())
    bad = [x for x in out if x not in LOSSES]
    if bad or not out:
        raise argparse.ArgumentTypeError(f"unknown losses {bad}; choose from {', '.join(LOSSES)}")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    return run_script("rlvr_dynamics", __doc__.splitlines()[0], run_rlvr_dynamics, argv, add_arguments, CONFIGS)


if __name__ == "__main__":
    raise SystemExit(main())
