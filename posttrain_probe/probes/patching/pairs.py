"""True/false statement pairs for patching (Du et al. 2025): same template, same token length, differing only
in the subject, one true and one false; their encoding in the few-shot TRUE/FALSE prompt (`FewShotPrompt`,
shared with the truth analysis in pair.prompts); position classes to average maps over pairs whose statements
have different lengths.

Pairs come from statement records that name their subject and object: the toy world's statements.csv
(`subject`, `object` columns) or Geometry-of-Truth's cities.csv (`city`, `country`, `correct_country`).
A substituted statement "<other subject> ... <object>" is false when the object is not among the other
subject's true objects (rows labelled 1, plus a `correct_<object column>` value when the source has one).
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from posttrain_probe.data import Statement
from posttrain_probe.pair.prompts import FewShotPrompt
from posttrain_probe.pair.spans import SubjectNotFoundError, encode_offsets, find_token_span

SUBJECT_COLUMNS = ("subject", "city")
OBJECT_COLUMNS = ("object", "country")
# Position classes of the statement + suffix, in plot order; the suffix tokens follow as suffix_<i>.
STATEMENT_CLASSES = (
    "before_subject",
    "subject_first",
    "subject_middle",
    "subject_last",
    "between",
    "object",
    "after_object",
)


@dataclass(frozen=True)
class StatementPair:
    """A true statement and its false twin (only the subject differs), with the shared object."""

    true_text: str
    false_text: str
    true_subject: str
    false_subject: str
    object: str
    dataset: str


def _pick_column(statements: Sequence[Statement], names: Sequence[str], given: str | None, what: str) -> str:
    if given is not None:
        if not any(given in s.extra for s in statements):
            raise ValueError(f"no statement has a {given!r} column; pass the {what} column the data has")
        return given
    for name in names:
        if any(s.extra.get(name) for s in statements):
            return name
    raise ValueError(
        f"the statements name no {what} (looked for columns {', '.join(names)}); pass --{what}-column or use "
        "cities.csv / the toy world's statements.csv"
    )


def pair_columns(
    statements: Sequence[Statement], subject_column: str | None = None, object_column: str | None = None
) -> tuple[str, str]:
    """The (subject, object) column names: given, or detected (subject/city, object/country)."""
    return (
        _pick_column(statements, SUBJECT_COLUMNS, subject_column, "subject"),
        _pick_column(statements, OBJECT_COLUMNS, object_column, "object"),
    )


def true_objects(statements: Sequence[Statement], subj_col: str, obj_col: str) -> dict[str, set[str]]:
    """subject -> the objects it is truly paired with (label-1 rows plus a `correct_<obj_col>` column)."""
    out: dict[str, set[str]] = defaultdict(set)
    for s in statements:
        subj = s.extra.get(subj_col)
        if not subj:
            continue
        if s.label == 1 and s.extra.get(obj_col):
            out[str(subj)].add(str(s.extra[obj_col]))
        if s.extra.get(f"correct_{obj_col}"):
            out[str(subj)].add(str(s.extra[f"correct_{obj_col}"]))
    return out


def build_pairs(
    statements: Sequence[Statement],
    tokenizer,
    max_pairs: int | None = None,
    seed: int = 0,
    subject_column: str | None = None,
    object_column: str | None = None,
    exclude_texts: Sequence[str] = (),
) -> tuple[list[StatementPair], dict]:
    """Pairs (true statement, same statement with another subject that makes it false) whose two statements
    tokenize to the same length with the subject on the same tokens. Subjects mentioned in `exclude_texts`
    (the few-shot examples) are not used. Returns (pairs, counts)."""
    subj_col, obj_col = pair_columns(statements, subject_column, object_column)
    truth = true_objects(statements, subj_col, obj_col)
    rows = [
        s
        for s in statements
        if s.label == 1 and s.extra.get(subj_col) and s.extra.get(obj_col) and s.text.count(str(s.extra[subj_col])) == 1
    ]
    rng = random.Random(seed)
    rng.shuffle(rows)
    banned = {z for z in truth if any(z in t for t in exclude_texts)}
    rows = [s for s in rows if str(s.extra[subj_col]) not in banned]
    subjects = sorted(set(truth) - banned)
    span_cache: dict[str, tuple[int, int, int]] = {}

    def shape(text: str, subject: str) -> tuple[int, int, int] | None:
        key = f"{subject}\x00{text}"
        if key not in span_cache:
            try:
                a, b = find_token_span(tokenizer, text, subject, add_special_tokens=False)
                span_cache[key] = (len(encode_offsets(tokenizer, text, False)[0]), a, b)
            except SubjectNotFoundError:
                span_cache[key] = None  # type: ignore[assignment]
        return span_cache[key]

    pairs, no_partner = [], 0
    for s in rows:
        subj, obj = str(s.extra[subj_col]), str(s.extra[obj_col])
        want = shape(s.text, subj)
        cands = [z for z in subjects if z != subj and obj not in truth[z] and z not in s.text]
        rng.shuffle(cands)
        partner = next((z for z in cands if want and shape(s.text.replace(subj, z), z) == want), None)
        if partner is None:
            no_partner += 1
            continue
        pairs.append(StatementPair(s.text, s.text.replace(subj, partner), subj, partner, obj, s.dataset))
        if max_pairs is not None and len(pairs) >= max_pairs:
            break
    counts = {
        "subject_column": subj_col,
        "object_column": obj_col,
        "n_true_statements": len(rows),
        "n_pairs": len(pairs),
        "n_without_partner": no_partner,
    }
    return pairs, counts


def choose_shots(statements: Sequence[Statement], n_shots: int = 4, seed: int = 0) -> tuple[tuple[str, int], ...]:
    """`n_shots` of `statements` (half true, half false; seeded, shuffled) for the few-shot prefix."""
    rng = random.Random(seed + 7919)
    pool: dict[int, list[str]] = {1: [], 0: []}
    for s in statements:
        pool[s.label].append(s.text)
    n_true = (n_shots + 1) // 2
    if len(pool[1]) < n_true or len(pool[0]) < n_shots - n_true:
        raise ValueError(
            f"not enough true and false statements for {n_shots} few-shot examples; lower n_shots or add data"
        )
    shots = [(t, 1) for t in rng.sample(pool[1], n_true)] + [(t, 0) for t in rng.sample(pool[0], n_shots - n_true)]
    rng.shuffle(shots)
    return tuple(shots)


@dataclass
class EncodedPair:
    """Token ids of the true and false prompts (T,) and the positions that classify them."""

    pair: StatementPair
    true_ids: torch.Tensor
    false_ids: torch.Tensor
    statement: tuple[int, int]
    subject: tuple[int, int]
    object: tuple[int, int]

    @property
    def n_tokens(self) -> int:
        return int(self.true_ids.shape[0])


def encode_pair(tokenizer, pair: StatementPair, prompt: FewShotPrompt) -> EncodedPair:
    """Both prompts tokenized; ValueError when they do not align token for token outside the subject."""
    spans = []
    for text, subj in ((pair.true_text, pair.true_subject), (pair.false_text, pair.false_subject)):
        full = prompt.render(text)
        at = len(prompt.prefix)
        st = find_token_span(tokenizer, full, text, char_start=at, what="statement")
        su = find_token_span(tokenizer, full, subj, char_start=at + text.index(subj))
        o_at = text.rfind(pair.object)
        ob = find_token_span(tokenizer, full, pair.object, char_start=at + o_at, what="object")
        ids = torch.tensor(tokenizer(full)["input_ids"], dtype=torch.long)
        spans.append((ids, st, su, ob))
    (ti, st, su, ob), (fi, st2, su2, ob2) = spans
    if ti.shape != fi.shape or (st, su, ob) != (st2, su2, ob2):
        raise ValueError(f"the pair {pair.true_text!r} / {pair.false_text!r} does not align token for token")
    return EncodedPair(pair, ti, fi, st, su, ob)


def position_classes(enc: EncodedPair, n_suffix: int) -> list[torch.Tensor]:
    """Positions of each class (STATEMENT_CLASSES, then suffix_0 .. suffix_{n_suffix-1}, the last = last
    token) as index tensors; empty when a class has no token in this pair."""
    (a, b), (s0, s1), (o0, o1), T = enc.statement, enc.subject, enc.object, enc.n_tokens

    def r(lo: int, hi: int) -> torch.Tensor:
        return torch.arange(lo, max(lo, hi))

    out = [r(a, s0), r(s0, s0 + 1), r(s0 + 1, s1 - 1), r(s1 - 1, s1), r(s1, o0), r(o0, o1), r(o1, b)]
    extra = T - b - n_suffix  # tokens between the statement and the common suffix (normally none)
    out[-1] = torch.cat([out[-1], r(b, b + extra)])
    out += [r(b + extra + i, b + extra + i + 1) for i in range(n_suffix)]
    return out
