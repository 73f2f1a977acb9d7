"""Every notebook runs top to bottom on the quick preset (outputs are not committed)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_executes_on_the_quick_preset(path, toy_pair_quick, monkeypatch, tmp_path):
    monkeypatch.setenv("POSTTRAIN_PROBE_CACHE", str(toy_pair_quick.root.parent.parent))
    monkeypatch.setenv("POSTTRAIN_PROBE_NOTEBOOK_PRESET", "quick")
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the notebooks' run dirs (tempfile.mkdtemp) land in pytest's tmp
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
