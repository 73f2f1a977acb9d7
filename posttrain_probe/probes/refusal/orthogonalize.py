"""Weight orthogonalization (Arditi et al. 2024): bake directional ablation into the weights.

Every matrix that writes into the residual stream gets r̂ projected out of its output space: token (and, for
GPT-2, position) embeddings, each attention output projection and each MLP down-projection (weights and
biases). Then no component ever writes along r̂, which is what ablating r̂ at every resid_pre / resid_mid /
resid_post does at run time, so the two give the same logits up to float rounding.

A tied unembedding is untied first (the unembedding reads the normalised residual, whose r̂ component the
final norm's gain can bring back, so it must keep its original weights). Sandwich-norm blocks (Gemma-2/3)
renormalise after the output projection, so there the equality cannot hold: they are refused.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from posttrain_probe.pair import HookedModel, UnsupportedArchitectureError, discover
from posttrain_probe.pair.arch import _get
from posttrain_probe.utils.io import atomic_dir, atomic_write_json

_ATTN_OUT_PROJ = ("o_proj", "c_proj", "out_proj", "dense")
_POS_EMBED = ("transformer.wpe", "model.decoder.embed_positions")


def _project_rows(w: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """w (N, D) with r̂ removed from each row: w − (w r̂) r̂ᵀ (float64, cast back)."""
    wd = w.double()
    return (wd - (wd @ r)[:, None] * r[None, :]).to(w.dtype)


def _project_cols(w: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """w (D, N) with r̂ removed from each column's output: w − r̂ (r̂ᵀ w)."""
    wd = w.double()
    return (wd - r[:, None] * (r @ wd)[None, :]).to(w.dtype)


def _writer_out_proj(block: nn.Module, attn_name: str) -> nn.Module:
    attn = _get(block, attn_name)
    proj = next((getattr(attn, n) for n in _ATTN_OUT_PROJ if hasattr(attn, n)), None)
    if proj is None:
        raise UnsupportedArchitectureError(
            f"cannot find the attention output projection of {type(attn).__name__} "
            f"(looked for {', '.join(_ATTN_OUT_PROJ)}); weight orthogonalization needs it"
        )
    return proj


def _orthogonalize_linear(mod: nn.Module, r: torch.Tensor) -> None:
    """Project r̂ out of the output of a Linear (weight (D, in)) or a GPT-2 Conv1D (weight (in, D))."""
    w = mod.weight.data
    rr = r.to(device=w.device)
    if type(mod).__name__ == "Conv1D":
        mod.weight.data = _project_rows(w, rr)
    else:
        mod.weight.data = _project_cols(w, rr)
    b = getattr(mod, "bias", None)
    if b is not None:
        bd = b.data.double()
        b.data = (bd - (bd @ rr) * rr).to(b.dtype)


@torch.no_grad()
def orthogonalize_weights(hf_model: nn.Module, direction: torch.Tensor) -> dict[str, Any]:
    """Edit a raw HF causal LM in place so that nothing writes along `direction`; returns what was changed."""
    arch = discover(hf_model)
    if arch.mlp_out_name != "mlp":
        raise UnsupportedArchitectureError(
            f"{arch.model_type} renormalises block outputs (sandwich norms); weight orthogonalization is not "
            "equivalent to runtime ablation there — use runtime ablation (SteeringVector mode='ablate')"
        )
    if direction.ndim != 1 or direction.numel() != arch.d_model:
        raise ValueError(f"direction must have shape ({arch.d_model},), got {tuple(direction.shape)}")
    r = direction.double().cpu()
    if r.norm() == 0:
        raise ValueError("cannot orthogonalize against a zero direction")
    r = r / r.norm()
    changed = []
    embed = hf_model.get_input_embeddings()
    lm_head = hf_model.get_output_embeddings()
    untied = False
    if lm_head is not None and lm_head.weight is embed.weight:
        lm_head.weight = nn.Parameter(embed.weight.detach().clone())
        hf_model.config.tie_word_embeddings = False
        if hasattr(hf_model.config, "get_text_config"):
            hf_model.config.get_text_config().tie_word_embeddings = False
        untied = True
    embed.weight.data = _project_rows(embed.weight.data, r.to(embed.weight.device))
    changed.append("embed")
    for path in _POS_EMBED:
        pe = _get(hf_model, path)
        if isinstance(pe, nn.Embedding):
            pe.weight.data = _project_rows(pe.weight.data, r.to(pe.weight.device))
            changed.append(path)
    for l, block in enumerate(arch.modules["layers"]):
        _orthogonalize_linear(_writer_out_proj(block, arch.attn_out_name), r)
        _orthogonalize_linear(arch.modules["down_projs"][l], r)
    changed += [f"attn_out_proj x{arch.n_layers}", f"mlp_down_proj x{arch.n_layers}"]
    return {"changed": changed, "untied_lm_head": untied, "model_type": arch.model_type}


def orthogonalized_copy(model: HookedModel, direction: torch.Tensor) -> tuple[nn.Module, dict[str, Any]]:
    """A fresh copy of `model`'s checkpoint (same dtype and device) with `direction` orthogonalized out."""
    from transformers import AutoModelForCausalLM

    from posttrain_probe.utils.hf import no_hf_progress_bars

    src = model.provenance.get("resolved") or model.provenance.get("source")
    if not src:
        raise ValueError("the model has no source path in its provenance; load it with load_model")
    with no_hf_progress_bars():
        hf = AutoModelForCausalLM.from_pretrained(
            src,
            dtype=model.hf.dtype,
            use_safetensors=True,
            trust_remote_code=bool(model.provenance.get("trust_remote_code", False)),
            attn_implementation=model.provenance.get("attn_implementation") or "eager",
            revision=model.provenance.get("revision") if model.provenance.get("kind") == "hub" else None,
        )
    hf.to(model.device).eval()
    info = orthogonalize_weights(hf, direction)
    return hf, info


def export_orthogonalized(
    model: HookedModel,
    direction: torch.Tensor,
    out_dir: str | os.PathLike,
    metadata: dict | None = None,
    overwrite: bool = False,
) -> Path:
    """Write an HF checkpoint (safetensors + tokenizer + `orthogonalization.json`) of `model` with
    `direction` projected out of its writing weights; loads with `AutoModelForCausalLM`."""
    from posttrain_probe.steering import tensor_sha256
    from posttrain_probe.utils.hf import no_hf_progress_bars

    hf, info = orthogonalized_copy(model, direction)
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        with no_hf_progress_bars():
            hf.save_pretrained(tmp, safe_serialization=True)
            model.tokenizer.save_pretrained(tmp)
        atomic_write_json(
            Path(tmp) / "orthogonalization.json",
            {
                "source": model.provenance.get("source"),
                "source_weights_sha256": model.provenance.get("weights_sha256"),
                "direction_sha256": tensor_sha256(direction.detach().float().cpu()),
                "direction_norm": float(direction.float().norm()),
                **info,
                **(metadata or {}),
            },
        )
    return Path(out_dir)
