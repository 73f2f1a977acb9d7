"""True/false patching, pure parts: pair construction and position classes by hand, label tokens, the cities csv."""

from __future__ import annotations

import random

import pytest

from posttrain_probe.data import Statement, load_statements
from posttrain_probe.paths import shared_data_dir
from posttrain_probe.probes.patching import (
    PatchingConfig,
    label_token_ids,
)
from posttrain_probe.probes.patching.pairs import (
    FewShotPrompt,
    build_pairs,
    choose_shots,
    encode_pair,
    position_classes,
    true_objects,
)
from posttrain_probe.testing import tiny_tokenizer

SUBJECTS = "zero one two three four five six seven eight nine".split()


OBJECTS = ["city", "country", "river", "bread"]


def _statements(seed: int = 0) -> list[Statement]:
    """'<digit word> lives in <place> .' with one true place per subject and one false row each."""
    rng = random.Random(seed)
    out = []
    for s in SUBJECTS:
        o = rng.choice(OBJECTS)
        f = rng.choice([x for x in OBJECTS if x != o])
        out.append(Statement(f"{s} lives in {o} .", 1, "toy", {"subject": s, "object": o}))
        out.append(Statement(f"{s} lives in {f} .", 0, "toy", {"subject": s, "object": f}))
    return out


def test_pairs_differ_only_in_subject_and_are_false_by_the_data():
    st = _statements()
    tok = tiny_tokenizer()
    truth = true_objects(st, "subject", "object")
    pairs, counts = build_pairs(st, tok, seed=1)
    assert counts["n_pairs"] == len(pairs) > 5
    for p in pairs:
        assert p.true_text.replace(p.true_subject, p.false_subject) == p.false_text
        assert p.object in truth[p.true_subject] and p.object not in truth[p.false_subject]
        assert len(tok(p.true_text)["input_ids"]) == len(tok(p.false_text)["input_ids"])
    again, _ = build_pairs(st, tok, seed=1)
    assert again == pairs


def test_subjects_of_the_shots_are_not_used_in_pairs():
    st = _statements()
    shots = choose_shots(st, 4, seed=0)
    assert sorted(y for _, y in shots) == [0, 0, 1, 1]
    pairs, _ = build_pairs(st, tiny_tokenizer(), exclude_texts=[t for t, _ in shots])
    used = {p.true_subject for p in pairs} | {p.false_subject for p in pairs}
    assert not any(s in t for s in used for t, _ in shots)


def test_cities_columns_are_detected_and_correct_country_defines_truth():
    st = [
        Statement("The city of Paris is in France.", 1, "cities", {"city": "Paris", "country": "France"}),
        Statement(
            "The city of Rome is in France.",
            0,
            "cities",
            {"city": "Rome", "country": "France", "correct_country": "Italy"},
        ),
    ]
    pairs, counts = build_pairs(st, tiny_tokenizer())
    assert counts["subject_column"] == "city" and counts["object_column"] == "country"
    assert [(p.true_text, p.false_text) for p in pairs] == [
        ("The city of Paris is in France.", "The city of Rome is in France.")
    ]


def test_position_classes_by_hand():
    tok = tiny_tokenizer()
    st = _statements()
    pairs, _ = build_pairs(st, tok)
    prompt = FewShotPrompt(shots=(), suffix=" This statement :")
    enc = encode_pair(tok, pairs[0], prompt)
    # "<subj> lives in <obj> . This statement :" → subj 0, lives 1, in 2, obj 3, . 4, suffix 5 6 7
    assert enc.statement == (0, 5) and enc.subject == (0, 1) and enc.object == (3, 4)
    cls = [c.tolist() for c in position_classes(enc, n_suffix=3)]
    assert cls == [[], [0], [], [0], [1, 2], [3], [4], [5], [6], [7]]


def test_label_tokens_and_errors():
    tok = tiny_tokenizer()
    t, f, notes = label_token_ids(tok, " TRUE", " FALSE")
    assert tok.convert_ids_to_tokens([t, f]) == ["TRUE", "FALSE"] and notes == []
    _, _, notes = label_token_ids(tok, " TRUE .", " FALSE")
    assert "first token" in notes[0]
    with pytest.raises(ValueError, match="vocabulary"):
        label_token_ids(tok, " YES", " FALSE")
    with pytest.raises(ValueError, match="same token"):
        label_token_ids(tok, " TRUE", " TRUE .")
    with pytest.raises(ValueError, match="are equal"):
        PatchingConfig(true_label=" A", false_label=" A")


def test_pairs_from_cities_csv_via_the_shared_loader():
    root = shared_data_dir()
    if root is None or not (root / "geometry_of_truth" / "cities.csv").is_file():
        pytest.skip("shared data folder with geometry_of_truth/cities.csv not found (set POSTTRAIN_PROBE_DATA)")
    st = load_statements(root / "geometry_of_truth" / "cities.csv")
    correct = {s.extra["city"]: s.extra["correct_country"] for s in st}
    pairs, counts = build_pairs(st, tiny_tokenizer(), max_pairs=20)
    assert counts["subject_column"] == "city" and len(pairs) == 20
    for p in pairs:
        assert correct[p.true_subject] == p.object != correct[p.false_subject]
