"""Bad input gets one line naming the problem and the fix, and leaves no partial output (docs/robustness.md)."""

from __future__ import annotations

import errno
import json
import math

import pytest
import torch

from posttrain_probe.data import load_statements
from posttrain_probe.data.loaders import DataSourceError, check_balanced
from posttrain_probe.data.records import Fact, Instruction, RecordError
from posttrain_probe.pair import Edit, ModelLoadError, PairMismatchError, Patch, SiteError, load_model, load_pair
from posttrain_probe.pair.interventions import apply_intervention
from posttrain_probe.results import RunDirError, RunResult, read_run, write_run
from posttrain_probe.rlvr.config import ConfigError, RLVRConfig
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
    "empty data set": (lambda t, m, tmp: load_statements(_empty_csv(tmp)), DataSourceError, "no statements"),
    "subject not in prompt": (
        lambda t, m, tmp: Fact(prompt="the city of river is in", subject="bread", answer=" the"),
        RecordError,
        "does not occur in prompt",
    ),
    "RLVR config with unknown keys": (
        lambda t, m, tmp: RLVRConfig.from_yaml(_yaml(tmp, "task: arithmetic\nlearning_rate: 0.1\n")),
        ConfigError,
        "unknown RLVR config key 'learning_rate'",
    ),
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
    "reading a folder that is not a run dir": (lambda t, m, tmp: read_run(tmp), RunDirError, "not a run dir"),
}


def _yaml(tmp, text: str):
    p = tmp / "rlvr.yaml"
    p.write_text(text)
    return p


def _empty_csv(tmp):
    p = tmp / "empty.csv"
    p.write_text("statement,label\n")
    return p


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_gives_one_line_error(case, tiny, model, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)  # read at import: set it too (fast)
    fn, exc, match = CASES[case]
    with pytest.raises(exc) as e:
        fn(tiny, model, tmp_path)
    assert match.lower() in _one_line(e.value).lower()


def _no_network(monkeypatch, tmp_path):
    """The hub at a closed local port (connection refused at once) and an empty cache, HF_HUB_OFFLINE unset."""
    from huggingface_hub import constants

    dead = "http://127.0.0.1:9"
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", dead)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", dead + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


def test_a_hub_id_without_network_fails_fast(monkeypatch, tmp_path):
    import time

    import transformers
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES  # noqa: F401

    _no_network(monkeypatch, tmp_path)
    _ = transformers.AutoConfig, transformers.AutoModelForCausalLM, transformers.AutoTokenizer  # time no imports
    t0 = time.perf_counter()
    with pytest.raises(ModelLoadError, match="not in the local cache") as e:
        load_model("nobody-xyz/not-a-model")
    assert time.perf_counter() - t0 < 3, "huggingface_hub retried instead of failing at once"
    assert "nobody-xyz/not-a-model" in _one_line(e.value)


def test_a_cached_hub_id_loads_without_network(tiny, monkeypatch, tmp_path):
    import shutil

    cache = _no_network(monkeypatch, tmp_path)
    commit = "0" * 40
    shutil.copytree(tiny, cache / "models--org--tiny" / "snapshots" / commit)
    (cache / "models--org--tiny" / "refs").mkdir()
    (cache / "models--org--tiny" / "refs" / "main").write_text(commit)
    m = load_model("org/tiny", backend="nnsight")
    assert m.provenance["kind"] == "hub" and m.arch.n_layers == 2


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


# ------------------------------------------------------------------------------------------------- RLVR faults


@pytest.fixture(scope="module")
def problems(tmp_path_factory):
    words = "one two three four five six seven eight nine".split()
    p = tmp_path_factory.mktemp("rlvr_data") / "problems.jsonl"
    p.write_text("".join(json.dumps({"question": f"{words[i % 9]} and {words[(i * 5) % 9]} is", "answer": "3"}) + "\n"
                         for i in range(24)))  # fmt: skip
    return p


def _rlvr_cfg(tiny, problems, **kw) -> RLVRConfig:
    base = dict(
        model=str(tiny), data=str(problems), task="test_reward", n_eval=4, eval_every=0, prompts_per_step=2,
        group_size=4, max_new_tokens=3, steps=2, minibatches=2, checkpoint_every=1, progress=False, lr=3e-3,
    )  # fmt: skip
    return RLVRConfig(**{**base, **kw})


def _reward(monkeypatch, fn) -> None:
    from posttrain_probe.rlvr import tasks

    monkeypatch.setitem(tasks.TASKS, "test_reward", tasks.Task("test_reward", fn, None))


def _digit_share(completion: str, problem) -> float:
    toks = completion.split()
    return sum(t.isdigit() for t in toks) / max(len(toks), 1)


def test_nan_reward_stops_with_one_line_and_trains_nothing_on_it(tiny, problems, tmp_path, monkeypatch):
    from posttrain_probe.rlvr import RewardNotFiniteError, train
    from posttrain_probe.rlvr.checkpoint import list_checkpoints

    _reward(monkeypatch, lambda completion, problem: float("nan"))
    with pytest.raises(RewardNotFiniteError) as e:
        train(_rlvr_cfg(tiny, problems), tmp_path / "run")
    assert "is nan" in _one_line(e.value) and "finite" in str(e.value) and "step 1" in str(e.value)
    assert list_checkpoints(tmp_path / "run") == [] and not (tmp_path / "run" / "metrics.jsonl").exists()


