"""A paired multi-seed RLVR study: do Clip-Cov, KL-Cov and STEER keep entropy higher than GRPO, by more than chaos?

    python experiments/rlvr_study.py                           # toy pair: 8 arms × 5 seeds × 150 steps
    python experiments/rlvr_study.py --dose                    # + the dose–response sweep
    python experiments/rlvr_study.py --preset quick --seeds 2 --steps 12 --arms grpo,null,clip_cov
    python experiments/rlvr_study.py --pair qwen2.5-0.5b --arms grpo,null,clip_cov --seeds 3   # GSM8K, GPU

Every arm (rlvr.paired.ARMS: `posttrain-probe rlvr arms`) trains from the post model on the same seeds (common random
numbers: same prompts and sampling uniforms per step) into OUT/rlvr/<arm>_seed<k>; the null arm (GRPO, lr × 1.01)
measures chaos alone. OUT/dynamics holds the paired effects (held-out eval entropy and accuracy of each arm against
its baseline, mean and 95% CI over seeds), the dose–response table, the verdicts and figures. Same as
`posttrain-probe rlvr study`. Interrupted runs are resumed exactly on the next call.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from posttrain_probe.studies import run_script
from posttrain_probe.studies.rlvr import add_study_arguments, run_rlvr_study

CONFIGS = Path(__file__).resolve().parent / "configs"


def main(argv: Sequence[str] | None = None) -> int:
    return run_script("rlvr_study", __doc__.splitlines()[0], run_rlvr_study, argv, add_study_arguments, CONFIGS)


if __name__ == "__main__":
    raise SystemExit(main())
