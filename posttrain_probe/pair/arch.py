"""Find the modules behind the canonical sites in a Hugging Face causal LM.

Discovery is by attribute names of the HF implementations (Llama/Qwen2/Mistral/Gemma/Gemma-2/3 share
one layout, GPT-2 another). References to the modules and parameters are taken before any backend
wraps the model, so they stay valid afterwards (the TransformerLens bridge swaps submodules in place
but keeps the same parameter tensors).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn


class UnsupportedArchitectureError(ValueError):
    """The model's module layout is not one we know how to hook."""


def _get(obj: object, path: str):
    for part in path.split("."):
        if obj is None:
            return None
        obj = getattr(obj, part, None)
    return obj


_LAYER_PATHS = ("model.layers", "transformer.h", "gpt_neox.layers", "model.decoder.layers", "layers")
_FINAL_NORM_PATHS = (
    "model.norm",
    "transformer.ln_f",
    "gpt_neox.final_layer_norm",
    "model.decoder.final_layer_norm",
)
_ATTN_NAMES = ("self_attn", "attn", "attention")
_DOWN_NAMES = ("down_proj", "c_proj", "fc2", "dense_4h_to_h", "fc_out")
_MID_NORM_NAMES = ("pre_feedforward_layernorm", "post_attention_layernorm", "ln_2", "final_layer_norm")


@dataclass
class ArchInfo:
    """Module paths (relative to the HF model) and shapes of one causal LM."""

    model_type: str
    layers_path: str
    final_norm_path: str
    attn_out_name: str  # module (inside a block) whose output is added to the residual after attention
    mlp_out_name: str  # module whose output is added to the residual after the MLP
    mid_norm_name: str  # the MLP's pre-norm; its input is resid_mid
    down_proj_name: str  # the MLP down-projection; its input is mlp_act
    n_layers: int
    d_model: int
    d_mlp: int
    n_heads: int
    vocab_size: int
    down_proj_is_conv1d: bool = False  # GPT-2's Conv1D stores the weight as (in, out)
    modules: dict[str, object] = field(default_factory=dict, repr=False)

    def block_module(self, layer: int, name: str) -> nn.Module:
        return self.modules["layers"][layer] if name == "" else _get(self.modules["layers"][layer], name)

    def shapes(self) -> dict[str, int]:
        return {
            "n_layers": self.n_layers,
            "d_model": self.d_model,
            "d_mlp": self.d_mlp,
            "n_heads": self.n_heads,
            "vocab_size": self.vocab_size,
        }

    def neuron_out_weights(self, layer: int) -> torch.Tensor:
        """Rows are neurons: (M, D) output vectors of the MLP down-projection of `layer`."""
        w = self.modules["down_projs"][layer].weight
        return w.detach() if self.down_proj_is_conv1d else w.detach().T

    def unembed_weights(self) -> torch.Tensor:
        """W_U as (D, V)."""
        return self.modules["lm_head"].weight.detach().T


def discover(model: nn.Module) -> ArchInfo:
    """Describe `model` (a raw HF causal LM, before any backend wraps it)."""
    cfg = model.config
    model_type = getattr(cfg, "model_type", type(model).__name__)
    if getattr(cfg, "is_encoder_decoder", False):
        raise UnsupportedArchitectureError(
            f"{type(model).__name__} is encoder-decoder; posttrain_probe needs a decoder-only causal LM"
        )
    if getattr(cfg, "use_parallel_residual", False) or getattr(cfg, "parallel_attn", False):
        raise UnsupportedArchitectureError(
            f"{model_type} uses parallel attention+MLP blocks (no resid_mid); pick a sequential architecture"
        )
    layers_path = next((p for p in _LAYER_PATHS if isinstance(_get(model, p), nn.ModuleList)), None)
    if layers_path is None:
        raise UnsupportedArchitectureError(
            f"cannot find the decoder blocks of {type(model).__name__} (looked for {', '.join(_LAYER_PATHS)})"
        )
    layers = _get(model, layers_path)
    block = layers[0]
    attn_name = next((n for n in _ATTN_NAMES if hasattr(block, n)), None)
    mlp = getattr(block, "mlp", None)
    down_name = next((n for n in _DOWN_NAMES if mlp is not None and hasattr(mlp, n)), None)
    final_norm_path = next((p for p in _FINAL_NORM_PATHS if _get(model, p) is not None), None)
    if attn_name is None or mlp is None or down_name is None or final_norm_path is None:
        raise UnsupportedArchitectureError(
            f"cannot map the blocks of {type(model).__name__} to canonical sites "
            f"(attention={attn_name}, mlp={'mlp' if mlp is not None else None}, down={down_name}, "
            f"final norm={final_norm_path})"
        )
    sandwich = hasattr(block, "pre_feedforward_layernorm") and hasattr(block, "post_feedforward_layernorm")
    attn_out_name = "post_attention_layernorm" if sandwich else attn_name
    mlp_out_name = "post_feedforward_layernorm" if sandwich else "mlp"
    mid_norm_name = next(n for n in _MID_NORM_NAMES if hasattr(block, n))
    down = getattr(mlp, down_name)
    is_conv1d = type(down).__name__ == "Conv1D"
    d_mlp = down.weight.shape[0] if is_conv1d else down.weight.shape[1]
    d_model = model.get_input_embeddings().weight.shape[1]
    n_heads = getattr(cfg, "num_attention_heads", None) or getattr(cfg, "n_head", None) or 0
    lm_head = model.get_output_embeddings()
    modules = {
        "layers": list(layers),
        "final_norm": _get(model, final_norm_path),
        "embed": model.get_input_embeddings(),
        "lm_head": lm_head,
        "down_projs": [getattr(b.mlp, down_name) for b in layers],
        "attn_outs": [_get(b, attn_out_name) for b in layers],
        "mlp_outs": [_get(b, mlp_out_name) for b in layers],
        "mid_norms": [_get(b, mid_norm_name) for b in layers],
    }
    return ArchInfo(
        model_type=model_type,
        layers_path=layers_path,
        final_norm_path=final_norm_path,
        attn_out_name=attn_out_name,
        mlp_out_name=mlp_out_name,
        mid_norm_name=mid_norm_name,
        down_proj_name=f"mlp.{down_name}",
        n_layers=len(layers),
        d_model=d_model,
        d_mlp=d_mlp,
        n_heads=n_heads,
        vocab_size=lm_head.weight.shape[0],
        down_proj_is_conv1d=is_conv1d,
        modules=modules,
    )
