"""Rewards of the registered RLVR tasks against hand-checked cases, and against the shared data sets."""

from __future__ import annotations

import itertools
from fractions import Fraction

import pytest

from posttrain_probe.data.records import Problem
from posttrain_probe.paths import shared_data_dir
from posttrain_probe.rlvr.tasks import (
    TASKS,
    RewardError,
    arithmetic_reward,
    countdown_reward,
    evaluate_expression,
    get_task,
    gsm8k_reward,
    math500_reward,
    parse_spaced_number,
    strip_after_end,
)


def test_registry_names_the_four_tasks_and_rejects_unknown():
    assert set(TASKS) == {"arithmetic", "countdown", "gsm8k", "math500"}
    with pytest.raises(RewardError, match="choose one of"):
        get_task("chess")


@pytest.mark.parametrize(
    "completion, answer, expected",
    [
        ("9 2<|end|>", "92", 1.0),
        ("9 2 <|end|>", "9 2", 1.0),
        ("92", "9 2", 1.0),
        ("9 3<|end|>", "92", 0.0),
        ("3 + 4 = 9 2<|end|> 5 5", "92", 1.0),  # the last number before the end marker counts
        ("9 2<|end|>", "#### 92", 1.0),
        ("- 5", "-5", 0.0),  # "-" separated from its digits by a space is not a sign
        ("-5", "-5", 1.0),
        ("", "92", 0.0),
        ("nine two", "92", 0.0),
    ],
)
def test_arithmetic_reward_parses_spaced_and_plain_digits(completion, answer, expected):
    assert arithmetic_reward(completion, answer) == expected


def test_arithmetic_reward_rejects_an_answer_without_a_number():
    with pytest.raises(RewardError, match="holds no number"):
        arithmetic_reward("1", "abc")


def test_spaced_number_and_end_marker_helpers():
    assert parse_spaced_number("a 1 2 3 b 4 5") == 45
    assert parse_spaced_number("none") is None
    assert strip_after_end("1 2<|im_end|>3<|end|>") == "1 2"


CD = Problem(question="q", answer="23", task="countdown", extra={"numbers": [30, 100, 93], "target": 23})


@pytest.mark.parametrize(
    "completion, expected",
    [
        ("<answer>93 - 100 + 30</answer>", 1.0),
        ("reasoning...\n(93 - 100) + 30 = 23", 1.0),
        ("93 - (100 - 30)", 1.0),
        ("100 - 93 + 30", 0.0),  # 37
        ("93 - 100 + 30 + 30 - 30", 0.0),  # 30 used three times
        ("23", 0.0),  # a literal that is not among the numbers
        ("93 - 100 + 30 *", 0.0),  # malformed
        ("__import__('os').system('true')", 0.0),  # never evaluated
        ("", 0.0),
    ],
)
def test_countdown_reward_checks_numbers_and_value(completion, expected):
    assert countdown_reward(completion, CD) == expected


def test_countdown_exact_division_and_division_by_zero():
    p = {"numbers": [6, 4, 3], "target": 8}
    assert countdown_reward("6 / 3 * 4", p) == 1.0
    assert countdown_reward("6 * 4 / 3", p) == 1.0
    assert countdown_reward("6 / (4 - 4)", p) == 0.0
    assert evaluate_expression("6 / 4") == (Fraction(3, 2), [6, 4])
    assert evaluate_expression("-(2 + 3) * 4")[0] == -20
    with pytest.raises(RewardError, match="numbers"):
        countdown_reward("1", Problem(question="q", answer="1", task="gsm8k"))


@pytest.mark.parametrize(
    "completion, answer, expected",
    [
        ("so she makes 9 * 2 = 18 dollars.\n#### 18", "18", 1.0),
        ("#### 1,000", "1000", 1.0),
        ("The total is $18.", "18", 1.0),
        ("18.0", "18", 1.0),
        ("#### 17 then 18", "18", 0.0),  # the number right after the last #### counts
        ("17", "18", 0.0),
        ("no number", "18", 0.0),
        ("0.5", "1/2", 1.0),
    ],
)
def test_gsm8k_reward_final_answer_match(completion, answer, expected):
    assert gsm8k_reward(completion, answer) == expected


