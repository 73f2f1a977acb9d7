"""The probe contract: what every analysis of a base/post pair declares, so that the command line, the demo and
the studies, the report and the verdict table are all generated from one registry (`posttrain_probe.registry`).

A probe is a subpackage `posttrain_probe/probes/<name>/` with the same few files:

    __init__.py   PROBE = Probe(...): names only (importing it loads nothing heavy), lazy public names
    config.py     the frozen, validated Config and the Data spec (what to read); every field documented
                  with `option(...)`, from which the CLI flags and their help are generated
    run.py        load_inputs(data, sources, cfg) -> inputs, and run(pair, inputs, cfg) -> RunResult
    figures.py    save_figures(result, out_dir), from a saved RunResult only
    verdicts.py   verdicts(result) -> list[Verdict], from a saved RunResult only

Sizes live in the contract, once: `Probe.workload[size]` (how much work: facts, pairs, samples per size
preset) and fields whose default is `None` "derived from the model" (e.g. the tracing window from the depth),
which the probe's run resolves itself, so every caller (CLI, demo, studies, notebooks) gets the same value.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib
import operator
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from posttrain_probe.utils.lazy import lazy_exports  # noqa: F401  (re-exported for probe packages)

SIZES = ("smoke", "quick", "toy", "real")  # smoke: tests; quick: the quick toy preset; toy: other toy presets


def option(
    default: Any,
    help: str,
    *,
    paper: str | None = None,
    choices: tuple | None = None,
    derived: str | None = None,
    cli: bool = True,
) -> Any:
    """A documented config field: `help` says what it means, `paper` the setting of the paper it follows
    (e.g. "ROME: 10"); `choices` restricts the CLI flag; `derived` says how a `None` default is derived from
    the model; `cli=False` keeps it off the command line."""
    meta = {"help": help, "paper": paper, "choices": choices, "derived": derived, "cli": cli}
    return field(default=default, metadata=meta)


def resolve(target: str) -> Any:
    """`"package.module:attribute"` → the attribute (imported on first use)."""
    module, _, attr = target.partition(":")
    obj = importlib.import_module(module)
    return getattr(obj, attr) if attr else obj


@dataclass(frozen=True)
class Analysis:
    """An analysis the report knows: its run-dir name, its `RunResult.analysis` id, what it asks, how to read
    its figures, and where its figures and verdicts come from (module paths, imported on use)."""

    name: str
    analysis: str
    title: str
    question: str
    explanation: str
    figures: str  # module with save_figures(result, out_dir)
    verdicts: str | None = None  # "module:function" (RunResult) -> list[Verdict]

    def save_figures(self, result: Any, out_dir: Any) -> list:
        return resolve(self.figures).save_figures(result, out_dir)

    def judge(self, result: Any) -> list:
        return list(resolve(self.verdicts)(result)) if self.verdicts else []


@dataclass(frozen=True)
class Probe(Analysis):
    """A probe of a base/post pair (see the module docstring). `command` is its CLI subcommand; `config` and
    `data` are "module:Class" of its Config and Data dataclasses; `load_inputs` and `run` "module:function";
    `summarize` turns a summary into a few terminal lines; `artifacts(result, pair, run_dir)`, when given,
    writes files beside a written run (steering vectors); `workload[size]` are Config overrides per size."""

    command: str = ""
    help: str = ""
    config: str = ""
    data: str = ""
    load_inputs: str = ""
    run: str = ""
    summarize: str = ""
    artifacts: str | None = None
    backend: str = "nnsight"
    workload: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        bad = sorted(set(self.workload) - set(SIZES))
        if bad:
            raise ValueError(f"probe {self.name}: workload sizes {bad} unknown; use {', '.join(SIZES)}")

    @property
    def config_cls(self) -> type:
        return resolve(self.config)

    @property
    def data_cls(self) -> type:
        return resolve(self.data)

    def make_config(self, size: str | None = None, **overrides: Any) -> Any:
        """The Config: dataclass defaults, then `workload[size]`, then `overrides`."""
        if size is not None and size not in SIZES:
            raise ValueError(f"size {size!r} unknown; choose one of {', '.join(SIZES)}")
        values = dict(self.workload.get(size, {})) if size else {}
        values.update(overrides)
        return self.config_cls(**values)

    def execute(
        self,
        pair: Any,
        sources: Any,
        config: Any = None,
        data: Any = None,
        size: str | None = None,
        **overrides: Any,
    ) -> Any:
        """Load the inputs (`data`, default: the pair's default sources) and run: the one way every
        orchestrator (CLI, demo, studies) runs a probe. Returns the RunResult."""
        cfg = config if config is not None else self.make_config(size, **overrides)
        spec = data if data is not None else self.data_cls()
        inputs = resolve(self.load_inputs)(spec, sources, cfg)
        return resolve(self.run)(pair, inputs, cfg)

    def write_artifacts(self, result: Any, pair: Any, run_dir: Any) -> None:
        if self.artifacts:
            resolve(self.artifacts)(result, pair, run_dir)

    def summary_text(self, summary: dict) -> str:
        return resolve(self.summarize)(summary) if self.summarize else ""


# ---------------------------------------------------------------------------------------------- dataclass → argparse


def _unwrap(tp: Any) -> tuple[Any, bool]:
    """(inner type, optional?) of `X | None`."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else functools.reduce(operator.or_, rest)), True
    return tp, False


def _scalar(tp: Any) -> Callable[[str], Any]:
    if tp in (int, float, str):
        return tp
    if typing.get_origin(tp) in (typing.Union, types.UnionType):  # int | float: an int when it is one
        return lambda s: int(float(s)) if float(s).is_integer() else float(s)
    raise TypeError(f"no command-line parser for {tp!r}; give the field cli=False")


def _with_none(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse_or_none(s: str) -> Any:
        return None if s.lower() == "none" else parse(s)

    parse_or_none.__name__ = getattr(parse, "__name__", "value")
    return parse_or_none


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type, title: str | None = None) -> None:
    """One flag per documented field of `cls` (`--field-name`; booleans as --x/--no-x, tuples take several
    values, optional fields accept `none`); help = the field's help, its default and its paper setting.
    Flags default to "not given", so `dataclass_from_args` applies only what the user passed."""
    group = parser.add_argument_group(title) if title else parser
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if not meta.get("cli", False):
            continue
        tp, optional = _unwrap(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else None
        shown = f"derived from the model: {meta['derived']}" if default is None and meta.get("derived") else default
        text = f"{meta['help']} (default: {_show(shown)}"
        text += f"; {meta['paper']})" if meta.get("paper") else ")"
        kw: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": text.replace("%", "%%")}
        flag = "--" + f.name.replace("_", "-")
        if tp is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
            continue
        if typing.get_origin(tp) is tuple:
            inner = typing.get_args(tp)[0]
            kw.update(nargs="+", type=_scalar(inner))
        else:
            kw["type"] = _with_none(_scalar(tp)) if optional else _scalar(tp)
        if meta.get("choices"):
            kw["choices"] = list(meta["choices"])
        group.add_argument(flag, metavar=f.name.upper() if not meta.get("choices") else None, **kw)


def _show(v: Any) -> str:
    if isinstance(v, tuple):
        return " ".join(map(str, v)) if v else "none"
    return "none" if v is None else str(v)


def dataclass_from_args(cls: type, args: argparse.Namespace, base: Mapping[str, Any] | None = None) -> Any:
    """`cls(**base)` with every flag the user passed (see `add_dataclass_arguments`) on top."""
    values = dict(base or {})
    for f in dataclasses.fields(cls):
        if f.metadata.get("cli", False) and hasattr(args, f.name):
            v = getattr(args, f.name)
            values[f.name] = tuple(v) if isinstance(v, list) else v
    return cls(**values)


def undocumented_fields(cls: type) -> list[str]:
    """Fields of a config dataclass without help text (a test keeps this empty for every registered probe)."""
    return [f.name for f in dataclasses.fields(cls) if not str(f.metadata.get("help", "")).strip()]