@pytest.mark.parametrize("dynamic_sampling", [False, True])
def test_zero_variance_groups_only_train_nothing_and_say_so(tiny, problems, tmp_path, monkeypatch, dynamic_sampling):
    from safetensors.torch import load_file

    from posttrain_probe.rlvr import read_jsonl, train

    _reward(monkeypatch, lambda completion, problem: 0.5)  # every group has equal rewards: no learning signal
    run = train(_rlvr_cfg(tiny, problems, dynamic_sampling=dynamic_sampling), tmp_path / "run")
    rows = read_jsonl(run / "metrics.jsonl")
    assert [r["frac_groups_zero_std"] for r in rows] == [1.0, 1.0]
    assert all(r["optimizer_steps"] == (0 if dynamic_sampling else 2) and r["grad_norm"] == 0 for r in rows)
    assert all(r["trained_seqs"] == (0 if dynamic_sampling else 8) and math.isfinite(r["entropy_mean"]) for r in rows)
    start = load_file(str(tiny / "model.safetensors"))
    end = load_file(str(run / "checkpoints" / "step_000002" / "model.safetensors"))
    assert all(torch.equal(start[k], end[k]) for k in start)


def test_resume_refuses_a_checkpoint_from_another_run(tiny, problems, tmp_path, monkeypatch):
    import shutil

    from posttrain_probe.rlvr import read_jsonl, resume, train
    from posttrain_probe.rlvr.checkpoint import CheckpointError

    _reward(monkeypatch, _digit_share)
    a = train(_rlvr_cfg(tiny, problems, steps=1), tmp_path / "a")
    b = train(_rlvr_cfg(tiny, problems, steps=2, lr=1e-3), tmp_path / "b")
    shutil.copytree(b / "checkpoints" / "step_000002", a / "checkpoints" / "step_000002")
    rows = (a / "metrics.jsonl").read_text()
    with pytest.raises(CheckpointError) as e:
        resume(a)
    assert "another run" in _one_line(e.value) and "lr" in str(e.value) and "move it out" in str(e.value)
    assert (a / "metrics.jsonl").read_text() == rows and len(read_jsonl(a / "metrics.jsonl")) == 1


def test_disk_full_while_writing_a_checkpoint_leaves_no_partial_checkpoint(tiny, problems, tmp_path, monkeypatch):
    from posttrain_probe.rlvr import checkpoint, resume, train

    _reward(monkeypatch, _digit_share)
    real = checkpoint.save_file
    calls = {"n": 0}

    def full_on_second(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(checkpoint, "save_file", full_on_second)
    run = tmp_path / "run"
    with pytest.raises(OSError, match="No space left"):
        train(_rlvr_cfg(tiny, problems), run)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_000001"]  # no temp folder, no step 2
    monkeypatch.setattr(checkpoint, "save_file", real)
    resume(run)  # space again: the run continues from step 1
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_000001", "step_000002"]


# ------------------------------------------------------------------------------------------ Ctrl-C in a probe


def test_ctrl_c_during_a_trace_exits_130_with_one_line_and_no_run_dir(tiny, tmp_path, monkeypatch, capsys):
    from posttrain_probe import cli
    from posttrain_probe.pair.engines import NNsightEngine

    facts = [{"known_id": i, "subject": s, "attribute": "city", "prompt": f"the {s} is in the"} for i, s in
             enumerate(["river", "bread", "country"])]  # fmt: skip
    (tmp_path / "facts.json").write_text(json.dumps(facts))
    real, calls = NNsightEngine._forward, {"n": 0}

    def forward(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:  # a few forwards into the tracing loop
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(NNsightEngine, "_forward", forward)
    out = tmp_path / "out"
    argv = ["trace", str(tiny), str(tiny), "--data", str(tmp_path / "facts.json"), "--out", str(out)]
    argv += "--n-samples 2 --window 1 --n-boot 10 --no-progress --backend nnsight".split()
    assert cli.main(argv) == 130
    err = capsys.readouterr().err.strip()
    assert calls["n"] == 4 and err.count("\n") == 0 and "interrupted" in err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["facts.json"]
    from posttrain_probe.data import load_facts
    from posttrain_probe.probes.tracing import TracingConfig, run_tracing

    calls["n"] = 0
    with pytest.raises(KeyboardInterrupt):  # the Python API lets it propagate
        run_tracing(load_pair(tiny, tiny), load_facts(tmp_path / "facts.json"), TracingConfig(progress=False))


def test_sigterm_during_a_toy_build_unwinds_like_ctrl_c_and_keeps_no_partial_build(tmp_path):
    """`kill` (SIGTERM, as a scheduler's time limit sends it) mid-build: exit 143 with one line, and neither the
    build nor its temporary folder is left in the cache (the same unwinding as Ctrl-C)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    cmd = [sys.executable, "-m", "posttrain_probe.cli", "toyworld", "build", "--preset", "quick"]
    cmd += ["--cache-root", str(tmp_path), "--device", "cpu"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not any(p.name.startswith(".quick-seed0-") and ".tmp-" in p.name for p in tmp_path.iterdir()):
        assert proc.poll() is None and time.monotonic() < deadline, "the build ended before it could be stopped"
        time.sleep(0.05)
    time.sleep(0.2)  # into the build (its temporary folder exists), well before a quick build can finish
    os.kill(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    assert err.count("interrupted; no partial output was kept") == 1 and "Traceback" not in err  # beside tqdm bars
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []
