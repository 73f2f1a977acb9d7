"""The architecture, read from the source: layers import only downwards, nothing imports the CLI, no import cycles
between subpackages, every registered probe follows the contract and documents every option, and the tracing
window is the same for every caller on the same model."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "posttrain_probe"

# lower numbers are lower layers; a module may import its own layer and those below
LAYERS: dict[str, int] = {
    "utils": 0,
    "paths": 0,
    "stats": 0,
    "verdict": 0,
    "sources": 0,
    "testing": 0,
    "results": 1,
    "data": 1,
    "toyworld": 1,
    "pair": 2,
    "steering": 2,
    "probes": 3,
    "rlvr": 3,
    "analysis": 3,
    "plots": 3,
    "integrations": 3,
    "registry": 4,
    "verdicts": 4,
    "report": 4,
    "plots.export": 4,  # draws every registered analysis's figures
    "studies": 5,
    "demo": 5,
    "cli": 6,
    "cli_args": 6,
}


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """posttrain_probe modules imported anywhere in `path` (module level and inside functions)."""
    mod = _module_name(path)
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("posttrain_probe"):
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    known = (ROOT / (sub.replace(".", "/") + ".py")).exists() or (ROOT / sub.replace(".", "/")).is_dir()
                    out.add(sub if known else target)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("posttrain_probe")}
    return out - {mod}


def _layer(module: str) -> int | None:
    rest = module.removeprefix("posttrain_probe").lstrip(".")
    parts = rest.split(".") if rest else []
    for n in range(len(parts), 0, -1):
        key = ".".join(parts[:n])
        if key in LAYERS:
            return LAYERS[key]
    return None


def _graph() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for p in sorted(PKG.rglob("*.py"))}


def test_every_module_has_a_layer():
    assert [m for m in _graph() if m != "posttrain_probe" and _layer(m) is None] == []


def _upward(graph: dict[str, set[str]]) -> list[str]:
    return [
        f"{src} (layer {_layer(src)}) imports {dst} (layer {_layer(dst)})"
        for src, dsts in graph.items()
        for dst in dsts
        if src != "posttrain_probe" and dst != "posttrain_probe" and _layer(dst) > _layer(src)
    ]


def _cli_importers(graph: dict[str, set[str]]) -> list[str]:
    cli = {"posttrain_probe.cli", "posttrain_probe.cli_args"}
    return [f"{s} -> {d}" for s, ds in graph.items() if s not in cli for d in ds if d in cli]


def test_no_module_imports_a_higher_layer():
    assert _upward(_graph()) == []


def test_nothing_below_the_cli_imports_the_cli():
    assert _cli_importers(_graph()) == []


def _unit(module: str) -> str:
    """The subpackage (or top-level module) a module belongs to: posttrain_probe.probes.tracing.run →
    probes.tracing."""
    parts = module.split(".")[1:]
    if parts[:1] == ["probes"] and len(parts) > 1:
        return ".".join(parts[:2])
    return parts[0] if parts else ""


def test_no_import_cycles_between_subpackages():
    edges: dict[str, set[str]] = {}
    for src, dsts in _graph().items():
        for dst in dsts:
            a, b = _unit(src), _unit(dst)
            if a and b and a != b:
                edges.setdefault(a, set()).add(b)
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(
                    " -> ".join(stack[stack.index(nxt) :] + [node, nxt]) if nxt in stack else f"{node}->{nxt}"
                )
            elif nxt not in state:
                visit(nxt, stack + [node])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [])
    assert cycles == []


def test_the_import_graph_checks_can_fail():
    """A probe that imports the CLI, or a result module that imports a probe, is caught."""
    graph = {
        "posttrain_probe.probes.tracing.run": {"posttrain_probe.cli_args"},
        "posttrain_probe.results": {"posttrain_probe.probes.truth.fit"},
    }
    assert len(_upward(graph)) == 2 and len(_cli_importers(graph)) == 1


# ---------------------------------------------------------------------------------------------- the contract


def test_every_registered_probe_follows_the_contract_and_documents_every_option():
    from posttrain_probe import registry
    from posttrain_probe.probes.base import SIZES, resolve, undocumented_fields

    probes = registry.probes()
    assert {p.name for p in probes} >= {"tracing", "patching", "truth", "refusal", "neurons"}
    for probe in probes:
        for cls in (probe.config_cls, probe.data_cls):
            assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen, cls
            assert undocumented_fields(cls) == [], (probe.name, cls.__name__)
        for target in (probe.load_inputs, probe.run, probe.summarize, probe.verdicts):
            assert callable(resolve(target)), target
        assert callable(resolve(probe.figures).save_figures)
        assert set(probe.workload) == set(SIZES), probe.name
        for size in SIZES:
            probe.make_config(size)  # every size gives a valid config
    for name in registry.names():
        assert registry.get(name).name == name


def _options_without_help(parser, prefix: str = "") -> list[str]:
    import argparse

    missing = []
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            for name, sub in a.choices.items():
                missing += _options_without_help(sub, f"{prefix}{name} ")
        elif a.option_strings and a.dest != "help" and not (a.help or "").strip():
            missing.append(f"{prefix}{a.option_strings[0]}")
    return missing


def test_every_cli_option_has_help():
    from posttrain_probe.cli import build_parser

    assert _options_without_help(build_parser()) == []


def test_an_unknown_analysis_lists_what_is_available():
    from posttrain_probe import registry

    with pytest.raises(ValueError, match="available: tracing, patching"):
        registry.get("tracng")


def test_the_tracing_window_is_derived_from_the_depth_once():
    from posttrain_probe.probes.tracing.config import TracingConfig, tracing_window

    assert [tracing_window(n) for n in (4, 12, 24, 48)] == [1, 2, 5, 10]
    assert TracingConfig().window is None and TracingConfig().for_model(48).window == 10
    assert TracingConfig(window=3).for_model(48).window == 3


def test_one_parser_for_sources():
    from posttrain_probe.sources import parse_source

    a, b = parse_source("toyworld:post"), parse_source("toyworld:default:post")
    assert (a.kind, a.preset, a.name) == (b.kind, b.preset, b.name) == ("toyworld", "default", "post")
    s = parse_source("toyworld:quick:arithmetic")
    assert (s.kind, s.preset, s.name) == ("toyworld", "quick", "arithmetic")
    assert parse_source(str(ROOT)).kind == "local" and parse_source("Qwen/Qwen2.5-0.5B").kind == "hub"
    with pytest.raises(ValueError, match="toyworld:<preset>:<name>"):
        parse_source("toyworld:a:b:c")
    sources = [p for p in PKG.rglob("*.py") if p.name != "sources.py"]
    assert [str(p) for p in sources if 'split(":")' in p.read_text() and "toyworld" in p.read_text()] == []


def test_the_demo_needs_no_file_outside_the_package_and_its_rlvr_settings_match_the_experiments_yaml():
    import yaml

    from posttrain_probe.studies.rlvr import TOY_RLVR

    assert yaml.safe_load((ROOT / "experiments" / "configs" / "rlvr_toy_grpo.yaml").read_text()) == TOY_RLVR
    assert "experiments" not in (PKG / "demo.py").read_text()


def test_posttrain_probe_help_imports_no_torch():
    """`posttrain-probe --help` stays fast: building the whole parser imports no torch, pandas or matplotlib."""
    import subprocess
    import sys

    code = (
        "import sys; from posttrain_probe.cli import build_parser; build_parser(); "
        "print(sorted(m for m in ('torch', 'transformers', 'pandas', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"
