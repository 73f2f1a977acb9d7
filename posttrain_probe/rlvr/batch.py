"""Several `posttrain-probe rlvr train` runs one after another in one process.

    python -m posttrain_probe.rlvr.batch CONFIG OUT [CONFIG OUT ...]

Each run is exactly `rlvr train --config CONFIG --out OUT` (same errors, same files); sharing the process saves the
interpreter, torch and transformers start (~4 s) of every run after the first, which is a tenth of a quick demo.
After each finished run one line `OUT<TAB>seconds` goes to stdout; the first failing run stops the batch with its
exit status, its one-line error on stderr.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    from ..cli import main as cli_main

    args = list(sys.argv[1:] if argv is None else argv)
    if not args or len(args) % 2:
        print("usage: python -m posttrain_probe.rlvr.batch CONFIG OUT [CONFIG OUT ...]", file=sys.stderr)
        return 2
    for config, out in zip(args[::2], args[1::2]):
        t = time.perf_counter()
        rc = cli_main(["rlvr", "train", "--config", config, "--out", out])
        if rc:
            return rc
        print(f"{out}\t{time.perf_counter() - t:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
