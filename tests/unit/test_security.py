"""Security without models: no pickle anywhere in the package, and names from configs or JSON files cannot
write (or read) outside the folder they belong to."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch

from posttrain_probe.utils.io import UnsafePathError, safe_join, safe_name

PACKAGE = Path(__file__).resolve().parents[2] / "posttrain_probe"
PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}
# classes whose from_pretrained loads weights
WEIGHT_LOADERS = ("Model", "ForCausalLM", "LMHeadModel", "PreTrainedModel")


def _kw(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_true(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else ""


def pickle_findings(source: str, where: str) -> list[str]:
    """Every way `source` could unpickle: pickle-family imports, torch.load without weights_only=True,
    np.load(allow_pickle=True), pandas read_pickle, .bin weight files, and model from_pretrained calls that
    do not insist on safetensors; plus trust_remote_code=True literals."""
    found = []
    for node in ast.walk(ast.parse(source)):
        line = f"{where}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            found += [f"{line} imports {a.name}" for a in node.names if a.name.split(".")[0] in PICKLE_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in PICKLE_MODULES:
            found.append(f"{line} imports from {node.module}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.endswith(".bin"):
            found.append(f"{line} names a .bin file {node.value!r}")
        elif isinstance(node, ast.Call):
            name = _dotted(node.func)
            if name.endswith("torch.load") or name == "load" and isinstance(node.func, ast.Name):
                if not _is_true(_kw(node, "weights_only")):
                    found.append(f"{line} {name}(...) without weights_only=True")
            if name.split(".")[-1] == "load" and name.split(".")[0] in ("np", "numpy"):
                if _is_true(_kw(node, "allow_pickle")):
                    found.append(f"{line} {name}(allow_pickle=True)")
            if name.split(".")[-1] in ("read_pickle", "to_pickle"):
                found.append(f"{line} {name}")
            if _is_true(_kw(node, "trust_remote_code")):
                found.append(f"{line} trust_remote_code=True")
            owner = name.rsplit(".", 1)[0] if name.endswith(".from_pretrained") else ""
            if owner and any(owner.split(".")[-1].endswith(s) for s in WEIGHT_LOADERS):
                if not _is_true(_kw(node, "use_safetensors")) and not any(k.arg is None for k in node.keywords):
                    found.append(f"{line} {name}(...) without use_safetensors=True")
    return found


def test_the_scanner_finds_each_kind_of_pickle_use():
    bad = """
import pickle
from joblib import load as jl
torch.load(f)
torch.load(f, weights_only=False)
np.load(f, allow_pickle=True)
pd.read_pickle(f)
AutoModelForCausalLM.from_pretrained(p)
AutoTokenizer.from_pretrained(p, trust_remote_code=True)
x = "pytorch_model.bin"
"""
    assert len(pickle_findings(bad, "bad.py")) == 9
    good = """
