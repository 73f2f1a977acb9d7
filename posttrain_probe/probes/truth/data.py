"""Statements and cached activations for the truthfulness analysis: loading several sources, per-dataset
subsampling and splits, and the activation cache keyed by a hash of model + data."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from posttrain_probe.data import Statement, load_statements
from posttrain_probe.probes.truth.fit import stratified_split
from posttrain_probe.results import is_run_dir
from posttrain_probe.utils.io import sha256_file, sha256_text

ANALYSIS = "truth"
ACTS_RULE = "resid[0..L] at the last token overlapping the statement; raw text; v1"


def _regroup(group: list[Statement], column: str | None) -> list[Statement]:
    """Take the dataset name from the extra field `column` when every row of the source has it."""
    if not column or not all(st.extra.get(column) not in (None, "") for st in group):
        return group
    return [Statement(st.text, st.label, str(st.extra[column]), st.extra) for st in group]


def load_truth_statements(
    sources: Sequence[str | os.PathLike],
    datasets: Sequence[str] | None = None,
    limit: int | None = None,
    dataset_column: str | None = "family",
) -> list[Statement]:
    """Statements from several csv files / folders. The dataset of a row is its "dataset" column, else
    its `dataset_column` field when every row of that source has one (the toy world's "family"), else the
    file stem. A dataset name found in two sources is qualified with its source folder
    ("truth_is_universal/facts") so leave-one-dataset-out keeps them apart."""
    if not sources:
        raise ValueError("no statement sources; pass --data with csv files or folders of them")
    per_source = [_regroup(load_statements(s), dataset_column) for s in sources]
    names = [{st.dataset for st in group} for group in per_source]
    out: list[Statement] = []
    for src, group, own in zip(sources, per_source, names):
        clash = {n for n in own if any(n in other for other in names if other is not own)}
        tag = Path(src).name if Path(src).is_dir() else Path(src).parent.name
        for st in group:
            name = f"{tag}/{st.dataset}" if st.dataset in clash else st.dataset
            out.append(st if name == st.dataset else Statement(st.text, st.label, name, st.extra))
    if datasets is not None:
        have = sorted({st.dataset for st in out})
        missing = sorted(set(datasets) - set(have))
        if missing:
            raise ValueError(f"datasets {missing} not in the sources; available: {have}")
        out = [st for st in out if st.dataset in set(datasets)]
    return out[:limit] if limit else out


def subsample(statements: list[Statement], max_per_dataset: int | None, seed: int) -> list[Statement]:
    """At most `max_per_dataset` statements per dataset, class proportions kept, original order kept."""
    if max_per_dataset is None:
        return statements
    rng = np.random.default_rng(seed)
    keep: list[int] = []
    for ds in sorted({s.dataset for s in statements}):
        idx = [i for i, s in enumerate(statements) if s.dataset == ds]
        if len(idx) <= max_per_dataset:
            keep += idx
            continue
        for label in (1, 0):
            cell = [i for i in idx if statements[i].label == label]
            k = round(max_per_dataset * len(cell) / len(idx))
            keep += rng.permutation(cell)[:k].tolist()
    return [statements[i] for i in sorted(keep)]


def split_statements(statements: list[Statement], test_frac: float, seed: int) -> tuple[np.ndarray, dict[str, str]]:
    """is_test mask: a dataset whose every row has an extra "split" uses it (anything but "train" is
    held out); the others get a seeded stratified split. Also returns the split source per dataset."""
    ds = np.array([s.dataset for s in statements])
    is_test = stratified_split([s.label for s in statements], list(ds), test_frac, seed)
    source = {}
    for name in sorted(set(ds)):
        rows = np.flatnonzero(ds == name)
        given = [statements[i].extra.get("split") for i in rows]
        if all(isinstance(g, str) and g for g in given):
            is_test[rows] = np.array([g != "train" for g in given])
            source[name] = "given"
        else:
            source[name] = "stratified"
    return is_test, source


def unk_fraction(tokenizer, texts: Sequence[str]) -> float:
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is None:
        return 0.0
    ids = [i for row in tokenizer(list(texts), add_special_tokens=False)["input_ids"] for i in row]
    return float(np.mean([i == unk for i in ids])) if ids else 0.0


def activation_key(model, texts: Sequence[str]) -> str:
    """Hash of what determines the activations: weights (or source + revision), tokenizer, dtype, device,
    backend, the extraction rule and the statement texts in order."""
    p = model.provenance
    doc = {
        "weights": p.get("weights_sha256") or f"{p.get('resolved')}@{p.get('revision')}",
        "tokenizer": p.get("tokenizer_sha256"),
        **{k: p.get(k) for k in ("dtype", "device", "backend")},
        "rule": ACTS_RULE,
        "texts": sha256_text("\n".join(texts)),
    }
    return sha256_text(json.dumps(doc, sort_keys=True))


def cached_activations(run_dir: Path | None, key: str, role: str) -> torch.Tensor | None:
    """`activations.<role>` from an earlier truth run dir whose recorded key equals `key`, else None."""
    if run_dir is None or not is_run_dir(run_dir):
        return None
    doc = json.loads((run_dir / "result.json").read_text(encoding="utf-8"))
    if doc.get("analysis") != ANALYSIS or doc.get("summary", {}).get("activation_keys", {}).get(role) != key:
        return None
    from safetensors import safe_open

    path = run_dir / (doc.get("tensors_file") or "tensors.safetensors")
    with safe_open(str(path), framework="pt") as f:
        name = f"activations.{role}"
        return f.get_tensor(name) if name in f.keys() else None


def source_hashes(sources: Sequence[str | os.PathLike]) -> dict[str, str]:
    out = {}
    for s in sources:
        p = Path(s)
        files = sorted(p.glob("*.csv")) if p.is_dir() else [p] if p.is_file() else []
        out |= {str(f): sha256_file(f) for f in files}
    return out
