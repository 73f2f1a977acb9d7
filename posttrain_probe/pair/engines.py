"""Backends that run a wrapped HF model with reads and interventions at canonical sites.

`BridgeEngine` uses TransformerLens's `TransformerBridge` hook points; `NNsightEngine` uses nnsight's
tracing of the HF modules. Both wrap the *same* loaded HF model and give the same numbers (tested),
so a probe is written once against `Engine.run`.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .arch import ArchInfo
from .interventions import Intervention, Receipt, apply_intervention, check_all_fired
from .sites import Site, parse_site

BACKENDS = ("bridge", "nnsight")


@dataclass
class RunOutput:
    """Logits (B, T, V), the cached sites (name -> tensor), receipts per intervention, and the KV cache; run
    with `unembed=False`, logits is None and `hidden` the unembedding's input (B, T, D)."""

    logits: torch.Tensor | None
    cache: dict[str, torch.Tensor] = field(default_factory=dict)
    receipts: list[list[Receipt]] = field(default_factory=list)
    past_key_values: Any = None
    hidden: torch.Tensor | None = None


class _Plan:
    """Reads and interventions grouped by parsed site, in the order they must run."""

    def __init__(self, read: Sequence[str | Site], interventions: Sequence[Intervention], n_layers: int):
        self.read = {parse_site(s, n_layers) for s in read}
        self.ivs = list(interventions)
        self.receipts: list[list[Receipt]] = [[] for _ in self.ivs]
        self.by_site: dict[Site, list[int]] = defaultdict(list)
        for i, iv in enumerate(self.ivs):
            site = parse_site(iv.site, n_layers)
            if site.kind == "logits":
                raise ValueError("logits are read-only; intervene on resid_post.<last layer> or final_norm_scale")
            self.by_site[site].append(i)
        self.cache: dict[str, torch.Tensor] = {}
        touched = set(self.read) | set(self.by_site)
        self.layers = sorted({s.layer for s in touched if s.layer is not None})
        self.mid_write_layers = {s.layer for s in self.by_site if s.kind == "resid_mid"}

    def wants(self, kind: str, layer: int | None = None) -> bool:
        s = Site(kind, layer)
        return s in self.read or s in self.by_site

    def apply(self, kind: str, layer: int | None, x: torch.Tensor) -> torch.Tensor:
        """Run the interventions at (kind, layer) on x, then record a read of the result."""
        site = Site(kind, layer)
        for i in self.by_site.get(site, ()):
            x, receipt = apply_intervention(x, self.ivs[i])
            self.receipts[i].append(receipt)
        if site in self.read:
            self.cache[site.name] = x if x.requires_grad else x.detach()
        return x

    def apply_mid_via_attn(self, layer: int, pre: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        """Write resid_mid by changing attn_out by (new_mid − mid)."""
        site = Site("resid_mid", layer)
        if site not in self.by_site:
            return attn
        mid = pre + attn
        new_mid = mid
        for i in self.by_site[site]:
            new_mid, receipt = apply_intervention(new_mid, self.ivs[i])
            self.receipts[i].append(receipt)
        return attn + (new_mid - mid)


def hf_cache_name(hf_model: nn.Module) -> str:
    """The KV-cache argument (and output field) of an HF causal LM: `cache` in newer transformers, where
    `past_key_values` is deprecated (a FutureWarning on every call), else `past_key_values`. `HookedModel.run`
    takes `past_key_values=` and passes it under this name."""
    import inspect

    return "cache" if "cache" in inspect.signature(hf_model.forward).parameters else "past_key_values"


class Engine:
    """Common interface: `run` one forward with reads and interventions."""

    backend: str
    can_resume = False  # whether `run` takes `resume_at` (blocks below a layer not run) and `unembed=False`

    def __init__(self, hf_model: nn.Module, arch: ArchInfo):
        self.hf = hf_model
        self.arch = arch
        self.cache_name = hf_cache_name(hf_model)

    def run(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        read: Sequence[str | Site] = (),
        interventions: Sequence[Intervention] = (),
        grad: bool = False,
        resume_at: tuple[int, torch.Tensor] | None = None,
        unembed: bool = True,
        **model_kwargs: Any,
    ) -> RunOutput:
        """One forward. `resume_at=(l, x)` with x (B, T, D) = resid_pre.l: blocks 0..l-1 are not run (their
        outputs are replaced by x), so reads and writes must be at layer ≥ l; `unembed=False`: the unembedding
        is not run, its input is returned as `hidden` (both: backends with `can_resume`)."""
        plan = _Plan(read, interventions, self.arch.n_layers)
        if resume_at is not None:
            _check_resume(self, plan, resume_at[0])
            model_kwargs["resume_at"] = resume_at
        if not unembed:
            if not self.can_resume:
                raise ValueError(f"the {self.backend} backend always runs the unembedding; run with unembed=True")
            if Site("logits") in plan.read:
                raise ValueError("reading logits needs the unembedding; run with unembed=True")
            model_kwargs["unembed"] = False
        if "past_key_values" in model_kwargs and self.cache_name != "past_key_values":
            model_kwargs[self.cache_name] = model_kwargs.pop("past_key_values")  # the name transformers asks for
        with torch.set_grad_enabled(grad):
            logits, pkv = self._forward(plan, input_ids, attention_mask, **model_kwargs)
        check_all_fired(plan.ivs, plan.receipts)
        if Site("logits") in plan.read:
            plan.cache["logits"] = logits
        if not unembed:
            return RunOutput(logits=None, cache=plan.cache, receipts=plan.receipts, past_key_values=pkv, hidden=logits)
        return RunOutput(logits=logits, cache=plan.cache, receipts=plan.receipts, past_key_values=pkv)

    def _forward(self, plan: _Plan, input_ids, attention_mask, **kw):  # pragma: no cover - abstract
        raise NotImplementedError


def _check_resume(engine: Engine, plan: _Plan, layer: int) -> None:
    """Refuse `resume_at` on a backend that cannot skip blocks, or with sites in the blocks not run."""
    if not engine.can_resume:
        raise ValueError(f"the {engine.backend} backend cannot skip blocks; run without resume_at or use nnsight")
    if not 0 <= layer < engine.arch.n_layers:
        raise ValueError(f"resume_at layer {layer} out of range for {engine.arch.n_layers} layers")
    below = sorted(s.name for s in set(plan.read) | set(plan.by_site) if s.layer is not None and s.layer < layer)
    if below:
        raise ValueError(f"sites {', '.join(below)} lie in blocks that resume_at={layer} does not run")


class BridgeEngine(Engine):
    """TransformerLens 4.x `TransformerBridge` around the HF model (raw HF weights, no folding)."""

    backend = "bridge"

    def __init__(
        self,
        hf_model: nn.Module,
        arch: ArchInfo,
        tokenizer,
        device: str | torch.device,
        trust_remote_code: bool = False,
        revision: str | None = None,
    ):
        super().__init__(hf_model, arch)
        from transformer_lens.model_bridge import TransformerBridge

        # TransformerLens reloads a tokenizer that does not add BOS with AutoTokenizer.from_pretrained(name,
        # **tokenizer.init_kwargs); give it a copy whose init_kwargs carry our remote-code and revision choice
        tl_tokenizer = copy.copy(tokenizer)
        tl_tokenizer.init_kwargs = {**tokenizer.init_kwargs, "trust_remote_code": trust_remote_code}
        if revision is not None:
            tl_tokenizer.init_kwargs["revision"] = revision
        self.bridge = TransformerBridge.boot_transformers(
            hf_model.name_or_path or "local", hf_model=hf_model, tokenizer=tl_tokenizer, device=device
        )

    def _hooks(self, plan: _Plan) -> list[tuple[str, Any]]:
        hooks: list[tuple[str, Any]] = []
        for l in plan.layers:
            need_pre = l in plan.mid_write_layers
            store: dict[str, torch.Tensor] = {}

            if plan.wants("resid_pre", l) or need_pre:

                def f_pre(t, hook, l=l, store=store, need_pre=need_pre):
                    t = plan.apply("resid_pre", l, t)
                    if need_pre:
                        store["pre"] = t
                    return t

                hooks.append((f"blocks.{l}.hook_resid_pre", f_pre))
            if plan.wants("attn_out", l) or need_pre:

                def f_attn(t, hook, l=l, store=store):
                    t = plan.apply("attn_out", l, t)
                    return plan.apply_mid_via_attn(l, store["pre"], t) if "pre" in store else t

                hooks.append((f"blocks.{l}.hook_attn_out", f_attn))
            for kind, name in (
                ("resid_mid", "hook_resid_mid"),
                ("mlp_act", "mlp.hook_post"),
                ("mlp_out", "hook_mlp_out"),
                ("resid_post", "hook_resid_post"),
            ):
                if kind == "resid_mid" and Site(kind, l) not in plan.read:
                    continue  # writes to resid_mid happen at attn_out
                if plan.wants(kind, l):
                    hooks.append((f"blocks.{l}.{name}", lambda t, hook, k=kind, l=l: plan.apply(k, l, t)))
        if plan.wants("final_norm_scale"):

            def f_scale(t, hook):
                new = plan.apply("final_norm_scale", None, t[..., 0])
                # returning a new tensor makes the bridge rebuild the norm output; only do it for writes
                return new[..., None] if Site("final_norm_scale") in plan.by_site else t

            hooks.append(("ln_final.hook_scale", f_scale))
        return hooks

    def _forward(self, plan, input_ids, attention_mask, **kw):
        hooks = self._hooks(plan)
        want_cache = kw.pop("use_cache", False) or kw.get(self.cache_name) is not None
        out = self.bridge.run_with_hooks(
            input_ids,
            fwd_hooks=hooks,
            attention_mask=attention_mask,
            return_type="logits_and_cache" if want_cache else "logits",
            **kw,
        )
        return out if want_cache else (out, None)


def _first(x):
    return x[0] if isinstance(x, tuple) else x


def _replace_first(orig, new):
    return (new, *orig[1:]) if isinstance(orig, tuple) else new


class NNsightEngine(Engine):
    """nnsight 0.8 `TransformersModel` tracing the HF model's own modules."""

    backend = "nnsight"
    can_resume = True

    def __init__(self, hf_model: nn.Module, arch: ArchInfo, tokenizer, remote: bool | str = False):
        super().__init__(hf_model, arch)
        from nnsight.modeling.transformers import TransformersModel

        self.lm = TransformersModel(hf_model, tokenizer=tokenizer, task="text-generation")
        self.remote = remote
        env = self.lm
        for part in arch.layers_path.split("."):
            env = getattr(env, part)
        self._layers = env
        env = self.lm
        for part in arch.final_norm_path.split("."):
            env = getattr(env, part)
        self._final_norm = env
        norm_mod = arch.modules["final_norm"]
        self._norm_is_layernorm = isinstance(norm_mod, nn.LayerNorm)
        self._norm_eps = float(getattr(norm_mod, "variance_epsilon", getattr(norm_mod, "eps", 1e-6)))
        self._norm_bias = getattr(norm_mod, "bias", None)
        head = arch.modules["lm_head"]
        self._unembed = self._sub(self.lm, next(n for n, mod in hf_model.named_modules() if mod is head))

    @staticmethod
    def _sub(block_env, dotted: str):
        for part in dotted.split("."):
            block_env = getattr(block_env, part)
        return block_env

    def norm_scale(self, x: torch.Tensor) -> torch.Tensor:
        """The final norm's divisor for input x (B, T, D) -> (B, T)."""
        xf = x.float()
        if self._norm_is_layernorm:
            return (xf.var(-1, unbiased=False) + self._norm_eps).sqrt()
        return (xf.pow(2).mean(-1) + self._norm_eps).sqrt()

    def _forward(self, plan, input_ids, attention_mask, **kw):
        """One traced forward. Everything the caller needs leaves the trace through one saved value (`out`),
        the only way results come back from a remote (NDIF) run, where the block runs on copies of `plan`."""
        from nnsight import save

        a = self.arch
        resume = kw.pop("resume_at", None)
        unembed = kw.pop("unembed", True)
        cache = kw.get(self.cache_name)
        if attention_mask is None and cache is not None and self.cache_name != "past_key_values":
            # nnsight adds a mask over the new tokens only unless the cache is called past_key_values; one over
            # cached + new tokens is what HF assumes without a mask (same logits, bit for bit)
            n = cache.get_seq_length() + input_ids.shape[-1]
            attention_mask = torch.ones(input_ids.shape[0], n, dtype=torch.long, device=input_ids.device)
        trace_kw: dict[str, Any] = {"attention_mask": attention_mask} if attention_mask is not None else {}
        if self.remote:
            trace_kw["remote"] = self.remote
        with self.lm.trace(input_ids, **trace_kw, **kw):
            if resume is not None:
                start, x = resume
                for l in range(start):  # not run: the last one's output is resid_pre.start
                    self._layers[l].skip(x)
            for l in plan.layers:
                blk = self._layers[l]
                need_pre = l in plan.mid_write_layers
                pre = None
                if plan.wants("resid_pre", l) or need_pre:
                    x = blk.input
                    pre = plan.apply("resid_pre", l, x)
                    if Site("resid_pre", l) in plan.by_site:
                        blk.input = pre
                if plan.wants("attn_out", l) or need_pre:
                    env = self._sub(blk, a.attn_out_name)
                    orig = env.output
                    t = plan.apply("attn_out", l, _first(orig))
                    if need_pre:
                        t = plan.apply_mid_via_attn(l, pre, t)
                    if Site("attn_out", l) in plan.by_site or need_pre:
                        env.output = _replace_first(orig, t)
                if Site("resid_mid", l) in plan.read:
                    plan.apply("resid_mid", l, self._sub(blk, a.mid_norm_name).input)
                if plan.wants("mlp_act", l):
                    env = self._sub(blk, a.down_proj_name)
                    t = plan.apply("mlp_act", l, env.input)
                    if Site("mlp_act", l) in plan.by_site:
                        env.input = t
                if plan.wants("mlp_out", l):
                    env = self._sub(blk, a.mlp_out_name)
                    orig = env.output
                    t = plan.apply("mlp_out", l, _first(orig))
                    if Site("mlp_out", l) in plan.by_site:
                        env.output = _replace_first(orig, t)
                if plan.wants("resid_post", l):
                    orig = blk.output
                    t = plan.apply("resid_post", l, _first(orig))
                    if Site("resid_post", l) in plan.by_site:
                        blk.output = _replace_first(orig, t)
            if plan.wants("final_norm_scale"):
                s_old = self.norm_scale(self._final_norm.input)
                s_new = plan.apply("final_norm_scale", None, s_old)
                if Site("final_norm_scale") in plan.by_site:
                    out = self._final_norm.output
                    b = 0.0 if self._norm_bias is None else self._norm_bias.float()
                    ratio = (s_old / s_new).unsqueeze(-1)
                    self._final_norm.output = (b + (out.float() - b) * ratio).to(out.dtype)
            if not unembed:  # not run: its input leaves the trace in place of the logits
                hidden = self._unembed.input
                self._unembed.skip(hidden)
            res = self.lm.output
            pkv = getattr(res, self.cache_name, None) if kw.get("use_cache") else None
            logits = res.logits if unembed else hidden
            out = save({"logits": logits, "pkv": pkv, "cache": plan.cache, "receipts": plan.receipts})
        plan.cache, plan.receipts = out["cache"], out["receipts"]
        return out["logits"], out["pkv"]


def make_engine(
    backend: str,
    hf_model: nn.Module,
    arch: ArchInfo,
    tokenizer,
    device,
    remote: bool | str = False,
    trust_remote_code: bool = False,
    revision: str | None = None,
) -> Engine:
    if backend == "bridge":
        if remote:
            raise ValueError("remote=True needs backend='nnsight' (NDIF); the bridge runs locally only")
        return BridgeEngine(hf_model, arch, tokenizer, device, trust_remote_code, revision)
    if backend == "nnsight":
        return NNsightEngine(hf_model, arch, tokenizer, remote=remote)
    raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
