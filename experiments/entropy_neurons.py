"""Do entropy (confidence-regulation) neurons explain the confidence gap between base and post?

    python experiments/entropy_neurons.py --preset quick
    python experiments/entropy_neurons.py --pair qwen2.5-0.5b   # TinyStories texts

Writes OUT/neurons (weight screens, selections, mean-ablation total/direct effects vs controls) with figures.
"""

from __future__ import annotations

from collections.abc import Sequence

from posttrain_probe.studies import run_entropy_neurons, run_script


def main(argv: Sequence[str] | None = None) -> int:
    return run_script("entropy_neurons", __doc__.splitlines()[0], run_entropy_neurons, argv)


if __name__ == "__main__":
    raise SystemExit(main())
