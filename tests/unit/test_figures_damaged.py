"""`posttrain-probe figures` on damaged run dirs: each is skipped with a one-line warning naming it and the problem,
the healthy ones are drawn, and the command exits 1 when anything was skipped (docs/robustness.md)."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from posttrain_probe.plots import export
from posttrain_probe.results import RunDirError, RunResult, write_run


def _figures(res: RunResult) -> dict:
    import matplotlib.pyplot as plt

    if "broken" in res.summary:
        plt.figure()  # a figure opened before the failure is closed by make_figures
        raise KeyError("accuracy")
    fig = plt.figure(figsize=(1, 1))
    return {"plot": fig}


@pytest.fixture
def results(tmp_path, monkeypatch):
    """Three healthy runs (a, b, c/nested) of analysis 'toy' with a table and a tensor; a fake plot module."""
    monkeypatch.setattr(export, "plot_module", lambda analysis: SimpleNamespace(figures=_figures))
    root = tmp_path / "results"
    for name in ("a", "b", "c/nested"):
        res = RunResult("toy", {}, {"x": 1.0}, tables={"t": pd.DataFrame({"v": [1.0, 2.0]})})
        res.tensors["w"] = torch.ones(2)
        write_run(root / name, res)
    return root


def _cli(root, out, capsys) -> tuple[int, list[str], list[str]]:
    from posttrain_probe.cli import main

    code = main(["figures", str(root), "--out", str(out), "--dpi", "20"])
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err.splitlines()


def _warnings(err: list[str]) -> list[str]:
    return [line for line in err if line.startswith("warning: skipped")]


def test_healthy_runs_draw_and_exit_0(results, tmp_path, capsys):
    code, out, err = _cli(results, tmp_path / "f", capsys)
    assert code == 0 and len(out) == 3 and not _warnings(err)


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        ("truncated result.json", "not valid JSON"),  # was: skipped silently, exit 0
        ("unreadable result.json", "not valid JSON"),  # was: "no run directories" when it was the only one
        ("corrupt CSV", "table 't' cannot be read"),  # was: a raw pandas error naming no file, all runs aborted
        ("missing CSV", "table file tables/t.csv is missing"),
        ("corrupt tensors", "not a readable safetensors file"),
        ("summary the plot cannot draw", "cannot draw its figures (KeyError: 'accuracy')"),
        ("result.json of another tool", "not a posttrain_probe result"),
    ],
)
def test_a_damaged_run_is_skipped_with_one_warning_and_the_rest_drawn(damage, problem, results, tmp_path, capsys):
    run = results / "b"
    doc = run / "result.json"
    if damage == "truncated result.json":
        doc.write_text(doc.read_text()[:200])
    elif damage == "unreadable result.json":
        doc.write_bytes(b"\xff\xfe\x00garbage")
    elif damage == "corrupt CSV":
        (run / "tables" / "t.csv").write_text('v\n"1.0\n2.0,3,4\n')
    elif damage == "missing CSV":
        (run / "tables" / "t.csv").unlink()
    elif damage == "corrupt tensors":
        (run / "tensors.safetensors").write_bytes(b"\x00" * 7)
    elif damage == "summary the plot cannot draw":
        doc.write_text(doc.read_text().replace('"x": 1.0', '"broken": true'))
    else:
        doc.write_text('{"accuracy": 0.5}')
    import matplotlib.pyplot as plt

    open_before = len(plt.get_fignums())
    code, out, err = _cli(results, tmp_path / "f", capsys)
    (warning,) = _warnings(err)
    assert code == 1, "a skipped run must make the command fail"
    assert str(run) in warning and problem in warning, warning
    assert len(out) == 2 and all("__b__" not in p for p in out)  # a and c/nested drawn
    assert sorted(p.name for p in (tmp_path / "f").iterdir()) == ["toy__a__plot.png", "toy__c_nested__plot.png"]
    assert len(plt.get_fignums()) == open_before


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a mode-000 file")
def test_a_result_json_without_read_permission_is_named(results, tmp_path, capsys):
    (results / "a" / "result.json").chmod(0)
    code, _, err = _cli(results, tmp_path / "f", capsys)
    (warning,) = _warnings(err)
    assert code == 1 and "PermissionError" in warning and str(results / "a") in warning


def test_every_run_damaged_is_named_not_no_run_directories(results, tmp_path, capsys):
    for name in ("a", "b", "c/nested"):
        (results / name / "result.json").write_text("{")
    code, out, err = _cli(results, tmp_path / "f", capsys)
    assert code == 1 and out == [] and len(_warnings(err)) == 3
    assert not any("no run directories" in line for line in err)


def test_the_library_call_raises_after_drawing_the_healthy_runs(results, tmp_path):
    (results / "a" / "result.json").write_text("{")
    with pytest.raises(RunDirError, match=r"skipped 1 damaged run dir\(s\), first .*a: .*not valid JSON") as e:
        export.make_figures(results, tmp_path / "f", dpi=20)
    assert "\n" not in str(e.value)
    assert sorted(p.name for p in (tmp_path / "f").iterdir()) == ["toy__b__plot.png", "toy__c_nested__plot.png"]
    skipped: list[str] = []
    assert len(export.make_figures(results, tmp_path / "g", dpi=20, skipped=skipped)) == 2 and len(skipped) == 1


def test_an_unfinished_atomic_write_folder_is_ignored(results, tmp_path, capsys):
    hidden = results / ".b.tmp-1234"
    hidden.mkdir()
    (hidden / "result.json").write_text("{")
    code, out, err = _cli(results, tmp_path / "f", capsys)
    assert code == 0 and len(out) == 3 and not _warnings(err)
