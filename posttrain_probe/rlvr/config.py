"""`RLVRConfig`: everything one RLVR run depends on, validated at construction, read from YAML.

The defaults are the toy configuration (experiments/configs/rlvr_toy_grpo.yaml): the toy world's post
model on its arithmetic problems, 16 prompts × 8 samples per step, 4 mini-batches per rollout batch (so
ρ ≠ 1 after the first), AdamW at 1e-4 for 300 steps. On the default toy pair (held-out accuracy ≈ 9% at
temperature 1) lr 1e-4 raised it to 25% in 300 steps, 2e-4 stalled and 5e-4 collapsed to 0 (as
../shared/NOTES.md warns: a weak start model needs a modest learning rate).

Paired studies: every arm of a comparison with the same `seed` sees the same prompts, sampling uniforms,
mini-batch splits and evaluation uniforms per step (common random numbers, see trainer.py), so arms differ only
by their intervention; `null_arm(cfg)` is the baseline with lr × 1.01, which measures how far two runs drift
apart by chaos alone. `arm` labels a run for the analyses (default: the loss recipe or name). The primary
entropy measure is `eval_entropy_mean` in eval.jsonl (the fixed held-out set, every `eval_every` steps).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from posttrain_probe.rlvr.losses import RECIPES, LossConfig
from posttrain_probe.rlvr.tasks import TASKS
from posttrain_probe.utils.device import autocast_error, device_error


class ConfigError(ValueError):
    """An RLVR configuration value or key that is not valid; the message says what to change."""


@dataclass(frozen=True)
class RLVRConfig:
    """One RLVR run. Sources: `model` is an HF directory, a hub id or "toyworld:post" (built lazily);
    `data` is a problems file/folder, "toyworld:arithmetic" or "shared:<relative path>" (in the data
    cache, else the shared data folder)."""

    model: str = "toyworld:post"
    task: str = "arithmetic"
    data: str = "toyworld:arithmetic"
    data_split: str | None = None
    eval_data: str | None = None  # default: the last n_eval problems of `data` are held out
    eval_split: str | None = None
    n_eval: int = 128
    eval_every: int = 50
    eval_samples: int = 4
    prompt_format: str = "auto"  # auto (chat template if the tokenizer has one) | chat | raw
    stop_tokens: tuple[str, ...] = ("<|end|>",)
    prompts_per_step: int = 16
    group_size: int = 8
    max_new_tokens: int = 16
    temperature: float = 1.0
    steps: int = 300
    lr: float = 1e-4
    weight_decay: float = 0.0
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    warmup_steps: int = 0
    lr_schedule: str = "constant"  # constant | cosine
    max_grad_norm: float = 1.0
    minibatches: int = 4
    micro_batch_size: int | None = None  # sequences per forward; None = the whole mini-batch
    minibatch_split: str = "rows"  # rows: shuffled completions (TRL) | groups: whole prompt groups (verl)
    adv_scale: str = "std"
    adv_eps: float = 1e-6
    adv_unbiased_std: bool = True
    dynamic_sampling: bool = False
    loss: LossConfig = field(default_factory=LossConfig)
    ref_model: str | None = None  # KL reference when loss.kl_coef > 0; default: the start model
    seed: int = 0
    checkpoint_every: int = 100
    keep_last_checkpoints: int | None = None
    token_dump_every: int = 0
    probe_first_minibatch: bool = (
        False  # single-step ΔH and the exact first-order term (trainer.py, costs V floats/token)
    )
    arm: str | None = None  # label of this run in a paired study (e.g. "null"); analyses fall back to the loss
    entropy_chunk: int = 1024
    device: str = "cpu"  # cpu | cuda | cuda:N | auto (checked against this machine when a run starts or resumes)
    dtype: str = "float32"  # weights (and optimizer state)
    autocast: str = "auto"  # forward passes: auto (bf16 on CUDA with float32 weights, off on the CPU) | bf16 | off
    threads: int | None = None
    # two CPU threads of work, one torch thread each: step s + 1 sampled beside step s's re-scoring, and a mini-batch's
    # micro-batches (micro_batch_size) two at a time; the numbers of a one-thread run
    sample_ahead: bool = False
    # keep freed memory in the C heap for reuse (glibc; utils/memory.py): no page faults on the gradient-sized
    # tensors every micro-batch allocates; the process then keeps its peak heap until it exits
    keep_freed_memory: bool = True
    # score each prompt and its completions as packed rows under a block mask (one decoder call per micro-batch;
    # rlvr/entropy.py) where the model type is checked for it; False: the prompt's KV cache copied to its rows
    pack_rows: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.loss, str):
            loss = LossConfig.from_recipe(self.loss) if self.loss in RECIPES else LossConfig(name=self.loss)
            object.__setattr__(self, "loss", loss)
        elif isinstance(self.loss, dict):
            object.__setattr__(self, "loss", _loss_from_dict(self.loss))
        if isinstance(self.stop_tokens, list | str):
            tokens = (self.stop_tokens,) if isinstance(self.stop_tokens, str) else tuple(self.stop_tokens)
            object.__setattr__(self, "stop_tokens", tokens)
        object.__setattr__(self, "adam_betas", tuple(self.adam_betas))
        if self.loss.aggregation == "constant-normalized" and self.loss.agg_constant is None:
            object.__setattr__(self, "loss", dataclasses.replace(self.loss, agg_constant=self.max_new_tokens))
        self._validate()

    def _validate(self) -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ConfigError(msg)

        need(self.task in TASKS, f"task={self.task!r} is not registered; choose one of {', '.join(sorted(TASKS))}")
        for name in ("n_eval", "eval_samples", "prompts_per_step", "group_size", "max_new_tokens", "steps"):
            value = getattr(self, name)
            need(isinstance(value, int) and value >= 1, f"{name}={value!r} must be a positive integer")
        for name in ("eval_every", "warmup_steps", "checkpoint_every", "token_dump_every", "seed"):
            value = getattr(self, name)
            need(isinstance(value, int) and value >= 0, f"{name}={value!r} must be an integer >= 0 (0 = off)")
        need(self.group_size >= 2 or self.adv_scale == "none", "group_size must be >= 2 for GRPO advantages")
        need(self.adv_scale in ("std", "none"), f"adv_scale={self.adv_scale!r}; choose 'std' or 'none'")
        need(self.adv_eps > 0, f"adv_eps={self.adv_eps} must be > 0 (default 1e-6)")
        need(self.prompt_format in ("auto", "chat", "raw"), "prompt_format must be 'auto', 'chat' or 'raw'")
        need(self.temperature > 0, f"temperature={self.temperature} must be > 0 for RL sampling (use 1.0)")
        need(self.lr > 0, f"lr={self.lr} must be > 0")
        need(self.weight_decay >= 0 and self.max_grad_norm > 0, "weight_decay >= 0 and max_grad_norm > 0")
        need(len(self.adam_betas) == 2 and all(0 <= b < 1 for b in self.adam_betas), "adam_betas: two in [0, 1)")
        need(self.lr_schedule in ("constant", "cosine"), "lr_schedule must be 'constant' or 'cosine'")
        batch = self.prompts_per_step * self.group_size
        need(
            isinstance(self.minibatches, int) and 1 <= self.minibatches <= batch,
            f"minibatches={self.minibatches} must be between 1 and prompts_per_step*group_size={batch}",
        )
        need(
            self.minibatch_split in ("rows", "groups"),
            f"minibatch_split={self.minibatch_split!r} must be 'rows' (shuffled completions) or 'groups' (whole "
            "prompt groups)",
        )
        need(
            self.minibatch_split == "rows" or self.minibatches <= self.prompts_per_step,
            f"minibatch_split='groups' needs minibatches={self.minibatches} <= prompts_per_step="
            f"{self.prompts_per_step} (each mini-batch holds whole groups); lower minibatches or split by rows",
        )
        need(
            self.micro_batch_size is None or self.micro_batch_size >= 1,
            f"micro_batch_size={self.micro_batch_size} must be >= 1 or null (whole mini-batch)",
        )
        need(self.keep_last_checkpoints is None or self.keep_last_checkpoints >= 1, "keep_last_checkpoints >= 1")
        need(self.entropy_chunk >= 1, f"entropy_chunk={self.entropy_chunk} must be >= 1")
        need(device_error(self.device, check_available=False) is None, str(device_error(self.device)))
        need(self.dtype in ("float32", "bfloat16", "float16"), "dtype must be float32, bfloat16 or float16")
        need(autocast_error(self.autocast) is None, str(autocast_error(self.autocast)))
        need(
            self.autocast != "bf16" or self.dtype == "float32",
            f"autocast='bf16' needs dtype='float32' weights (dtype={self.dtype!r} already computes in low precision); "
            "set dtype: float32 or autocast: off",
        )
        need(self.threads is None or self.threads >= 1, f"threads={self.threads} must be >= 1 or null")
        need(
            not self.sample_ahead or (self.threads in (None, 1) and self.device == "cpu"),
            f"sample_ahead runs two CPU threads of work with one torch thread each; set threads to null or 1 and "
            f"device to cpu (got threads={self.threads}, device={self.device!r}), or turn sample_ahead off",
        )

    # -------------------------------------------------------------------------------------- (de)serialise

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["loss"] = self.loss.to_dict()
        d["stop_tokens"] = list(self.stop_tokens)
        d["adam_betas"] = list(self.adam_betas)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RLVRConfig:
        """Build from a mapping; an unknown key is an error that names it and lists the valid ones."""
        if not isinstance(data, dict):
            raise ConfigError(f"an RLVR config must be a mapping of keys to values, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        for key in data:
            if key not in known:
                raise ConfigError(f"unknown RLVR config key {key!r}; valid keys: {', '.join(sorted(known))}")
        return cls(**data)

    @classmethod
    def from_yaml(cls, path: str | Path) -> RLVRConfig:
        """Read a YAML config file (see experiments/configs/rlvr_*.yaml)."""
        import yaml

        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} not found; pass the path of an rlvr_*.yaml file")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from e
        try:
            return cls.from_dict(data)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from e


NULL_ARM_LR_FACTOR = 1.01


def null_arm(cfg: RLVRConfig, lr_factor: float = NULL_ARM_LR_FACTOR) -> RLVRConfig:
    """The null arm of a paired study: `cfg` with lr × `lr_factor` (1.01), same seed, labelled arm="null". Its
    distance from `cfg`'s run is what chaos alone produces; an intervention must beat it to count."""
    if not lr_factor > 0:
        raise ConfigError(f"lr_factor={lr_factor} must be > 0 (the null arm uses 1.01)")
    return dataclasses.replace(cfg, lr=cfg.lr * lr_factor, arm="null")


def _loss_from_dict(data: dict[str, Any]) -> LossConfig:
    """A loss mapping; with `recipe: NAME` the recipe's values come first and the other keys override them."""
    known = {f.name for f in dataclasses.fields(LossConfig) if not f.name.startswith("_")}
    for key in data:
        if key not in known:
            raise ConfigError(f"unknown loss key {key!r}; valid keys: {', '.join(sorted(known))}")
    try:
        if data.get("recipe") is not None:
            rest = {k: v for k, v in data.items() if k != "recipe"}
            return LossConfig.from_recipe(data["recipe"], **rest)
        return LossConfig(**data)
    except ValueError as e:
        raise ConfigError(f"loss: {e}") from e
