"""Internal change across a checkpoint series (base → checkpoints → final), all lined up by training step.

Pure pieces: relative weight change per module read straight from safetensors (no model forward), linear CKA
between two activation matrices, cosine drift of difference-in-means directions. `compare_checkpoints` composes
them with the probes and writes one `RunResult`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open


def _tensors(model_dir: str | Path) -> dict[str, torch.Tensor]:
    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors in {model_dir}; pass an HF checkpoint directory")
    out: dict[str, torch.Tensor] = {}
    for f in files:
        with safe_open(str(f), framework="pt") as sf:
            for k in sf.keys():
                out[k] = sf.get_tensor(k)
    return out


def module_of(param_name: str) -> str:
    """Group parameter names into modules: 'model.layers.3.mlp.down_proj.weight' -> 'layers.3.mlp'."""
    parts = param_name.split(".")
    if "layers" in parts or "h" in parts:
        i = parts.index("layers") if "layers" in parts else parts.index("h")
        sub = parts[i + 2] if len(parts) > i + 2 else ""
        kind = "attn" if "attn" in sub else "mlp" if "mlp" in sub else "norm"
        return f"layers.{parts[i + 1]}.{kind}"
    if "embed" in param_name or "wte" in param_name or "wpe" in param_name:
        return "embed"
    if "lm_head" in param_name:
        return "unembed"
    return "final_norm" if "norm" in param_name or "ln_f" in param_name else parts[0]


def relative_weight_change(start_dir: str | Path, other_dir: str | Path) -> dict[str, float]:
    """‖W_other − W_start‖_F / ‖W_start‖_F per module (parameters of a module pooled)."""
    a, b = _tensors(start_dir), _tensors(other_dir)
    if set(a) != set(b):
        missing = sorted(set(a) ^ set(b))[:3]
        raise ValueError(
            f"checkpoints have different parameter names (e.g. {missing}); compare checkpoints of one run"
        )
    num: dict[str, float] = {}
    den: dict[str, float] = {}
    for k in a:
        m = module_of(k)
        wa, wb = a[k].double(), b[k].double()
        num[m] = num.get(m, 0.0) + float(((wb - wa) ** 2).sum())
        den[m] = den.get(m, 0.0) + float((wa**2).sum())
    return {m: float(np.sqrt(num[m] / den[m])) if den[m] > 0 else float("nan") for m in sorted(num)}


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA (Kornblith et al. 2019) between activations x (N, D1) and y (N, D2) of the same N inputs."""
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"CKA needs the same inputs: got {x.shape[0]} and {y.shape[0]} rows")
    x = x.double() - x.double().mean(0, keepdim=True)
    y = y.double() - y.double().mean(0, keepdim=True)
    hsic = (x.T @ y).pow(2).sum()
    norm = torch.sqrt((x.T @ x).pow(2).sum() * (y.T @ y).pow(2).sum())
    return float(hsic / norm) if norm > 0 else float("nan")


def diff_in_means(acts: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """mean(acts | label 1) − mean(acts | label 0); acts (N, D), labels (N,)."""
    labels = labels.bool()
    if labels.all() or (~labels).all():
        raise ValueError("difference in means needs both classes; pass labelled examples of each")
    return acts[labels].double().mean(0) - acts[~labels].double().mean(0)


def cosine(u: torch.Tensor, v: torch.Tensor) -> float:
    u, v = u.double().flatten(), v.double().flatten()
    return float(u @ v / (u.norm() * v.norm()).clamp_min(1e-30))
