"""Load one HF causal LM (hub id, local directory or toy-world alias) behind a hooking backend."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from posttrain_probe.sources import is_toy_alias, parse_source

from ..utils.io import sha256_file
from .arch import ArchInfo, discover
from .engines import BACKENDS, Engine, RunOutput, make_engine
from .interventions import Intervention
from .sites import Site


class ModelLoadError(ValueError):
    """A model source could not be resolved or loaded."""


_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def resolve_dtype(dtype: str | torch.dtype | None, device: str) -> torch.dtype:
    if dtype is None:
        return torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ModelLoadError(f"unknown dtype {dtype!r}; choose one of {', '.join(_DTYPES)}")
    return _DTYPES[dtype]


def resolve_device(device: str | None) -> str:
    if device in (None, "auto_single"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)


def _looks_like_path(src: str) -> bool:
    return src.startswith(("/", "./", "../", "~")) or src.count("/") > 1 or os.sep in src and src.count(os.sep) > 1


def resolve_source(src: str | os.PathLike) -> tuple[str, dict[str, Any]]:
    """Map a source to what `from_pretrained` takes, plus provenance notes.

    `toyworld:base` / `toyworld:post` (default preset) and `toyworld:<preset>:<role>` build the toy pair
    first if it is not cached.
    """
    src = str(src)
    if is_toy_alias(src):
        try:
            parsed = parse_source(src, "model")
        except ValueError as e:
            raise ModelLoadError(str(e)) from None
        preset, role = parsed.preset, parsed.name
        if role not in ("base", "post"):
            raise ModelLoadError(f"bad toy-world role {role!r} in {src!r}; use base or post")
        from ..toyworld import build

        pair = build(preset=preset)
        path = pair.base_dir if role == "base" else pair.post_dir
        return str(path), {"alias": src, "toyworld_key": pair.key, "kind": "toyworld"}
    p = Path(src).expanduser()
    if p.exists():
        if not p.is_dir():
            raise ModelLoadError(f"{src} is a file, not a model directory; pass the folder with config.json")
        if not (p / "config.json").exists():
            raise ModelLoadError(f"{src} has no config.json; pass a Hugging Face model directory")
        return str(p.resolve()), {"kind": "local"}
    if _looks_like_path(src):
        raise ModelLoadError(f"local model directory {src} not found; check the path")
    return src, {"kind": "hub"}


def weights_sha256(path: str) -> str | None:
    """sha256 over the safetensors files of a local directory (sorted by name); None for hub ids."""
    p = Path(path)
    if not p.is_dir():
        return None
    files = sorted(p.glob("*.safetensors"))
    if not files:
        return None
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        h.update(sha256_file(f).encode())
    return h.hexdigest()


def tokenizer_sha256(tokenizer) -> str:
    """Hash of the tokenizer's vocabulary and pipeline. A fast tokenizer's backend keeps the padding and
    truncation of its last call (`tok(texts, padding=True)` sets them), which is call state, not the tokenizer:
    it is left out, so the hash is the same before and after any call."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        text = repr(sorted(tokenizer.get_vocab().items()))
    elif backend.padding is None and backend.truncation is None:
        text = backend.to_str()
    else:
        from tokenizers import Tokenizer

        clean = Tokenizer.from_str(backend.to_str())
        clean.no_padding()
        clean.no_truncation()
        text = clean.to_str()
    return hashlib.sha256(text.encode()).hexdigest()


def _hub_unreachable(repo_id: str, revision: str | None, timeout: float = 5.0) -> str | None:
    """None when the hub answers a HEAD for `repo_id`'s config.json (any HTTP status), else the network
    error in one line. One request, no retries: huggingface_hub's own retries take ~25 s when offline."""
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import HfHubHTTPError

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    try:
        get_hf_file_metadata(hf_hub_url(repo_id, "config.json", revision=revision), timeout=timeout)
    except HfHubHTTPError:
        return None  # the hub answered (unknown id, gated, ...): the normal path reports it
    except Exception as e:  # network errors of the HTTP client (DNS, refused, timeout)
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'no answer'}"
    return None


