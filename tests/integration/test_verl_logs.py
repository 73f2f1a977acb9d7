"""What of the verl integration works without verl: the package imports, verl_logs (verl's file log → our
metrics.jsonl), and the adapter's message when verl is missing."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from posttrain_probe.integrations.verl_logs import convert_verl_log, main


def _write_log(path, entries):
    path.write_text("".join(json.dumps(e) + "\n" for e in entries))
    return path


def test_verl_file_log_becomes_rows_the_drift_analysis_reads(tmp_path, capsys):
    from posttrain_probe.analysis.drift import entropy_curve

    log = _write_log(
        tmp_path / "exp.jsonl",
        [
            {"step": 0, "data": {"val-core/gsm8k/acc/mean@1": 0.2}},
            {"step": 2, "data": {"actor/entropy": 0.5, "critic/score/mean": 0.75, "response_length/mean": 80.0,
                                 "actor/posttrain_probe/dH_pred_cov": -0.01, "actor/pg_clipfrac": 0.1}},
            {"step": 1, "data": {"actor/entropy": 0.6, "critic/score/mean": 0.5,
                                 "actor/posttrain_probe/dH_realized_is": 0.002}},
            {"step": 2, "data": {"val-core/gsm8k/acc/mean@1": 0.3}},
        ],
    )  # fmt: skip
    out = tmp_path / "metrics.jsonl"
    assert main([str(log), str(out)]) == 0 and "3 steps" in capsys.readouterr().out
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert rows[2]["entropy_mean"] == 0.5 and rows[2]["accuracy"] == 0.75 and rows[2]["reward_mean"] == 0.75
    assert rows[2]["dH_pred_cov"] == -0.01 and rows[2]["response_len_mean"] == 80.0
    assert rows[2]["val-core/gsm8k/acc/mean@1"] == 0.3 and rows[2]["actor/pg_clipfrac"] == 0.1  # verl keys kept
    assert rows[1]["dH_realized_is"] == 0.002 and "entropy_mean" not in rows[0]
    curve = entropy_curve(out)
    assert list(curve["entropy_mean"])[1:] == [0.6, 0.5] and list(curve["accuracy"])[1:] == [0.5, 0.75]
    assert "accuracy" not in convert_verl_log(log, accuracy_key=None)[2]


def test_a_line_that_is_not_verls_format_is_named(tmp_path, capsys):
    log = _write_log(tmp_path / "bad.jsonl", [{"step": 1, "data": {}}, {"epoch": 1}])
    with pytest.raises(ValueError, match=r"bad.jsonl:2 is not a verl file-log line"):
        convert_verl_log(log)
    assert main([str(tmp_path / "missing.jsonl"), str(tmp_path / "o.jsonl")]) == 1
    assert "trainer.logger" in capsys.readouterr().err


def test_the_package_and_the_log_converter_never_import_verl():
    code = "import sys, posttrain_probe, posttrain_probe.integrations.verl_logs; print('verl' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_verl_adapter_says_what_to_install_when_verl_is_missing():
    if importlib.util.find_spec("verl") is not None:
        pytest.skip("verl is installed here; tests/integration/test_verl.py covers the adapter")
    with pytest.raises(ImportError, match=r"needs verl \(written against verl 0.9.1\)"):
        import posttrain_probe.integrations.verl  # noqa: F401
