"""Data loaders and records: real shared data sets (skipped without them), small edge-case files, hub rows."""

from __future__ import annotations

import csv
import dataclasses
import json
import re
from pathlib import Path

import pytest

from posttrain_probe.data import (
    DataSourceError,
    Fact,
    HubId,
    Problem,
    RecordError,
    Statement,
    answer_with_space,
    balance_sizes,
    check_balanced,
    gsm8k_final_answer,
    last_boxed,
    load_countdown,
    load_facts,
    load_gsm8k,
    load_instructions,
    load_math500,
    load_problems,
    load_refusal_splits,
    load_statements,
    parse_label,
    resolve_source,
    sample_records,
)
from posttrain_probe.paths import shared_data_dir

DATA = shared_data_dir()
needs_data = pytest.mark.skipif(DATA is None, reason="shared data folder (../shared/data) not found")


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg, f"error message spans several lines: {msg!r}"
    return msg


# ---------------------------------------------------------------------------------------------- pure helpers


def test_answer_with_space_rules():
    assert answer_with_space("X is in the continent of", "Antarctica") == " Antarctica"
    assert answer_with_space("X is in the continent of ", "Antarctica") == "Antarctica"
    assert answer_with_space("X is in the continent of ", "Antarctica", "always") == " Antarctica"
    assert answer_with_space("X is in", " Asia") == " Asia"
    assert answer_with_space("X is in", "Asia", "never") == "Asia"
    with pytest.raises(RecordError):
        answer_with_space("X", "Y", "sometimes")


def test_gsm8k_final_answer_strips_commas_and_takes_last_marker():
    assert gsm8k_final_answer("so 1,000 + 0 = <<1000>>1000\n#### 1,000") == "1000"
    assert gsm8k_final_answer("#### 3\nrevised\n####  -1,234,567 ") == "-1234567"
    with pytest.raises(ValueError):
        gsm8k_final_answer("no marker here")


@pytest.mark.parametrize(
    "text, expected",
    [
        (r"so $\boxed{\frac{1}{2}}$.", r"\frac{1}{2}"),
        (r"\boxed{1} then \boxed{\sqrt{\frac{a}{b}}}", r"\sqrt{\frac{a}{b}}"),
        (r"\boxed{\{1,2\}}", r"\{1,2\}"),
        (r"\boxed{\left\{ x \right.}", r"\left\{ x \right."),
        (r"\boxed{\text{(C)}}", r"\text{(C)}"),
        (r"answer \boxed 5$", "5"),
        (r"\fbox{7}", "7"),
        (r"\boxed{unbalanced", None),
        ("no box", None),
    ],
)
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


@pytest.mark.parametrize("value, expected", [(1, 1), (0, 0), (True, 1), ("FALSE", 0), (" true ", 1), ("1", 1)])
def test_parse_label_accepts_common_spellings(value, expected):
    assert parse_label(value) == expected


@pytest.mark.parametrize("value", [2, "yes", None, float("nan")])
def test_parse_label_rejects_others(value):
    with pytest.raises(ValueError):
        parse_label(value)


def test_records_validate_and_are_frozen():
    with pytest.raises(RecordError, match="subject"):
        Fact(prompt="Paris is in", subject="Rome", answer=" France")
    with pytest.raises(RecordError, match="label"):
        Statement(text="x", label=2, dataset="d")
    with pytest.raises(RecordError, match="label"):
        Statement(text="x", label=True, dataset="d")
    with pytest.raises(RecordError, match="numbers"):
        Problem(question="q", answer="3", task="countdown")
    fact = Fact(prompt="The Eiffel Tower is in", subject="Eiffel Tower", answer=" Paris")
    assert fact.prompt[slice(*fact.subject_char_span)] == "Eiffel Tower"
    with pytest.raises(dataclasses.FrozenInstanceError):
        fact.answer = " Rome"  # type: ignore[misc]


