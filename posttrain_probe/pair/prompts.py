"""The one place that formats prompts for base vs chat models.

A base model gets a plain-text template (default "User: {instruction}\\nAssistant:", as in Arditi et al.);
a chat model gets its tokenizer's chat template with a generation prompt. The format used is always
explicit and recorded in results. The few-shot TRUE/FALSE prompt of the truth and patching analyses lives
here too (`few_shot_true_false`, `FewShotPrompt`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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


# ---------------------------------------------------------------------------------------------- TRUE/FALSE

TRUE_FALSE_SUFFIX = " This statement is:"
TRUE_LABEL = " TRUE"
FALSE_LABEL = " FALSE"


def few_shot_true_false(
    statement: str,
    shots: Sequence[tuple[str, int]],
    suffix: str = TRUE_FALSE_SUFFIX,
    true_label: str = TRUE_LABEL,
    false_label: str = FALSE_LABEL,
    sep: str = "\n",
) -> tuple[str, tuple[int, int]]:
    """The few-shot TRUE/FALSE prompt of SPEC §1b/§2a and the character span of `statement` in it: one line
    "<shot><suffix><label>" per (text, label) shot, each followed by `sep`, then "<statement><suffix>"."""
    prefix = "".join(f"{t}{suffix}{true_label if y else false_label}{sep}" for t, y in shots)
    return prefix + statement + suffix, (len(prefix), len(prefix) + len(statement))


@dataclass(frozen=True)
class FewShotPrompt:
    """The few-shot TRUE/FALSE prompt used by the truth and the patching analyses (`few_shot_true_false`).

    `shots` are the examples used when `build` / `render` get none (the truth analysis passes per-dataset
    shots to one shot-less prompt; patching binds its shots once)."""

    shots: tuple[tuple[str, int], ...] = ()
    suffix: str = TRUE_FALSE_SUFFIX
    true_label: str = TRUE_LABEL
    false_label: str = FALSE_LABEL
    sep: str = "\n"

    def __post_init__(self) -> None:
        object.__setattr__(self, "shots", tuple((str(t), int(y)) for t, y in self.shots))
        if self.true_label == self.false_label:
            raise ValueError(f"true_label and false_label are both {self.true_label!r}; pass two different labels")

    def build(self, statement: str, shots: Sequence[tuple[str, int]] | None = None) -> tuple[str, tuple[int, int]]:
        """The prompt for `statement` (with `shots`, default: the bound ones) and the statement's span."""
        return few_shot_true_false(
            statement,
            self.shots if shots is None else shots,
            self.suffix,
            self.true_label,
            self.false_label,
            self.sep,
        )

    def render(self, statement: str, shots: Sequence[tuple[str, int]] | None = None) -> str:
        return self.build(statement, shots)[0]

    @property
    def prefix(self) -> str:
        """The examples part of the prompt (everything before the statement)."""
        text, (start, _) = self.build("")
        return text[:start]
