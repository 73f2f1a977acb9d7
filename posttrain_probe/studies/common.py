"""What every study script shares: the registry of real base/post pairs, the command line, the sizes, and writing
run directories with their figures.

A study runs on the toy pair (`toyworld:base` / `toyworld:post`, or `--preset quick`), on a registered real pair
(`--pair qwen2.5-0.5b`) or on any `--base/--post` (hub ids or local HF dirs). Its inputs default to the toy
world's data for a toy-world pair and to the shared public data sets otherwise (`posttrain_probe.data.defaults`).
Sizes (facts, pairs, samples, steps, ...) come from one of four presets chosen from the pair: `quick` (the quick
toy preset), `toy` (any other toy preset), `real` (any other pair), or `smoke` (`--smoke`: the smallest sizes that
run every step, for tests).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from posttrain_probe.probes.base import SIZES
from posttrain_probe.sources import is_toy_alias, parse_source
from posttrain_probe.utils.errors import one_line_errors

TOY_PRESETS = ("quick", "default", "large")


@dataclass(frozen=True)
class PairSpec:
    """A registered real base/post pair and what its RLVR runs need to know."""

    name: str
    base: str
    post: str
    about: str
    stop_tokens: tuple[str, ...]
    rlvr_task: str = "gsm8k"


PAIRS: dict[str, PairSpec] = {
    p.name: p
    for p in (
        PairSpec(
            "qwen2.5-0.5b",
            "Qwen/Qwen2.5-0.5B",
            "Qwen/Qwen2.5-0.5B-Instruct",
            "Qwen2.5 0.5B base vs instruct (SFT + RLHF); ungated, fits any GPU",
            ("<|im_end|>", "<|endoftext|>"),
        ),
        PairSpec(
            "llama-3.2-1b",
            "meta-llama/Llama-3.2-1B",
            "meta-llama/Llama-3.2-1B-Instruct",
            "Llama 3.2 1B base vs instruct; gated on the hub (accept the licence, log in)",
            ("<|eot_id|>", "<|end_of_text|>"),
        ),
        PairSpec(
            "qwen2.5-math-1.5b",
            "Qwen/Qwen2.5-Math-1.5B",
            "Qwen/Qwen2.5-Math-1.5B-Instruct",
            "Qwen2.5-Math 1.5B base vs instruct; the usual RLVR starting point (MATH-500)",
            ("<|im_end|>", "<|endoftext|>"),
            rlvr_task="math500",
        ),
    )
}


@dataclass
class Study:
    """One study invocation: the pair, where its run directories go, and how big every step is."""

    name: str
    base: str
    post: str
    out: Path
    pair: str | None = None
    device: str | None = None
    dtype: str | None = None
    backend: str = "nnsight"
    seed: int = 0
    smoke: bool = False
    force: bool = False
    progress: bool = True
    figures: bool = True
    configs: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    size_name: str | None = None  # force a size (the demo's built toy pair is given by folder, not alias)

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        if self.pair is not None and self.pair not in PAIRS:
            raise ValueError(f"unknown pair {self.pair!r}; choose one of {', '.join(PAIRS)} or pass --base/--post")
        if self.backend not in ("nnsight", "bridge"):
            raise ValueError(f"backend={self.backend!r}; choose nnsight or bridge")
        if self.is_toy != is_toy_alias(self.post):
            raise ValueError("pass toy-world aliases for both --base and --post, or for neither")
        if self.configs is not None:
            self.configs = Path(self.configs)
        if self.size_name is not None and self.size_name not in SIZES:
            raise ValueError(f"size_name={self.size_name!r}; choose one of {', '.join(SIZES)}")

    @property
    def is_toy(self) -> bool:
        return is_toy_alias(self.base)

    @property
    def toy_preset(self) -> str | None:
        if not self.is_toy:
            return None
        return parse_source(self.base, "base model").preset

    @property
    def size(self) -> str:
        if self.size_name is not None:
            return self.size_name
        if self.smoke:
            return "smoke"
        if self.is_toy:
            return "quick" if self.toy_preset == "quick" else "toy"
        return "real"

    def pick(self, smoke: Any, quick: Any, toy: Any, real: Any) -> Any:
        """The value for this study's size."""
        return {"smoke": smoke, "quick": quick, "toy": toy, "real": real}[self.size]

    @property
    def spec(self) -> PairSpec | None:
        return PAIRS[self.pair] if self.pair else None

    @cached_property
    def sources(self):
        from posttrain_probe.data.defaults import default_sources

        return default_sources(self.base)

    def load_pair(self):
        from posttrain_probe.pair import load_pair

        return load_pair(self.base, self.post, backend=self.backend, device=self.device, dtype=self.dtype)

    def check_out(self, names: Sequence[str]) -> None:
        """Refuse to overwrite existing run directories unless --force (before any work starts)."""
        taken = [str(self.out / n) for n in names if (self.out / n).exists()]
        if taken and not self.force:
            raise FileExistsError(f"run dir {taken[0]} already exists; pass --force or another --out")

    def run_probe(self, name: str, pair=None, run_name: str | None = None, **overrides: Any) -> tuple[Path, Any]:
        """Run the registered probe `name` on this study's pair with its default data and the probe's sizes for
        this study's size (the one path every study and the demo take); save it to OUT/<run_name or name> with
        its figures and artifacts. Returns (run dir, result)."""
        from posttrain_probe import registry

        probe = registry.get(name)
        pair = pair if pair is not None else self.load_pair()
        result = probe.execute(pair, self.sources, size=self.size, seed=self.seed, progress=self.progress, **overrides)
        rd = self.save(run_name or name, result, probe.figures)
        probe.write_artifacts(result, pair, rd)
        return rd, result

    def save(self, name: str, result, plots: str) -> Path:
        """Write `result` to OUT/name and (unless figures are off) its figures to OUT/name/figures, drawn from
        the saved run only."""
        import importlib

        from posttrain_probe.results import read_run, write_run

        rd = write_run(self.out / name, result, overwrite=self.force)
        if self.figures:
            importlib.import_module(plots).save_figures(read_run(rd), rd / "figures")
        return rd


