"""Regenerate the README's figures from saved run directories only.

    python scripts/make_figures.py runs/demo --out figures/

The same as `posttrain-probe figures RESULTS_DIR --out DIR` (see posttrain_probe/plots/export.py).
"""

from __future__ import annotations

import sys

from posttrain_probe.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["figures", *sys.argv[1:]]))
