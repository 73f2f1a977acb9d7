"""Notebooks are committed with the outputs of a clean top-to-bottom run on the default toy preset (readers on
GitHub see the figures); CI re-executes them on the quick preset (tests/e2e/test_notebooks.py)."""

from __future__ import annotations

from pathlib import Path

import nbformat

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))


def _texts(cell) -> list[str]:
    out = []
    for o in cell.get("outputs", []):
        if o.output_type == "stream":
            out.append(o.text)
        elif o.output_type in ("execute_result", "display_data"):
            out.append(str(o.data.get("text/plain", "")))
    return out


def test_notebooks_are_committed_with_the_outputs_of_one_clean_default_run():
    assert NOTEBOOKS, "no notebooks found"
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        counts = [c.execution_count for c in code]
        assert counts == list(range(1, len(code) + 1)), f"{path.name}: not one top-to-bottom run ({counts})"
        outputs = [o for c in code for o in c.get("outputs", [])]
        assert all(o.output_type != "error" for o in outputs), f"{path.name} has an error output"
        stderr = "".join(o.text for o in outputs if o.output_type == "stream" and o.name == "stderr")
        assert "Warning" not in stderr and "it/s]" not in stderr, f"{path.name}: warnings or progress bars: {stderr}"
        widgets = [o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
        assert not widgets, f"{path.name}: widget outputs (progress bars) do not render outside Jupyter"
        assert not any("quick" in t for c in code for t in _texts(c)), f"{path.name}: run on the quick preset"
        if not path.name.startswith("01"):
            images = [o for o in outputs if "image/png" in o.get("data", {})]
            assert images, f"{path.name} shows no figure"
