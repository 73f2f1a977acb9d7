"""Load facts, statements, instructions and problems from a local file/folder or a hub id.

A *source* is either a path (file or folder) that exists, or a hub id: "name", "owner/name",
"owner/name:split" or "owner/name:config:split". Local files are read with the standard library / pandas
(.json = a JSON array of objects, .jsonl = one object a line, .csv = a header row); hub ids go through
`datasets.load_dataset` and their rows are mapped exactly like local rows. Keys or columns a loader does
not know are kept in the record's `extra`, so the toy world's additions survive. Every failure is a
one-line `DataSourceError` (a ValueError) that says what to change.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from posttrain_probe.data.records import (
    KNOWN_TASKS,
    Fact,
    Instruction,
    LeadingSpace,
    Problem,
    RecordError,
    Statement,
    answer_with_space,
    countdown_question,
    gsm8k_final_answer,
    last_boxed,
    parse_label,
)

R = TypeVar("R")
_FORMATS = (".json", ".jsonl", ".csv")
_SPLIT_NAMES = ("train", "val", "validation", "dev", "test")
_FORMAT_OF_TASK = {"gsm8k": "gsm8k", "arithmetic": "gsm8k", "math500": "math500", "countdown": "countdown"}
_TEXT_COLUMNS = ("statement", "label", "goal", "target", "instruction", "category", "split", "dataset")


class DataSourceError(ValueError):
    """A source that cannot be read: missing, of unknown format, unreachable, malformed or empty."""


@dataclass(frozen=True)
class HubId:
    """A parsed hub id: `name` for `datasets.load_dataset`, optional config and split."""

    name: str
    config: str | None = None
    split: str | None = None

    def __str__(self) -> str:
        return ":".join(p for p in (self.name, self.config, self.split) if p)


# ---------------------------------------------------------------------------------------------- sources


def _looks_like_path(s: str) -> bool:
    return (
        s.startswith(("/", "./", "../", "~", "."))
        or "\\" in s
        or s.count("/") >= 2
        or Path(s).suffix.lower() in (*_FORMATS, ".txt", ".parquet", ".tsv")
    )


def resolve_source(source: str | os.PathLike) -> Path | HubId:
    """An existing local path, or a parsed hub id; a path-like string that does not exist is an error."""
    if isinstance(source, os.PathLike):
        path = Path(source).expanduser()
        if not path.exists():
            raise DataSourceError(f"{path}: no such file or folder; check the path")
        return path
    if not isinstance(source, str) or not source.strip():
        raise DataSourceError(f"source must be a path or a hub id string, got {source!r}")
    text = source.strip()
    path = Path(text).expanduser()
    if path.exists():
        return path
    if _looks_like_path(text):
        raise DataSourceError(f"{text}: no such file or folder; check the path (hub ids look like 'owner/name')")
    parts = text.split(":")
    if len(parts) > 3 or not all(parts) or not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", parts[0]):
        raise DataSourceError(
            f"{text!r} is neither an existing path nor a hub id of the form 'owner/name[:config]:split'"
        )
    if len(parts) == 3:
        return HubId(parts[0], parts[1], parts[2])
    return HubId(parts[0], None, parts[1] if len(parts) == 2 else None)


def _hub_rows(hub: HubId, split: str | None = None) -> list[dict[str, Any]]:
    """Rows of a hub data set via `datasets.load_dataset`; `split` applies when the id names none."""
    fix = "pass a local file or folder, or set HF_HUB_OFFLINE=0 with network access"
    try:
        import datasets
    except ImportError as e:
        raise DataSourceError(f"{hub} is not a local path and the `datasets` package is missing; {fix}") from e
    split = hub.split or split
    try:
        ds = datasets.load_dataset(hub.name, hub.config, split=split)
    except Exception as e:  # datasets raises many types (ConnectionError, FileNotFoundError, ValueError, ...)
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise DataSourceError(
            f"{str(hub)!r} is not a local path and could not be fetched from the hub "
            f"({type(e).__name__}: {first}); {fix}"
        ) from e
    if isinstance(ds, datasets.DatasetDict):
        if len(ds) != 1:
            raise DataSourceError(f"hub data set {hub} has splits {sorted(ds)}; add one, e.g. '{hub.name}:test'")
        ds = next(iter(ds.values()))
    return [dict(row) for row in ds]


def _clean(value: Any) -> Any:
    """pandas' NaN for an empty cell → None; everything else unchanged."""
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of one .json / .jsonl / .csv file as dicts (empty csv cells → None)."""
    suffix = path.suffix.lower()
    if suffix not in _FORMATS:
        raise DataSourceError(f"{path}: unknown file format {suffix or '(none)'!r}; use .json, .jsonl or .csv")
    if suffix == ".csv":
        import pandas as pd

        try:
            df = pd.read_csv(path, dtype={c: str for c in _TEXT_COLUMNS}, keep_default_na=False, na_values=[""])
        except (ValueError, pd.errors.ParserError) as e:
            raise DataSourceError(f"{path}: not a readable csv ({str(e).splitlines()[0]})") from e
        return [{str(k): _clean(v) for k, v in row.items()} for row in df.to_dict("records")]
    text = path.read_text(encoding="utf-8")
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataSourceError(f"{path}: invalid JSON ({e}); a .json source must be one JSON array") from e
        rows = data
    else:
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise DataSourceError(f"{path}:{n}: invalid JSON line ({e})") from e
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise DataSourceError(f"{path}: expected a list of JSON objects (one per record)")
    return rows


def _split_from_stem(stem: str) -> str | None:
    """'harmful_train' → 'train', 'test' → 'test', 'countdown_cd3_test' → 'test', 'facts' → None."""
    last = stem.lower().rsplit("_", 1)[-1]
    return last if last in _SPLIT_NAMES else None


def _files(folder: Path, suffixes: Sequence[str] = _FORMATS) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in suffixes)


def _finish(records: list[R], what: str, source: Any, limit: int | None, filters: str = "") -> list[R]:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise DataSourceError(f"limit must be a positive int or None, got {limit!r}")
    if not records:
        raise DataSourceError(f"no {what} in {source}{filters}; check the source and the filters")
    return records[:limit] if limit is not None else records


def _row_error(origin: str, i: int, e: Exception) -> DataSourceError:
    return DataSourceError(f"{origin} record {i}: {e}")


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


# ---------------------------------------------------------------------------------------------- facts


def _fact_from_row(row: dict[str, Any], i: int, origin: str, leading_space: LeadingSpace, split: str | None) -> Fact:
    row = dict(row)
    subject, attribute = row.pop("subject", None), row.pop("attribute", None)
    template, prompt = row.pop("template", None), row.pop("prompt", None)
    if subject is None or attribute is None or (prompt is None and template is None):
        raise DataSourceError(
            f"{origin} record {i}: known_1000 format needs keys subject, attribute and prompt (or template)"
        )
    ident = row.pop("known_id") if "known_id" in row else row.pop("id", i)
    row_split = row.pop("split", None)
    try:
        if prompt is None:
            prompt = str(template).format(subject)
        return Fact(
            prompt=prompt,
            subject=subject,
            answer=answer_with_space(prompt, str(attribute), leading_space),
            attribute=str(attribute),
            relation_id=str(row.pop("relation_id", "") or ""),
            id=str(ident),
            template=str(template or ""),
            split=_opt_str(row_split) if row_split is not None else split,
            extra=row,
        )
    except (RecordError, KeyError, IndexError) as e:
        raise _row_error(origin, i, e) from e


def load_facts(
    source: str | os.PathLike,
    limit: int | None = None,
    split: str | None = None,
    leading_space: LeadingSpace = "auto",
) -> list[Fact]:
    """Facts from a ROME known_1000-style json (or a folder holding facts.json / known_1000.json).

    `split` keeps only records whose "split" key equals it; `leading_space` sets how `Fact.answer` is
    derived from the bare attribute (see `answer_with_space`).
    """
    src = resolve_source(source)
    default_split = None
    if isinstance(src, HubId):
        rows, origin, default_split = _hub_rows(src, split), str(src), src.split or split
    else:
        path = src
        if src.is_dir():
            named = [src / n for n in ("facts.json", "known_1000.json") if (src / n).is_file()]
            found = named or _files(src, (".json", ".jsonl"))
            if len(found) != 1:
                raise DataSourceError(
                    f"{src}: expected facts.json, known_1000.json or a single .json file, found "
                    f"{[p.name for p in found]}; pass the file path"
                )
            path = found[0]
        rows, origin = read_rows(path), str(path)
    facts = [_fact_from_row(r, i, origin, leading_space, default_split) for i, r in enumerate(rows)]
    if split is not None:
        have = sorted({str(f.split) for f in facts})
        facts = [f for f in facts if f.split == split]
        return _finish(facts, "facts", origin, limit, f" with split={split!r} (splits present: {have})")
    return _finish(facts, "facts", origin, limit)


# ---------------------------------------------------------------------------------------------- statements


def _statement_from_row(row: dict[str, Any], i: int, origin: str, dataset: str) -> Statement:
    row = dict(row)
    if "statement" not in row or "label" not in row:
        raise DataSourceError(f"{origin}: needs columns 'statement' and 'label', found {sorted(row)}")
    text, label = row.pop("statement"), row.pop("label")
    name = row.pop("dataset", None) or dataset
    try:
        return Statement(text=text, label=parse_label(label), dataset=str(name), extra=row)
    except (RecordError, ValueError) as e:
        raise _row_error(origin, i, e) from e


def load_statements(
    source: str | os.PathLike, datasets: Sequence[str] | None = None, limit: int | None = None
) -> list[Statement]:
    """True/false statements from a Geometry-of-Truth-style csv or a folder of them.

    The dataset name is the file stem (hub: the data set name), unless a row has a "dataset" column,
    which wins (so one csv may hold several families). `datasets` keeps only those names; `limit` caps
    the total after filtering, in file order.
    """
    if isinstance(datasets, str):
        datasets = [datasets]
    src = resolve_source(source)
    out: list[Statement] = []
    if isinstance(src, HubId):
        name = src.config or src.name.rsplit("/", 1)[-1]
        out = [_statement_from_row(r, i, str(src), name) for i, r in enumerate(_hub_rows(src))]
    else:
        paths = _files(src, (".csv",)) if src.is_dir() else [src]
        if not paths:
            raise DataSourceError(f"{src}: folder holds no .csv files; pass a csv file or a folder of them")
        for path in paths:
            out += [_statement_from_row(r, i, str(path), path.stem) for i, r in enumerate(read_rows(path))]
    if datasets is not None:
        have = sorted({s.dataset for s in out})
        missing = sorted(set(datasets) - set(have))
        if missing:
            raise DataSourceError(f"datasets {missing} not found in {source}; available: {have}")
        out = [s for s in out if s.dataset in set(datasets)]
    return _finish(out, "statements", source, limit)


# ---------------------------------------------------------------------------------------------- instructions


def _instruction_from_row(
    row: dict[str, Any], i: int, origin: str, harmful: bool, split: str | None, name: str
) -> Instruction:
    row = dict(row)
    key = next((k for k in ("instruction", "goal", "prompt") if k in row), None)
    if key is None:
        raise DataSourceError(f"{origin}: needs an 'instruction' (or AdvBench 'goal') field, found {sorted(row)}")
    text = row.pop(key)
    category = row.pop("category", None)
    row_split = row.pop("split", None)
    try:
        return Instruction(
            text=text,
            harmful=harmful,
            category=_opt_str(category),
            split=_opt_str(row_split) if row_split is not None else split,
            source=name,
            extra=row,
        )
    except RecordError as e:
        raise _row_error(origin, i, e) from e


def _is_set_file(path: Path, harmful: bool) -> bool:
    stem, prefix = path.stem.lower(), "harmful" if harmful else "harmless"
    return stem == prefix or stem.startswith(prefix + "_")


def load_instructions(
    source: str | os.PathLike, harmful: bool, limit: int | None = None, split: str | None = None
) -> list[Instruction]:
    """Instructions from refusal_direction json splits ({instruction, category}), an AdvBench csv
    (goal, target) or a folder; `harmful` labels the set (the files carry no label).

    A folder contributes its files named harmful*.json|jsonl|csv (or harmless*); the split comes from
    a record's "split" key, else from the file name ("harmful_train" → "train"). `split` filters on it.
    """
    if not isinstance(harmful, bool):
        raise DataSourceError(f"harmful must be True or False, got {harmful!r}")
    src = resolve_source(source)
    out: list[Instruction] = []
    if isinstance(src, HubId):
        rows = _hub_rows(src, split)
        out = [_instruction_from_row(r, i, str(src), harmful, src.split or split, str(src)) for i, r in enumerate(rows)]
    else:
        paths = [p for p in _files(src) if _is_set_file(p, harmful)] if src.is_dir() else [src]
        if not paths:
            kind = "harmful" if harmful else "harmless"
            raise DataSourceError(f"{src}: no {kind}*.json/.jsonl/.csv files in this folder; pass a file path")
        for path in paths:
            stem_split = _split_from_stem(path.stem)
            out += [
                _instruction_from_row(r, i, str(path), harmful, stem_split, path.stem)
                for i, r in enumerate(read_rows(path))
            ]
    if split is not None:
        have = sorted({str(x.split) for x in out})
        out = [x for x in out if x.split == split]
        return _finish(out, "instructions", source, limit, f" with split={split!r} (splits present: {have})")
    return _finish(out, "instructions", source, limit)


@dataclass(frozen=True)
class RefusalSplits:
    """Harmful/harmless instructions for direction fitting (train) and selection (val)."""

    harmful_train: list[Instruction]
    harmless_train: list[Instruction]
    harmful_val: list[Instruction]
    harmless_val: list[Instruction]


def load_refusal_splits(folder: str | os.PathLike, limit: int | None = None) -> RefusalSplits:
    """The train/val harmful/harmless lists of a refusal_direction-style folder (or the toy world's
    harmful.json / harmless.json with a "split" key); `limit` caps each list (first items)."""
    path = resolve_source(folder)
    if isinstance(path, HubId) or not path.is_dir():
        raise DataSourceError(f"{folder}: load_refusal_splits needs a local folder of harmful*/harmless* files")
    parts = {}
    for harmful in (True, False):
        for split in ("train", "val"):
            parts[(harmful, split)] = load_instructions(path, harmful, limit=limit, split=split)
    return RefusalSplits(parts[(True, "train")], parts[(False, "train")], parts[(True, "val")], parts[(False, "val")])


def sample_records(records: Sequence[R], n: int, seed: int = 0) -> list[R]:
    """`n` records drawn without replacement by a seeded RNG, kept in their original order."""
    if n < 1:
        raise DataSourceError(f"n must be >= 1, got {n}")
    if n >= len(records):
        return list(records)
    keep = sorted(random.Random(seed).sample(range(len(records)), n))
    return [records[i] for i in keep]


def check_balanced(harmful: Sequence[Instruction], harmless: Sequence[Instruction], max_ratio: float = 3.0) -> float:
    """Refuse harmful/harmless sets that are empty, mislabelled or of very different sizes; return the
    size ratio (larger / smaller). Mean-difference directions from lopsided sets are dominated by one
    set's noise, so the caller must subsample (`balance_sizes`) or set `limit=`."""
    if max_ratio < 1:
        raise DataSourceError(f"max_ratio must be >= 1, got {max_ratio}")
    if not harmful or not harmless:
        raise DataSourceError(f"empty instruction set (harmful={len(harmful)}, harmless={len(harmless)})")
    if not all(x.harmful for x in harmful) or any(x.harmful for x in harmless):
        raise DataSourceError("harmful/harmless sets are swapped or mixed; pass harmful records first")
    ratio = max(len(harmful), len(harmless)) / min(len(harmful), len(harmless))
    if ratio > max_ratio:
        raise DataSourceError(
            f"harmful/harmless sizes {len(harmful)}/{len(harmless)} differ by {ratio:.1f}x "
            f"> max_ratio={max_ratio}; subsample with balance_sizes() or limit=, or raise max_ratio"
        )
    return ratio


