"""Canonical sites hooked directly on a plain Hugging Face module tree (no backend): what a `SteeringVector`
uses on any HF causal LM, also inside `generate`. Semantics as in `posttrain_probe.pair.sites`:
resid_pre = the block's input, resid_post = its output, attn_out / mlp_out = what attention / the MLP add,
resid_mid = resid_pre + attn_out (written by changing attn_out by the difference)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from posttrain_probe.pair.arch import _get

INPUT_NORM_NAMES = ("input_layernorm", "ln_1", "self_attn_layer_norm")

Edit = Callable[[str, torch.Tensor], torch.Tensor]  # (site name, x (B, T, D)) -> new x


def register_site_hooks(hf: nn.Module, arch: Any, sites: Sequence[tuple[str, int]], edit: Edit) -> list[Any]:
    """Hook `edit` at each (kind, layer) of `sites` on the modules found by walking `arch`'s paths in the tree as
    it is now (a backend may have swapped submodules in place since `discover` ran). Returns the hook handles
    (call `.remove()` on each)."""
    layers = _get(hf, arch.layers_path)
    handles: list[Any] = []
    for kind, l in sites:
        block, name = layers[l], f"{kind}.{l}"
        if kind == "resid_pre":
            handles.append(block.register_forward_pre_hook(_pre_hook(edit, name), with_kwargs=True))
        elif kind == "resid_post":
            handles.append(block.register_forward_hook(_out_hook(edit, name)))
        elif kind in ("attn_out", "mlp_out"):
            mod = _get(block, arch.attn_out_name if kind == "attn_out" else arch.mlp_out_name)
            handles.append(mod.register_forward_hook(_out_hook(edit, name)))
        elif kind == "resid_mid":
            handles += _mid_hooks(block, arch, edit, name)
        else:
            raise ValueError(f"site kind {kind!r} cannot be hooked on an HF model; use a residual, attn_out or mlp_out")
    return handles


def _mid_hooks(block: nn.Module, arch: Any, edit: Edit, name: str) -> list[Any]:
    """resid_mid = resid_pre + attn_out; write it by changing attn_out by (new_mid − mid)."""
    attn = _get(block, arch.attn_out_name)
    in_norm = next((getattr(block, n) for n in INPUT_NORM_NAMES if hasattr(block, n)), None)
    if in_norm is None:
        raise ValueError(
            f"cannot find the input norm of {type(block).__name__} (looked for {', '.join(INPUT_NORM_NAMES)}); "
            "use site resid_pre or resid_post instead of resid_mid"
        )
    store: dict[str, torch.Tensor] = {}

    def grab(mod, args, kwargs):
        store["pre"] = args[0] if args else kwargs["hidden_states"]

    def edit_attn(mod, args, output):
        a = output[0] if isinstance(output, tuple) else output
        mid = store.pop("pre") + a
        new_a = a + (edit(name, mid) - mid)
        return (new_a, *output[1:]) if isinstance(output, tuple) else new_a

    return [in_norm.register_forward_pre_hook(grab, with_kwargs=True), attn.register_forward_hook(edit_attn)]


def _pre_hook(edit: Edit, name: str):
    def hook(mod, args, kwargs):
        if args:
            return (edit(name, args[0]), *args[1:]), kwargs
        kwargs = dict(kwargs)
        kwargs["hidden_states"] = edit(name, kwargs["hidden_states"])
        return args, kwargs

    return hook


def _out_hook(edit: Edit, name: str):
    def hook(mod, args, output):
        if isinstance(output, tuple):
            return (edit(name, output[0]), *output[1:])
        return edit(name, output)

    return hook