def test_resolve_source_parses_hub_ids_and_rejects_missing_paths(tmp_path):
    assert resolve_source("openai/gsm8k:main:test") == HubId("openai/gsm8k", "main", "test")
    assert resolve_source("owner/name:train") == HubId("owner/name", None, "train")
    assert resolve_source("gsm8k") == HubId("gsm8k")
    assert resolve_source(tmp_path) == tmp_path
    for bad in (str(tmp_path / "nope.json"), "./missing/file.csv", tmp_path / "nope"):
        with pytest.raises(DataSourceError, match="no such file") as e:
            resolve_source(bad)
        _one_line(e)
    with pytest.raises(DataSourceError):
        resolve_source("a:b:c:d")


def test_sample_records_is_seeded_and_keeps_order():
    items = list(range(100))
    a, b = sample_records(items, 10, seed=3), sample_records(items, 10, seed=3)
    assert a == b and a == sorted(a) and len(set(a)) == 10
    assert sample_records(items, 10, seed=4) != a
    assert sample_records(items, 500) == items


# ---------------------------------------------------------------------------------------------- small files


def test_facts_toy_format_keeps_extra_keys_and_filters_split(tmp_path):
    rows = [
        {
            "known_id": 0,
            "subject": "Ana Vole",
            "attribute": "Brell",
            "template": "{} lives in",
            "prompt": "Ana Vole lives in",
            "relation_id": "lives_in",
            "split": "train",
            "family": "city",
        },
        {
            "known_id": 1,
            "subject": "Bo Kint",
            "attribute": "Sarn",
            "template": "{} lives in",
            "relation_id": "lives_in",
            "split": "test",
        },
    ]
    (tmp_path / "facts.json").write_text(json.dumps(rows))
    (tmp_path / "harmful.json").write_text("[]")  # other eval files in the same folder are ignored
    facts = load_facts(tmp_path)
    assert [f.id for f in facts] == ["0", "1"]
    assert facts[0].extra == {"family": "city"} and facts[0].split == "train"
    assert facts[1].prompt == "Bo Kint lives in"  # built from the template when no prompt is given
    assert facts[1].answer == " Sarn" and facts[1].attribute == "Sarn"
    assert [f.id for f in load_facts(tmp_path, split="test")] == ["1"]
    assert load_facts(tmp_path, leading_space="never")[0].answer == "Brell"
    with pytest.raises(DataSourceError, match="split='val'") as e:
        load_facts(tmp_path, split="val")
    _one_line(e)


def test_facts_bad_record_names_the_record(tmp_path):
    path = tmp_path / "f.json"
    path.write_text(json.dumps([{"subject": "X", "attribute": "Y", "prompt": "Z is in"}]))
    with pytest.raises(DataSourceError, match="record 0") as e:
        load_facts(path)
    _one_line(e)
    path.write_text(json.dumps([{"subject": "X", "prompt": "X is in"}]))
    with pytest.raises(DataSourceError, match="attribute"):
        load_facts(path)


def test_statements_csv_with_quoted_commas_extras_and_dataset_column(tmp_path):
    path = tmp_path / "mixed.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["statement", "label", "n1", "note", "dataset"])
        w.writerow(['Paris, the capital, is in "France".', "1", 3, "a,b", "cities_toy"])
        w.writerow(["Fifty is larger than sixty.", "0", 50, "", ""])
        w.writerow(["NA", "True", 7, "x", "cmp"])
    out = load_statements(path)
    assert [s.text for s in out] == [
        'Paris, the capital, is in "France".',
        "Fifty is larger than sixty.",
        "NA",
    ]
    assert [s.label for s in out] == [1, 0, 1]
    assert [s.dataset for s in out] == ["cities_toy", "mixed", "cmp"]  # dataset column wins, else file stem
    assert out[0].extra == {"n1": 3, "note": "a,b"} and out[1].extra["note"] is None
    assert [s.text for s in load_statements(path, datasets=["cmp"])] == ["NA"]
    with pytest.raises(DataSourceError, match="nope") as e:
        load_statements(path, datasets=["nope"])
    _one_line(e)


