"""Steering vectors as reusable artefacts: a direction plus where and how to apply it, with provenance.

A `SteeringVector` is saved as `<path>.safetensors` (the tensor) and `<path>.json` (everything else), and
applied as a context manager on a `HookedModel` or on any plain HF causal LM, also during `generate`:

    v = SteeringVector.load("refusal_post")
    with v.apply(model, scale=-1.0) as handle:      # model: transformers AutoModelForCausalLM
        out = model.generate(**inputs)               # handle.fired, handle.receipts

Sites (exact semantics as in `posttrain_probe.pair.sites`): `resid_pre` (block input), `resid_mid` (after
the attention add), `resid_post` (block output), `attn_out` / `mlp_out` (what attention / the MLP add to the
residual), and `resid_all` (resid_pre, resid_mid and resid_post of each selected layer: Arditi et al.'s
directional ablation). `layer=None` means every layer.

Positions rules (applied per forward call, so they also hold for KV-cached decode steps; prompts must be
left-padded for "last" to mean the last real token): "all"; "last" (the last position of each forward,
i.e. the prompt's last token and then every generated token); "last:k" (the last k positions);
"prompt" (every position of multi-token forwards; single-token decode steps are left alone).

Modes: "add" x ← x + s·v; "ablate" x ← x − s·(x·v̂)v̂ (s = 1 removes the component); "add_normalized"
x ← (x + s·v)·‖x‖/‖x + s·v‖ (norm-preserving addition). Scale 0 is the identity in every mode.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .pair.arch import _get, discover
from .pair.hf_hooks import register_site_hooks
from .pair.interventions import Ablate, Add, Edit, Intervention, Receipt, ablate_component
from .utils.io import atomic_write_json, honour_umask

FORMAT = "posttrain_probe.steering_vector/1"
SITES = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "resid_all")
MODES = ("add", "ablate", "add_normalized")
NORMALIZATIONS = ("none", "unit")
_POS_RE = re.compile(r"^(all|last|prompt|last:(\d+))$")


class SteeringMismatchError(ValueError):
    """The model a vector is applied to differs from the one it was extracted from."""


def _package_version() -> str:
    from . import __version__

    return __version__


def tensor_sha256(t: torch.Tensor) -> str:
    """sha256 of a tensor's raw bytes (contiguous, on CPU) plus dtype and shape."""
    t = t.detach().contiguous().cpu()
    h = hashlib.sha256(f"{t.dtype}|{tuple(t.shape)}|".encode())
    h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _parse_positions(rule: str) -> tuple[str, int]:
    m = _POS_RE.match(str(rule))
    if not m:
        raise ValueError(f"unknown positions rule {rule!r}; use 'all', 'last', 'last:<k>' (k ≥ 1) or 'prompt'")
    if m.group(2) is not None:
        k = int(m.group(2))
        if k < 1:
            raise ValueError(f"positions rule {rule!r} needs k ≥ 1, e.g. 'last:2'")
        return "last", k
    return m.group(1), 1


def _raw_hf(model: Any) -> nn.Module:
    """The HF module tree to hook: `HookedModel.hf` or the model itself."""
    hf = getattr(model, "hf", None)
    hf = hf if isinstance(hf, nn.Module) else model
    if not isinstance(hf, nn.Module) or not hasattr(hf, "config"):
        raise TypeError(
            f"cannot apply a steering vector to {type(model).__name__}; pass a HookedModel or an HF causal LM"
        )
    return hf


def _identity(model: Any, tokenizer: Any = None) -> dict[str, Any]:
    """What the compatibility check compares: d_model, vocab size, n_layers, tokenizer hash (if known)."""
    from .pair.loading import tokenizer_sha256

    hf = _raw_hf(model)
    arch = getattr(model, "arch", None)
    tok = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
    emb = hf.get_input_embeddings()
    out = {
        "d_model": int(emb.weight.shape[1]),
        "vocab_size": int(hf.get_output_embeddings().weight.shape[0]),
        "n_layers": int(arch.n_layers) if arch is not None else len(_get(hf, discover(hf).layers_path)),
        "tokenizer_sha256": tokenizer_sha256(tok) if tok is not None else None,
    }
    return out


