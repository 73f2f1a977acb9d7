"""Faults while writing a run dir (disk full, Ctrl-C) leave nothing behind."""

from __future__ import annotations

import errno
import json

import pytest
import torch

from posttrain_probe.results import RunResult, write_run


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
