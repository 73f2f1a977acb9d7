"""Are truth and refusal linear directions shared by base and post? Probes, interventions, steering vectors.

    python experiments/directions.py --preset quick
    python experiments/directions.py --pair qwen2.5-0.5b   # geometry_of_truth + truth_is_universal, refusal_direction

Writes OUT/truth and OUT/refusal run directories with figures and OUT/<run>/steering/*.safetensors vectors.
"""

from __future__ import annotations

from collections.abc import Sequence

from posttrain_probe.studies import run_directions, run_script


def main(argv: Sequence[str] | None = None) -> int:
    return run_script("directions", __doc__.splitlines()[0], run_directions, argv)


if __name__ == "__main__":
    raise SystemExit(main())