def balance_sizes(
    harmful: Sequence[Instruction], harmless: Sequence[Instruction], seed: int = 0
) -> tuple[list[Instruction], list[Instruction]]:
    """Subsample the larger set (seeded) to the size of the smaller one."""
    n = min(len(harmful), len(harmless))
    if n == 0:
        raise DataSourceError(f"empty instruction set (harmful={len(harmful)}, harmless={len(harmless)})")
    return sample_records(harmful, n, seed), sample_records(harmless, n, seed + 1)


# ---------------------------------------------------------------------------------------------- problems


def _problem_from_row(
    row: dict[str, Any], i: int, origin: str, task: str | None, split: str | None, stem_task: str | None
) -> Problem:
    row = dict(row)
    row_task, row_split = row.pop("task", None), row.pop("split", None)
    split = _opt_str(row_split) if row_split is not None else split
    try:
        if ("input" in row and "output" in row) or ("nums" in row and "target" in row):
            if "input" in row:
                numbers = [int(x) for x in str(row.pop("input")).split(",")]
                target = int(row.pop("output"))
            else:
                numbers, target = [int(x) for x in row.pop("nums")], int(row.pop("target"))
            fmt, question, answer, solution = (
                "countdown",
                countdown_question(numbers, target),
                str(target),
                "",
            )
            row = {"numbers": numbers, "target": target, **row}
        elif "problem" in row:
            question, solution = row.pop("problem"), str(row.pop("solution", "") or "")
            answer = row.pop("answer", None) or last_boxed(solution)
            if answer is None:
                raise ValueError("no 'answer' field and no \\boxed{...} in the solution")
            fmt, answer = "math500", str(answer)
        elif "question" in row and "answer" in row:
            question, solution = row.pop("question"), str(row.pop("answer"))
            single = solution.strip()
            answer = gsm8k_final_answer(solution) if "####" in solution or "\n" in single else single
            fmt = "gsm8k"
        else:
            raise ValueError(
                f"unknown problem format (keys {sorted(row)}); expected GSM8K {{question, answer}}, "
                "MATH {problem, solution, answer} or Countdown {input, output} / {nums, target}"
            )
        if task in _FORMAT_OF_TASK and _FORMAT_OF_TASK[task] != fmt:
            raise ValueError(f"record is in {fmt} format, not {_FORMAT_OF_TASK[task]} as task={task!r} needs")
        ident = row.pop("id", None) or row.pop("unique_id", None) or f"{Path(origin).stem}-{i}"
        return Problem(
            question=question,
            answer=answer,
            task=task or _opt_str(row_task) or stem_task or fmt,
            id=str(ident),
            solution=solution,
            split=split,
            extra=row,
        )
    except (RecordError, ValueError, TypeError) as e:
        raise _row_error(origin, i, e) from e