def _check_causal_lm(path: str, extra: dict, revision, trust_remote_code: bool, unreachable: str | None = None) -> None:
    """Refuse a source that is not a causal LM; `unreachable` (why the hub cannot be used) reads the cache only."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    try:
        cfg = AutoConfig.from_pretrained(
            path, revision=revision, trust_remote_code=trust_remote_code, local_files_only=unreachable is not None
        )
    except (OSError, ValueError) as e:
        if extra.get("kind") == "hub" and unreachable:
            raise ModelLoadError(
                f"could not fetch {path!r} from the Hugging Face hub ({unreachable}) and it is not in the local "
                "cache; pass a local model directory, or download it once while online"
            ) from None
        if extra.get("kind") == "hub":
            raise ModelLoadError(
                f"could not fetch {path!r} from the Hugging Face hub (offline or unknown id): "
                f"{str(e).splitlines()[0]}; "
                "pass a local model directory or check the id and network"
            ) from None
        raise ModelLoadError(f"{path} is not a loadable HF model: {str(e).splitlines()[0]}") from None
    if cfg.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and not trust_remote_code:
        raise ModelLoadError(
            f"{path} is a {cfg.model_type!r} model, not a causal LM that transformers knows; "
            "pass a decoder-only causal LM checkpoint"
        )


class HookedModel:
    """One HF causal LM + tokenizer behind a backend, addressed by canonical site names."""

    def __init__(self, hf_model, tokenizer, engine: Engine, arch: ArchInfo, provenance: dict[str, Any]):
        self.hf = hf_model
        self.tokenizer = tokenizer
        self.engine = engine
        self.arch = arch
        self.provenance = provenance

    backend = property(lambda self: self.engine.backend)
    n_layers = property(lambda self: self.arch.n_layers)
    d_model = property(lambda self: self.arch.d_model)
    d_mlp = property(lambda self: self.arch.d_mlp)
    device = property(lambda self: next(self.hf.parameters()).device)

    @property
    def max_context(self) -> int | None:
        cfg = self.hf.config
        return getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)

    @property
    def bridge(self):
        """The TransformerLens `TransformerBridge` (backend='bridge' only), for native TL use."""
        if self.backend != "bridge":
            raise AttributeError("this model was loaded with backend='nnsight'; reload with backend='bridge'")
        return self.engine.bridge

    @property
    def lm(self):
        """The nnsight model (backend='nnsight' only), for native nnsight use."""
        if self.backend != "nnsight":
            raise AttributeError("this model was loaded with backend='bridge'; reload with backend='nnsight'")
        return self.engine.lm

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
        """One forward through the backend: cache the `read` sites, apply `interventions` (with receipts).
        `resume_at=(l, resid_pre.l (B, T, D))` skips blocks 0..l-1; `unembed=False` skips the unembedding and
        returns its input as `hidden` (see `unembed`) (both: nnsight backend only)."""
        n_ctx = self.max_context
        cached = model_kwargs.get("past_key_values", model_kwargs.get("cache")) is not None
        if n_ctx is not None and input_ids.shape[-1] > n_ctx and not cached:
            raise ValueError(
                f"prompt of {input_ids.shape[-1]} tokens is longer than the model's context of {n_ctx}; "
                "shorten or truncate the prompts"
            )
        input_ids = input_ids.to(self.device)
        if attention_mask is not None:
            attention_mask = attention_mask.to(self.device)
        if resume_at is not None:
            resume_at = (int(resume_at[0]), resume_at[1].to(self.device))
        return self.engine.run(input_ids, attention_mask, read, interventions, grad, resume_at, unembed, **model_kwargs)

    def unembed(self, hidden: torch.Tensor) -> torch.Tensor:
        """The HF model's output embedding applied to `hidden` (..., D) -> (..., V): the logits of a forward run
        with `unembed=False`, for models whose forward does nothing after it (see `block_skip_works`)."""
        return self.arch.modules["lm_head"](hidden.to(self.device))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Unhooked forward through the backend; equals the raw HF logits."""
        return self.run(input_ids, attention_mask).logits

    def __repr__(self) -> str:
        return f"HookedModel({self.provenance.get('source')!r}, backend={self.backend}, {self.arch.shapes()})"


_PICKLED_SUFFIXES = ("bin", "pt", "pth", "ckpt", "pkl")  # named only to say they are there; never opened


def _no_safetensors_message(source: Any, path: str, msg: str) -> str:
    """One line for a checkpoint without safetensors weights: only pickled weights (refused, never unpickled)
    or no weights at all (a local folder that holds only config/tokenizer files)."""
    folder = Path(path)
    files = folder.iterdir() if folder.is_dir() else ()
    pickled = sorted(f.name for f in files if f.is_file() and f.suffix.lstrip(".") in _PICKLED_SUFFIXES)
    if folder.is_dir() and not pickled:
        return (
            f"{source} has no model weights: neither model.safetensors nor model.safetensors.index.json with its "
            "shards is in the folder; pass the folder that holds the weights (save_pretrained writes them)"
        )
    found = f"only pickled {', '.join(pickled[:3])}" if pickled else msg
    return (
        f"{source}: no safetensors weights ({found}); posttrain_probe never unpickles .bin files — "
        "convert the checkpoint to safetensors"
    )


