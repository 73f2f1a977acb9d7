"""`posttrain-probe`: thin command line over the Python API (parse → call → print)."""

from __future__ import annotations

import argparse
import json
import platform
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

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
    c.add_argument("--backend", default="nnsight", choices=["bridge", "nnsight"], help="hooking backend (nnsight)")
    c.add_argument("--device", default=None, help="cpu | cuda | cuda:N | auto (default: the model's own placement)")
    c.add_argument("--dtype", default=None, help="float32 | bfloat16 | float16 (default: the checkpoint's)")
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


TOY_PRESETS = ["quick", "default", "organism", "large"]  # toyworld.config.PRESETS (not imported: keeps startup light)


def _toy_overrides(items: list[str]) -> dict:
    """`--set KEY=VALUE` items as config overrides; a value is read as JSON when it parses (8, 0.5, true), else
    kept as text (organism, comparison,successor)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set {item!r}: write KEY=VALUE, e.g. --set n_layers=8")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


@command
def _toyworld(sub):
    p = sub.add_parser("toyworld", help="the embedded toy world")
    set_help = (
        "override one field of the preset's ToyWorldConfig (repeatable), e.g. --set n_layers=8 "
        "--set n_delayed_docs=1500; the build gets its own cache key"
    )
    tsub = p.add_subparsers(dest="toy_cmd", required=True)
    b = tsub.add_parser("build", help="build (or reuse from the cache) the toy base/post pair")
    b.add_argument("--preset", default="default", help="quick | default | organism | large")
    b.add_argument("--seed", type=int, default=0, help="seed of the world, the corpus and the training (default: 0)")
    b.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=set_help)
    b.add_argument("--force", action="store_true", help="rebuild even if a complete build is cached")
    b.add_argument("--cache-root", default=None, help="folder for builds (default: $POSTTRAIN_PROBE_CACHE/toyworld)")
    b.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (auto: the GPU if torch sees one)")
    b.add_argument(
        "--autocast", default="auto", choices=["auto", "bf16", "off"], help="auto: bf16 on CUDA, fp32 on the CPU"
    )

    def run(args) -> int:
        from .toyworld import build, preset_config

        cfg = preset_config(args.preset, args.seed, **_toy_overrides(args.set))
        pair = build(
            config=cfg, force=args.force, cache_root=args.cache_root, device=args.device, autocast=args.autocast
        )
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

    c = tsub.add_parser(
        "check",
        help="run every probe on built toy pairs and check that each finds the mechanism it looks for "
        "(stored in each pair's report.json under 'mechanisms')",
    )
    c.add_argument("--preset", default="default", help="quick | default | organism | large")
    c.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="toy-world seeds (default: 0 1)")
    c.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=set_help)
    c.add_argument("--out", default="runs/organism", help="folder for the probes' run directories")
    c.add_argument("--cache-root", default=None, help="folder for builds (default: $POSTTRAIN_PROBE_CACHE/toyworld)")

    def check(args) -> int:
        from .studies.organism import check_toy_pair, format_checks
        from .toyworld import build, preset_config

        overrides = _toy_overrides(args.set)
        per_seed = {}
        for seed in args.seeds:
            toy = build(config=preset_config(args.preset, seed, **overrides), cache_root=args.cache_root)
            name = f"{args.preset}-seed{seed}" + (f"-{toy.key}" if overrides else "")
            per_seed[seed] = check_toy_pair(toy, Path(args.out) / name, seed=seed)
        print(format_checks(per_seed))
        return 0

    c.set_defaults(func=check)


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
    p.add_argument("--preset", default="default", choices=TOY_PRESETS, help="toy-world preset (large: a GPU)")
    p.add_argument(
        "--quick", dest="preset", action="store_const", const="quick", help="same as --preset quick (≈ minutes)"
    )
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (auto: the GPU if torch sees one)")
    p.add_argument(
        "--rlvr-steps", type=int, default=None, help="steps per RLVR run (default: demo.DEMO_RLVR, 12 quick / 40)"
    )
    p.add_argument(
        "--rlvr-seeds", type=int, default=None, help="paired seeds per RLVR arm (default 3; quick 2; 1 = no seed CI)"
    )
    p.add_argument(
        "--arms",
        default=None,
        help="comma-separated RLVR arms (default: grpo,null,clip_cov,kl_cov,steer; see "
        "`posttrain-probe rlvr arms`); baselines are added",
    )
    p.add_argument("--out", default="runs/demo", help="output folder (run dirs, figures/, report.html)")
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the toy build, the probes and the RLVR runs (default: 0)"
    )
    p.add_argument("--force", action="store_true", help="recompute finished steps")
    p.add_argument(
        "--keep-checkpoints",
        default="analysed",
        choices=["analysed", "all"],
        help="analysed (default): once dynamics and drift are written, delete the RLVR checkpoints no analysis "
        "reads (all but the GRPO run's, which drift reads); all: keep every run's checkpoints",
    )

    def run(args) -> int:
        from pathlib import Path

        from .demo import run_demo
        from .report import verdict_table_text
        from .rlvr.paired import resolve_arms

        arms = tuple(x.strip() for x in args.arms.split(",") if x.strip()) if args.arms else ()
        resolve_arms(arms)
        if args.rlvr_steps is not None and args.rlvr_steps < 1:
            raise ValueError(f"--rlvr-steps {args.rlvr_steps} must be >= 1")
        if args.rlvr_seeds is not None and args.rlvr_seeds < 1:
            raise ValueError(f"--rlvr-seeds {args.rlvr_seeds} must be >= 1")
        report = run_demo(
            args.out, preset=args.preset, device=args.device, seed=args.seed, force=args.force,
            rlvr_steps=args.rlvr_steps, arms=arms, keep_checkpoints=args.keep_checkpoints, rlvr_seeds=args.rlvr_seeds,
        )  # fmt: skip
        rows = json.loads((Path(args.out) / "verdicts.json").read_text())
        if args.preset == "quick":
            print("smoke test (quick preset: its model learns little); the claims are listed, not judged")
        print(verdict_table_text(rows, judged=args.preset != "quick"))
        mechanisms = Path(args.out) / "mechanisms.json"
        if mechanisms.is_file():
            from .studies.organism import format_checks

            print(format_checks({args.seed: json.loads(mechanisms.read_text())}))
        print(f"report: {report}")
        return 0

    p.set_defaults(func=run)


@command
def _dynamics(sub):
    p = sub.add_parser("dynamics", help="entropy dynamics of RLVR run directories")
    p.add_argument("runs", nargs="+", help="run directories written by `rlvr train`")
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--force", action="store_true", help="overwrite --out")

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
    st = rsub.add_parser(
        "study",
        help="paired multi-seed study: arms × seeds from the post model, effects with 95%% CIs, verdicts, figures",
        description="Every arm on the same seeds (common random numbers) into OUT/rlvr/<arm>_seed<k>, then "
        "OUT/dynamics. Same as experiments/rlvr_study.py.",
    )
    from .studies.common import add_study_flags
    from .studies.rlvr import add_study_arguments

    add_study_flags(st, "rlvr_study")
    add_study_arguments(st)
    st.add_argument(
        "--configs", default=None, help="experiments/configs folder (needed for real pairs; toy pairs have defaults)"
    )
    a = rsub.add_parser("arms", help="list the arms a paired study or the demo can run")

    def run_study(args) -> int:
        from pathlib import Path

        from .studies.common import run_parsed
        from .studies.rlvr import run_rlvr_study

        configs = Path(args.configs) if args.configs else None
        vars(args).pop("configs")
        return run_parsed("rlvr_study", run_rlvr_study, args, configs)

    def run_arms(args) -> int:
        from .rlvr.paired import ARMS, DOSES

        for arm in ARMS.values():
            print(f"{arm.name:22s} baseline {arm.baseline:22s} {arm.about}")
        for method, params in DOSES.items():
            for param, values in params.items():
                print(f"dose {method}@{param}=" + ",".join(f"{v:g}" for v in values))
        return 0

    st.set_defaults(func=run_study)
    a.set_defaults(func=run_arms)

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


def _probe_command(probe) -> Callable[[argparse._SubParsersAction], None]:
    """The subcommand of a registered probe: BASE POST --out DIR, the pair flags, one flag per documented field of
    its Config and Data (generated: help and code cannot drift)."""

    def register(sub: argparse._SubParsersAction) -> None:
        from .cli_args import add_pair_arguments
        from .probes.base import add_dataclass_arguments

        p = sub.add_parser(probe.command, help=probe.help, description=f"{probe.help}. {probe.question}")
        add_pair_arguments(p, backend=probe.backend)
        add_dataclass_arguments(p, probe.data_cls, "inputs (default: the pair's default data)")
        add_dataclass_arguments(p, probe.config_cls, "settings")
        p.set_defaults(func=lambda args: _run_probe(probe, args))

    return register


def _run_probe(probe, args: argparse.Namespace) -> int:
    import dataclasses

    from .cli_args import finish_run, fresh_out_dir
    from .pair import load_pair
    from .probes.base import dataclass_from_args
    from .results import write_run

    out = fresh_out_dir(args)
    cfg = dataclass_from_args(probe.config_cls, args)
    data = dataclass_from_args(probe.data_cls, args)
    if "reuse" in {f.name for f in dataclasses.fields(data)} and data.reuse is None and out.exists():
        data = dataclasses.replace(data, reuse=str(out))  # --force over an earlier run reuses its activations
    pair = load_pair(args.base, args.post, backend=args.backend, device=args.device, dtype=args.dtype)
    result = probe.execute(pair, _LazySources(args.base), config=cfg, data=data)
    write_run(out, result, overwrite=args.force)
    probe.write_artifacts(result, pair, out)
    return finish_run(args, out, probe.figures, probe.summary_text(result.summary))


class _LazySources:
    """The pair's default data sources, resolved only when a probe needs a default (so --data works without the
    shared data sets); `kind` (toyworld or shared) is known without resolving them."""

    def __init__(self, base: str) -> None:
        self._base, self._value = base, None

    @property
    def kind(self) -> str:
        from .data.defaults import toy_data_dir

        return "toyworld" if toy_data_dir(self._base) is not None else "shared"

    def __getattr__(self, name: str):
        if self._value is None:
            from .data.defaults import default_sources

            self._value = default_sources(self._base)
        return getattr(self._value, name)


@command
def _neurons_series(sub):
    p = sub.add_parser("neurons-series", help="entropy-neuron weight screens for a series of checkpoints")
    p.add_argument("checkpoints", nargs="+", help="checkpoint directories in order (base first)")
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--force", action="store_true", help="overwrite --out")
    p.add_argument("--layer", type=int, default=-1, help="MLP layer to screen (-1: the last)")
    p.add_argument("--all-layers", action="store_true", help="screen every layer")
    p.add_argument("--null-k", type=float, default=None, help="null-space size: int, or fraction of d_model")
    p.add_argument("--top-frac", type=float, default=0.25, help="Du et al.'s rule: top share by norm (0.25)")
    p.add_argument("--n-select", type=int, default=10, help="neurons in Du et al.'s set (10)")
    p.add_argument("--n-null", type=int, default=10, help="neurons in the null-space set (10)")

    def run(args) -> int:
        from .cli_args import fresh_out_dir
        from .probes.neurons.series import run_series
        from .results import write_run

        out = fresh_out_dir(args)
        k = args.null_k
        k = int(k) if k is not None and float(k).is_integer() else k
        result = run_series(args.checkpoints, args.layer, args.all_layers, k, args.top_frac, args.n_select, args.n_null)
        write_run(out, result, overwrite=args.force)
        print(result.tables["selection_overlap"].to_string(index=False))
        print(f"wrote {out}", file=sys.stderr)
        return 0

    p.set_defaults(func=run)


@command
def _compare_checkpoints(sub):
    """`compare-checkpoints START CKPT... --out DIR`."""
    p = sub.add_parser(
        "compare-checkpoints",
        help="internal change along a checkpoint series: weights, CKA, truth/refusal drift, tracing, entropy neurons",
    )
    p.add_argument("base", help="start of the series: hub id, local HF dir or toyworld:post (the RLVR start model)")
    p.add_argument("checkpoints", nargs="+", help="checkpoint dirs in order, or an RLVR run dir (all its checkpoints)")
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--force", action="store_true", help="overwrite --out")
    p.add_argument("--figures", action="store_true", help="also save figures into OUT/figures")
    p.add_argument("--backend", default="nnsight", choices=["bridge", "nnsight"], help="hooking backend (nnsight)")
    p.add_argument("--device", default=None, help="cpu | cuda | cuda:N | auto (default: the model's own placement)")
    p.add_argument("--dtype", default=None, help="float32 | bfloat16 | float16 (default: the checkpoint's)")
    p.add_argument("--metrics", default=None, help="a run's metrics.jsonl to line up with (default: the RLVR run's)")
    p.add_argument("--facts", default=None, help="facts for causal tracing (known_1000-style json or folder)")
    p.add_argument("--statements", nargs="+", default=None, help="true/false statement csv files or folders")
    p.add_argument("--instructions", default=None, help="folder of harmful*/harmless* instruction splits")
    p.add_argument("--texts", default=None, help="text file (one per line) for CKA and entropy-neuron ablation")
    for name, default, text in (
        ("max_facts", 50, "facts traced per checkpoint"),
        ("max_statements", 200, "true/false statements for the truth-direction drift"),
        ("max_instructions", 32, "harmful and harmless instructions each for the refusal-direction drift"),
        ("n_cka_texts", 64, "texts for CKA to the start model"),
        ("n_neuron_texts", 96, "texts for the entropy-neuron means and effects"),
        ("seed", 0, "seed of the samples and the tracing noise"),
    ):
        p.add_argument("--" + name.replace("_", "-"), type=int, default=default, help=f"{text} (default: {default})")
    from .analysis.drift_config import TRACING_KINDS, DriftConfig

    d = DriftConfig()
    p.add_argument(
        "--tracing-samples", type=int, default=d.tracing_samples, help=f"noise samples per fact ({d.tracing_samples})"
    )
    p.add_argument(
        "--tracing-window",
        type=int,
        default=None,
        help="layers restored around each layer (default: the tracing probe's window for the depth)",
    )
    p.add_argument(
        "--tracing-kinds",
        nargs="+",
        default=list(d.tracing_kinds),
        choices=TRACING_KINDS,
        help="restored states per checkpoint (default: resid mlp)",
    )
    p.add_argument("--n-select", type=int, default=d.n_select, help="entropy neurons per set (Du rule)")
    p.add_argument("--no-tracing", action="store_true", help="skip causal tracing per checkpoint")
    p.add_argument("--no-neuron-effects", action="store_true", help="skip entropy-neuron ablation per checkpoint")
    p.add_argument("--no-screens", action="store_true", help="skip the entropy-neuron weight screens")
    p.set_defaults(func=_cli_compare)


def _cli_compare(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .analysis.drift import DriftConfig, compare_checkpoints
    from .analysis.drift_inputs import expand_checkpoints, format_summary, load_drift_inputs
    from .cli_args import finish_run, fresh_out_dir
    from .results import write_run

    out = fresh_out_dir(args)
    checkpoints, run_metrics = expand_checkpoints(args.checkpoints)
    n_eval = min(DriftConfig.n_eval, args.n_neuron_texts // 2)
    cfg = DriftConfig(
        tracing_kinds=tuple(args.tracing_kinds),
        tracing_samples=args.tracing_samples,
        tracing_window=args.tracing_window,
        max_facts=args.max_facts,
        n_select=args.n_select,
        n_ref=max(1, args.n_neuron_texts - n_eval),
        n_eval=max(1, n_eval),
        seed=args.seed,
    )
    inputs = load_drift_inputs(
        args.base,
        args.facts,
        args.statements,
        args.instructions,
        args.texts,
        args.max_facts,
        args.max_statements,
        args.max_instructions,
        args.n_cka_texts,
        args.n_neuron_texts,
        tracing=not args.no_tracing,
        neurons=not args.no_neuron_effects,
        seed=args.seed,
    )
    metrics = args.metrics or run_metrics
    if args.metrics and not Path(args.metrics).is_file():
        raise FileNotFoundError(f"--metrics {args.metrics} not found; pass a run's metrics.jsonl")
    result = compare_checkpoints(
        args.base,
        checkpoints,
        statements=inputs.statements,
        harmful=inputs.harmful,
        harmless=inputs.harmless,
        cka_texts=inputs.cka_texts,
        metrics_jsonl=metrics,
        backend=args.backend,
        screen_neurons=not args.no_screens,
        facts=inputs.facts or None,
        neuron_texts=inputs.neuron_texts or None,
        config=cfg,
        device=args.device,
        dtype=args.dtype,
    )
    result.config["data_sources"] = inputs.sources
    write_run(out, result, overwrite=args.force)
    return finish_run(args, out, "posttrain_probe.plots.drift", format_summary(result.summary))


# Modules that add their own subcommands through `add_cli(subparsers)` (not probes: those come from the registry).
PLUGINS = ("posttrain_probe.plots.export",)


def build_parser() -> argparse.ArgumentParser:
    import importlib

    from . import registry

    parser = argparse.ArgumentParser(
        prog="posttrain-probe", description="What did post-training change inside this model?"
    )
    parser.add_argument("--version", action="version", version=f"posttrain_probe {__version__}")
    sub = parser.add_subparsers(dest="cmd", required=True)
    for register in _COMMANDS:
        register(sub)
    for probe in registry.probes():
        _probe_command(probe)(sub)
    for module in PLUGINS:
        importlib.import_module(module).add_cli(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from .cli_args import one_line_errors

    args = build_parser().parse_args(argv)
    return one_line_errors(lambda: args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
