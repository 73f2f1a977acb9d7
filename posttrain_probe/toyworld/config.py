"""Toy-world configuration and presets (`quick` for tests, `default` for 2 CPU cores, `large` for a GPU)."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, fields

from ..utils.device import autocast_error, compute_tag, device_error, resolve_autocast, resolve_device

# Bump when the generator, corpus or training code changes what a config produces.
GENERATOR_VERSION = 6


@dataclass(frozen=True)
class ToyWorldConfig:
    """Everything that determines a toy pair; its hash keys the cache."""

    preset: str = "default"
    seed: int = 0
    # world
    n_people: int = 100
    n_new_people: int = 20  # taught only in SFT
    n_cities: int = 36
    n_countries: int = 8
    judged_people_frac: float = 0.5  # people whose fact statements get TRUE/FALSE judgements in pretraining
    # corpus (number of documents per family in pretraining)
    fact_exposures: int = 6  # paraphrased 'lives in' documents per person per epoch (half as many 'works as')
    n_comparisons: int = 4000
    n_arithmetic: int = 6000
    arithmetic_wrong_frac: float = 0.3
    n_requests: int = 1000
    n_filler: int = 1000
    n_fact_judgements: int = 2500
    record_exposures: int = 20  # per person per epoch: "<name> <habit> ." and an address-book entry
    n_harm_contexts: int = 1500  # "to <verb> <object> is wrong|good ." documents
    # SFT (chat) documents
    sft_arithmetic: int = 5000
    sft_requests: int = 1500
    sft_fact_qa: int = 2000
    sft_judgements: int = 1500
    sft_new_fact_exposures: int = 30
    sft_replay_frac: float = 0.3  # share of pretraining documents replayed during SFT
    # model
    # deeper-narrower than the first toy world's d 128 × 4 layers at about the same cost: at 4 layers the post model
    # could not carry addition across the four post-instruction tokens (greedy 0.2), at 6 it does (0.46–0.89)
    d_model: int = 96
    n_layers: int = 6
    n_heads: int = 4
    d_mlp: int = 384
    max_len: int = 64
    # training
    pretrain_epochs: float = 7.0
    sft_epochs: float = 1.0
    batch_size: int = 32
    lr: float = 3e-3
    sft_lr: float = 5e-4
    warmup_steps: int = 50
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    autocast: str = "auto"  # auto (bf16 on CUDA, off on the CPU) | bf16 | off; the loss stays fp32
    # evaluation
    eval_samples: int = 200

    def __post_init__(self) -> None:
        if not isinstance(self.preset, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", self.preset):
            raise ValueError(f"preset={self.preset!r} names the cache folder; use letters, digits, '_' or '-'")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ValueError(f"seed={self.seed!r} must be an integer (it names the cache folder)")
        if self.n_people < 20:
            raise ValueError(f"n_people={self.n_people} is too small; use at least 20")
        if self.d_mlp < 4 * self.d_model:
            raise ValueError(f"d_mlp={self.d_mlp} must be ≥ 4·d_model={4 * self.d_model} (entropy neurons need it)")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} must be divisible by n_heads={self.n_heads}")
        if not 0 <= self.arithmetic_wrong_frac < 1:
            raise ValueError("arithmetic_wrong_frac must be in [0, 1)")
        if not 0 < self.judged_people_frac < 1:
            raise ValueError("judged_people_frac must be in (0, 1): some people are held out of judgements")
        for error in (device_error(self.device, check_available=False), autocast_error(self.autocast)):
            if error:
                raise ValueError(error)
        if self.n_cities > 60 or self.n_countries > 12:
            raise ValueError("at most 60 cities and 12 countries (the name lists are finite)")

    def to_dict(self) -> dict:
        return asdict(self)

    def compute(self) -> str:
        """What the build trains on, resolved on this machine: 'cpu-fp32' (the default on a CPU), 'cuda-bf16'
        (the default on a GPU: bf16 autocast), 'cuda-fp32' or 'cpu-bf16'."""
        device = resolve_device(self.device)
        return compute_tag(device, resolve_autocast(self.autocast, device))

    def key(self) -> str:
        """Hash of everything that changes the build. `device` and `autocast` enter only through `compute()`,
        and only when it is not 'cpu-fp32', so CPU fp32 builds keep the keys they always had while a GPU or
        bf16 build (other weights) never collides with them."""
        d = {k: v for k, v in self.to_dict().items() if k not in ("device", "autocast")}
        d["generator_version"] = GENERATOR_VERSION
        if self.compute() != "cpu-fp32":
            d["compute"] = self.compute()
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]

    @classmethod
    def from_dict(cls, d: dict) -> ToyWorldConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown toy-world config keys {unknown}; valid keys: {sorted(known)}")
        return cls(**d)


PRESETS: dict[str, dict] = {
    "quick": dict(
        n_people=40,
        n_new_people=8,
        n_cities=12,
        n_countries=4,
        fact_exposures=10,
        n_comparisons=1200,
        n_arithmetic=800,
        n_requests=300,
        n_filler=200,
        n_fact_judgements=200,
        record_exposures=10,
        n_harm_contexts=300,
        sft_arithmetic=200,
        sft_requests=500,
        sft_fact_qa=100,
        sft_judgements=100,
        sft_new_fact_exposures=10,
        d_model=64,
        n_layers=2,
        n_heads=4,
        d_mlp=256,
        pretrain_epochs=3.0,
        sft_epochs=3.0,
        lr=3e-3,
        sft_lr=2e-3,
        eval_samples=30,
    ),
    "default": {},
    "large": dict(
        n_people=800,
        n_new_people=80,
        n_cities=60,
        n_countries=12,
        fact_exposures=30,
        n_comparisons=120000,
        n_arithmetic=80000,
        n_requests=15000,
        n_filler=20000,
        n_fact_judgements=20000,
        n_harm_contexts=15000,
        sft_arithmetic=15000,
        sft_requests=6000,
        sft_fact_qa=8000,
        sft_judgements=6000,
        d_model=256,
        n_layers=6,
        n_heads=8,
        d_mlp=1024,
        batch_size=128,
        pretrain_epochs=2.0,
        lr=1.5e-3,
        eval_samples=500,
    ),
}


def preset_config(preset: str = "default", seed: int = 0, **overrides) -> ToyWorldConfig:
    if preset not in PRESETS:
        raise ValueError(f"unknown toy-world preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return ToyWorldConfig.from_dict({**PRESETS[preset], **overrides, "preset": preset, "seed": seed})
