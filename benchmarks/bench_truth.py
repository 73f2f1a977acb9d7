"""Benchmark: the truth probes' batched solve inside a real `truth --lodo all` run, against the previous path (one
scikit-learn LogisticRegression per model × kind × layer × fold, tests/reference/sklearn_probes.py).

Builds two random-init checkpoints of one shape (default: Llama-like, d_model 640, 18 layers) and a statement csv
of --datasets × --per-dataset statements, runs the `truth` CLI on them with --lodo all (its default few-shot
intervention and reach check included), and times, inside that run, the probe fitting (`fit_probes`: every
model × kind × layer, then every fold × model × kind × layer, in one batched solve per kind) and the probe tables
around it (fit_all, score_tables, lodo_table). Then, on the run's own activations, the same tables the previous
way: its time and the largest accuracy difference from the run's tables.

Goal (issue 17): probe fitting ≤ 10% of the run's time at the default shape, accuracies within ±0.005.
Run: `python benchmarks/bench_truth.py [--d-model 640] [--layers 18] [--datasets 6] [--per-dataset 400]
[--family llama] [--device cpu] [--threads N] [--skip-sklearn]`; `--tiny` checks that it works in seconds.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

TEMPLATES = [
    "{n} lives in {w} .",
    "{n} works at {w} .",
    "{n} was born in {w} .",
    "the {w} is {n} .",
    "{w} is with {n} .",
    "{n} is from {w} .",
    "{w} was made by {n} .",
    "{n} is on {w} .",
]
NUMS = "zero one two three four five six seven eight nine".split()
N_EXTRA_WORDS = 60  # the tiny tokenizer's w0..w59


def write_statements(path: Path, n_datasets: int, per_dataset: int, seed: int = 0) -> Path:
    """A csv of `n_datasets` × `per_dataset` distinct statements (label from a fixed rule, half true)."""
    if n_datasets > len(TEMPLATES) or per_dataset > len(NUMS) * N_EXTRA_WORDS:
        raise SystemExit(f"at most {len(TEMPLATES)} datasets of {len(NUMS) * N_EXTRA_WORDS} statements")
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(n_datasets):
        cells = rng.permutation(len(NUMS) * N_EXTRA_WORDS)[:per_dataset]
        for c in cells:
            i, j = divmod(int(c), N_EXTRA_WORDS)
            text = TEMPLATES[k].format(n=NUMS[i], w=f"w{j}")
            rows.append(dict(statement=text, label=int((3 * i + j + k) % 2 == 0), dataset=f"set{k}"))
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


class Clock:
    """Wraps functions of a module, summing their wall time under a name."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def wrap(self, module, name: str, key: str) -> None:
        fn = getattr(module, name)

        @functools.wraps(fn)
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[key] = self.seconds.get(key, 0.0) + time.perf_counter() - t0

        setattr(module, name, timed)


def _gap(ours: pd.DataFrame, ref: pd.DataFrame, keys: list[str]) -> float:
    from tests.reference.sklearn_probes import accuracy_gaps

    return float(accuracy_gaps(ours, ref, keys).gap.max())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--family", default="llama")
    ap.add_argument("--d-model", type=int, default=640)
    ap.add_argument("--layers", type=int, default=18)
    ap.add_argument("--datasets", type=int, default=6)
    ap.add_argument("--per-dataset", type=int, default=400)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--backend", default="bridge", choices=["bridge", "nnsight"])
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--skip-sklearn", action="store_true", help="skip the previous path (slow at full size)")
    ap.add_argument("--tiny", action="store_true", help="a seconds-long check: 64-d, 2 layers, 3 × 40 statements")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    extra: list[str] = []
    if args.tiny:
        args.d_model, args.layers, args.datasets, args.per_dataset = 64, 2, 3, 40
        extra = ["--n-intervene", "8", "--n-shots", "2", "--reach-pairs", "4"]
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for tests.reference
    from posttrain_probe.cli import build_parser
    from posttrain_probe.probes.truth import run as truth_run
    from posttrain_probe.probes.truth import tables
    from posttrain_probe.results import read_run
    from posttrain_probe.testing import make_tiny_checkpoint
    from tests.reference.sklearn_probes import sklearn_fit_all, sklearn_lodo_table

    tmp = tempfile.TemporaryDirectory()
    root = Path(tmp.name)
    kw = dict(d_model=args.d_model, n_layers=args.layers, vocab_extra=N_EXTRA_WORDS, max_positions=256)
    base = make_tiny_checkpoint(args.family, root / "base", seed=0, **kw)
    post = make_tiny_checkpoint(args.family, root / "post", seed=1, **kw)
    csv = write_statements(root / "statements.csv", args.datasets, args.per_dataset)

    clock = Clock()
    clock.wrap(tables, "fit_probes", "probe_fitting_s")  # the batched solves (both tables)
    for name in ("fit_all", "score_tables", "lodo_table"):
        clock.wrap(truth_run, name, f"{name}_s")
    out = root / "run"
    argv = ["truth", str(base), str(post), "--data", str(csv), "--dataset-column", "dataset", "--out", str(out)]
    argv += ["--lodo", "all", "--no-progress", "--backend", args.backend, "--device", args.device, *extra]
    cli = build_parser().parse_args(argv)
    t0 = time.perf_counter()
    if cli.func(cli) != 0:
        raise SystemExit("the truth run failed")
    total = time.perf_counter() - t0
    res = read_run(out)
    s = clock.seconds
    tables_s = s["fit_all_s"] + s["score_tables_s"] + s["lodo_table_s"]
    report: dict = {
        "shape": dict(family=args.family, d_model=args.d_model, layers=args.layers, device=args.device),
        "statements": dict(datasets=args.datasets, per_dataset=args.per_dataset, n=res.summary["n_statements"]),
        "threads": torch.get_num_threads(),
        "run_s": round(total, 3),
        **{k: round(v, 3) for k, v in s.items()},
        "probe_fitting_share": round(s["probe_fitting_s"] / total, 4),
        "probe_tables_share": round(tables_s / total, 4),
        "goal": "probe_fitting_share <= 0.10",
    }
    if not args.skip_sklearn:
        st = res.tables["statements"]
        y, ds, test = st.label.to_numpy(), st.dataset.to_numpy(), (st.split == "test").to_numpy()
        acts = {r: res.tensors[f"activations.{r}"].numpy() for r in ("base", "post")}
        layers = list(range(acts["base"].shape[1]))
        cfg = res.config
        t0 = time.perf_counter()  # the same three tables as the run's fit_all + score_tables + lodo_table
        fits = sklearn_fit_all(acts, y, ~test, cfg["C"], cfg["max_iter"])
        la = tables.score_tables(acts, y, ds, test, fits)["layer_accuracy"]
        lodo = sklearn_lodo_table(acts, y, ds, layers, cfg["C"], cfg["max_iter"])
        sk_s = time.perf_counter() - t0
        report |= {
            "sklearn_tables_s": round(sk_s, 3),
            "speedup_tables": round(sk_s / max(tables_s, 1e-9), 2),
            "max_acc_diff_layer": _gap(res.tables["layer_accuracy"], la, ["model", "probe", "layer"]),
            "max_acc_diff_lodo": _gap(res.tables["lodo"], lodo, ["model", "probe", "layer", "held_out"]),
        }
    print(json.dumps(report, indent=1))
    tmp.cleanup()


if __name__ == "__main__":
    main()
