"""`posttrain-probe`: thin command line over the Python API (parse → call → print)."""

from __future__ import annotations

import argparse
import json
import platform
import sys
from collections.abc import Callable, Sequence

from . import __version__

_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = []


def command(register: Callable[[argparse._SubParsersAction], None]):
    """Decorator for functions that add one subcommand."""
    _COMMANDS.append(register)
    return register


def _versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {"python": platform.python_version(), "posttrain_probe": __version__}
    for pkg in ("torch", "transformers", "transformer-lens", "nnsight", "numpy", "scikit-learn"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


@command
def _info(sub):
    p = sub.add_parser("info", help="versions, device and cache directory")
    p.add_argument("--json", action="store_true", help="print JSON")

    def run(args) -> int:
        import torch

        from .paths import cache_dir, shared_data_dir

        info = {
            "versions": _versions(),
            "device": "cuda" if torch.cuda.is_available() else "cpu",
            "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
            "cpu_threads": torch.get_num_threads(),
            "cache_dir": str(cache_dir()),
            "shared_data_dir": str(shared_data_dir()) if shared_data_dir() else None,
        }
        if args.json:
            print(json.dumps(info, indent=2))
        else:
            for k, v in info.items():
                print(f"{k:16} {v}")
        return 0

    p.set_defaults(func=run)


@command
def _pair(sub):
    p = sub.add_parser("pair", help="paired-model utilities")
    psub = p.add_subparsers(dest="pair_cmd", required=True)
    c = psub.add_parser("check", help="load BASE and POST and print the parity report")
    c.add_argument("base", help="hub id, local HF directory or toyworld:base")
    c.add_argument("post", help="hub id, local HF directory or toyworld:post")
    c.add_argument("--backend", default="nnsight", choices=["bridge", "nnsight"])
    c.add_argument("--device", default=None)
    c.add_argument("--dtype", default=None)
    c.add_argument("--json", action="store_true", help="print the report as JSON")

    def run(args) -> int:
        from .pair import check_parity, load_model

        base = load_model(args.base, backend=args.backend, device=args.device, dtype=args.dtype)
        post = load_model(args.post, backend=args.backend, device=args.device, dtype=args.dtype)
        report = check_parity(base, post)
        print(json.dumps(report.as_dict(), indent=2) if args.json else report.format())
        if not report.ok:
            print(f"error: {report.error()}", file=sys.stderr)
            return 1
        return 0

    c.set_defaults(func=run)


@command
def _toyworld(sub):
    p = sub.add_parser("toyworld", help="the embedded toy world")
    tsub = p.add_subparsers(dest="toy_cmd", required=True)
    b = tsub.add_parser("build", help="build (or reuse from the cache) the toy base/post pair")
    b.add_argument("--preset", default="default", help="quick | default | large")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--force", action="store_true", help="rebuild even if a complete build is cached")
    b.add_argument("--cache-root", default=None, help="folder for builds (default: $POSTTRAIN_PROBE_CACHE/toyworld)")
    b.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (auto: the GPU if torch sees one)")
    b.add_argument(
        "--autocast", default="auto", choices=["auto", "bf16", "off"], help="auto: bf16 on CUDA, fp32 on the CPU"
    )

    def run(args) -> int:
        from .toyworld import build

        pair = build(
            args.preset, seed=args.seed, force=args.force, cache_root=args.cache_root, device=args.device,
            autocast=args.autocast,
        )  # fmt: skip
        r = pair.report
        print(f"toy pair {pair.key} at {pair.root}")
        print(f"  base: {pair.base_dir}\n  post: {pair.post_dir}\n  data: {pair.data_dir}")
        fr, tp, rf, ar = r["fact_recall"], r["truth_probe_base"], r["refusal"], r["arithmetic_heldout"]
        print(
            f"  fact recall      base {fr['base_pretrain_facts']:.2f}  post {fr['post_pretrain_facts']:.2f}  "
            f"(SFT-new facts: base {fr['base_sft_new_facts']:.2f}, post {fr['post_sft_new_facts']:.2f})"
        )
        print(
            f"  truth probe      held-out comparisons {tp['family_comparison_best']:.2f} (layer "
            f"{tp['family_comparison_best_layer']}), held-out people {tp['family_fact_best']:.2f}"
        )
        print(
            f"  refusal          post harmful {rf['post_heldout_harmful']:.2f}, post harmless "
            f"{rf['post_heldout_harmless']:.2f}, base harmful {rf['base_heldout_harmful']:.2f}"
        )
        print(f"  arithmetic       post T=1 {ar['post_temperature1']:.2f}, greedy {ar['post_greedy']:.2f}")
        ts = r["times_s"]
        print(f"  build time       {ts['total_s']:.0f} s on {r.get('compute', r['device'])}")
        print("  build stages     " + ", ".join(f"{k[:-2]} {v:.1f} s" for k, v in ts.items() if k != "total_s"))
        return 0

    b.set_defaults(func=run)


@command
def _data(sub):
    p = sub.add_parser("data", help="the public data sets real-model analyses read: list, fetch, path")
    dsub = p.add_subparsers(dest="data_cmd", required=True)
    ls = dsub.add_parser("list", help="every data set: size, license, where it is found, what reads it, source")
    ls.add_argument("--json", action="store_true", help="print JSON")
    f = dsub.add_parser("fetch", help="download data sets into the cache ($POSTTRAIN_PROBE_CACHE/data), verified")
    f.add_argument("names", nargs="+", metavar="NAME", help="data set names from `data list`, or all")
    f.add_argument(
        "--mirror", default=None,
        help="base URL or local folder laid out as NAME/FILE (like ../shared/data) to download from instead of "
        "the upstream sources (default: $POSTTRAIN_PROBE_DATA_MIRROR, else upstream)",
    )  # fmt: skip
    f.add_argument("--force", action="store_true", help="download again even if the data set is in the cache")
    f.add_argument("--no-progress", action="store_true", help="no progress bars")
    pa = dsub.add_parser("path", help="print the folder a data set is read from (cache, then shared data folder)")
    pa.add_argument("name", help="a data set name from `data list`")

    def run(args) -> int:
        from .data import catalog

        if args.data_cmd == "list":
            rows = catalog.catalog_rows()
            print(json.dumps(rows, indent=2) if args.json else catalog.format_catalog(rows))
        elif args.data_cmd == "path":
            print(catalog.data_set_dir(args.name))
        else:
            from .data.fetch import fetch_many

            try:
                done = fetch_many(args.names, mirror=args.mirror, force=args.force, progress=not args.no_progress)
            except KeyboardInterrupt:
                print(
                    "interrupted; the data set is not in the cache yet; run the same fetch to resume", file=sys.stderr
                )
                return 130
            for name, path in done.items():
                print(f"{name:24} {path}")
        return 0

    p.set_defaults(func=run)


@command
def _demo(sub):
    p = sub.add_parser("demo", help="the main job: every analysis on the toy pair, one HTML report")
    p.add_argument(
        "--preset", default="default", choices=["quick", "default", "large"], help="toy-world preset (large: a GPU)"
    )
    p.add_argument(
        "--quick", dest="preset", action="store_const", const="quick", help="same as --preset quick (≈ minutes)"
    )
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (auto: the GPU if torch sees one)")
    p.add_argument("--rlvr-steps", type=int, default=None, help="steps per RLVR run (default 12 quick / 60 otherwise)")
    p.add_argument("--losses", default=None, help="comma-separated RLVR losses (default: all six)")
    p.add_argument("--out", default="runs/demo", help="output folder (run dirs, figures/, report.html)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="recompute finished steps")

    def run(args) -> int:
        from .demo import RLVR_LOSSES, run_demo

        losses = tuple(x.strip() for x in args.losses.split(",") if x.strip()) if args.losses else ()
        unknown = [x for x in losses if x not in RLVR_LOSSES]
        if unknown:
            raise ValueError(f"unknown --losses {unknown}; choose from {', '.join(RLVR_LOSSES)}")
        if args.rlvr_steps is not None and args.rlvr_steps < 1:
            raise ValueError(f"--rlvr-steps {args.rlvr_steps} must be >= 1")
        report = run_demo(
            args.out, preset=args.preset, device=args.device, seed=args.seed, force=args.force,
            rlvr_steps=args.rlvr_steps, losses=losses,
        )  # fmt: skip
        print(f"report: {report}")
        return 0

    p.set_defaults(func=run)


@command
def _dynamics(sub):
    p = sub.add_parser("dynamics", help="entropy dynamics of RLVR run directories")
    p.add_argument("runs", nargs="+", help="run directories written by `rlvr train`")
    p.add_argument("--out", required=True)
    p.add_argument("--force", action="store_true")

    def run(args) -> int:
        from .analysis.dynamics import analyze_runs
        from .results import write_run

        res = analyze_runs(args.runs)
        write_run(args.out, res, overwrite=args.force)
        for run_name, s in res.summary.items():
            print(
                f"{run_name:14} entropy {s['entropy_first']:.3f}→{s['entropy_last']:.3f}  accuracy "
                f"{s['accuracy_first']:.3f}→{s['accuracy_last']:.3f}  law R² {s['law_r2']:.2f}"
            )
        return 0

    p.set_defaults(func=run)


@command
def _rlvr(sub):
    p = sub.add_parser("rlvr", help="the embedded RLVR trainer (GRPO family)")
    rsub = p.add_subparsers(dest="rlvr_cmd", required=True)
    t = rsub.add_parser("train", help="train from a YAML config into a new run directory")
    t.add_argument("--config", required=True, help="YAML file (see experiments/configs/rlvr_toy_*.yaml)")
    t.add_argument("--out", required=True, help="run directory (must not exist)")
    r = rsub.add_parser("resume", help="continue a run from its latest checkpoint, exactly")
    r.add_argument("run_dir")

    def run_train(args) -> int:
        from .rlvr import RLVRConfig, train

        run = train(RLVRConfig.from_yaml(args.config), args.out)
        print(f"run: {run}")
        return 0

    def run_resume(args) -> int:
        from .rlvr import resume

        print(f"run: {resume(args.run_dir)}")
        return 0

    t.set_defaults(func=run_train)
    r.set_defaults(func=run_resume)


# Modules that add their own subcommands through `add_cli(subparsers)`.
PLUGINS = (
    "posttrain_probe.probes.truth",
    "posttrain_probe.probes.neurons",
    "posttrain_probe.probes.refusal",
    "posttrain_probe.probes.tracing",
    "posttrain_probe.probes.patching",
    "posttrain_probe.analysis.drift_cli",
    "posttrain_probe.plots.export",
)


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(
        prog="posttrain-probe", description="What did post-training change inside this model?"
    )
    parser.add_argument("--version", action="version", version=f"posttrain_probe {__version__}")
    sub = parser.add_subparsers(dest="cmd", required=True)
    for register in _COMMANDS:
        register(sub)
    for module in PLUGINS:
        importlib.import_module(module).add_cli(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from .cli_args import one_line_errors

    args = build_parser().parse_args(argv)
    return one_line_errors(lambda: args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
