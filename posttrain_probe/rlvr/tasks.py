"""Verifiable rewards: `reward(completion, problem) -> float in [0, 1]`, one registered function per task.

All rewards are binary (1.0 correct, 0.0 otherwise) and parse only the text before the first end marker
(`END_MARKERS`), so what the model writes after it finished cannot earn or lose reward.

- "arithmetic" (toy world): the answer is the LAST number in the completion, where a number is a run of
  digits that may be separated by single spaces ("9 2" is 92, as the toy tokenizer writes digits one token
  at a time; "92" is 92 too), with an optional leading "-". It must equal the problem's answer (which may
  itself be written either way, or as GSM8K "#### N").
- "countdown": the completion's equation (content of the last <answer>...</answer>, else the last
  non-empty line; a trailing "= N" is dropped) is parsed by a small recursive-descent parser (+ - * / and
  parentheses, integers, exact rational arithmetic; no `eval`). Each given number may be used at most
  once, no other literal is allowed, and the value must equal the target.
- "gsm8k": the final answer is the number after the last "####" if present, else the last number in
  the text; commas, "$" and a trailing "." are ignored; compared as exact rationals ("18.0" == "18").
- "math500": the content of the last \\boxed{...} compared with the reference answer after
  `normalize_math_answer` (spaces, \\left/\\right, \\!, \\, , $, \\text{}, ^\\circ, dfrac/tfrac removed or
  unified); numbers that parse are compared as rationals.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from posttrain_probe.data.records import Problem, last_boxed

END_MARKERS = ("<|end|>", "<|im_end|>", "<|eot_id|>", "<|endoftext|>", "</s>", "<eos>")


class RewardError(ValueError):
    """A problem that a task's reward cannot check (missing field, unknown task)."""


def strip_after_end(completion: str, markers: tuple[str, ...] = END_MARKERS) -> str:
    """The text before the first end marker (the whole text if none occurs)."""
    cut = len(completion)
    for m in markers:
        i = completion.find(m)
        if 0 <= i < cut:
            cut = i
    return completion[:cut]


def _answer_of(problem: Problem | str | int) -> str:
    if isinstance(problem, Problem):
        return problem.answer
    if isinstance(problem, str | int):
        return str(problem)
    raise RewardError(f"expected a Problem or an answer string, got {type(problem).__name__}")


# ------------------------------------------------------------------------------------------- arithmetic

_SPACED_NUMBER = re.compile(r"-?\d(?: ?\d)*")


def parse_spaced_number(text: str) -> int | None:
    """The last number in `text`, digits optionally separated by single spaces ("9 2" → 92); None if none."""
    found = _SPACED_NUMBER.findall(text)
    if not found:
        return None
    return int(found[-1].replace(" ", ""))


def arithmetic_reward(completion: str, problem: Problem | str | int) -> float:
    """1.0 when the last (possibly digit-spaced) number before the end marker equals the answer."""
    answer = _answer_of(problem)
    if "####" in answer:
        answer = answer.rsplit("####", 1)[1]
    target = parse_spaced_number(answer)
    if target is None:
        raise RewardError(f"arithmetic answer {answer!r} holds no number; fix the data set")
    got = parse_spaced_number(strip_after_end(completion))
    return float(got is not None and got == target)


# -------------------------------------------------------------------------------------------- countdown

_TOKEN = re.compile(r"\s*(?:(\d+)|(.))")


class _ExprError(ValueError):
    pass


def _tokenize_expr(text: str) -> list[str]:
    tokens, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:  # only trailing whitespace is left
            break
        tok = m.group(1) or m.group(2)
        if tok not in "+-*/()" and not tok.isdigit():
            raise _ExprError(f"unexpected character {tok!r}")
        tokens.append(tok)
        pos = m.end()
    return tokens


def evaluate_expression(text: str) -> tuple[Fraction, list[int]]:
    """Value (exact rational) and the integer literals of an arithmetic expression with + - * / ( ).

    Grammar: expr := term (('+'|'-') term)*; term := factor (('*'|'/') factor)*;
    factor := INT | '(' expr ')' | '-' factor. Division by zero and any other token raise ValueError.
    """
    tokens = _tokenize_expr(text)
    if not tokens:
        raise _ExprError("empty expression")
    literals: list[int] = []
    pos = 0

    def peek() -> str | None:
        return tokens[pos] if pos < len(tokens) else None

    def take() -> str:
        nonlocal pos
        tok = tokens[pos]
        pos += 1
        return tok

    def factor() -> Fraction:
        tok = peek()
        if tok is None:
            raise _ExprError("expression ends early")
        if tok == "(":
            take()
            value = expr()
            if peek() != ")":
                raise _ExprError("missing ')'")
            take()
            return value
        if tok == "-":
            take()
            return -factor()
        if tok.isdigit():
            take()
            literals.append(int(tok))
            return Fraction(int(tok))
        raise _ExprError(f"unexpected {tok!r}")

    def term() -> Fraction:
        value = factor()
        while peek() in ("*", "/"):
            op, rhs = take(), factor()
            if op == "/" and rhs == 0:
                raise _ExprError("division by zero")
            value = value * rhs if op == "*" else value / rhs
        return value

    def expr() -> Fraction:
        value = term()
        while peek() in ("+", "-"):
            op, rhs = take(), term()
            value = value + rhs if op == "+" else value - rhs
        return value

    value = expr()
    if pos != len(tokens):
        raise _ExprError(f"unexpected {tokens[pos]!r} after a complete expression")
    return value, literals