torch.load(f, weights_only=True)
np.load(f)
AutoModelForCausalLM.from_pretrained(p, use_safetensors=True)
AutoModelForCausalLM.from_pretrained(p, **kwargs)
AutoTokenizer.from_pretrained(p)
"""
    assert pickle_findings(good, "good.py") == []


def test_the_package_never_unpickles_or_runs_remote_code_by_itself():
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 30
    found = [f for p in files for f in pickle_findings(p.read_text(), str(p.relative_to(PACKAGE.parent)))]
    assert found == [], "\n".join(found)


# ------------------------------------------------------------------------------------- trust_remote_code


# ---------------------------------------------------------------------------------------- path escapes


@pytest.mark.parametrize("bad", ["/etc/passwd", "../x", "a/../../x", "..", ".", "", "~/x", "a\x00b"])
def test_safe_join_rejects_absolute_and_escaping_names(bad, tmp_path):
    with pytest.raises(UnsafePathError) as e:
        safe_join(tmp_path, bad, "table name")
    assert "\n" not in str(e.value) and "table name" in str(e.value)


def test_safe_join_and_safe_name_accept_plain_names(tmp_path):
    assert safe_join(tmp_path, "a/b/../c.csv") == tmp_path / "a/b/../c.csv"
    assert safe_join(tmp_path, "x.jsonl") == tmp_path / "x.jsonl"
    assert safe_name("grpo") == "grpo"
    for bad in ("a/b", "..", "a\\b", ""):
        with pytest.raises(UnsafePathError):
            safe_name(bad)


@pytest.mark.parametrize("name", ["../evil", "/tmp/evil", "a/b", ".."])
def test_run_dir_table_names_cannot_escape(name, tmp_path):
    import pandas as pd

    from posttrain_probe.results import RunDirError, RunResult, write_run

    with pytest.raises(RunDirError, match="file-safe"):
        write_run(tmp_path / "run", RunResult("x", {}, {}, tables={name: pd.DataFrame({"a": [1]})}))
    assert list(tmp_path.iterdir()) == []


def test_tensor_names_are_keys_not_paths(tmp_path):
    from posttrain_probe.results import RunResult, read_run, write_run

    write_run(tmp_path / "run", RunResult("x", {}, {}, tensors={"../../evil": torch.ones(2)}))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["result.json", "tensors.safetensors"]
    assert torch.equal(read_run(tmp_path / "run").tensors["../../evil"], torch.ones(2))


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: d["table_schemas"]["t"].update(file="../../secret.csv"),
        lambda d: d["table_schemas"]["t"].update(file="/etc/hosts"),
        lambda d: d.update(analysis="../../x"),
        lambda d: d.update(tensors_file="../../other.safetensors"),
    ],
)
def test_a_crafted_result_json_cannot_point_outside_the_run_dir(edit, tmp_path):
    import pandas as pd

    from posttrain_probe.results import RunDirError, RunResult, read_run, write_run

    run = write_run(tmp_path / "run", RunResult("x", {}, {}, tables={"t": pd.DataFrame({"a": [1]})}))
    doc = json.loads((run / "result.json").read_text())
    edit(doc)
    (run / "result.json").write_text(json.dumps(doc))
    with pytest.raises(RunDirError, match="damaged"):
        read_run(run)


@pytest.mark.parametrize("preset", ["../evil", "/abs", "a/b", ""])
def test_toy_world_cache_keys_cannot_escape_the_cache(preset, tmp_path):
    from posttrain_probe.toyworld import ToyWorldConfig, build

    with pytest.raises(ValueError, match="preset"):
        build(config=ToyWorldConfig(preset=preset), cache_root=tmp_path / "cache", progress=False)
    with pytest.raises(ValueError, match="seed"):
        ToyWorldConfig.from_dict({"seed": "../x"})
    assert not (tmp_path / "cache").exists()


def test_rlvr_data_aliases_cannot_leave_their_folders(tmp_path, monkeypatch):
    from posttrain_probe.rlvr.session import _resolve_data

    monkeypatch.setenv("POSTTRAIN_PROBE_DATA", str(tmp_path))
    monkeypatch.setenv("POSTTRAIN_PROBE_CACHE", str(tmp_path / "cache"))
    (tmp_path / "gsm8k").mkdir()
    (tmp_path / "gsm8k" / "test.jsonl").write_text("{}\n")
    with pytest.raises(UnsafePathError, match="shared data path"):
        _resolve_data("shared:../../etc/passwd")
    with pytest.raises(UnsafePathError, match="shared data path"):
        _resolve_data("shared:/etc/passwd")
    assert _resolve_data("shared:gsm8k/test.jsonl") == tmp_path / "gsm8k/test.jsonl"
    with pytest.raises(UnsafePathError, match="toy-world data set"):
        _resolve_data("toyworld:quick:../../../etc/passwd")  # refused before any build


def test_demo_rlvr_arm_names_cannot_remove_folders_outside_the_output(tmp_path):
    from posttrain_probe.rlvr.config import ConfigError
    from posttrain_probe.rlvr.paired import Arm, resolve_arms

    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("precious")
    with pytest.raises(ConfigError, match="unknown arm"):
        resolve_arms(["../../../victim"])
    with pytest.raises(ConfigError, match="arm name"):
        Arm("../../victim")
    assert (victim / "keep.txt").read_text() == "precious"
