"""Canonical hook sites: one vocabulary for every backend and architecture.

Semantics (L blocks, layer l in 0..L-1; B batch, T tokens, D d_model, M d_mlp, V vocabulary):

| site               | shape     | meaning                                                                 |
|--------------------|-----------|-------------------------------------------------------------------------|
| `resid_pre.{l}`    | (B, T, D) | residual stream entering block l (l = 0: the scaled token embeddings)   |
| `attn_out.{l}`     | (B, T, D) | what block l's attention adds to the residual (after any post-attention |
|                    |           | norm, e.g. Gemma-2), so resid_mid = resid_pre + attn_out                |
| `resid_mid.{l}`    | (B, T, D) | residual after the attention add, before the MLP's pre-norm             |
| `mlp_act.{l}`      | (B, T, M) | neuron activations: the input of the MLP down-projection                |
|                    |           | (act(gate)·up for gated MLPs, act(W_in x) for GPT-2)                    |
| `mlp_out.{l}`      | (B, T, D) | what block l's MLP adds to the residual, so resid_post = resid_mid +    |
|                    |           | mlp_out                                                                 |
| `resid_post.{l}`   | (B, T, D) | residual leaving block l (= resid_pre.{l+1}; for l = L-1, before the    |
|                    |           | final norm)                                                             |
| `final_norm_scale` | (B, T)    | the final norm's divisor: sqrt(mean(x²)+eps) for RMSNorm, sqrt(var+eps) |
|                    |           | for LayerNorm (TransformerLens's `hook_scale` convention)               |
| `logits`           | (B, T, V) | output logits (read only)                                               |

Writing `resid_mid.{l}` is implemented by changing `attn_out.{l}` by (new − current), because HF blocks
keep their own copy of the residual: editing the MLP norm's input alone would not change the stream.
Writing `final_norm_scale` rescales the final norm's output as if the norm had divided by the new value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

LAYER_KINDS = ("resid_pre", "attn_out", "resid_mid", "mlp_act", "mlp_out", "resid_post")
GLOBAL_KINDS = ("final_norm_scale", "logits")
WRITABLE_KINDS = LAYER_KINDS + ("final_norm_scale",)

_SITE_RE = re.compile(r"^(?P<kind>[a-z_]+)(?:\.(?P<layer>-?\d+))?$")


class SiteError(ValueError):
    """An unknown site name or a layer out of range."""


@dataclass(frozen=True, order=True)
class Site:
    """A canonical site; `layer` is None for the global sites."""

    kind: str
    layer: int | None = None

    @property
    def name(self) -> str:
        return self.kind if self.layer is None else f"{self.kind}.{self.layer}"

    def __str__(self) -> str:
        return self.name

    @property
    def order(self) -> tuple[int, int]:
        """Execution order within one forward: layer first, then position inside the block."""
        if self.kind == "final_norm_scale":
            return (10**9, 0)
        if self.kind == "logits":
            return (10**9, 1)
        return (self.layer, LAYER_KINDS.index(self.kind))


def parse_site(name: str | Site, n_layers: int) -> Site:
    """Parse 'resid_pre.3' (negative layers count from the end) and check it against `n_layers`."""
    if isinstance(name, Site):
        name = name.name
    m = _SITE_RE.match(str(name).strip())
    valid = ", ".join([f"{k}.<layer>" for k in LAYER_KINDS] + list(GLOBAL_KINDS))
    if not m:
        raise SiteError(f"unknown site {name!r}; valid sites: {valid}")
    kind, layer = m.group("kind"), m.group("layer")
    if kind in GLOBAL_KINDS:
        if layer is not None:
            raise SiteError(f"site {kind!r} takes no layer; write {kind!r}")
        return Site(kind)
    if kind not in LAYER_KINDS:
        raise SiteError(f"unknown site {name!r}; valid sites: {valid}")
    if layer is None:
        raise SiteError(f"site {kind!r} needs a layer, e.g. '{kind}.0'")
    li = int(layer)
    if li < 0:
        li += n_layers
    if not 0 <= li < n_layers:
        raise SiteError(
            f"layer {int(layer)} out of range for site {kind!r}: the model has {n_layers} layers "
            f"(use 0..{n_layers - 1} or negative indices)"
        )
    return Site(kind, li)


def all_sites(n_layers: int, kinds: tuple[str, ...] = LAYER_KINDS) -> list[Site]:
    """Every layer site of the given kinds, in execution order."""
    return sorted((Site(k, l) for l in range(n_layers) for k in kinds), key=lambda s: s.order)