_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def countdown_equation(completion: str) -> str:
    """The equation a completion proposes: last <answer>...</answer> content, else its last non-empty line;
    text from the first "=" on is dropped ("(1 + 2) * 3 = 9" → "(1 + 2) * 3")."""
    text = completion
    tags = _ANSWER_TAG.findall(text)
    if tags:
        text = tags[-1]
    else:
        text = strip_after_end(text)
        lines = [ln for ln in text.splitlines() if ln.strip()]
        text = lines[-1] if lines else ""
    return text.split("=", 1)[0].strip()


def countdown_reward(completion: str, problem: Problem | dict[str, Any]) -> float:
    """1.0 when the equation uses only the given numbers, each at most once, and equals the target."""
    extra = problem.extra if isinstance(problem, Problem) else problem
    if not isinstance(extra, dict) or "numbers" not in extra or "target" not in extra:
        raise RewardError("countdown needs a Problem whose extra holds 'numbers' and 'target'")
    try:
        value, literals = evaluate_expression(countdown_equation(completion))
    except _ExprError:
        return 0.0
    if Counter(literals) - Counter(int(n) for n in extra["numbers"]):
        return 0.0
    return float(value == Fraction(int(extra["target"])))


# ------------------------------------------------------------------------------------------------ gsm8k

_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?")


def _to_fraction(text: str) -> Fraction | None:
    text = text.replace(",", "").replace("$", "").strip().rstrip(".")
    try:
        return Fraction(text)
    except (ValueError, ZeroDivisionError):
        return None


def gsm8k_extract(completion: str) -> Fraction | None:
    """The number after the last "####", else the last number in the text; None when there is none."""
    text = strip_after_end(completion)
    if "####" in text:
        tail = _NUMBER.findall(text.rsplit("####", 1)[1])
        return _to_fraction(tail[0]) if tail else None
    found = _NUMBER.findall(text)
    return _to_fraction(found[-1]) if found else None


def gsm8k_reward(completion: str, problem: Problem | str | int) -> float:
    """1.0 when the final answer equals the reference as an exact rational."""
    target = _to_fraction(_answer_of(problem))
    if target is None:
        raise RewardError(f"gsm8k answer {_answer_of(problem)!r} is not a number; fix the data set")
    got = gsm8k_extract(completion)
    return float(got is not None and got == target)


# ---------------------------------------------------------------------------------------------- math500

_TEXT_CMD = re.compile(r"\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}")


def normalize_math_answer(answer: str) -> str:
    """A canonical string for MATH answers: formatting commands and spaces removed, fractions unified."""
    s = answer.strip().strip("$")
    s = _TEXT_CMD.sub(r"\1", s)
    for old, new in (("\\left", ""), ("\\right", ""), ("\\!", ""), ("\\,", ""), ("\\;", ""), ("\\ ", "")):
        s = s.replace(old, new)
    s = s.replace("dfrac", "frac").replace("tfrac", "frac")
    s = s.replace("^{\\circ}", "").replace("^\\circ", "").replace("\\%", "").replace("%", "")
    s = re.sub(r"\s+", "", s).rstrip(".")
    s = re.sub(r"\\frac(\d)(\d)", r"\\frac{\1}{\2}", s)  # \frac12 → \frac{1}{2}
    s = re.sub(r"\\sqrt(\d+)", r"\\sqrt{\1}", s)  # \sqrt2 → \sqrt{2}
    if re.fullmatch(r"[a-zA-Z]=.+", s):  # "x=5" → "5"
        s = s.split("=", 1)[1]
    return s


def math_equal(pred: str, ref: str) -> bool:
    """Normalized string equality, with numbers ("0.5", "1/2", "\\frac{1}{2}") compared as rationals."""
    a, b = normalize_math_answer(pred), normalize_math_answer(ref)
    if a == b:
        return True
    fa, fb = _math_number(a), _math_number(b)
    return fa is not None and fa == fb


def _math_number(s: str) -> Fraction | None:
    m = re.fullmatch(r"(-?)\\frac\{(-?\d+)\}\{(-?\d+)\}", s)
    if m:
        den = int(m.group(3))
        return None if den == 0 else (-1 if m.group(1) else 1) * Fraction(int(m.group(2)), den)
    if re.fullmatch(r"-?[\d,]*\.?\d+(?:/\d+)?", s):
        return _to_fraction(s)
    return None


def math500_reward(completion: str, problem: Problem | str) -> float:
    """1.0 when the last \\boxed{} answer matches the reference (see `math_equal`)."""
    boxed = last_boxed(strip_after_end(completion))
    return float(boxed is not None and math_equal(boxed, _answer_of(problem)))


# -------------------------------------------------------------------------------------------- registry

RewardFn = Callable[[str, Any], float]


@dataclass(frozen=True)
class Task:
    """A registered RLVR task: its reward and the data set folder name under the shared data dir."""

    name: str
    reward: RewardFn
    shared_data: str | None


TASKS: dict[str, Task] = {
    "arithmetic": Task("arithmetic", arithmetic_reward, None),
    "countdown": Task("countdown", countdown_reward, "countdown"),
    "gsm8k": Task("gsm8k", gsm8k_reward, "gsm8k"),
    "math500": Task("math500", math500_reward, "math500"),
}


def get_task(name: str) -> Task:
    """The registered task called `name`; an unknown name is an error listing the known ones."""
    if name not in TASKS:
        raise RewardError(f"unknown task {name!r}; choose one of {', '.join(sorted(TASKS))}")
    return TASKS[name]
