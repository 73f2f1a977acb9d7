"""Paired multi-seed RLVR studies: arms × seeds of one base config, with common random numbers.

An *arm* is one intervention: a loss (a `LossConfig` mapping or a recipe) and a learning-rate factor. A paired
study trains every arm on the same seeds; a run's seed fixes its prompts, sampling uniforms, mini-batch splits and
evaluation uniforms per step (trainer.py), so two arms with the same seed differ only by their intervention. Each
run is labelled `<arm>_seed<k>` (its `RLVRConfig.arm`), which is how the analyses pair them.

    ARMS["null"]              GRPO with lr × 1.01: how far two runs drift apart by chaos alone
    paired_configs(cfg, ["grpo", "null", "clip_cov"], seeds=range(5))   # {label: RLVRConfig}
    dose_arms("clip_cov:clip_cov_ratio=0.005,0.08")                    # arms clip_cov@clip_cov_ratio=0.005, ...

Every arm has a *baseline*, the arm its entropy is compared with: GRPO for the Cui et al. interventions and for
STEER as the demo runs it (vanilla clip), and the vanilla loss under the same clip settings (clip-higher 0.28 and
dual-clip 10, `steer_baseline_paper`) for the official STEER recipes, as Hao et al. compare them.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from posttrain_probe.rlvr.config import NULL_ARM_LR_FACTOR, ConfigError, RLVRConfig, _loss_from_dict


@dataclass(frozen=True)
class Arm:
    """One intervention of a paired study. `loss` is a loss mapping (as in YAML: `name` and overrides, or `recipe`
    and overrides); `baseline` names the arm its entropy ratio is taken against; `method` and `dose` place a
    dose–response arm (`clip_cov`, (`clip_cov_ratio`, 0.05)); `about` says what it is in one line."""

    name: str
    loss: dict[str, Any] = field(default_factory=lambda: {"name": "grpo"})
    lr_factor: float = 1.0
    baseline: str = "grpo"
    method: str | None = None
    dose: tuple[str, float] | None = None
    about: str = ""

    def __post_init__(self) -> None:
        if not _ARM_NAME.match(self.name) or "_seed" in self.name:
            raise ConfigError(
                f"arm name {self.name!r} must use letters, digits, '_', '@', '=', '.', '-' and not contain '_seed'"
            )
        if not self.lr_factor > 0:
            raise ConfigError(f"arm {self.name}: lr_factor={self.lr_factor} must be > 0")
        _loss_from_dict(dict(self.loss))  # a bad loss mapping fails here, naming the key

    def config(self, base: RLVRConfig, seed: int) -> RLVRConfig:
        """`base` with this arm's loss and learning rate, `seed`, and the label `<name>_seed<seed>`."""
        loss = _loss_from_dict(dict(self.loss))
        return dataclasses.replace(base, loss=loss, lr=base.lr * self.lr_factor, seed=seed, arm=label(self.name, seed))


_ARM_NAME = re.compile(r"^[A-Za-z0-9_@=.\-]+$")
_LABEL = re.compile(r"^(?P<arm>.+?)_seed(?P<k>\d+)$")

ARMS: dict[str, Arm] = {
    a.name: a
    for a in (
        Arm("grpo", {"name": "grpo"}, about="GRPO (PPO clip 0.2, no intervention): the baseline"),
        Arm(
            "null",
            {"name": "grpo"},
            lr_factor=NULL_ARM_LR_FACTOR,
            about="GRPO with lr × 1.01: the distance two runs drift apart by chaos alone",
        ),
        Arm("clip_higher", {"name": "clip_higher"}, about="clip-higher (ε_high 0.28, DAPO)"),
        Arm("entropy_bonus", {"name": "entropy_bonus"}, about="GRPO + entropy bonus (coefficient 0.001)"),
        Arm("clip_cov", {"name": "clip_cov"}, method="clip_cov", about="Clip-Cov, toy preset (r = 0.02)"),
        Arm("kl_cov", {"name": "kl_cov"}, method="kl_cov", about="KL-Cov, toy preset (k = 0.05, β = 1)"),
        Arm("steer", {"name": "steer"}, method="steer", about="STEER exp mapping (λ_min 0.8) with vanilla clip 0.2"),
        Arm("clip_cov_paper", {"recipe": "clip_cov_paper"}, about="Clip-Cov as Cui et al.'s script sets it"),
        Arm("kl_cov_paper", {"recipe": "kl_cov_paper"}, about="KL-Cov as Cui et al.'s script sets it"),
        Arm(
            "steer_baseline_paper",
            {"recipe": "steer_baseline_paper"},
            about="the vanilla loss under STEER's clip settings (clip-higher 0.28, dual-clip 10)",
        ),
        Arm(
            "steer_paper",
            {"recipe": "steer_paper"},
            baseline="steer_baseline_paper",
            about="STEER exactly as run_exp.sh (exp mapping, clip-higher 0.28, dual-clip 10)",
        ),
        Arm(
            "steer_linear_paper",
            {"recipe": "steer_linear_paper"},
            baseline="steer_baseline_paper",
            about="STEER's linear variant as run_linear.sh (min–max onto [0.8, 1.2])",
        ),
    )
}