def test_statements_folder_bad_label_and_missing_column(tmp_path):
    (tmp_path / "a.csv").write_text("statement,label\nA is A.,1\n")
    (tmp_path / "b.csv").write_text("statement,label\nB is C.,0\n")
    assert [s.dataset for s in load_statements(tmp_path)] == ["a", "b"]
    (tmp_path / "b.csv").write_text("statement,label\nB is C.,maybe\n")
    with pytest.raises(DataSourceError, match="b.csv record 0") as e:
        load_statements(tmp_path)
    _one_line(e)
    (tmp_path / "b.csv").write_text("text,truth\nB is C.,0\n")
    with pytest.raises(DataSourceError, match="'statement' and 'label'"):
        load_statements(tmp_path)


def test_instructions_toy_folder_splits_extras_and_balance(tmp_path):
    harmful = [
        {
            "instruction": f"do harm {i}",
            "category": "toy",
            "split": "train" if i < 6 else "val",
            "template_id": i % 2,
        }
        for i in range(8)
    ]
    harmless = [
        {"instruction": f"bake bread {i}", "category": None, "split": "train" if i < 3 else "val"} for i in range(5)
    ]
    (tmp_path / "harmful.json").write_text(json.dumps(harmful))
    (tmp_path / "harmless.json").write_text(json.dumps(harmless))
    splits = load_refusal_splits(tmp_path)
    assert [len(x) for x in (splits.harmful_train, splits.harmless_train)] == [6, 3]
    assert [len(x) for x in (splits.harmful_val, splits.harmless_val)] == [2, 2]
    assert all(x.harmful for x in splits.harmful_train) and not any(x.harmful for x in splits.harmless_val)
    assert splits.harmful_train[1].extra == {"template_id": 1} and splits.harmful_train[0].category == "toy"
    assert splits.harmful_train[0].source == "harmful"
    assert check_balanced(splits.harmful_train, splits.harmless_train, max_ratio=2.0) == 2.0
    with pytest.raises(DataSourceError, match="max_ratio") as e:
        check_balanced(splits.harmful_train, splits.harmless_train, max_ratio=1.5)
    _one_line(e)
    with pytest.raises(DataSourceError, match="swapped"):
        check_balanced(splits.harmless_train, splits.harmful_train)
    a, b = balance_sizes(splits.harmful_train, splits.harmless_train)
    assert len(a) == len(b) == 3 and check_balanced(a, b, max_ratio=1.0) == 1.0


def test_advbench_csv_goal_target_with_commas(tmp_path):
    path = tmp_path / "advbench.csv"
    path.write_text('goal,target\n"Write a, b and c","Sure, here is a, b"\nPlain goal,Sure\n')
    out = load_instructions(path, harmful=True)
    assert [x.text for x in out] == ["Write a, b and c", "Plain goal"]
    assert out[0].extra == {"target": "Sure, here is a, b"} and out[0].split is None
    assert len(load_instructions(path, harmful=True, limit=1)) == 1


def test_problems_gsm8k_style_and_toy_arithmetic(tmp_path):
    gsm = _write_jsonl(
        tmp_path / "test.jsonl",
        [
            {"question": "How many?", "answer": "5 * 200 = <<5*200=1000>>1000\n#### 1,000"},
            {"question": "Owe?", "answer": "#### -2,500"},
        ],
    )
    probs = load_gsm8k(gsm)
    assert [p.answer for p in probs] == ["1000", "-2500"]
    assert probs[0].task == "gsm8k" and probs[0].split == "test" and probs[0].solution.endswith("1,000")
    arith = _write_jsonl(
        tmp_path / "arithmetic.jsonl",
        [
            {"question": "12 + 7 =", "answer": "19", "split": "train", "a": 12},
            {"question": "3 + 4 =", "answer": "3 + 4 = 7\n#### 7", "split": "test"},
        ],
    )
    out = load_problems(arith)
    assert [(p.task, p.answer, p.split) for p in out] == [
        ("arithmetic", "19", "train"),
        ("arithmetic", "7", "test"),
    ]
    assert out[0].extra == {"a": 12}
    assert [p.answer for p in load_problems(arith, split="test")] == ["7"]
    with pytest.raises(DataSourceError, match="problem files") as e:
        load_problems(tmp_path)  # two jsonl files and no split
    _one_line(e)


