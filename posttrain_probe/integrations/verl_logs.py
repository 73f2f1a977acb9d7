"""A verl run's file log → a metrics.jsonl with the embedded trainer's column names, so that
`posttrain-probe compare-checkpoints START CKPT... --metrics OUT.jsonl` lines a verl run's checkpoints up with
its entropy and accuracy curve. Needs no verl:

    python -m posttrain_probe.integrations.verl_logs VERL_LOG.jsonl metrics.jsonl

verl writes the log with trainer.logger='["console","file"]': one line {"step": N, "data": {key: value}} per
call, at $VERL_FILE_LOGGER_PATH or $VERL_FILE_LOGGER_ROOT/<project_name>/<experiment_name>.jsonl. Lines of
the same step are merged; every verl key is kept under its own name, and these are added:
    entropy_mean   ← actor/entropy: verl's token entropy of the rollout batch under π_old, reduced with the
                     actor's loss_agg_mode (token-mean by default, like ours)
    reward_mean    ← critic/score/mean: the mean sequence reward of the task (before any KL-in-reward)
    accuracy       ← critic/score/mean as well, which is the share of correct rollouts only for a 0/1 reward
                     (verl's GSM8K and math rewards); pass accuracy_key=None (--no-accuracy) otherwise
    response_len_mean ← response_length/mean
    <name>         ← actor/posttrain_probe/<name>: our metrics (dH_pred_cov, dH_pred_omega, dH_realized_is,
                     cov_mean, touched_frac, ...; posttrain_probe.integrations.verl defines them)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

OUR_PREFIX = "actor/posttrain_probe/"
RENAMES = {
    "actor/entropy": "entropy_mean",
    "critic/score/mean": "reward_mean",
    "response_length/mean": "response_len_mean",
}


def convert_verl_log(
    verl_log: str | Path, out: str | Path | None = None, accuracy_key: str | None = "critic/score/mean"
) -> list[dict[str, Any]]:
    """The rows (one per step, ascending) of `verl_log` in our column names; written to `out` as JSON lines
    when given. A line that is not verl's {"step", "data"} format is an error naming the line."""
    path = Path(verl_log)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; verl writes it with trainer.logger including 'file'")
    merged: dict[int, dict[str, Any]] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        entry = json.loads(line)
        if not (isinstance(entry, dict) and isinstance(entry.get("step"), int) and isinstance(entry.get("data"), dict)):
            raise ValueError(f"{path}:{n} is not a verl file-log line ({{'step': int, 'data': {{...}}}})")
        merged.setdefault(entry["step"], {}).update(entry["data"])
    rows = []
    for step in sorted(merged):
        data = merged[step]
        row: dict[str, Any] = {"step": step}
        for key, value in data.items():
            if key.startswith(OUR_PREFIX):
                row[key[len(OUR_PREFIX) :]] = value
        for src, dst in RENAMES.items():
            if src in data:
                row[dst] = data[src]
        if accuracy_key is not None and accuracy_key in data:
            row["accuracy"] = data[accuracy_key]
        row.update({k: v for k, v in data.items() if k not in row})
        rows.append(row)
    if out is not None:
        from posttrain_probe.utils.io import dumps_json

        Path(out).write_text("".join(dumps_json(r, indent=None) + "\n" for r in rows))  # NaN → null
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m posttrain_probe.integrations.verl_logs", description=__doc__.split("\n")[0]
    )
    p.add_argument("verl_log", help="verl's file-logger JSONL")
    p.add_argument("out", help="metrics.jsonl to write")
    p.add_argument("--accuracy-key", default="critic/score/mean", help="verl key taken as accuracy (0/1 rewards)")
    p.add_argument("--no-accuracy", action="store_true", help="write no accuracy column (non-binary rewards)")
    args = p.parse_args(argv)
    try:
        rows = convert_verl_log(args.verl_log, args.out, None if args.no_accuracy else args.accuracy_key)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{len(rows)} steps → {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
