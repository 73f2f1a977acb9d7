"""Several RLVR training runs one after another in one process (the demo's parallel workers).

    python -m posttrain_probe.rlvr.batch CONFIG OUT [CONFIG OUT ...]

Each run is `posttrain_probe.rlvr.train(RLVRConfig.from_yaml(CONFIG), OUT)`, as `posttrain-probe rlvr train
--config CONFIG --out OUT` runs it (same files, same one-line errors); an OUT that already holds an unfinished run
of the same config is resumed exactly (`rlvr.resume`), a finished one is left as it is. Sharing the process saves
the interpreter, torch and transformers start (~4 s) of every run after the first, a tenth of a quick demo. After each
finished run one line `OUT<TAB>seconds` goes to stdout; the first failing run stops the batch with exit status 1
(130 on Ctrl-C) and its one-line error (`error: ...`) on stderr. The worker calls the library, never the CLI.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence

USAGE = "usage: python -m posttrain_probe.rlvr.batch CONFIG OUT [CONFIG OUT ...]"


def train_one(config: str, out: str) -> int:
    """Train the run of the YAML file `config` into the run directory `out` (new, or an interrupted run of the same
    config, which is resumed); returns 0."""
    from pathlib import Path

    from posttrain_probe.rlvr import RLVRConfig, resume, train
    from posttrain_probe.rlvr.run import RLVRRun, same_config
    from posttrain_probe.rlvr.trainer import CONFIG_FILE

    cfg = RLVRConfig.from_yaml(config)
    if (Path(out) / CONFIG_FILE).is_file():
        run = RLVRRun(out)
        if not same_config(run.config, cfg):
            raise FileExistsError(f"{out} holds a run of another config than {config}; remove it or pick another OUT")
        if not run.is_finished:
            resume(out)
        return 0
    train(cfg, out)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from posttrain_probe.utils.errors import one_line_errors

    args = list(sys.argv[1:] if argv is None else argv)
    if not args or len(args) % 2:
        print(USAGE, file=sys.stderr)
        return 2
    for config, out in zip(args[::2], args[1::2]):
        t = time.perf_counter()
        rc = one_line_errors(lambda: train_one(config, out))  # noqa: B023  (called before the loop moves on)
        if rc:
            return rc
        print(f"{out}\t{time.perf_counter() - t:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
