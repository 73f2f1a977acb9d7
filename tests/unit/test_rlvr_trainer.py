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


def test_minibatches_by_groups_hold_whole_groups_and_by_rows_a_permutation():
    import torch

    from posttrain_probe.rlvr.trainer import _minibatches

    keep = torch.ones(6 * 4, dtype=torch.bool)
    keep[8:12] = False  # prompt 2's group dropped (dynamic sampling)
    for split in ("rows", "groups"):
        cfg = RLVRConfig(prompts_per_step=6, group_size=4, minibatches=3, minibatch_split=split)
        minis = _minibatches(cfg, 5, keep)
        rows = torch.cat(minis)
        assert sorted(rows.tolist()) == [i for i in range(24) if keep[i]]
        assert all(torch.equal(a, b) for a, b in zip(minis, _minibatches(cfg, 5, keep)))  # seeded by step
        assert not all(torch.equal(a, b) for a, b in zip(minis, _minibatches(cfg, 6, keep)))
        if split == "groups":
            for m in minis:
                prompts = set((m // 4).tolist())
                assert sorted(m.tolist()) == sorted(p * 4 + j for p in prompts for j in range(4))
        else:  # some mini-batch mixes completions of a prompt with other prompts' (a permutation of rows)
            assert any(len(set((m // 4).tolist())) * 4 != len(m) for m in minis)
    with pytest.raises(ConfigError, match="minibatch_split"):
        RLVRConfig(minibatch_split="prompts")
    with pytest.raises(ConfigError, match="whole groups"):
        RLVRConfig(prompts_per_step=2, minibatches=4, minibatch_split="groups")
