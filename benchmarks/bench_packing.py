"""Packed scoring against the KV-cache path, in one process, alternating: our RLVR step with `pack_rows` on and off.

`score_tokens_shared_prefix` packs each micro-batch's prompts and completions into rows under a block mask (one
decoder call, so each weight's gradient is one product) or, with `pack_rows: false`, runs the distinct prompts with
a KV cache and the completions on its copied rows (two decoder calls, each weight's gradient built twice and
summed). Same world and batch settings as `bench_rlvr.py` (`--shape toy|gpt2-small|large-vocab`); the two arms run
alternately `--repeats` times in one process, so a drift in the machine's speed hits both. Prints, per arm, the
median step and its training part (mini-batch updates and the re-scoring forward) over the steps after the first.

    python benchmarks/bench_packing.py [--shape gpt2-small] [--split rows|groups] [--steps 4] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads its OpenMP runtime, as bench_rlvr.py

import torch  # noqa: E402
from bench_rlvr import SETUPS, make_world  # noqa: E402

from posttrain_probe.rlvr import RLVRConfig, read_jsonl, train  # noqa: E402
from posttrain_probe.utils.memory import keep_freed_memory  # noqa: E402


def one_run(model: Path, data: Path, out: Path, shape: str, split: str, steps: int, pack: bool) -> dict[str, float]:
    setup = SETUPS[shape]
    cfg = RLVRConfig(
        model=str(model), data=str(data), task="arithmetic", steps=steps, eval_every=0, checkpoint_every=0,
        prompts_per_step=setup.prompts, group_size=setup.group, max_new_tokens=setup.max_new,
        minibatches=setup.minibatches, n_eval=16, progress=False, prompt_format="raw", minibatch_split=split,
        pack_rows=pack,
    )  # fmt: skip
    rows = read_jsonl(train(cfg, out) / "metrics.jsonl")[1:]  # the first step warms up
    return {k: statistics.median(r[f"time_{k}_s"] for r in rows) for k in ("step", "train", "rollout")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="toy", choices=list(SETUPS))
    ap.add_argument("--split", default="rows", choices=["rows", "groups"], help="our minibatch_split")
    ap.add_argument("--steps", type=int, default=4, help="rollout batches per run (the first is warm-up)")
    ap.add_argument("--repeats", type=int, default=2, help="alternating runs per arm")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None, help="write the numbers as JSON here")
    args = ap.parse_args()
    if args.steps < 2:
        raise SystemExit(f"--steps {args.steps}: at least 2 (the first step is warm-up)")
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as the trainer sets it (RLVRConfig.keep_freed_memory), before either arm runs
    runs: dict[str, list[dict[str, float]]] = {"packed": [], "kv_cache": []}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model, data, _ = make_world(root, args.shape)
        for rep in range(args.repeats):
            for arm in runs:
                runs[arm].append(one_run(model, data, root / f"{arm}{rep}", args.shape, args.split, args.steps,
                                         arm == "packed"))  # fmt: skip
                torch.set_num_threads(args.threads)
                r = runs[arm][-1]
                print(f"{arm:8s} run {rep}: step {r['step']:.3f} s, train part {r['train']:.3f} s", flush=True)
    best = {arm: min(r["step"] for r in rs) for arm, rs in runs.items()}
    ratio = best["packed"] / best["kv_cache"]
    print(f"{args.shape}, {args.split} split, {args.threads} thread(s): best median step packed "
          f"{best['packed']:.3f} s, KV cache {best['kv_cache']:.3f} s (packed / KV cache {ratio:.2f})")  # fmt: skip
    if args.out:
        args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
