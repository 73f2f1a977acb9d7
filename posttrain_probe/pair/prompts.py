"""The one place that formats prompts for base vs chat models.

A base model gets a plain-text template (default "User: {instruction}\\nAssistant:", as in Arditi et al.);
a chat model gets its tokenizer's chat template with a generation prompt. The format used is always
explicit and recorded in results.
"""

from __future__ import annotations

BASE_TEMPLATE = "User: {instruction}\nAssistant:"
FORMATS = ("base", "chat", "raw")


def resolve_format(fmt: str, tokenizer, role: str) -> str:
    """'auto' → 'base' for the base model, 'chat' for the post model if its tokenizer has a chat template."""
    if fmt == "auto":
        return "chat" if role == "post" and getattr(tokenizer, "chat_template", None) else "base"
    if fmt not in FORMATS:
        raise ValueError(f"unknown prompt format {fmt!r}; choose auto, {', '.join(FORMATS)}")
    if fmt == "chat" and not getattr(tokenizer, "chat_template", None):
        raise ValueError("prompt format 'chat' needs a tokenizer with a chat_template; use format='base'")
    return fmt


def format_instruction(instruction: str, fmt: str, tokenizer, base_template: str = BASE_TEMPLATE) -> str:
    """Render one user instruction as the text the model continues."""
    if fmt == "raw":
        return instruction
    if fmt == "base":
        return base_template.format(instruction=instruction)
    if fmt == "chat":
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": instruction}], add_generation_prompt=True, tokenize=False
        )
    raise ValueError(f"unknown prompt format {fmt!r}; choose {', '.join(FORMATS)}")
