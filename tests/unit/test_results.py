"""The run-dir schema: round trips, atomic writes, refusals, provenance fields, no pickle."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import posttrain_probe.results as results
from posttrain_probe.results import (
    MODEL_PROVENANCE_KEYS,
    SCHEMA_VERSION,
    RunDirError,
    RunResult,
    RunTimer,
    git_state,
    is_run_dir,
    provenance,
    read_run,
    to_jsonable,
    write_run,
)


def _bits(t: torch.Tensor) -> torch.Tensor:
    """The raw bytes of a tensor, for bit-exact comparison."""
    return t.contiguous().reshape(-1).view(torch.uint8)


def _example() -> RunResult:
    g = torch.Generator().manual_seed(0)
    per_layer = pd.DataFrame(
        {
            "layer": np.arange(4, dtype=np.int64),
            "acc": np.array([0.5, 0.61, float("nan"), 0.8123456789], dtype=np.float64),
            "acc32": torch.rand(4, generator=g).numpy().astype(np.float32),
            "n": np.array([10, 20, 30, 40], dtype=np.int32),
            "significant": [True, False, True, False],
            "dataset": ["cities", "a, b", 'say "hi"', "NA"],
        }
    )
    grid = pd.DataFrame(
        {"token": ["The", "city", "The", "city"], "layer": [0, 0, 1, 1], "ie": [0.1, -0.2, 0.3, 1e-12]}
    ).set_index(["layer", "token"])
    weights = torch.randn(3, 5, generator=g)
    return RunResult(
        analysis="truth_directions",
        config={
            "layers": (1, 2, 3),
            "lr": np.float32(0.25),
            "path": Path("/tmp/x"),
            "nested": {"k": [1, (2, 3)]},
        },
        summary={
            "acc": np.float64(0.875),
            "undefined_corr": float("nan"),
            "ratio": float("inf"),
            "n": np.int64(7),
        },
        tables={"per_layer": per_layer, "grid": grid},
        tensors={
            "direction": torch.randn(2, 8, generator=g),
            "bf16": torch.randn(4, 4, generator=g).to(torch.bfloat16),
            "ids": torch.arange(-3, 9, dtype=torch.int64).reshape(3, 4),
            "mask": torch.tensor([True, False, True]),
            "half": torch.randn(5, generator=g).half(),
            "row_view": weights[1:],  # a view into a larger storage
            "weights": weights,
            "weights_again": weights,  # the same tensor twice
            "scalar": torch.tensor(3.5, dtype=torch.float64),
        },
        provenance=provenance(
            models={"base": {"source": "toy/base"}, "post": {"source": "toy/post"}}, data={"sha256": "ab" * 32}
        ),
        seeds={"seed": 0, "noise_seed": 1},
        notes=["one seed only"],
    )


def test_round_trip_gives_equal_result(tmp_path):
    res = _example()
    with RunTimer(res):
        pass
    out = write_run(tmp_path / "run", res)
    back = read_run(out)
    assert back == res
    for name, t in res.tensors.items():
        got = back.tensors[name]
        assert got.dtype == t.dtype and got.shape == t.shape
        assert torch.equal(_bits(got), _bits(t)), name
    for name, df in res.tables.items():
        pd.testing.assert_frame_equal(back.tables[name], df, check_exact=True)
    assert math.isnan(back.summary["undefined_corr"]) and back.summary["ratio"] == math.inf
    assert back.config["layers"] == [1, 2, 3] and back.config["path"] == "/tmp/x"
    assert back.meta == res.meta and back.meta["schema_version"] == SCHEMA_VERSION


def _strict_json(text: str):
    """json.loads that refuses the non-standard NaN / Infinity tokens (what any other JSON reader does)."""

    def refuse(token: str):
        raise ValueError(f"not valid JSON: {token}")

    return json.loads(text, parse_constant=refuse)


def test_result_json_is_valid_json_with_null_for_non_finite_and_reads_back_exactly(tmp_path):
    res = RunResult("x", {}, {"nan": float("nan"), "inf": [1.0, math.inf, -math.inf], "none": None, "one": 1.0})
    out = write_run(tmp_path / "run", res)
    doc = _strict_json((out / "result.json").read_text())  # was: bare NaN / Infinity tokens
    assert doc["summary"] == {"nan": None, "inf": [1.0, None, None], "none": None, "one": 1.0}
    assert doc["non_finite"] == [
        [["summary", "nan"], "NaN"],
        [["summary", "inf", 1], "Infinity"],
        [["summary", "inf", 2], "-Infinity"],
    ]
    back = read_run(out).summary
    assert math.isnan(back["nan"]) and back["inf"] == [1.0, math.inf, -math.inf] and back["none"] is None


def test_a_schema_1_result_json_with_nan_tokens_is_still_read(tmp_path):
    out = write_run(tmp_path / "run", RunResult("x", {}, {"a": 1.0}))
    doc = json.loads((out / "result.json").read_text())
    doc.pop("non_finite")
    doc.update(schema_version=1, summary={"a": float("nan")})
    (out / "result.json").write_text(json.dumps(doc))  # Python's json writes the NaN token
    assert math.isnan(read_run(out).summary["a"])


def test_a_non_finite_entry_that_points_nowhere_is_a_damaged_run_dir(tmp_path):
    out = write_run(tmp_path / "run", RunResult("x", {}, {"a": 1.0}))
    doc = json.loads((out / "result.json").read_text())
    doc["non_finite"] = [[["summary", "a"], "NaN"]]  # summary.a is 1.0, not null
    (out / "result.json").write_text(json.dumps(doc))
    with pytest.raises(RunDirError, match="does not point at a null"):
        read_run(out)


def test_every_json_writer_writes_valid_json(tmp_path):
    from posttrain_probe.utils.io import atomic_write_json, dumps_json

    atomic_write_json(tmp_path / "a.json", {"x": float("nan"), "y": np.array([1.0, np.inf]), "z": (np.float32("nan"),)})
    assert _strict_json((tmp_path / "a.json").read_text()) == {"x": None, "y": [1.0, None], "z": [None]}
    assert dumps_json({"a": -math.inf}, indent=None) == '{"a": null}'
    from posttrain_probe.rlvr.trainer import _append_jsonl, read_jsonl

    _append_jsonl(tmp_path / "metrics.jsonl", {"step": 1, "dH_corr_cov": float("nan"), "loss": 0.5})
    assert _strict_json((tmp_path / "metrics.jsonl").read_text()) == {"step": 1, "dH_corr_cov": None, "loss": 0.5}
    (row,) = read_jsonl(tmp_path / "metrics.jsonl")  # null reads back as NaN
    assert math.isnan(row["dH_corr_cov"]) and row["loss"] == 0.5


def test_equality_notices_differences(tmp_path):
    res = _example()
    write_run(tmp_path / "run", res)
    back = read_run(tmp_path / "run")
    back.tensors["direction"] = back.tensors["direction"].double()  # same values, other dtype
    assert back != res
    back = read_run(tmp_path / "run")
    back.tables["per_layer"].loc[0, "acc"] = 0.51
    assert back != res
    back = read_run(tmp_path / "run")
    back.summary["acc"] = 0.8751
    assert back != res


def test_result_json_fields_and_safetensors_header(tmp_path):
    from safetensors import safe_open

    res = _example()
    out = write_run(tmp_path / "run", res)
    doc = json.loads((out / "result.json").read_text())
    for key in (
        "schema_version",
        "analysis",
        "config",
        "provenance",
        "seeds",
        "versions",
        "git_commit",
        "started_at",
        "finished_at",
        "host",
        "summary",
        "tables",
        "tensors",
        "notes",
    ):
        assert key in doc, key
    assert doc["schema_version"] == SCHEMA_VERSION and doc["analysis"] == "truth_directions"
    assert doc["versions"]["torch"] == torch.__version__ and doc["host"]["cpu_count"] == os.cpu_count()
    assert doc["tables"] == {"per_layer": "tables/per_layer.csv", "grid": "tables/grid.csv"}
    assert doc["tensors"]["bf16"] == {"shape": [4, 4], "dtype": "bfloat16"}
    assert doc["git_commit"] is None or re.fullmatch(r"[0-9a-f]{40}", doc["git_commit"])
    finished = dt.datetime.fromisoformat(doc["finished_at"])
    assert finished.utcoffset() == dt.timedelta(0)
    assert sorted(p.name for p in out.iterdir()) == ["result.json", "tables", "tensors.safetensors"]
    with safe_open(str(out / "tensors.safetensors"), framework="pt") as f:
        header = f.metadata()
    assert header["analysis"] == "truth_directions" and header["schema_version"] == str(SCHEMA_VERSION)
    csv_text = (out / "tables" / "per_layer.csv").read_text()
    assert '"a, b"' in csv_text  # plain CSV that other tools can read


def test_run_timer_records_utc_times(tmp_path):
    res = RunResult("t", {}, {})
    with RunTimer(res):
        sum(range(1000))
    start = dt.datetime.fromisoformat(res.meta["started_at"])
    end = dt.datetime.fromisoformat(res.meta["finished_at"])
    assert start <= end and start.utcoffset() == dt.timedelta(0) and res.meta["duration_s"] >= 0
    with RunTimer() as timer:
        pass
    later = timer.record_into(RunResult("t", {}, {}))
    assert later.meta["started_at"] == timer.started_at
    with pytest.raises(RunDirError):
        RunTimer().record_into(RunResult("t", {}, {}))
    write_run(tmp_path / "r", res)
    assert read_run(tmp_path / "r").meta["started_at"] == start.isoformat(timespec="milliseconds")


def test_existing_dir_needs_overwrite_and_overwrite_replaces(tmp_path):
    out = write_run(tmp_path / "run", RunResult("a", {}, {"x": 1}))
    with pytest.raises(FileExistsError, match="overwrite") as e:
        write_run(out, RunResult("a", {}, {"x": 2}))
    assert "\n" not in str(e.value)
    write_run(out, RunResult("a", {}, {"x": 2}), overwrite=True)
    assert read_run(out).summary == {"x": 2}
    other = tmp_path / "not_a_run"
    other.mkdir()
    (other / "precious.txt").write_text("keep me")
    with pytest.raises(RunDirError, match="not a run dir"):
        write_run(other, RunResult("a", {}, {}), overwrite=True)
    assert (other / "precious.txt").read_text() == "keep me"


def test_failure_during_write_leaves_nothing(tmp_path, monkeypatch):
    import safetensors.torch

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        write_run(tmp_path / "run", _example())
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    write_run(tmp_path / "run", RunResult("a", {}, {"x": 1}))
    monkeypatch.setattr(safetensors.torch, "save_file", boom)
    with pytest.raises(RuntimeError):
        write_run(tmp_path / "run", _example(), overwrite=True)
    assert read_run(tmp_path / "run").summary == {"x": 1}  # the old run is intact
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(summary={"x": object()}), "summary.x"),
        (dict(config={"t": torch.ones(3)}), "tensors"),
        (dict(tables={"../evil": pd.DataFrame({"a": [1]})}), "file-safe"),
        (dict(tables={"m": pd.DataFrame(np.eye(2))}), "string column"),
        (dict(tensors={"x": np.ones(2)}), "torch.Tensor"),
        (dict(analysis=""), "analysis name"),
        (dict(meta={"summary": 1}), "reserved"),
    ],
)
def test_bad_results_are_refused_before_writing(tmp_path, bad, match):
    kw = dict(analysis="a", config={}, summary={})
    kw.update(bad)
    with pytest.raises(RunDirError, match=match) as e:
        write_run(tmp_path / "run", RunResult(**kw))
    assert "\n" not in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_read_refuses_newer_schema_missing_json_and_damaged_dirs(tmp_path):
    assert not is_run_dir(tmp_path)
    with pytest.raises(RunDirError, match="result.json is missing"):
        read_run(tmp_path)
    out = write_run(tmp_path / "run", _example())
    assert is_run_dir(out)
    doc = json.loads((out / "result.json").read_text())
    doc["schema_version"] = SCHEMA_VERSION + 1
    (out / "result.json").write_text(json.dumps(doc))
    assert not is_run_dir(out)
    with pytest.raises(RunDirError, match="upgrade") as e:
        read_run(out)
    assert "\n" not in str(e.value)
    out2 = write_run(tmp_path / "run2", _example())
    (out2 / "tables" / "grid.csv").unlink()
    with pytest.raises(RunDirError, match="grid.csv is missing"):
        read_run(out2)


def test_to_jsonable_converts_common_types():
    assert to_jsonable({"a": (1, np.int32(2)), 3: np.float32(0.5), "p": Path("x")}) == {
        "a": [1, 2],
        "3": 0.5,
        "p": "x",
    }
    assert math.isnan(to_jsonable(np.float64("nan")))
    with pytest.raises(RunDirError, match=r"v\.s"):
        to_jsonable({"s": {1, 2}}, "v")


def test_git_state_outside_a_repo_is_none(tmp_path):
    assert git_state(tmp_path) == (None, None)


def test_no_pickle_in_writer_or_loaders(tmp_path):
    pickle_use = re.compile(r"import pickle|from pickle|pickle\.\w|_pickle\(|torch\.save\(|torch\.load\(")
    root = Path(results.__file__).parent
    for path in [Path(results.__file__), *sorted((root / "data").glob("*.py"))]:
        assert not pickle_use.search(path.read_text()), path
    out = write_run(tmp_path / "run", _example())
    suffixes = {p.suffix for p in out.rglob("*") if p.is_file()}
    assert suffixes == {".json", ".csv", ".safetensors"}


def test_one_provenance_shape_from_a_pair_or_from_models():
    class Model:
        provenance = {"source": "ckpt/step_1", "weights_sha256": "cd", "dtype": "float32"}

    class Pair:
        def provenance(self):
            return {"base": {"source": "b", "revision": "r1"}, "post": {"source": "p"}, "parity": {"ok": True}}

    p = provenance(Pair(), data={"n": 3}, model_extra={"post": {"prompt_format": "chat"}})
    assert set(p) == {"models", "parity", "data"} and p["parity"] == {"ok": True} and p["data"] == {"n": 3}
    assert set(p["models"]) == {"base", "post"}
    for entry in p["models"].values():
        assert set(MODEL_PROVENANCE_KEYS) <= set(entry)  # the four keys always, None when unknown
    assert p["models"]["base"]["revision"] == "r1" and p["models"]["post"]["tokenizer_sha256"] is None
    assert p["models"]["post"]["prompt_format"] == "chat"
    q = provenance(models={"step_0": Model()})
    assert q["parity"] is None and q["data"] == {}
    assert q["models"]["step_0"]["weights_sha256"] == "cd" and q["models"]["step_0"]["dtype"] == "float32"
    with pytest.raises(KeyError, match="not among the models"):
        provenance(models={"a": {}}, model_extra={"b": {}})
    with pytest.raises(TypeError, match="HookedModel or a provenance dict"):
        provenance(models={"a": 3})


@pytest.mark.parametrize(("umask", "file_mode", "dir_mode"), [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_written_files_and_run_dirs_honour_the_umask(umask, file_mode, dir_mode, tmp_path):
    """Like open() / mkdir(): a colleague or web server can read a run when the umask allows (was 0600 / 0700)."""
    import os
    import stat

    from posttrain_probe.report import build_report
    from posttrain_probe.steering import SteeringVector
    from posttrain_probe.utils.io import atomic_dir, atomic_write_text

    def mode(p) -> int:
        return stat.S_IMODE(os.stat(p).st_mode)

    old = os.umask(umask)
    try:
        run = write_run(tmp_path / "run", _example())
        build_report([run], tmp_path / "report.html")
        atomic_write_text(tmp_path / "a.txt", "x")
        with atomic_dir(tmp_path / "d") as d:
            (d / "f").write_text("x")
        SteeringVector(torch.ones(4), "resid_pre", 0, metadata={}).save(tmp_path / "v")
    finally:
        os.umask(old)
    assert mode(run) == dir_mode and mode(tmp_path / "d") == dir_mode and mode(run / "tables") == dir_mode
    for f in [run / "result.json", tmp_path / "report.html", tmp_path / "a.txt", tmp_path / "v.safetensors"]:
        assert mode(f) == file_mode, f
    assert mode(tmp_path / "v.json") == file_mode
