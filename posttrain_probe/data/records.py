"""Typed, validated records shared by every probe: facts, statements, instructions, problems.

Records are frozen dataclasses; `__post_init__` checks them so a probe never sees a malformed item.
Fields a source carries beyond the ones named here go to `extra` untouched (the toy world adds keys such
as "split" or "family"; they must survive a load).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

KNOWN_TASKS = ("gsm8k", "math500", "countdown", "arithmetic")
LeadingSpace = Literal["auto", "always", "never"]


class RecordError(ValueError):
    """A record with a missing or malformed field; the message names the field and the fix."""


def _need_str(owner: str, name: str, value: Any, allow_empty: bool = False) -> None:
    if not isinstance(value, str):
        raise RecordError(f"{owner}.{name} must be a str, got {type(value).__name__} ({value!r})")
    if not allow_empty and not value.strip():
        raise RecordError(f"{owner}.{name} is empty; give a non-blank string")


def _need_opt_str(owner: str, name: str, value: Any) -> None:
    if value is not None and not isinstance(value, str):
        raise RecordError(f"{owner}.{name} must be a str or None, got {type(value).__name__} ({value!r})")


def _need_dict(owner: str, value: Any) -> None:
    if not isinstance(value, dict):
        raise RecordError(f"{owner}.extra must be a dict, got {type(value).__name__}")


def answer_with_space(prompt: str, attribute: str, leading_space: LeadingSpace = "auto") -> str:
    """The continuation string scored after `prompt`.

    ROME's known_1000 stores the attribute bare ("Antarctica") and the prompt without a trailing space, so
    the token a BPE model must predict is " Antarctica". `leading_space`:
    "auto" adds one space unless the prompt ends in whitespace or the attribute starts with it;
    "always" adds one unless the attribute already starts with whitespace; "never" keeps it as is.
    """
    if leading_space not in ("auto", "always", "never"):
        raise RecordError(f"leading_space={leading_space!r} is not one of 'auto', 'always', 'never'")
    if leading_space == "never" or attribute[:1].isspace():
        return attribute
    if leading_space == "auto" and prompt[-1:].isspace():
        return attribute
    return " " + attribute


def parse_label(value: Any) -> int:
    """1/0, True/False, '1'/'0', 'true'/'false' (any case) → 1 or 0; anything else is an error."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float) and value in (0, 1):
        return int(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("1", "true", "1.0"):
            return 1
        if text in ("0", "false", "0.0"):
            return 0
    raise ValueError(f"label {value!r} is not 1/0 or true/false")


def gsm8k_final_answer(solution: str) -> str:
    """The text after the last "####", commas and surrounding whitespace stripped ("1,000" → "1000")."""
    if "####" not in solution:
        raise ValueError("no '####' final-answer marker in the GSM8K solution")
    return solution.rsplit("####", 1)[1].strip().replace(",", "")


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (or \\fbox{...}) in `text`, nested braces handled; None if absent
    or unbalanced. "\\boxed 5" (no braces) gives "5"."""
    starts = [text.rfind(m) for m in ("\\boxed", "\\fbox")]
    start = max(starts)
    if start < 0:
        return None
    i = start + (len("\\boxed") if start == starts[0] else len("\\fbox"))
    if text[i : i + 1] == " ":
        m = re.match(r" +([^\s$]+)", text[i:])
        return m.group(1) if m else None
    if text[i : i + 1] != "{":
        return None
    depth, j = 0, i
    while j < len(text):
        ch = text[j]
        if ch == "\\":
            j += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j]
        j += 1
    return None


def countdown_question(numbers: Sequence[int], target: int) -> str:
    """The Countdown task in words (TinyZero's phrasing)."""
    return (
        f"Using the numbers {list(numbers)}, create an equation that equals {target}. You can use basic "
        "arithmetic operations (+, -, *, /) and each number can only be used once."
    )


@dataclass(frozen=True)
class Fact:
    """A factual-recall prompt: `prompt` + `answer` is the true completion; `subject` occurs in `prompt`.

    `attribute` is the source's bare target (ROME's "attribute"); `answer` is what the model must produce
    right after `prompt`, with the leading-space rule of `answer_with_space` applied by the loader.
    """

    prompt: str
    subject: str
    answer: str
    attribute: str = ""
    relation_id: str = ""
    id: str = ""
    template: str = ""
    split: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("prompt", "subject", "answer"):
            _need_str("Fact", name, getattr(self, name))
        for name in ("attribute", "relation_id", "id", "template"):
            _need_str("Fact", name, getattr(self, name), allow_empty=True)
        _need_opt_str("Fact", "split", self.split)
        _need_dict("Fact", self.extra)
        if self.subject not in self.prompt:
            raise RecordError(
                f"Fact {self.id!r}: subject {self.subject!r} does not occur in prompt {self.prompt!r}; "
                "fix the record so the subject is a substring of the prompt"
            )

    @property
    def subject_char_span(self) -> tuple[int, int]:
        """(start, end) character offsets of the first occurrence of `subject` in `prompt` (as ROME)."""
        start = self.prompt.index(self.subject)
        return start, start + len(self.subject)


@dataclass(frozen=True)
class Statement:
    """A true/false statement (Geometry-of-Truth style); `label` is 1 for true, 0 for false."""

    text: str
    label: int
    dataset: str
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _need_str("Statement", "text", self.text)
        _need_str("Statement", "dataset", self.dataset)
        _need_dict("Statement", self.extra)
        if isinstance(self.label, bool) or self.label not in (0, 1):
            raise RecordError(f"Statement.label must be the int 1 (true) or 0 (false), got {self.label!r}")


@dataclass(frozen=True)
class Instruction:
    """A user instruction for refusal analyses; `harmful` is the set it was drawn from, not a judgement."""

    text: str
    harmful: bool
    category: str | None = None
    split: str | None = None
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _need_str("Instruction", "text", self.text)
        if not isinstance(self.harmful, bool):
            raise RecordError(f"Instruction.harmful must be a bool, got {self.harmful!r}")
        _need_opt_str("Instruction", "category", self.category)
        _need_opt_str("Instruction", "split", self.split)
        _need_str("Instruction", "source", self.source, allow_empty=True)
        _need_dict("Instruction", self.extra)


@dataclass(frozen=True)
class Problem:
    """A problem with a verifiable final answer (RLVR tasks and math evaluations).

    For "countdown", `answer` is the target number and `extra` holds `numbers` (list[int]) and `target`
    (int); a reward checks the model's equation, not string equality with `answer`.
    """

    question: str
    answer: str
    task: str
    id: str = ""
    solution: str = ""
    split: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("question", "answer", "task"):
            _need_str("Problem", name, getattr(self, name))
        _need_str("Problem", "id", self.id, allow_empty=True)
        _need_str("Problem", "solution", self.solution, allow_empty=True)
        _need_opt_str("Problem", "split", self.split)
        _need_dict("Problem", self.extra)
        if self.task == "countdown":
            nums, target = self.extra.get("numbers"), self.extra.get("target")
            if not (isinstance(nums, list) and nums and all(isinstance(n, int) for n in nums)):
                raise RecordError(f"countdown Problem {self.id!r}: extra['numbers'] must be a non-empty list of ints")
            if not isinstance(target, int) or str(target) != self.answer:
                raise RecordError(
                    f"countdown Problem {self.id!r}: extra['target'] must be an int equal to answer {self.answer!r}"
                )
