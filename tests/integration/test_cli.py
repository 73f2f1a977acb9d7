"""The CLI is thin: `pair check` on tiny checkpoints; mismatches exit 1 with one line."""

from __future__ import annotations

from posttrain_probe.cli import main
from posttrain_probe.testing import make_tiny_checkpoint


def test_pair_check_ok_and_mismatch(capsys, tmp_path):
    a = make_tiny_checkpoint("llama", tmp_path / "a")
    b = make_tiny_checkpoint("llama", tmp_path / "b", seed=3)
    c = make_tiny_checkpoint("llama", tmp_path / "c", n_layers=3)
    assert main(["pair", "check", str(a), str(b), "--backend", "nnsight"]) == 0
    assert "parity: OK" in capsys.readouterr().out
    assert main(["pair", "check", str(a), str(c), "--backend", "nnsight"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "n_layers (base 2, post 3)" in err[0]
