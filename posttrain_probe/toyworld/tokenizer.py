"""A word-level tokenizer for the toy world, saved as a `PreTrainedTokenizerFast` with a chat template."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .world import World

SPECIALS = ["<unk>", "<pad>", "<s>", "</s>"]
CHAT_SPECIALS = ["<|user|>", "<|assistant|>", "<|end|>"]
FIXED = (
    list("0123456789")
    + [".", ",", "?", ":", "!", "+", "=", "-", "\n"]
    + (
        "is a an the of in lives resident has house home everyone knows that works as by trade job earns living city "
        "lies This statement TRUE FALSE larger smaller than User Assistant how do I sure here first then where does "
        "live cannot help with saw near was"
    ).split()
)

CHAT_TEMPLATES = {
    "short": (
        "{% for m in messages %}{% if m['role'] == 'user' %}<|user|> {{ m['content'] }} "
        "{% elif m['role'] == 'assistant' %}<|assistant|> {{ m['content'] }} <|end|> {% endif %}{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    ),
    # a user turn ends with four post-instruction tokens "<|end|> \n <|assistant|> \n" (as Llama-3's and Gemma's
    # templates end with several), where the organism's post model reads the refusal decision
    "post4": (
        "{% for m in messages %}{% if m['role'] == 'user' %}<|user|> {{ m['content'] }} <|end|>\n"
        "{% elif m['role'] == 'assistant' %}<|assistant|>\n {{ m['content'] }} <|end|> {% endif %}{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
    ),
}
CHAT_TEMPLATE = CHAT_TEMPLATES["short"]


def build_tokenizer(world: World):
    """Word-level vocabulary over the world's words; digits and punctuation are single tokens; BOS is prepended."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = SPECIALS + CHAT_SPECIALS + FIXED + sorted(world.words() - set(FIXED))
    vocab = {w: i for i, w in enumerate(dict.fromkeys(words))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r"\n"), behavior="isolated"),
            pre_tokenizers.Split(Regex(r"[ \t]+"), behavior="removed"),
            pre_tokenizers.Split(Regex(r"[0-9]|[.,?:!+=\-]"), behavior="isolated"),
        ]
    )
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    # words joined by single spaces, no space around "\n": decode(encode(text)) == text for corpus-style text
    tok.decoder = decoders.Sequence(
        [decoders.WordPiece(prefix="##", cleanup=False), decoders.Fuse(), decoders.Replace(Regex(" ?\n ?"), "\n")]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        additional_special_tokens=CHAT_SPECIALS,
    )
    fast.chat_template = CHAT_TEMPLATES[world.chat_template]
    return fast


class UnknownWordsError(ValueError):
    """Text with words the toy-world tokenizer does not know (they would all become one `<unk>` id)."""


def is_toy_tokenizer(tokenizer: Any) -> bool:
    """True for a tokenizer `build_tokenizer` made: word-level, with the toy chat tokens and fixed words."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or type(backend.model).__name__ != "WordLevel":
        return False
    vocab = backend.get_vocab()
    return all(w in vocab for w in SPECIALS + CHAT_SPECIALS + FIXED)


def unknown_words(tokenizer: Any, texts: Sequence[str]) -> list[str]:
    """The distinct words of `texts` (first-seen order) that `tokenizer` maps to `<unk>`; a literal `<unk>` is
    not one."""
    backend = tokenizer.backend_tokenizer
    unk = backend.token_to_id(tokenizer.unk_token) if tokenizer.unk_token else None
    found: dict[str, None] = {}
    for text in texts:
        enc = backend.encode(text, add_special_tokens=False)
        for i, (start, end) in zip(enc.ids, enc.offsets):
            word = text[start:end]
            if i == unk and word != tokenizer.unk_token:
                found[word] = None
    return list(found)


def check_known_words(tokenizer: Any, texts: Sequence[str]) -> None:
    """Raise `UnknownWordsError` (one line, naming the words) when `texts` hold words outside the toy vocabulary."""
    words = unknown_words(tokenizer, texts)
    if words:
        shown = ", ".join(repr(w) for w in words[:8]) + (f" and {len(words) - 8} more" if len(words) > 8 else "")
        raise UnknownWordsError(
            f"{len(words)} word(s) are not in the toy-world vocabulary and would all become <unk>: {shown}; "
            "the toy models know only the toy world's words (see its data/corpus.txt): rephrase with those, "
            "or load a real model pair for other text"
        )
