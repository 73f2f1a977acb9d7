"""Tiny random-init checkpoints of real HF architectures, saved like a hub download.

Tests, benchmarks and examples use them to exercise the exact code path of a hub id without a network:
`make_tiny_checkpoint("llama", tmp_path / "base")` writes config.json + model.safetensors + tokenizer files.
`make_shaped_checkpoint("gpt2-small", dir)` writes a random-init model of a real model's shape (`SHAPES`), for
benchmarks that must see real matrix sizes and vocabularies; its word-level tokenizer is padded to the vocabulary.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

FAMILIES = ("gpt2", "llama", "qwen2", "gemma", "gemma2", "gemma3")

_WORDS = (
    "the a an of in on is was and to at by for with from city country lives works born year "
    "TRUE FALSE This statement : . , ? ! User Assistant how do I make bake bread poison river "
    "cannot help that sure here zero one two three four five six seven eight nine"
).split()


def tiny_tokenizer(n_extra_words: int = 60, added_specials: tuple[str, ...] = (), words: Sequence[str] = ()):
    """A word-level `PreTrainedTokenizerFast` with bos/eos/pad/unk, digits, punctuation and newline tokens, plus
    `words` (e.g. the answers of a real data set, so a test can score them)."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<pad>", "<s>", "</s>"]
    base = specials + [str(d) for d in range(10)] + ["\n"] + list(_WORDS) + [f"w{i}" for i in range(n_extra_words)]
    words = base + [w for w in words if w and not any(c.isspace() for c in w)]
    vocab = {w: i for i, w in enumerate(dict.fromkeys(words))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r"\n"), behavior="isolated"),
            pre_tokenizers.Split(Regex(r"[ \t]+"), behavior="removed"),
            pre_tokenizers.Split(Regex(r"[0-9]|[.,:?!]"), behavior="isolated"),
        ]
    )
    from tokenizers import decoders

    tok.decoder = decoders.WordPiece(prefix="##")  # joins with spaces
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    )
    if added_specials:
        fast.add_special_tokens({"additional_special_tokens": list(added_specials)})
    return fast


def tiny_config(
    family: str,
    vocab_size: int,
    d_model: int = 32,
    n_layers: int = 2,
    d_mlp: int | None = None,
    max_positions: int = 128,
    n_heads: int = 4,
    n_kv_heads: int = 2,
    tie_embeddings: bool | None = None,
):
    """A small config of a real architecture (`family` in FAMILIES); `tie_embeddings` None keeps the family's
    default."""
    from transformers import Gemma2Config, GemmaConfig, GPT2Config, LlamaConfig, Qwen2Config

    d_mlp = d_mlp or 4 * d_model
    common = dict(vocab_size=vocab_size, bos_token_id=2, eos_token_id=3, pad_token_id=1)
    if tie_embeddings is not None:
        common["tie_word_embeddings"] = tie_embeddings
    if family == "gpt2":
        return GPT2Config(
            n_embd=d_model, n_layer=n_layers, n_head=n_heads, n_inner=d_mlp, n_positions=max_positions, **common
        )
    kw = dict(
        hidden_size=d_model,
        intermediate_size=d_mlp,
        num_hidden_layers=n_layers,
        num_attention_heads=n_heads,
        num_key_value_heads=n_kv_heads,
        max_position_embeddings=max_positions,
        **common,
    )
    if family == "llama":
        return LlamaConfig(**kw)
    if family == "qwen2":
        return Qwen2Config(**kw)
    if family == "gemma":
        return GemmaConfig(head_dim=d_model // n_heads, **kw)
    if family == "gemma2":
        return Gemma2Config(head_dim=d_model // n_heads, sliding_window=64, **kw)
    if family == "gemma3":  # the text-only Gemma-3 model (Gemma3ForCausalLM): sliding + global layers, qk-norm
        from transformers import Gemma3TextConfig

        return Gemma3TextConfig(head_dim=d_model // n_heads, sliding_window=64, **kw)
    raise ValueError(f"unknown family {family!r}; choose one of {', '.join(FAMILIES)}")


def make_tiny_checkpoint(
    family: str,
    out_dir: str | Path,
    seed: int = 0,
    d_model: int = 32,
    n_layers: int = 2,
    d_mlp: int | None = None,
    vocab_extra: int = 60,
    added_specials: tuple[str, ...] = (),
    chat_template: str | None = None,
    words: Sequence[str] = (),
    max_positions: int = 128,
    tie_embeddings: bool | None = None,
) -> Path:
    """Write a random-init checkpoint of `family` with a tiny tokenizer (plus `words`) to `out_dir`; return the
    path. `max_positions` is the context length; `tie_embeddings` None keeps the family's default."""

    out_dir = Path(out_dir)
    tok = tiny_tokenizer(vocab_extra, added_specials, words)
    if chat_template:
        tok.chat_template = chat_template
    cfg = tiny_config(
        family, len(tok), d_model=d_model, n_layers=n_layers, d_mlp=d_mlp, max_positions=max_positions,
        tie_embeddings=tie_embeddings,
    )  # fmt: skip
    return _save_random_init(cfg, tok, out_dir, seed)


def _save_random_init(cfg, tok, out_dir: Path, seed: int) -> Path:
    """A model of `cfg` with weights drawn under `seed`, saved with `tok` to `out_dir` (HF layout)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg)
    model.eval()
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return out_dir


# Real models' shapes (hub config.json values). "large-vocab" has Qwen2-0.5B's shape (vocabulary 151,936, tied
# embeddings) in Llama blocks: Qwen2 only adds q/k/v biases (a negligible share of the FLOPs), and a qwen2 checkpoint
# would make AutoTokenizer load Qwen's BPE tokenizer class over the word-level one.
SHAPES: dict[str, dict] = {
    "gpt2-small": dict(
        family="gpt2", d_model=768, n_layers=12, n_heads=12, n_kv_heads=12, d_mlp=3072, vocab_size=50257,
        max_positions=1024, tie_embeddings=True,
    ),
    "large-vocab": dict(
        family="llama", d_model=896, n_layers=24, n_heads=14, n_kv_heads=2, d_mlp=4864, vocab_size=151936,
        max_positions=2048, tie_embeddings=True,
    ),
}  # fmt: skip


def make_shaped_checkpoint(shape: str, out_dir: str | Path, seed: int = 0, n_layers: int | None = None) -> Path:
    """Write a random-init checkpoint of the real model shape `shape` (a key of SHAPES) to `out_dir`, with a
    word-level tokenizer (`tiny_tokenizer`'s words, then w0, w1, ...) of exactly its vocabulary size; return the
    path. `n_layers` overrides the depth (fewer layers, same width and vocabulary)."""

    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; choose one of {', '.join(SHAPES)}")
    spec = dict(SHAPES[shape])
    family, vocab = spec.pop("family"), spec.pop("vocab_size")
    if n_layers is not None:
        spec["n_layers"] = n_layers
    out_dir = Path(out_dir)
    tok = tiny_tokenizer(0)
    tok = tiny_tokenizer(vocab - len(tok))
    cfg = tiny_config(family, len(tok), **spec)
    return _save_random_init(cfg, tok, out_dir, seed)
