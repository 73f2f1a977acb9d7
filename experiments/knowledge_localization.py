"""Where are facts stored, and did post-training move them? ROME causal tracing + true/false and cross-model patching.

    python experiments/knowledge_localization.py                       # default toy pair
    python experiments/knowledge_localization.py --preset quick        # quick toy pair (≈ 1 min)
    python experiments/knowledge_localization.py --pair qwen2.5-0.5b   # known_1000 + cities.csv, GPU

Writes OUT/tracing and OUT/patching run directories with figures (see experiments/README.md).
"""

from __future__ import annotations

from collections.abc import Sequence

from posttrain_probe.studies import run_knowledge_localization, run_script


def main(argv: Sequence[str] | None = None) -> int:
    return run_script("knowledge_localization", __doc__.splitlines()[0], run_knowledge_localization, argv)


if __name__ == "__main__":
    raise SystemExit(main())
