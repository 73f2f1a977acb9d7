"""Bad input gets one line naming the problem and the fix, and leaves no partial output (docs/robustness.md)."""

from __future__ import annotations

import errno
import json

import pytest
import torch

from posttrain_probe.data import load_statements
from posttrain_probe.data.loaders import DataSourceError, check_balanced
from posttrain_probe.data.records import Instruction
from posttrain_probe.pair import Edit, ModelLoadError, PairMismatchError, Patch, SiteError, load_model, load_pair
from posttrain_probe.pair.interventions import apply_intervention
from posttrain_probe.results import RunDirError, RunResult, read_run, write_run
from posttrain_probe.testing import make_tiny_checkpoint
from posttrain_probe.toyworld import preset_config


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("robust")
    return make_tiny_checkpoint("llama", root / "m")


@pytest.fixture(scope="module")
def model(tiny):
    return load_model(tiny, backend="nnsight")


def _one_line(exc: BaseException) -> str:
    msg = str(exc)
    assert msg and "\n" not in msg, f"error message is not one line: {msg!r}"
    return msg


def _vit_dir(tmp_path):
    from transformers import ViTConfig

    d = tmp_path / "vit"
    d.mkdir()
    ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32).save_pretrained(d)
    return d


CASES = {
    "hub id not found offline": (lambda t, m, tmp: load_model("nobody-xyz/not-a-model"), ModelLoadError, "hub"),
    "missing local dir": (lambda t, m, tmp: load_model(str(tmp / "no" / "such")), ModelLoadError, "not found"),
    "file instead of a model dir": (
        lambda t, m, tmp: load_model(str(t / "config.json")),
        ModelLoadError,
        "not a model directory",
    ),
    "dir without config.json": (lambda t, m, tmp: load_model(tmp), ModelLoadError, "no config.json"),
    "non-causal-LM checkpoint": (lambda t, m, tmp: load_model(_vit_dir(tmp)), ModelLoadError, "not a causal LM"),
    "unknown backend": (lambda t, m, tmp: load_model(t, backend="tl"), ModelLoadError, "unknown backend"),
    "unknown dtype": (lambda t, m, tmp: load_model(t, dtype="fp8"), ModelLoadError, "unknown dtype"),
    "mismatched pair (d_model)": (
        lambda t, m, tmp: load_pair(t, make_tiny_checkpoint("llama", tmp / "w", d_model=64)),
        PairMismatchError,
        "d_model",
    ),
    "mismatched pair (vocabulary)": (
        lambda t, m, tmp: load_pair(t, make_tiny_checkpoint("llama", tmp / "v", vocab_extra=5)),
        PairMismatchError,
        "vocabulary",
    ),
    "unknown site": (lambda t, m, tmp: m.run(torch.tensor([[2, 5]]), read=["resid_foo.0"]), SiteError, "unknown site"),
    "layer out of range": (
        lambda t, m, tmp: m.run(torch.tensor([[2, 5]]), read=["mlp_out.9"]),
        SiteError,
        "out of range",
    ),
    "site without a layer": (
        lambda t, m, tmp: m.run(torch.tensor([[2, 5]]), read=["resid_pre"]),
        SiteError,
        "needs a layer",
    ),
    "writing the logits": (
        lambda t, m, tmp: m.run(torch.tensor([[2, 5]]), interventions=[Patch("logits", value=torch.zeros(1))]),
        ValueError,
        "read-only",
    ),
    "position out of range": (
        lambda t, m, tmp: m.run(
            torch.tensor([[2, 5]]), interventions=[Patch("resid_pre.0", value=torch.zeros(32), positions=[5])]
        ),
        IndexError,
        "sequence length",
    ),
    "row out of range": (
        lambda t, m, tmp: apply_intervention(
            torch.zeros(2, 3, 4), Patch("resid_pre.0", value=torch.zeros(4), rows=[3])
        ),
        IndexError,
        "batch size",
    ),
    "patch without a value": (
        lambda t, m, tmp: apply_intervention(torch.zeros(1, 2, 4), Patch("resid_pre.0")),
        ValueError,
        "no value",
    ),
    "edit that changes the shape": (
        lambda t, m, tmp: apply_intervention(torch.zeros(1, 2, 4), Edit("resid_pre.0", fn=lambda x: x[..., :2])),
        ValueError,
        "changed the shape",
    ),
    "prompt longer than the context": (
        lambda t, m, tmp: m.run(torch.full((1, 200), 5)),
        ValueError,
        "longer than the model's context",
    ),
    "empty data set": (lambda t, m, tmp: load_statements(_empty_csv(tmp)), DataSourceError, ""),
    "harmful/harmless of very different sizes": (
        lambda t, m, tmp: check_balanced([Instruction("a", True)], [Instruction(f"b{i}", False) for i in range(40)]),
        ValueError,
        "size",
    ),
    "toy-world config with unknown keys": (
        lambda t, m, tmp: preset_config("quick", n_dragons=1),
        ValueError,
        "unknown toy-world config keys",
    ),
    "unknown toy-world preset": (lambda t, m, tmp: preset_config("huge"), ValueError, "unknown toy-world preset"),
    "bad toy-world alias": (lambda t, m, tmp: load_model("toyworld:a:b:c"), ModelLoadError, "bad toy-world alias"),
    "existing output dir without --force": (
        lambda t, m, tmp: [write_run(tmp / "r", RunResult("x", {}, {})), write_run(tmp / "r", RunResult("x", {}, {}))],
        FileExistsError,
        "already exists",
    ),
    "reading a folder that is not a run dir": (lambda t, m, tmp: read_run(tmp), RunDirError, ""),
}


def _empty_csv(tmp):
    p = tmp / "empty.csv"
    p.write_text("statement,label\n")
    return p


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_gives_one_line_error(case, tiny, model, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    fn, exc, match = CASES[case]
    with pytest.raises(exc) as e:
        fn(tiny, model, tmp_path)
    assert match.lower() in _one_line(e.value).lower()


def test_disk_full_during_a_run_write_leaves_nothing(tmp_path, monkeypatch):
    import posttrain_probe.results as results

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(results, "save_file", full, raising=False)
    monkeypatch.setattr("safetensors.torch.save_file", full)
    res = RunResult("x", {}, {"a": 1}, tensors={"t": torch.ones(3)})
    with pytest.raises(OSError, match="No space left"):
        write_run(tmp_path / "run", res)
    assert not (tmp_path / "run").exists()
    assert [p.name for p in tmp_path.iterdir()] == []


def test_ctrl_c_during_a_write_leaves_nothing(tmp_path, monkeypatch):
    import posttrain_probe.results as results

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(results, "atomic_write_json", interrupted, raising=False)
    monkeypatch.setattr(json, "dumps", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_run(tmp_path / "run", RunResult("x", {}, {"a": 1}))
    assert list(tmp_path.iterdir()) == []