def load_problems(
    source: str | os.PathLike, task: str | None = None, limit: int | None = None, split: str | None = None
) -> list[Problem]:
    """Problems from GSM8K / MATH-500 / Countdown jsonl (format detected per record) or a hub id.

    GSM8K: answer = text after "####", commas stripped (a one-line answer without "####" is taken as is,
    for the toy world's arithmetic sets). MATH: the "answer" field, else the last \\boxed{...} of the
    solution. Countdown: {"input": "30,100,93", "output": "23"} or TinyZero's {nums, target}.
    `task` names the task (default: a record's "task" key, a file stem in KNOWN_TASKS such as
    arithmetic.jsonl, else the format). A folder needs `split` (file "<split>.jsonl" or "*_<split>.jsonl")
    unless it holds one problem file.
    """
    src = resolve_source(source)
    out: list[Problem] = []
    if isinstance(src, HubId):
        rows = _hub_rows(src, split)
        out = [_problem_from_row(r, i, str(src), task, src.split or split, None) for i, r in enumerate(rows)]
        split = None  # the hub split already selected the rows
    else:
        paths = [src]
        if src.is_dir():
            paths = _files(src, (".jsonl", ".json"))
            if split is not None:
                paths = [p for p in paths if p.stem == split or _split_from_stem(p.stem) == split] or paths
            if len(paths) != 1:
                raise DataSourceError(
                    f"{src}: {len(paths)} problem files {[p.name for p in paths]}; pass split= or a file path"
                )
        path = paths[0]
        stem_task = path.stem if path.stem in KNOWN_TASKS else None
        default_split = _split_from_stem(path.stem)
        out = [
            _problem_from_row(r, i, str(path), task, default_split, stem_task) for i, r in enumerate(read_rows(path))
        ]
    if split is not None:
        have = sorted({str(p.split) for p in out})
        out = [p for p in out if p.split == split]
        return _finish(out, "problems", source, limit, f" with split={split!r} (splits present: {have})")
    return _finish(out, "problems", source, limit)


def load_gsm8k(source: str | os.PathLike, limit: int | None = None, split: str | None = None) -> list[Problem]:
    """GSM8K problems (task "gsm8k"); see `load_problems`."""
    return load_problems(source, task="gsm8k", limit=limit, split=split)


def load_math500(source: str | os.PathLike, limit: int | None = None) -> list[Problem]:
    """MATH-500 problems (task "math500"); see `load_problems`."""
    return load_problems(source, task="math500", limit=limit)


def load_countdown(source: str | os.PathLike, limit: int | None = None) -> list[Problem]:
    """Countdown problems (task "countdown"); see `load_problems`."""
    return load_problems(source, task="countdown", limit=limit)