@dataclass
class ApplyHandle:
    """What one `apply` context did: a receipt per hook call (site, cells touched, norms before/after)."""

    vector_description: str
    scale: float
    receipts: list[Receipt] = field(default_factory=list)
    _hooks: list[Any] = field(default_factory=list, repr=False)
    active: bool = True

    @property
    def calls(self) -> int:
        return len(self.receipts)

    @property
    def fired(self) -> bool:
        return any(r.n_cells > 0 for r in self.receipts)

    @property
    def n_cells(self) -> int:
        return sum(r.n_cells for r in self.receipts)

    def summary(self) -> dict[str, Any]:
        sites = sorted({r.site for r in self.receipts})
        return {"calls": self.calls, "cells": self.n_cells, "fired": self.fired, "sites": sites}

    def check_fired(self) -> None:
        if not self.fired:
            raise RuntimeError(
                f"steering vector {self.vector_description} never fired: run a forward or generate inside "
                "the `with` block, and check the site/layer/positions rule"
            )

    def remove(self) -> None:
        """Remove the hooks now (the context exit does it too; calling twice is harmless)."""
        for h in self._hooks:
            h.remove()
        self._hooks.clear()
        self.active = False


@dataclass
class SteeringVector:
    """A direction (d_model,) with its hook site, layer, positions rule, mode, scale and provenance."""

    vector: torch.Tensor  # (d_model,)
    site: str
    layer: int | None
    positions: str = "all"
    mode: str = "add"
    scale: float = 1.0
    normalization: str = "none"
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.vector, torch.Tensor) or self.vector.ndim != 1 or self.vector.numel() == 0:
            shape = tuple(self.vector.shape) if isinstance(self.vector, torch.Tensor) else type(self.vector)
            raise ValueError(f"vector must be a 1-D tensor of length d_model, got {shape}")
        if not torch.isfinite(self.vector).all():
            raise ValueError("vector has NaN/inf entries; recompute the direction")
        if self.site not in SITES:
            raise ValueError(f"unknown site {self.site!r}; choose one of {', '.join(SITES)}")
        if self.layer is not None and (not isinstance(self.layer, int) or self.layer < 0):
            raise ValueError(f"layer must be a non-negative int or None (every layer), got {self.layer!r}")
        _parse_positions(self.positions)
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"unknown normalization {self.normalization!r}; choose one of {', '.join(NORMALIZATIONS)}")
        if self.mode == "ablate" and float(self.vector.norm()) == 0.0:
            raise ValueError("cannot ablate a zero vector; pass a non-zero direction")
        self.scale = float(self.scale)

    @property
    def d_model(self) -> int:
        return int(self.vector.numel())

    @property
    def description(self) -> str:
        where = "every layer" if self.layer is None else f"layer {self.layer}"
        return f"{self.mode} at {self.site} ({where}, positions {self.positions})"

    # ------------------------------------------------------------------------------------------- creation

    @classmethod
    def from_model(
        cls,
        vector: torch.Tensor,
        model: Any,
        tokenizer: Any = None,
        site: str = "resid_pre",
        layer: int | None = None,
        positions: str = "all",
        mode: str = "add",
        scale: float = 1.0,
        normalization: str = "none",
        **meta: Any,
    ) -> SteeringVector:
        """Build a vector with provenance taken from `model` (HookedModel or HF model) and its tokenizer.

        `normalization="unit"` stores v/‖v‖ (the raw norm goes to metadata["raw_norm"]). Extra keyword
        arguments (extraction_data_sha256, seed, selection_scores, description, ...) go to metadata.
        """
        from .pair.loading import weights_sha256

        v = vector.detach().to("cpu").clone()
        raw_norm = float(v.float().norm())
        if normalization == "unit":
            if raw_norm == 0.0:
                raise ValueError("cannot unit-normalise a zero vector; pass a non-zero direction")
            v = v / raw_norm
        ident = _identity(model, tokenizer)
        if v.numel() != ident["d_model"]:
            raise ValueError(
                f"vector has {v.numel()} entries but the model's d_model is {ident['d_model']}; "
                "pass a direction in this model's residual space"
            )
        prov = dict(getattr(model, "provenance", {}) or {})
        hf = _raw_hf(model)
        source = prov.get("source") or getattr(hf, "name_or_path", None)
        resolved = prov.get("resolved") or getattr(hf, "name_or_path", None)
        wsha = prov.get("weights_sha256")
        if wsha is None and resolved and Path(str(resolved)).is_dir():
            wsha = weights_sha256(str(resolved))
        metadata = {
            "model_source": source,
            "model_path": resolved,
            "model_type": getattr(hf.config, "model_type", None),
            "weights_sha256": wsha,
            **ident,
            "raw_norm": raw_norm,
            "package_version": _package_version(),
            "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            **meta,
        }
        return cls(v, site, layer, positions, mode, scale, normalization, metadata)

    # ---------------------------------------------------------------------------------------- persistence

    @staticmethod
    def _paths(path: str | os.PathLike) -> tuple[Path, Path]:
        p = Path(path)
        if p.suffix in (".safetensors", ".json"):
            p = p.with_suffix("")
        return p.with_name(p.name + ".safetensors"), p.with_name(p.name + ".json")

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "site": self.site,
            "layer": self.layer,
            "positions": self.positions,
            "mode": self.mode,
            "scale": self.scale,
            "normalization": self.normalization,
            "d_model": self.d_model,
            "dtype": str(self.vector.dtype).replace("torch.", ""),
            "vector_sha256": tensor_sha256(self.vector),
            "metadata": self.metadata,
        }

    def save(self, path: str | os.PathLike) -> None:
        """Write `<path>.safetensors` and `<path>.json` (each atomically; the tensor first)."""
        from safetensors.torch import save_file

        st_path, js_path = self._paths(path)
        st_path.parent.mkdir(parents=True, exist_ok=True)
        doc = self.to_json()
        fd, tmp = tempfile.mkstemp(prefix=f".{st_path.name}.", dir=st_path.parent)
        os.close(fd)
        try:
            save_file({"vector": self.vector.detach().contiguous().cpu()}, tmp, metadata={"format": FORMAT})
            honour_umask(tmp)
            os.replace(tmp, st_path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        atomic_write_json(js_path, doc)

    @classmethod
    def load(cls, path: str | os.PathLike) -> SteeringVector:
        """Read a vector written by `save`; checks the tensor's hash against the JSON."""
        import json

        from safetensors.torch import load_file

        st_path, js_path = cls._paths(path)
        for p in (st_path, js_path):
            if not p.exists():
                raise FileNotFoundError(f"{p} not found; a steering vector is <path>.safetensors + <path>.json")
        doc = json.loads(js_path.read_text(encoding="utf-8"))
        if doc.get("format") != FORMAT:
            raise ValueError(f"{js_path} is not a steering vector ({FORMAT}); got format {doc.get('format')!r}")
        tensors = load_file(str(st_path))
        if set(tensors) != {"vector"}:
            raise ValueError(f"{st_path} should hold one tensor named 'vector', found {sorted(tensors)}")
        v = tensors["vector"]
        if tensor_sha256(v) != doc["vector_sha256"]:
            raise ValueError(f"{st_path} does not match the hash in {js_path.name}; the pair of files is mixed up")
        return cls(
            v,
            doc["site"],
            doc["layer"],
            doc["positions"],
            doc["mode"],
            doc["scale"],
            doc["normalization"],
            doc.get("metadata", {}),
        )

    # -------------------------------------------------------------------------------------------- checks

    def check_compatible(self, model: Any, tokenizer: Any = None) -> list[str]:
        """Differences between `model` and the metadata (d_model, vocab size, tokenizer hash); [] if none."""
        ident = _identity(model, tokenizer)
        diffs = []
        if ident["d_model"] != self.d_model:
            diffs.append(f"d_model {ident['d_model']} ≠ vector's {self.d_model}")
        m = self.metadata
        if m.get("vocab_size") is not None and ident["vocab_size"] != m["vocab_size"]:
            diffs.append(f"vocab size {ident['vocab_size']} ≠ {m['vocab_size']}")
        if (
            m.get("tokenizer_sha256")
            and ident["tokenizer_sha256"]
            and ident["tokenizer_sha256"] != m["tokenizer_sha256"]
        ):
            diffs.append(f"tokenizer hash {ident['tokenizer_sha256'][:12]}… ≠ {str(m['tokenizer_sha256'])[:12]}…")
        return diffs

    def layers_for(self, n_layers: int) -> list[int]:
        if self.layer is None:
            return list(range(n_layers))
        if self.layer >= n_layers:
            raise ValueError(
                f"steering vector is for layer {self.layer} but the model has {n_layers} layers; "
                "pick a vector made for this model"
            )
        return [self.layer]

    # ---------------------------------------------------------------------------------------- transforms

    def transform(self, x: torch.Tensor, scale: float) -> torch.Tensor:
        """The mode applied to x (..., D), computed in float32 and cast back."""
        v = self.vector.to(device=x.device, dtype=torch.float32)
        xf = x.float()
        if self.mode == "add":
            out = xf + scale * v
        elif self.mode == "ablate":
            return ablate_component(x, v, scale)
        else:
            y = xf + scale * v
            out = y * (xf.norm(dim=-1, keepdim=True) / y.norm(dim=-1, keepdim=True).clamp_min(1e-12))
        return out.to(x.dtype)

    def to_interventions(self, n_layers: int, scale: float | None = None) -> list[Intervention]:
        """The same operation as `Intervention`s for `HookedModel.run` (e.g. in `pair.generate`)."""
        s = self.scale if scale is None else float(scale)
        rule, k = _parse_positions(self.positions)
        positions = list(range(-k, 0)) if rule == "last" else None
        kinds = ("resid_pre", "resid_mid", "resid_post") if self.site == "resid_all" else (self.site,)
        out: list[Intervention] = []
        for layer in self.layers_for(n_layers):
            for kind in kinds:
                site = f"{kind}.{layer}"
                if self.mode == "add":
                    out.append(Add(site, vector=self.vector, scale=s, positions=positions))
                elif self.mode == "ablate" and s == 1.0:
                    out.append(Ablate(site, direction=self.vector, positions=positions))
                else:
                    out.append(Edit(site, fn=lambda x, s=s: self.transform(x, s), positions=positions))
        return out

    # ------------------------------------------------------------------------------------------- applying

    @contextlib.contextmanager
    def apply(
        self, model: Any, scale: float | None = None, force: bool = False, tokenizer: Any = None
    ) -> Iterator[ApplyHandle]:
        """Hook the vector into `model` (HookedModel or HF causal LM) for the duration of the block.

        Refuses a model whose d_model, vocab size or tokenizer hash differs from the metadata unless
        `force=True` (a d_model mismatch is refused always: the vector cannot be added). Nestable: inner
        vectors act after outer ones at the same module. The tokenizer hash is compared when a tokenizer is
        known (HookedModel, or `tokenizer=`).
        """
        diffs = self.check_compatible(model, tokenizer)
        if any(d.startswith("d_model") for d in diffs):
            raise SteeringMismatchError(
                f"steering vector was made for another model: {'; '.join(diffs)}; a vector of another width "
                "cannot be added to this residual stream (not even with force=True): extract one from this model"
            )
        if diffs and not force:
            raise SteeringMismatchError(
                f"steering vector was made for another model: {'; '.join(diffs)}; "
                "pass force=True to apply it anyway if the token ids mean the same"
            )
        s = self.scale if scale is None else float(scale)
        hf = _raw_hf(model)
        arch = getattr(model, "arch", None) or discover(hf)
        handle = ApplyHandle(self.description, s)
        try:
            self._register(hf, arch, s, handle)
            yield handle
        finally:
            handle.remove()

    def _select(self, T: int) -> slice | None:
        rule, k = _parse_positions(self.positions)
        if rule == "all":
            return slice(None)
        if rule == "prompt":
            return slice(None) if T > 1 else None
        return slice(max(T - k, 0), T)

    def _edit(self, x: torch.Tensor, s: float, site: str, handle: ApplyHandle) -> torch.Tensor:
        """Apply the mode at the selected positions of x (B, T, D); record a receipt."""
        sel = self._select(x.shape[1])
        if sel is None:
            handle.receipts.append(Receipt(site, self.mode, 0, torch.zeros(()), torch.zeros(())))
            return x
        before = x[:, sel]  # (B, P, D)
        after = self.transform(before, s)
        out = x.clone()
        out[:, sel] = after
        handle.receipts.append(
            Receipt(
                site,
                self.mode,
                before.shape[0] * before.shape[1],
                before.detach().float().norm(),
                after.detach().float().norm(),
            )
        )
        return out

    def _register(self, hf: nn.Module, arch: Any, s: float, handle: ApplyHandle) -> None:
        """Hook the vector at its sites through `pair.hf_hooks` (the canonical sites on a plain HF tree)."""
        n_layers = len(_get(hf, arch.layers_path))
        kinds = ("resid_pre", "resid_mid", "resid_post") if self.site == "resid_all" else (self.site,)
        sites = [(kind, l) for l in self.layers_for(n_layers) for kind in kinds]
        handle._hooks += register_site_hooks(hf, arch, sites, lambda name, x: self._edit(x, s, name, handle))