# The one-command dose–response sweep (Clip-Cov's ratio, KL-Cov's β and k, STEER's λ_min): values around the toy
# presets, whose own value is the method's plain arm (e.g. clip_cov at r = 0.02).
DOSES: dict[str, dict[str, tuple[float, ...]]] = {
    "clip_cov": {"clip_cov_ratio": (0.005, 0.02, 0.08)},
    "kl_cov": {"kl_cov_coef": (0.25, 1.0, 4.0), "kl_cov_ratio": (0.01, 0.05, 0.2)},
    "steer": {"steer_lambda_min": (0.5, 0.8, 0.95)},
}


def label(arm: str, seed: int) -> str:
    """The run label of `arm` at `seed`: '<arm>_seed<seed>'."""
    return f"{arm}_seed{seed}"


def parse_label(text: str) -> tuple[str, int]:
    """('clip_cov', 3) for 'clip_cov_seed3'; (text, 0) for a label without a seed (a single run)."""
    m = _LABEL.match(text)
    return (m["arm"], int(m["k"])) if m else (text, 0)


def dose_arm(method: str, param: str, value: float) -> Arm:
    """The arm of `method` (a plain arm with a `method`, e.g. clip_cov) with its loss setting `param` = `value`."""
    plain = ARMS.get(method)
    if plain is None or plain.method != method:
        known = sorted(a.method for a in ARMS.values() if a.method)
        raise ConfigError(f"no dose–response for {method!r}; choose one of {', '.join(known)}")
    loss = {**plain.loss, param: value}
    name = f"{method}@{param}={value:g}"
    try:
        about = f"{method}, {param} = {value:g}"
        return dataclasses.replace(plain, name=name, loss=loss, dose=(param, float(value)), about=about)
    except ConfigError as e:
        raise ConfigError(f"dose {name}: {e}") from e


def dose_arms(spec: str | None = None) -> list[Arm]:
    """The arms of a dose–response sweep. `spec` is 'METHOD:PARAM=V1,V2[;METHOD:PARAM=...]' or None for `DOSES`.
    A dose equal to the method's own default is its plain arm (named e.g. 'clip_cov'), so it is trained once."""
    doses: dict[str, dict[str, tuple[float, ...]]] = {}
    if spec is None:
        doses = DOSES
    else:
        for part in filter(None, (p.strip() for p in spec.split(";"))):
            method, _, rest = part.partition(":")
            param, _, values = rest.partition("=")
            try:
                vals = tuple(float(v) for v in values.split(",") if v.strip())
            except ValueError:
                vals = ()
            if not (method and param and vals):
                raise ConfigError(f"dose {part!r}: write METHOD:PARAM=V1,V2 (e.g. clip_cov:clip_cov_ratio=0.005,0.08)")
            doses.setdefault(method.strip(), {})[param.strip()] = vals
    out: list[Arm] = []
    for method, params in doses.items():
        for param, values in params.items():
            for v in values:
                arm = dose_arm(method, param, v)
                plain = ARMS[method]
                same = _loss_from_dict(dict(arm.loss)) == _loss_from_dict(dict(plain.loss))
                out.append(dataclasses.replace(plain, dose=(param, float(v))) if same else arm)
    return out


def resolve_arms(names: Iterable[str | Arm]) -> list[Arm]:
    """Arms by name (`ARMS`, or 'METHOD@PARAM=VALUE' for one dose), in order, without repeats; an unknown name is
    an error that lists the known ones."""
    out: dict[str, Arm] = {}
    for n in names:
        if isinstance(n, Arm):
            arm = n
        elif n in ARMS:
            arm = ARMS[n]
        elif "@" in n and "=" in n:
            method, _, rest = n.partition("@")
            param, _, value = rest.partition("=")
            try:
                arm = dose_arm(method, param, float(value))
            except ValueError as e:
                raise ConfigError(f"arm {n!r}: {e}") from e
        else:
            raise ConfigError(f"unknown arm {n!r}; choose from {', '.join(ARMS)} or METHOD@PARAM=VALUE")
        out.setdefault(arm.name, arm)
    return list(out.values())


def with_baselines(arms: Sequence[Arm]) -> list[Arm]:
    """`arms` plus every baseline they name (first), so each ratio has its denominator in the study."""
    names = [a.name for a in arms]
    missing = [b for b in dict.fromkeys(a.baseline for a in arms) if b not in names]
    return resolve_arms([*missing, *arms])


def paired_configs(base: RLVRConfig, arms: Iterable[str | Arm], seeds: Sequence[int]) -> dict[str, RLVRConfig]:
    """{label: config} of every arm at every seed (arms' baselines added), labels '<arm>_seed<k>'."""
    seeds = list(seeds)
    if not seeds or len(set(seeds)) != len(seeds) or any(not isinstance(k, int) or k < 0 for k in seeds):
        raise ConfigError(f"seeds={seeds} must be distinct integers >= 0 (e.g. 0 1 2)")
    return {label(a.name, k): a.config(base, k) for a in with_baselines(resolve_arms(arms)) for k in seeds}


def arm_info(name: str) -> Arm:
    """The `Arm` behind an arm name found in a run label (a registered arm, a dose arm, or an unknown name, which
    is taken as its own arm with GRPO as baseline)."""
    try:
        return resolve_arms([name])[0]
    except ConfigError:
        return Arm(name if _ARM_NAME.match(name) and "_seed" not in name else "unknown")


__all__ = [
    "ARMS",
    "DOSES",
    "Arm",
    "arm_info",
    "dose_arm",
    "dose_arms",
    "label",
    "paired_configs",
    "parse_label",
    "resolve_arms",
    "with_baselines",
]
