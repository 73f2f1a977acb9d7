"""RLVR configs: YAML validation and the shipped configs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from posttrain_probe.rlvr.config import ConfigError, RLVRConfig


def test_config_yaml_rejects_unknown_keys_and_fills_defaults(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("task: arithmetic\nloss:\n  name: clip_cov\n  cov_preset: paper\nsteps: 3\n")
    cfg = RLVRConfig.from_yaml(good)
    assert cfg.loss.name == "clip_cov" and cfg.loss.clip_cov_ratio == 2e-4 and cfg.steps == 3
    assert RLVRConfig(loss="clip_higher").loss.clip_high == 0.28
    assert RLVRConfig(loss={"name": "grpo", "aggregation": "constant-normalized"}).loss.agg_constant == 16
    assert RLVRConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: arithmetic\nlearning_rate: 0.1\n")
    with pytest.raises(ConfigError, match="unknown RLVR config key 'learning_rate'"):
        RLVRConfig.from_yaml(bad)
    bad.write_text("loss:\n  name: grpo\n  clip: 0.3\n")
    with pytest.raises(ConfigError, match="unknown loss key 'clip'"):
        RLVRConfig.from_yaml(bad)
    with pytest.raises(ConfigError, match="minibatches"):
        RLVRConfig(minibatches=0)
    with pytest.raises(ConfigError, match="not registered"):
        RLVRConfig(task="chess")


def test_shipped_configs_parse():
    configs = sorted((Path(__file__).resolve().parents[2] / "experiments" / "configs").glob("rlvr_*.yaml"))
    assert configs, "experiments/configs/rlvr_*.yaml are missing"
    names = {RLVRConfig.from_yaml(p).loss.name for p in configs}
    assert {"grpo", "clip_higher", "entropy_bonus", "clip_cov", "kl_cov", "steer"} <= names
