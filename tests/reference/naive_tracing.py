"""ROME causal tracing (Meng et al. 2022; SPEC §1a) written directly, as an oracle for the batched engine.

Independent of `posttrain_probe`: plain PyTorch forward hooks on a Hugging Face `AutoModelForCausalLM`'s
modules, no canonical sites, no interventions, no restoration engine, no noise helpers. One full forward per
(token, layer, kind), the noise samples as the batch. The conventions it follows are the documented ones
(`posttrain_probe/probes/tracing/core.py`, module docstring):

- noise is added to the residual stream entering block 0 (the input of the first decoder layer: the token
  embedding as the blocks see it, position embedding and embedding scaling included), on the subject tokens
  only; noise = σ·z, z ~ N(0, 1) of shape (n_samples, n_subject_tokens, d_model) from a CPU
  `torch.Generator` seeded with `seed * 1_000_003 + fact_index`, drawn in one `torch.randn` call;
- p = softmax of the last position's logits at the answer token, averaged over the noise samples;
- "resid" restores the output of block l at token t; "mlp" / "attn" restore the MLP / attention output
  (what the sublayer adds to the residual) at token t in every layer of the window of `window` layers
  centred on l: [l − window//2, l + ⌈window/2⌉) clipped to the model;
- IE(t, l) = p_restored − p_corrupted; the embedding std σ₀ is the std of every entry of the block-0 input
  over the reference texts tokenized without special tokens.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager

import torch
from torch import nn

KINDS = ("resid", "mlp", "attn")


def blocks(model: nn.Module) -> nn.ModuleList:
    """The decoder layers of a Llama/Qwen2/Gemma-style (`model.model.layers`) or GPT-2 (`transformer.h`) model."""
    inner = model.model if hasattr(model, "model") else model.transformer
    return inner.layers if hasattr(inner, "layers") else inner.h


def sublayer(block: nn.Module, kind: str) -> nn.Module:
    """The module whose output is what the MLP / attention adds to the residual (after Gemma-2's post norms)."""
    gemma2 = hasattr(block, "pre_feedforward_layernorm")  # Gemma-2 normalizes both sublayer outputs
    if kind == "mlp":
        return block.post_feedforward_layernorm if gemma2 else block.mlp
    if gemma2:
        return block.post_attention_layernorm
    return block.self_attn if hasattr(block, "self_attn") else block.attn


def window(layer: int, n_layers: int, size: int) -> list[int]:
    """`size` layers centred on `layer` (ROME: layer − size//2 up to layer + ⌈size/2⌉), clipped to the model."""
    return [j for j in range(layer - size // 2, layer + math.ceil(size / 2)) if 0 <= j < n_layers]


def noise(fact_index: int, n_samples: int, n_subject: int, d_model: int, seed: int) -> torch.Tensor:
    """z ~ N(0, 1) (n_samples, n_subject, d_model) for one fact, the same for every model."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + fact_index)
    return torch.randn(n_samples, n_subject, d_model, generator=g)


def _hidden(out):
    return out[0] if isinstance(out, tuple) else out


def _replace(out, value: torch.Tensor):
    return (value, *out[1:]) if isinstance(out, tuple) else value


@contextmanager
def _hooks(handles: Iterable[torch.utils.hooks.RemovableHandle]):
    handles = list(handles)
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _add_to_block0_input(model: nn.Module, add: torch.Tensor):
    """Forward pre-hook on block 0 adding `add` (B, T, D) to its hidden-states input."""

    def hook(module, args, kwargs):
        if args:
            return (args[0] + add.to(args[0].dtype), *args[1:]), kwargs
        kwargs = dict(kwargs)
        kwargs["hidden_states"] = kwargs["hidden_states"] + add.to(kwargs["hidden_states"].dtype)
        return args, kwargs

    return blocks(model)[0].register_forward_pre_hook(hook, with_kwargs=True)


def _set_positions(module: nn.Module, positions: Sequence[int], value: torch.Tensor):
    """Forward hook writing `value` (len(positions), D) into those positions of the module's output, every row."""

    def hook(mod, args, out):
        h = _hidden(out).clone()
        h[:, list(positions)] = value.to(h.dtype)
        return _replace(out, h)

    return module.register_forward_hook(hook)


def _record(modules: dict[str, nn.Module], store: dict[str, torch.Tensor]):
    def make(name: str) -> Callable:
        def hook(mod, args, out):
            store[name] = _hidden(out).detach().clone()

        return hook

    return [m.register_forward_hook(make(name)) for name, m in modules.items()]


@torch.no_grad()
def last_logits(
    model: nn.Module,
    ids: torch.Tensor,
    add: torch.Tensor | None = None,
    writes: Sequence[tuple[nn.Module, Sequence[int], torch.Tensor]] = (),
) -> torch.Tensor:
    """Logits (B, V) at the last position of `ids` (B, T), with `add` (B, T, D) added to the block-0 input and
    each (module, positions, value) write replacing that module's output at those positions."""
    handles = [_set_positions(m, pos, v) for m, pos, v in writes]
    if add is not None:
        handles.append(_add_to_block0_input(model, add))
    with _hooks(handles):
        return model(input_ids=ids).logits[:, -1].float()


def answer_prob(model: nn.Module, ids: torch.Tensor, answer_id: int, **kw) -> float:
    """p(answer) at the last position, averaged over the batch rows (`kw` as `last_logits`)."""
    return float(torch.softmax(last_logits(model, ids, **kw), -1)[:, answer_id].mean())


@torch.no_grad()
def clean_run(model: nn.Module, ids: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Logits (B, T, V) and every restorable output: {"resid.l" | "mlp.l" | "attn.l": (B, T, D)}."""
    store: dict[str, torch.Tensor] = {}
    with _hooks(_record(site_modules(model), store)):
        logits = model(input_ids=ids).logits.float()
    return logits, store


def site_modules(model: nn.Module) -> dict[str, nn.Module]:
    """{"resid.l": block l, "mlp.l": its MLP output module, "attn.l": its attention output module}."""
    out = {}
    for l, block in enumerate(blocks(model)):
        out[f"resid.{l}"] = block
        out[f"mlp.{l}"] = sublayer(block, "mlp")
        out[f"attn.{l}"] = sublayer(block, "attn")
    return out


@torch.no_grad()
def embedding_std(model: nn.Module, tokenizer, texts: Sequence[str]) -> float:
    """Std of every entry of the block-0 input over `texts`, each tokenized alone without special tokens."""
    vals = []
    store: dict[str, torch.Tensor] = {}

    def hook(module, args, kwargs):
        store["x"] = (args[0] if args else kwargs["hidden_states"]).detach()

    with _hooks([blocks(model)[0].register_forward_pre_hook(hook, with_kwargs=True)]):
        for text in texts:
            ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
            if ids.shape[1]:
                model(input_ids=ids)
                vals.append(store["x"].reshape(-1).float())
    return float(torch.cat(vals).std())


@torch.no_grad()
def trace_fact(
    model: nn.Module,
    ids: torch.Tensor,
    subject: tuple[int, int],
    answer_id: int,
    fact_index: int,
    sigma: float,
    n_samples: int = 10,
    kinds: Sequence[str] = KINDS,
    window_size: int = 10,
    seed: int = 0,
    positions: Iterable[int] | None = None,
) -> tuple[dict[str, torch.Tensor], float, float]:
    """Causal tracing of one prompt `ids` (T,): (IE[kind] (T, L), p_clean, p_corrupted).

    `subject` is the token span [start, end) that gets the noise σ·z; `positions` (default: every token) are
    the rows of IE computed, the others stay 0."""
    model.eval()
    modules = site_modules(model)
    L, T = len(blocks(model)), int(ids.shape[0])
    logits, clean = clean_run(model, ids[None])
    p_clean = float(torch.softmax(logits[0, -1], -1)[answer_id])
    d_model = clean["resid.0"].shape[-1]
    s0, s1 = subject
    add = torch.zeros(n_samples, T, d_model)
    add[:, s0:s1] = sigma * noise(fact_index, n_samples, s1 - s0, d_model, seed)
    batch = ids[None].repeat(n_samples, 1)
    p_corr = answer_prob(model, batch, answer_id, add=add)
    ie = {k: torch.zeros(T, L) for k in kinds}
    for t in range(T) if positions is None else positions:
        for k in kinds:
            for l in range(L):
                layers = [l] if k == "resid" else window(l, L, window_size)
                writes = [(modules[f"{k}.{j}"], [t], clean[f"{k}.{j}"][0, t : t + 1]) for j in layers]
                ie[k][t, l] = answer_prob(model, batch, answer_id, add=add, writes=writes) - p_corr
    return ie, p_clean, p_corr
