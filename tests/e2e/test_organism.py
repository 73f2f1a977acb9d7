"""`posttrain-probe toyworld check` on a built pair: every probe runs, each mechanism gets its numbers and a
pass/fail, the pair's report.json keeps them, and the terminal says how many hold."""

from __future__ import annotations

import json
import shutil

import pytest

from posttrain_probe.cli import main
from posttrain_probe.studies.organism import PROBES

pytestmark = pytest.mark.slow


def test_toyworld_check_writes_the_mechanisms_into_the_pairs_report(toy_pair_quick, tmp_path, capsys):
    cache = tmp_path / "cache"
    shutil.copytree(toy_pair_quick.root, cache / toy_pair_quick.root.name)  # the session's build stays untouched
    rc = main(["toyworld", "check", "--preset", "quick", "--seeds", "0", "--cache-root", str(cache), "--out",
               str(tmp_path / "runs")])  # fmt: skip
    assert rc == 0
    out = capsys.readouterr().out
    assert "mechanisms of the toy pair" in out and "present on every seed (1 seeds)" in out
    report = json.loads((cache / toy_pair_quick.root.name / "report.json").read_text())
    checks = report["mechanisms"]
    assert set(checks) == set(PROBES)
    assert all(isinstance(c["pass"], bool) for c in checks.values())
    assert 0 <= checks["refusal"]["harmful_baseline"] <= 1 and checks["neurons"]["rho2_random_sd"] > 0
    for name in PROBES:
        assert (tmp_path / "runs" / "quick-seed0" / name / "result.json").is_file()
