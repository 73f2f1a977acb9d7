"""Embedded RLVR trainer (GRPO family with Clip-Cov, KL-Cov and STEER) that logs token-level entropy
dynamics. Public entry points: `train(config, out_dir)`, `resume(run_dir)`, `RLVRConfig`."""

from posttrain_probe.rlvr.config import ConfigError, RLVRConfig
from posttrain_probe.rlvr.losses import LOSS_TYPES, LossConfig
from posttrain_probe.rlvr.tasks import TASKS, get_task
from posttrain_probe.rlvr.trainer import (
    NonFiniteLossError,
    RewardNotFiniteError,
    evaluate,
    read_jsonl,
    resume,
    train,
)

__all__ = [
    "LOSS_TYPES",
    "TASKS",
    "ConfigError",
    "LossConfig",
    "NonFiniteLossError",
    "RLVRConfig",
    "RewardNotFiniteError",
    "evaluate",
    "get_task",
    "read_jsonl",
    "resume",
    "train",
]
