"""The CLI without models: `info`."""

from __future__ import annotations

import json

from posttrain_probe.cli import main


def test_info_prints_versions_and_cache_dir(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("POSTTRAIN_PROBE_CACHE", str(tmp_path))
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["cache_dir"] == str(tmp_path) and info["versions"]["torch"]


def test_demo_help_states_the_demo_defaults_the_code_uses():
    """The demo's --help is written by hand (the demo module imports torch, --help must not); it must name the
    arms, seeds and steps `demo.py` actually uses."""
    from posttrain_probe.cli import build_parser
    from posttrain_probe.demo import DEMO_ARMS, DEMO_RLVR, DEMO_RLVR_SEEDS

    sub = next(a for a in build_parser()._actions if a.dest == "cmd")
    text = " ".join(sub.choices["demo"].format_help().split())
    assert f"default: {','.join(DEMO_ARMS)};" in text
    assert f"{DEMO_RLVR['quick']['steps']} quick / {DEMO_RLVR['default']['steps']})" in text
    assert f"default {DEMO_RLVR_SEEDS['default']}; quick {DEMO_RLVR_SEEDS['quick']}" in text


def test_toyworld_set_overrides_parse_json_values_and_reject_bad_input(capsys):
    import pytest

    from posttrain_probe.cli import _toy_overrides

    assert _toy_overrides(["n_layers=8", "sample_chat_frac=0.3", "statement_families=fact,comparison"]) == {
        "n_layers": 8, "sample_chat_frac": 0.3, "statement_families": "fact,comparison",
    }  # fmt: skip
    with pytest.raises(ValueError, match="KEY=VALUE"):
        _toy_overrides(["n_layers"])
    assert main(["toyworld", "build", "--preset", "quick", "--set", "n_dragons=3"]) == 1
    err = capsys.readouterr().err
    assert "unknown toy-world config keys ['n_dragons']" in err and err.count("\n") == 1


def test_cli_offers_every_toy_world_preset():
    from posttrain_probe.cli import TOY_PRESETS
    from posttrain_probe.toyworld import PRESETS

    assert TOY_PRESETS == list(PRESETS)
