"""Mean ablation of MLP neurons with total and direct effects (Stolfo et al. 2024; SPEC §3), written directly
as an oracle for `posttrain_probe.probes.neurons.ablate`.

Independent of `posttrain_probe`: plain forward hooks on a Hugging Face model, one text at a time without
padding. A neuron's activation is the input of the MLP's down projection (`down_proj`, GPT-2's `c_proj`);
ablating it sets it to its mean over the reference texts at every position. The direct effect freezes the
final norm's divisor at its clean value: RMSNorm divides by √(mean x² + ε), LayerNorm by √(var x + ε) after
centering (TransformerLens's `hook_scale`). Statistics: next-token entropy (nats) and loss at every position
that has a next token, averaged per text.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from .naive_tracing import _hooks, blocks


def down_proj(block: nn.Module) -> nn.Module:
    """The MLP's down projection of a Llama-style or GPT-2 block."""
    return block.mlp.down_proj if hasattr(block.mlp, "down_proj") else block.mlp.c_proj


def final_norm(model: nn.Module) -> nn.Module:
    return model.model.norm if hasattr(model, "model") else model.transformer.ln_f


def _divisor(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(B, T, 1) what the norm divides by."""
    x = x.float()
    if isinstance(norm, nn.LayerNorm):
        return (x.var(-1, unbiased=False, keepdim=True) + norm.eps).sqrt()
    eps = getattr(norm, "variance_epsilon", getattr(norm, "eps", 1e-6))
    return (x.pow(2).mean(-1, keepdim=True) + eps).sqrt()


def _normalize(norm: nn.Module, x: torch.Tensor, divisor: torch.Tensor) -> torch.Tensor:
    x = x.float()
    if isinstance(norm, nn.LayerNorm):
        return (x - x.mean(-1, keepdim=True)) / divisor * norm.weight + norm.bias
    return norm.weight * (x / divisor)


@torch.no_grad()
def neuron_means(model: nn.Module, tokenizer, texts: Sequence[str], layer: int) -> torch.Tensor:
    """(M,) mean down-projection input of `layer` over every token of `texts`, each run alone."""
    rows = []

    def hook(mod, args):
        rows.append(args[0][0].double())

    with _hooks([down_proj(blocks(model)[layer]).register_forward_pre_hook(hook)]):
        for text in texts:
            model(input_ids=tokenizer(text, return_tensors="pt")["input_ids"])
    return torch.cat(rows).mean(0).float()


@torch.no_grad()
def logits(
    model: nn.Module, ids: torch.Tensor, layer: int, neurons: Sequence[int], means: torch.Tensor, direct: bool
) -> torch.Tensor:
    """Logits (1, T, V) of one text `ids` (1, T) with `neurons` of `layer` set to their means; with `direct` the
    final norm divides by its clean divisor."""
    norm = final_norm(model)
    clean_div = {}

    def record(mod, args, out):
        clean_div["d"] = _divisor(mod, args[0])

    if direct:
        with _hooks([norm.register_forward_hook(record)]):
            model(input_ids=ids)
    idx = list(neurons)

    def ablate(mod, args):
        x = args[0].clone()
        x[..., idx] = means[idx].to(x.dtype)
        return (x, *args[1:])

    def freeze(mod, args, out):
        return _normalize(mod, args[0], clean_div["d"]).to(out.dtype)

    handles = [down_proj(blocks(model)[layer]).register_forward_pre_hook(ablate)]
    if direct:
        handles.append(norm.register_forward_hook(freeze))
    with _hooks(handles):
        return model(input_ids=ids).logits.float()


def _stats(logits: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Entropy and loss (T-1,) of the predictions of tokens 1..T-1."""
    logp = torch.log_softmax(logits[0, :-1], -1)
    entropy = -(logp.exp() * logp).sum(-1)
    loss = -logp.gather(-1, ids[0, 1:, None])[:, 0]
    return entropy, loss


@torch.no_grad()
def ablation_effects(
    model: nn.Module,
    tokenizer,
    texts: Sequence[str],
    layer: int,
    conditions: Sequence[Sequence[int]],
    means: torch.Tensor,
) -> tuple[np.ndarray, np.ndarray]:
    """(clean (N, 2): per-text mean entropy and loss; effects (C, 2, 3, N): per condition, copy (total,
    direct) and metric (ΔH, ΔL, |ΔH|) the per-text means)."""
    clean = np.zeros((len(texts), 2))
    effects = np.zeros((len(conditions), 2, 3, len(texts)))
    for n, text in enumerate(texts):
        ids = tokenizer(text, return_tensors="pt")["input_ids"]
        h0, l0 = _stats(model(input_ids=ids).logits.float(), ids)
        clean[n] = [h0.mean().item(), l0.mean().item()]
        for c, neurons in enumerate(conditions):
            for copy, direct in enumerate((False, True)):
                h, loss = _stats(logits(model, ids, layer, neurons, means, direct), ids)
                effects[c, copy, :, n] = [(h - h0).mean(), (loss - l0).mean(), (h - h0).abs().mean()]
    return clean, effects