@pytest.mark.parametrize(
    "completion, answer, expected",
    [
        ("so \\boxed{\\dfrac{14}{3}}", "\\frac{14}{3}", 1.0),
        ("\\boxed{90}", "90^\\circ", 1.0),
        ("\\boxed{\\text{Evelyn}}", "\\text{Evelyn}", 1.0),
        ("\\boxed{0.5}", "\\frac{1}{2}", 1.0),
        ("\\boxed{\\frac12}", "\\frac{1}{2}", 1.0),
        ("\\boxed{x = 5}", "x=5", 1.0),
        ("\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}", "\\left( 3, \\frac{\\pi}{2} \\right)", 1.0),
        ("\\boxed{11\\sqrt{2}}", "11\\sqrt2", 1.0),
        ("\\boxed{3}", "4", 0.0),
        ("the answer is 4", "4", 0.0),  # no \boxed{}
    ],
)
def test_math500_reward_normalized_boxed_match(completion, answer, expected):
    assert math500_reward(completion, answer) == expected


# ------------------------------------------------------------------------------- against the shared data

needs_data = pytest.mark.skipif(shared_data_dir() is None, reason="../shared/data is absent")


@needs_data
@pytest.mark.data
def test_gsm8k_reference_solutions_earn_full_reward():
    from posttrain_probe.data import load_gsm8k

    problems = load_gsm8k(shared_data_dir() / "gsm8k" / "test.jsonl", limit=200)
    assert all(gsm8k_reward(p.solution, p) == 1.0 for p in problems)
    # a solution of another problem is (almost always) wrong
    wrong = sum(gsm8k_reward(problems[i - 1].solution, problems[i]) for i in range(1, len(problems)))
    assert wrong < 0.05 * len(problems)


@needs_data
@pytest.mark.data
def test_math500_reference_solutions_earn_full_reward():
    from posttrain_probe.data import load_math500

    problems = load_math500(shared_data_dir() / "math500" / "test.jsonl")
    rate = sum(math500_reward(p.solution, p) for p in problems) / len(problems)
    assert rate >= 0.95


def _solve_countdown(numbers: list[int], target: int) -> str | None:
    """Brute force over orders, operators and the two bracketings of up to three numbers."""
    for k in range(1, len(numbers) + 1):
        for perm in itertools.permutations(numbers, k):
            for ops in itertools.product("+-*/", repeat=k - 1):
                shapes = [""]
                if k == 3:
                    shapes = ["({0} {o0} {1}) {o1} {2}", "{0} {o0} ({1} {o1} {2})"]
                for shape in shapes:
                    if k == 1:
                        text = str(perm[0])
                    elif k == 2:
                        text = f"{perm[0]} {ops[0]} {perm[1]}"
                    else:
                        text = shape.format(*perm, o0=ops[0], o1=ops[1])
                    try:
                        if evaluate_expression(text)[0] == target:
                            return text
                    except ValueError:
                        continue
    return None


@needs_data
@pytest.mark.data
def test_countdown_solutions_found_by_search_earn_full_reward():
    from posttrain_probe.data import load_countdown

    problems = load_countdown(shared_data_dir() / "countdown" / "countdown_cd3_test.jsonl", limit=30)
    solved = 0
    for p in problems:
        text = _solve_countdown(p.extra["numbers"], p.extra["target"])
        if text is not None:
            solved += 1
            assert countdown_reward(f"<answer>{text}</answer>", p) == 1.0
            assert countdown_reward(f"<answer>{text} + {p.extra['target']}</answer>", p) == 0.0
    assert solved >= 20
