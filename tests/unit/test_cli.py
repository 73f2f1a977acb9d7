"""The CLI without models: `info`."""

from __future__ import annotations

import json

from posttrain_probe.cli import main


def test_info_prints_versions_and_cache_dir(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("POSTTRAIN_PROBE_CACHE", str(tmp_path))
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["cache_dir"] == str(tmp_path) and info["versions"]["torch"]