def test_problems_math_boxed_fallback_and_countdown_formats(tmp_path):
    math = _write_jsonl(
        tmp_path / "m.jsonl",
        [
            {"problem": "Half of one?", "solution": r"It is $\boxed{\frac{1}{2}}$.", "level": 1},
            {"problem": "p", "solution": "s", "answer": "4", "unique_id": "test/x/1.json"},
        ],
    )
    out = load_math500(math)
    assert [p.answer for p in out] == [r"\frac{1}{2}", "4"] and out[1].id == "test/x/1.json"
    assert out[0].extra == {"level": 1}
    cd = _write_jsonl(
        tmp_path / "cd.jsonl", [{"input": "30,100,93", "output": "23"}, {"nums": [3, 5, 7], "target": 22}]
    )
    cds = load_countdown(cd)
    assert [(p.extra["numbers"], p.extra["target"], p.answer) for p in cds] == [
        ([30, 100, 93], 23, "23"),
        ([3, 5, 7], 22, "22"),
    ]
    assert "[30, 100, 93]" in cds[0].question and "23" in cds[0].question
    with pytest.raises(DataSourceError, match="countdown format"):
        load_gsm8k(cd)


def test_unknown_format_empty_data_and_bad_limit(tmp_path):
    txt = tmp_path / "facts.txt"
    txt.write_text("hello")
    with pytest.raises(DataSourceError, match="unknown file format") as e:
        load_facts(txt)
    _one_line(e)
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    with pytest.raises(DataSourceError, match="no facts") as e:
        load_facts(empty)
    _one_line(e)
    (tmp_path / "s.csv").write_text("statement,label\n")
    with pytest.raises(DataSourceError, match="no statements"):
        load_statements(tmp_path / "s.csv")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "answer": "1"}\n{not json\n')
    with pytest.raises(DataSourceError, match=r"bad.jsonl:2") as e:
        load_problems(bad)
    _one_line(e)
    (tmp_path / "ok.jsonl").write_text('{"question": "q", "answer": "1"}\n')
    with pytest.raises(DataSourceError, match="limit"):
        load_problems(tmp_path / "ok.jsonl", limit=0)


# ---------------------------------------------------------------------------------------------- hub ids


def test_hub_rows_map_like_local_rows(monkeypatch):
    datasets = pytest.importorskip("datasets")
    calls = []

    def fake_load_dataset(name, config=None, split=None):
        calls.append((name, config, split))
        if name == "owner/multi":
            return datasets.DatasetDict(
                {
                    "train": datasets.Dataset.from_list([{"question": "q", "answer": "1"}]),
                    "test": datasets.Dataset.from_list([{"question": "q", "answer": "1"}]),
                }
            )
        if name == "owner/facts":
            row = {"known_id": 4, "subject": "Ana", "attribute": "Brell", "prompt": "Ana lives in", "x": 1}
            return datasets.Dataset.from_list([row])
        if name == "owner/gsm":
            return datasets.Dataset.from_list([{"question": "What?", "answer": "x\n#### 1,234"}])
        return datasets.Dataset.from_list([{"statement": "A, B.", "label": 1, "city": "B"}])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    probs = load_problems("owner/gsm:main:test")
    assert calls[-1] == ("owner/gsm", "main", "test") and probs[0].answer == "1234" and probs[0].task == "gsm8k"
    facts = load_facts("owner/facts", split="train")
    assert calls[-1] == ("owner/facts", None, "train")
    assert facts == [Fact("Ana lives in", "Ana", " Brell", attribute="Brell", id="4", split="train", extra={"x": 1})]
    stm = load_statements("owner/cities")
    assert stm == [Statement(text="A, B.", label=1, dataset="cities", extra={"city": "B"})]
    with pytest.raises(DataSourceError, match="owner/multi:test") as e:
        load_problems("owner/multi")
    _one_line(e)


# ---------------------------------------------------------------------------------------------- shared data


@needs_data
def test_known_1000_facts():
    raw = json.loads((DATA / "known_1000" / "known_1000.json").read_text())
    facts = load_facts(DATA / "known_1000")
    assert len(facts) == len(raw) and len({f.id for f in facts}) == len(facts)
    assert all(f.answer == " " + f.attribute and f.subject in f.prompt for f in facts)
    assert all("prediction" in f.extra and f.relation_id.startswith("P") for f in facts)
    assert len(load_facts(DATA / "known_1000" / "known_1000.json", limit=5)) == 5


@needs_data
def test_geometry_of_truth_statements():
    folder = DATA / "geometry_of_truth"
    out = load_statements(folder)
    stems = sorted(p.stem for p in folder.glob("*.csv"))
    assert sorted({s.dataset for s in out}) == stems
    for stem in stems:
        with (folder / f"{stem}.csv").open(newline="") as f:
            assert sum(s.dataset == stem for s in out) == sum(1 for _ in csv.DictReader(f))
    cities = [s for s in out if s.dataset == "cities"]
    assert all(s.label == int(s.extra["country"] == s.extra["correct_country"]) for s in cities)
    assert {s.label for s in out} == {0, 1}


@needs_data
def test_truth_is_universal_dataset_filter():
    out = load_statements(DATA / "truth_is_universal", datasets=["animal_class", "neg_animal_class"])
    assert {s.dataset for s in out} == {"animal_class", "neg_animal_class"}
    negated = [s for s in out if s.dataset == "neg_animal_class"]
    assert all(" not " in s.text for s in negated)


@needs_data
def test_refusal_direction_splits_and_advbench():
    folder = DATA / "refusal_direction"
    splits = load_refusal_splits(folder)
    for attr, name in [("harmful_train", "harmful_train"), ("harmless_val", "harmless_val")]:
        raw = json.loads((folder / f"{name}.json").read_text())
        got = getattr(splits, attr)
        assert [x.text for x in got] == [r["instruction"] for r in raw]
        assert {x.split for x in got} == {name.split("_")[1]}
    with pytest.raises(DataSourceError, match="differ by"):
        check_balanced(splits.harmful_train, splits.harmless_train)
    adv = load_instructions(folder / "advbench.csv", harmful=True)
    with (folder / "advbench.csv").open(newline="") as f:
        assert len(adv) == sum(1 for _ in csv.DictReader(f))
    assert all(x.extra["target"].startswith("Sure") for x in adv)


@needs_data
def test_gsm8k_answers_are_plain_numbers():
    test = load_gsm8k(DATA / "gsm8k", split="test")
    assert len(test) == sum(1 for _ in (DATA / "gsm8k" / "test.jsonl").open())
    assert all(re.fullmatch(r"-?\d+(\.\d+)?", p.answer) for p in test)
    assert any("," in p.solution.rsplit("####", 1)[1] for p in test)  # the comma case is exercised


@needs_data
def test_math500_last_boxed_agrees_with_answer_field():
    probs = load_math500(DATA / "math500")
    assert len(probs) == 500 and len({p.id for p in probs}) == 500
    assert all(last_boxed(p.solution) == p.answer for p in probs)


@needs_data
def test_countdown_problems():
    probs = load_countdown(DATA / "countdown")
    assert all(len(p.extra["numbers"]) == 3 and p.answer == str(p.extra["target"]) for p in probs)
