"""scripts/verdict_table.py: the README's verdict table from saved verdicts.json files."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "verdict_table.py"


def _script():
    spec = importlib.util.spec_from_file_location("verdict_table", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(claim: str, verdict: str, est: float | None, lo: float | None, hi: float | None) -> dict:
    return dict(paper="Cui et al. 2025", claim=claim, verdict=verdict, estimate=est, ci_low=lo, ci_high=hi, n=5,
                threshold=1.0, rule="", evidence="e | f", section="dynamics")  # fmt: skip


def test_later_files_win_for_the_same_claim_and_rows_name_their_run(tmp_path, capsys):
    (tmp_path / "demo").mkdir()
    (tmp_path / "study").mkdir()
    (tmp_path / "demo" / "verdicts.json").write_text(
        json.dumps([_row("a", "inconclusive", 0.2, -0.04, 0.43), _row("b", "reproduced", 0.95, None, None)])
    )
    (tmp_path / "study" / "verdicts.json").write_text(json.dumps([_row("a", "reproduced", 0.516, 0.426, 0.605)]))
    code = _script().main([str(tmp_path / "demo" / "verdicts.json"), str(tmp_path / "study" / "verdicts.json")])
    lines = capsys.readouterr().out.strip().splitlines()
    assert code == 0 and len(lines) == 4
    assert lines[2] == "| a (Cui et al. 2025) | reproduced | 0.516 [0.426, 0.605] | 5 | study |"
    assert lines[3] == "| b (Cui et al. 2025) | reproduced | 0.95 | 5 | demo |"
    assert _script().table([tmp_path / "demo" / "verdicts.json"], evidence=True).splitlines()[2].count("e \\| f") == 1


def test_a_missing_file_is_one_line_naming_the_fix(tmp_path, capsys):
    assert _script().main([str(tmp_path / "nope.json")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nope.json" in err and "run the demo or the study" in err