def load_model(
    source: str | os.PathLike,
    backend: str = "nnsight",
    dtype: str | torch.dtype | None = None,
    device: str | None = None,
    revision: str | None = None,
    trust_remote_code: bool = False,
    remote: bool | str = False,
    attn_implementation: str | None = None,
) -> HookedModel:
    """Load a causal LM (safetensors only, no remote code unless asked) behind `backend`.

    `device="auto"` places a large model with accelerate's `device_map="auto"` (pair it with dtype="bfloat16").
    `remote=True` (backend nnsight, a hub id) sends every traced forward to NDIF; "local" is nnsight's serverless
    dry run of that path (the trace is serialized and rebuilt with only installed modules importable).
    """
    if backend not in BACKENDS:
        raise ModelLoadError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if remote and backend != "nnsight":
        raise ModelLoadError("remote=True needs backend='nnsight' (NDIF); the bridge runs locally only")
    path, extra = resolve_source(source)
    if remote and remote != "local" and extra["kind"] != "hub":
        raise ModelLoadError(
            f"remote={remote!r} runs {source} on NDIF, which serves hub models only; pass the hub id, or "
            "remote='local' for nnsight's serverless dry run of the remote path"
        )
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, "cuda" if dev == "auto" else dev)
    # offline: use the local cache only, at once, instead of huggingface_hub's retries (~25 s)
    unreachable = _hub_unreachable(path, revision) if extra["kind"] == "hub" else None
    local_only = unreachable is not None
    _check_causal_lm(path, extra, revision, trust_remote_code, unreachable)
    # The bridge forces eager attention; use it for both backends so they agree to float precision.
    attn = attn_implementation or "eager"
    kwargs: dict[str, Any] = dict(
        dtype=torch_dtype,
        revision=revision,
        trust_remote_code=trust_remote_code,
        use_safetensors=True,
        attn_implementation=attn,
        local_files_only=local_only,
    )
    if dev == "auto":
        import importlib.util

        if importlib.util.find_spec("accelerate") is None:
            raise ModelLoadError(
                "device='auto' places the model with accelerate's device_map='auto', and accelerate is not "
                "installed; pip install accelerate, or pass device='cuda' / 'cpu'"
            )
        kwargs["device_map"] = "auto"
    from posttrain_probe.utils.hf import no_hf_progress_bars

    try:
        with no_hf_progress_bars():  # one line per model is enough; the weight-loading bar is noise here
            hf = AutoModelForCausalLM.from_pretrained(path, **kwargs)
            tok = AutoTokenizer.from_pretrained(
                path, revision=revision, trust_remote_code=trust_remote_code, local_files_only=local_only
            )
    except OSError as e:
        msg = str(e).splitlines()[0]
        if "safetensors" in msg.lower():
            raise ModelLoadError(_no_safetensors_message(source, path, msg)) from None
        raise ModelLoadError(f"could not load {source}: {msg}") from None
    except Exception as e:  # corrupt weights and similar surface as various exception types
        raise ModelLoadError(f"could not load {source}: {type(e).__name__}: {str(e).splitlines()[0]}") from None
    if dev != "auto":
        hf.to(dev)
    hf.eval()
    if tok.pad_token_id is None and tok.eos_token_id is not None:
        tok.pad_token = tok.eos_token
    arch = discover(hf)
    provenance = {
        "source": str(source),
        "resolved": path,
        **extra,
        "revision": revision or getattr(hf.config, "_commit_hash", None),
        "weights_sha256": weights_sha256(path),
        "dtype": str(torch_dtype).replace("torch.", ""),
        "device": dev,
        "backend": backend,
        "model_type": arch.model_type,
        "shapes": arch.shapes(),
        "tokenizer_sha256": tokenizer_sha256(tok),
        "chat_template_sha256": hashlib.sha256(tok.chat_template.encode()).hexdigest()
        if getattr(tok, "chat_template", None)
        else None,
        "trust_remote_code": trust_remote_code,
        "attn_implementation": attn,
    }
    engine = make_engine(
        backend, hf, arch, tok, dev if dev != "auto" else None, remote=remote,
        trust_remote_code=trust_remote_code, revision=revision,
    )  # fmt: skip
    return HookedModel(hf, tok, engine, arch, provenance)