def study_parser(name: str, description: str) -> argparse.ArgumentParser:
    """The arguments every study script takes."""
    p = argparse.ArgumentParser(prog=f"experiments/{name}.py", description=description)
    add_study_flags(p, name)
    return p


def add_study_flags(p: argparse.ArgumentParser, name: str) -> None:
    """The flags every study takes (pair, output, device, sizes), on a script's parser or a CLI subcommand."""
    p.add_argument("--pair", default=None, choices=sorted(PAIRS), help="a registered real base/post pair")
    p.add_argument("--base", default=None, help="base model: hub id, local HF dir or toy-world alias")
    p.add_argument("--post", default=None, help="post-trained model: hub id, local HF dir or toy-world alias")
    p.add_argument("--preset", default=None, choices=TOY_PRESETS, help="toy-world preset (default: default)")
    p.add_argument("--out", default=None, help=f"output folder (default: runs/experiments/{name}/<pair>)")
    p.add_argument("--device", default=None, help="cpu | cuda | cuda:N | auto (default: cuda if available)")
    p.add_argument("--dtype", default=None, help="float32 | bfloat16 | float16 (default: bf16 on cuda, fp32 on cpu)")
    p.add_argument("--backend", default="nnsight", choices=["nnsight", "bridge"], help="hooking library")
    p.add_argument("--seed", type=int, default=0, help="seed of the study (the first seed of a multi-seed study)")
    p.add_argument("--smoke", action="store_true", help="the smallest sizes that run every step (tests, CI)")
    p.add_argument("--force", action="store_true", help="overwrite existing run dirs in --out")
    p.add_argument(
        "--no-figures", action="store_true", help="skip figures (draw them later: posttrain-probe figures OUT)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def study_from_args(name: str, args: argparse.Namespace, configs: Path | None = None, **extra: Any) -> Study:
    """Resolve --pair / --base/--post / --preset into a `Study` (default: the default toy pair)."""
    if args.pair and (args.base or args.post or args.preset):
        raise ValueError("--pair names both models; drop --base/--post/--preset or drop --pair")
    if bool(args.base) != bool(args.post):
        raise ValueError("pass both --base and --post (or --pair NAME, or neither for the toy pair)")
    if args.pair:
        spec = PAIRS[args.pair]
        base, post, label = spec.base, spec.post, spec.name
    elif args.base:
        if args.preset:
            raise ValueError("--preset picks the toy pair; drop it when passing --base/--post")
        base, post = args.base, args.post
        label = Path(str(post).replace(":", "_")).name
    else:
        preset = args.preset or "default"
        base, post = (f"toyworld:{preset}:{r}" if args.preset else f"toyworld:{r}" for r in ("base", "post"))
        label = f"toyworld-{preset}"
    out = Path(args.out) if args.out else Path("runs") / "experiments" / name / label
    return Study(
        name=name,
        base=base,
        post=post,
        out=out,
        pair=args.pair,
        device=args.device,
        dtype=args.dtype,
        backend=args.backend,
        seed=args.seed,
        smoke=args.smoke,
        force=args.force,
        progress=not args.no_progress,
        figures=not args.no_figures,
        configs=configs,
        extra=extra,
    )


def run_script(
    name: str,
    description: str,
    run: Callable[[Study], list[Path]],
    argv: Sequence[str] | None = None,
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
    configs: Path | None = None,
) -> int:
    """Parse → `Study` → `run(study)` → print the run directories; errors are one line and exit 1."""
    parser = study_parser(name, description)
    if add_arguments is not None:
        add_arguments(parser)
    return run_parsed(name, run, parser.parse_args(argv), configs)


def run_parsed(name: str, run: Callable[[Study], list[Path]], args: argparse.Namespace, configs: Path | None) -> int:
    """`run` the study of parsed `args` (the common flags of `add_study_flags` plus the study's own, which become
    `Study.extra`); prints the run directories; errors are one line and exit 1."""
    t0 = time.perf_counter()

    def body() -> int:
        extra = {k: v for k, v in vars(args).items() if k not in _COMMON and k not in ("func", "cmd", "rlvr_cmd")}
        study = study_from_args(name, args, configs, **extra)
        print(f"{name}: {study.base} vs {study.post} ({study.size} sizes) -> {study.out}", file=sys.stderr)
        for d in run(study):
            print(d)
        print(f"{name}: done in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        return 0

    return one_line_errors(body, interrupted="interrupted")


_COMMON = {
    "pair",
    "base",
    "post",
    "preset",
    "out",
    "device",
    "dtype",
    "backend",
    "seed",
    "smoke",
    "force",
    "no_progress",
    "no_figures",
}
