"""The one result schema every analysis writes: a run directory.

    <run>/result.json           schema_version, analysis, config, provenance, seeds, summary, notes,
                                versions, git, times, host, and an index of the tables and tensors
    <run>/tables/<name>.csv     one CSV per pandas DataFrame (dtypes and index recorded in result.json)
    <run>/tensors.safetensors   every tensor, bit-exact; its header carries analysis and schema_version

Writes are atomic (the folder appears complete or not at all) and use no pickle. result.json is valid JSON:
a NaN or ±Infinity is written as null and listed in `non_finite` ([key path, "NaN" | "Infinity" | "-Infinity"]
pairs), so `read_run` restores the exact values while other JSON readers see null (schema 2; schema-1 files,
which held the tokens NaN / Infinity, are still read). Tuples are written as lists, numpy scalars as Python
numbers, dataclasses as dicts.

Reproducibility: the result.json keys in `VOLATILE_META_KEYS` (when, where and with which versions it ran)
differ between two runs of the same analysis; input paths appear verbatim in config/provenance. Everything
else, the tables and the tensors are identical for the same inputs and seed (tests/e2e/test_determinism.py);
`reproducible_json` is result.json without the volatile keys, with paths made relative to given roots.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import os
import platform
import re
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from posttrain_probe.utils.io import atomic_dir, atomic_write_text

SCHEMA_VERSION = 2  # 2: non-finite floats as null + the non_finite index (1: NaN tokens)
RESULT_FILE = "result.json"
TENSORS_FILE = "tensors.safetensors"
TABLES_DIR = "tables"
_VERSION_PACKAGES = (
    "torch",
    "transformers",
    "transformer-lens",
    "nnsight",
    "numpy",
    "pandas",
    "posttrain_probe",
)
_TABLE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
VOLATILE_META_KEYS = frozenset(
    ("started_at", "finished_at", "duration_s", "versions", "git_commit", "git_dirty", "host")
)
_BODY_KEYS = frozenset(
    ("schema_version", "analysis", "config", "provenance", "seeds", "summary", "tables", "table_schemas")
    + ("tensors", "tensors_file", "notes", "non_finite")
)


class RunDirError(ValueError):
    """A run directory that cannot be written or read (bad content, missing file, newer schema)."""


# ---------------------------------------------------------------------------------------------- JSON


def to_jsonable(obj: Any, where: str = "value") -> Any:
    """`obj` as plain JSON types: tuples → lists, numpy scalars/arrays → Python, dataclasses → dicts,
    Paths → str, 0-d tensors → numbers. Non-finite floats stay floats. Anything else is an error naming
    `where` (the key path)."""
    if obj is None or isinstance(obj, bool | int | str):
        return obj
    if isinstance(obj, float):
        return float(obj)
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str | int | float | bool) or k is None:
                raise RunDirError(f"{where}: key {k!r} is not a string; use str keys")
            out[str(k)] = to_jsonable(v, f"{where}.{k}")
        return out
    if isinstance(obj, list | tuple):
        return [to_jsonable(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj), where)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, torch.Tensor):
        if obj.ndim == 0:
            return to_jsonable(obj.item(), where)
        raise RunDirError(f"{where}: a tensor of shape {tuple(obj.shape)} belongs in RunResult.tensors")
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return to_jsonable(obj.item(), where)
        if isinstance(obj, np.ndarray):
            return to_jsonable(obj.tolist(), where)
    except ImportError:  # pragma: no cover
        pass
    raise RunDirError(f"{where}: cannot store {type(obj).__name__} in result.json; convert it to JSON types")


def _json_equal(a: Any, b: Any) -> bool:
    """Equality of JSON values where NaN equals NaN (so a read-back result equals the written one)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b))
    return a == b


# the objects Python's json gives for the tokens, so restored values behave like schema-1 ones (one NaN object)
_NON_FINITE = {t: json.loads(t) for t in ("NaN", "Infinity", "-Infinity")}


def _split_non_finite(obj: Any, path: list[Any], found: list[list[Any]]) -> Any:
    """`obj` (plain JSON types) with NaN / ±Infinity replaced by None; their key paths go to `found`."""
    if isinstance(obj, float) and not math.isfinite(obj):
        found.append([list(path), "NaN" if math.isnan(obj) else ("Infinity" if obj > 0 else "-Infinity")])
        return None
    if isinstance(obj, dict):
        return {k: _split_non_finite(v, [*path, k], found) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_split_non_finite(v, [*path, i], found) for i, v in enumerate(obj)]
    return obj


def _restore_non_finite(path: Path, doc: dict[str, Any]) -> None:
    """Put the `non_finite` values of a schema-2 result.json back where null stands for them (in place)."""
    entries = doc.get("non_finite") or []
    for entry in entries if isinstance(entries, list) else [None]:
        try:
            keys, token = entry
            *parents, last = keys
            node = doc
            for k in parents:
                node = node[k]
            if node[last] is not None or token not in _NON_FINITE:
                raise ValueError
            node[last] = _NON_FINITE[token]
        except (TypeError, ValueError, KeyError, IndexError):
            raise RunDirError(f"{path}: non_finite entry {entry!r} does not point at a null; damaged run dir") from None


# ---------------------------------------------------------------------------------------------- the record


def _now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


@dataclass(eq=False)
class RunResult:
    """Everything one analysis run produced. `meta` is filled by `write_run` (schema_version, versions,
    git_commit, git_dirty, started_at, finished_at, host); `RunTimer` fills the two times."""

    analysis: str
    config: dict
    summary: dict
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)
    seeds: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RunResult):
            return NotImplemented
        jsonish = ("analysis", "config", "summary", "provenance", "seeds", "notes", "meta")
        if not all(_json_equal(to_jsonable(getattr(self, k)), to_jsonable(getattr(other, k))) for k in jsonish):
            return False
        if self.tables.keys() != other.tables.keys() or self.tensors.keys() != other.tensors.keys():
            return False
        for k, df in self.tables.items():
            o = other.tables[k]
            if not (df.equals(o) and list(df.dtypes) == list(o.dtypes) and list(df.columns) == list(o.columns)):
                return False
            if list(df.index.names) != list(o.index.names):
                return False
        return all(
            t.dtype == other.tensors[k].dtype
            and t.shape == other.tensors[k].shape
            and torch.equal(t.cpu(), other.tensors[k].cpu())
            for k, t in self.tensors.items()
        )

    __hash__ = None  # type: ignore[assignment]


class RunTimer:
    """Context manager that records UTC start/finish times (and duration_s) into `result.meta`.

    `with RunTimer(result): ...`, or `with RunTimer() as t: ...` then `t.record_into(result)` when the
    result is built after the work."""

    def __init__(self, result: RunResult | None = None) -> None:
        self.result = result
        self.started_at: str | None = None
        self.finished_at: str | None = None
        self.duration_s: float | None = None
        self._t0 = 0.0

    def __enter__(self) -> RunTimer:
        self.started_at, self._t0 = _now_iso(), time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.finished_at, self.duration_s = _now_iso(), round(time.perf_counter() - self._t0, 6)
        if self.result is not None:
            self.record_into(self.result)

    def record_into(self, result: RunResult) -> RunResult:
        if self.started_at is None:
            raise RunDirError("RunTimer.record_into called before the timer was entered; use it as `with`")
        result.meta.update(started_at=self.started_at, finished_at=self.finished_at, duration_s=self.duration_s)
        return result


# ---------------------------------------------------------------------------------------------- provenance

MODEL_PROVENANCE_KEYS = ("source", "weights_sha256", "tokenizer_sha256", "revision")


def provenance(
    pair: Any = None,
    *,
    models: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
    model_extra: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The one shape of `RunResult.provenance`, for every analysis:

        {"models": {role: {"source", "weights_sha256", "tokenizer_sha256", "revision", ...}},
         "parity": the pair's tokenizer/shape parity report, or None without a pair,
         "data":   {what the inputs were: sources, sha256 of the texts or files, ...}}

    A role's entry is its model's own provenance (`HookedModel.provenance`: resolved path, kind, dtype, device,
    backend, chat template hash, ...) and always has the four `MODEL_PROVENANCE_KEYS` (None when unknown, e.g.
    the revision of a local folder). `pair` (a ModelPair) gives the roles base and post from `pair.provenance()`;
    `models` adds roles (a HookedModel or a dict each), e.g. one per checkpoint; `model_extra` merges facts about
    how a role was used (its prompt format, ...) into its entry."""
    roles: dict[str, dict[str, Any]] = {}
    parity = None
    if pair is not None:
        p = pair.provenance()
        parity = p.get("parity")
        roles.update({r: v for r, v in p.items() if r != "parity"})
    for role, m in (models or {}).items():
        roles[role] = m if isinstance(m, dict) else getattr(m, "provenance", None)
        if not isinstance(roles[role], dict):
            raise TypeError(f"model {role!r} is a {type(m).__name__}; pass a HookedModel or a provenance dict")
    for role, extra in (model_extra or {}).items():
        if role not in roles:
            raise KeyError(f"model_extra names {role!r}, which is not among the models {sorted(roles)}")
        roles[role] = {**roles[role], **extra}
    out = {role: {**{k: None for k in MODEL_PROVENANCE_KEYS}, **dict(v)} for role, v in roles.items()}
    return {"models": out, "parity": parity, "data": dict(data or {})}


def package_versions() -> dict[str, str]:
    """Installed versions (importlib.metadata) of the packages that shape results, plus Python."""
    out = {"python": platform.python_version()}
    for name in _VERSION_PACKAGES:
        try:
            out[name.replace("-", "_")] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def git_state(repo: str | Path | None = None) -> tuple[str | None, bool | None]:
    """(HEAD commit, dirty?) of the repository holding this package; (None, None) when there is none
    (installed wheel, no commits yet, git missing). Read-only git calls."""
    repo = Path(repo) if repo else Path(__file__).resolve().parent.parent
    if not (repo / ".git").exists():
        return None, None
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}
    try:
        head = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--verify", "-q", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            env=env,
        )
        if head.returncode != 0:
            return None, None
        status = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            env=env,
        )
    except (OSError, subprocess.SubprocessError):
        return None, None
    dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
    return head.stdout.strip() or None, dirty


def cpu_model() -> str:
    """The CPU's model name with its family, model and stepping numbers (Linux: /proc/cpuinfo; a virtual machine may
    show only a generic name), else what `platform.processor()` says."""
    try:
        fields: dict[str, str] = {}
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if not key.strip():
                break  # the first processor's block is enough
            fields.setdefault(key.strip(), value.strip())
        if "model name" in fields:
            ids = ", ".join(f"{k} {fields[k]}" for k in ("cpu family", "model", "stepping") if k in fields)
            return f"{fields['model name']} ({ids})" if ids else fields["model name"]
    except OSError:
        pass
    return platform.processor() or platform.machine()


def host_info() -> dict[str, Any]:
    """The machine a result was computed on. The CPU model and torch's kernel capability matter: float32 training
    is bit-reproducible on one machine at any thread count, but another CPU's kernels round differently."""
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "python_implementation": platform.python_implementation(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


# ---------------------------------------------------------------------------------------------- tables


def _table_schema(name: str, df: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The frame to write (index moved into columns when it is not the default 0..n-1) and its schema."""
    if not isinstance(df, pd.DataFrame):
        raise RunDirError(f"table {name!r} is a {type(df).__name__}; give a pandas DataFrame")
    if not all(isinstance(c, str) for c in df.columns) or df.columns.has_duplicates:
        raise RunDirError(
            f"table {name!r} needs unique string column names, got {list(df.columns)[:6]}; rename them "
            "(df.columns = df.columns.map(str)) or store a matrix in tensors"
        )
    default_index = isinstance(df.index, pd.RangeIndex) and df.index.start == 0 and df.index.step == 1
    default_index = default_index and df.index.name is None
    index_names = [] if default_index else list(df.index.names)
    out = df if default_index else df.reset_index()
    index_columns = [str(c) for c in out.columns[: len(index_names)]]
    if not all(isinstance(c, str) for c in out.columns) or out.columns.has_duplicates:
        raise RunDirError(f"table {name!r}: index names clash with column names; rename the index")
    schema = {
        "file": f"{TABLES_DIR}/{name}.csv",
        "columns": [str(c) for c in df.columns],
        "dtypes": {str(c): str(t) for c, t in out.dtypes.items()},
        "index_columns": index_columns,
        "index_names": index_names,
        "rows": len(df),
    }
    return out, schema


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _is_text_dtype(dtype: str) -> bool:
    return dtype in ("object", "str", "string") or dtype.startswith("string")


def _read_table(run_dir: Path, name: str, schema: dict[str, Any]) -> pd.DataFrame:
    path = run_dir / schema["file"]
    if not path.is_file():
        raise RunDirError(f"{run_dir}: table file {schema['file']} is missing; the run dir is damaged")
    try:
        dtypes: dict[str, str] = schema["dtypes"]
        text_cols = {c: str for c, t in dtypes.items() if _is_text_dtype(t)}
        df = pd.read_csv(path, dtype=text_cols, keep_default_na=False, na_values={c: [""] for c in dtypes})
        for c, t in dtypes.items():
            if not _is_text_dtype(t) and str(df[c].dtype) != t:
                df[c] = df[c].astype(t)
            elif t == "object":
                df[c] = df[c].astype(object).where(df[c].notna(), None)
        if schema["index_columns"]:
            df = df.set_index(schema["index_columns"])
            df.index.names = schema["index_names"]
        return df[schema["columns"]] if list(df.columns) != schema["columns"] else df
    except (ValueError, KeyError, TypeError) as e:  # pandas parser errors are ValueErrors
        first = str(e).splitlines()[0] if str(e) else ""
        raise RunDirError(
            f"{path}: table {name!r} cannot be read as result.json describes it ({type(e).__name__}: {first}); "
            "the run dir is damaged: rerun the analysis"
        ) from None


# ---------------------------------------------------------------------------------------------- write / read


def write_run(out_dir: str | Path, result: RunResult, overwrite: bool = False) -> Path:
    """Write `result` as a run directory at `out_dir` (atomically) and return the path. Fills
    `result.meta` (schema_version, versions, git, times, host). Everything is validated before any file
    is written, so a bad result leaves nothing behind."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"run dir {out_dir} already exists; pass overwrite=True (CLI: --force) or another dir")
    if out_dir.exists() and not (out_dir.is_dir() and (is_run_dir(out_dir) or not any(out_dir.iterdir()))):
        raise RunDirError(f"refusing to overwrite {out_dir}: it is not a run dir; choose another output dir")
    if not isinstance(result.analysis, str) or not _TABLE_NAME.fullmatch(result.analysis):
        raise RunDirError(f"analysis name {result.analysis!r} must be a non-empty identifier like 'causal_tracing'")
    if not all(isinstance(n, str) for n in result.notes):
        raise RunDirError("notes must be a list of strings")
    body = {k: to_jsonable(getattr(result, k), k) for k in ("config", "provenance", "seeds", "summary")}
    for k in ("config", "provenance", "seeds", "summary"):
        if not isinstance(body[k], dict):
            raise RunDirError(f"RunResult.{k} must be a dict, got {type(getattr(result, k)).__name__}")
    tables = {}
    for name, df in result.tables.items():
        if not isinstance(name, str) or not _TABLE_NAME.fullmatch(name):
            raise RunDirError(f"table name {name!r} must be a file-safe identifier (letters, digits, _ . -)")
        tables[name] = _table_schema(name, df)
    tensors: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, t in result.tensors.items():
        if not isinstance(name, str) or not name:
            raise RunDirError(f"tensor name {name!r} must be a non-empty string")
        if not isinstance(t, torch.Tensor):
            raise RunDirError(f"tensor {name!r} is a {type(t).__name__}; give a torch.Tensor")
        t = t.detach().to("cpu").contiguous()
        # safetensors refuses tensors that share storage (views, the same tensor twice): copy those only
        if t.storage_offset() or t.untyped_storage().nbytes() != t.nbytes or t.data_ptr() in seen:
            t = t.clone()
        seen.add(t.data_ptr())
        tensors[name] = t

    commit, dirty = git_state()
    meta = {
        **result.meta,
        "versions": package_versions(),
        "git_commit": commit,
        "git_dirty": dirty,
        "host": host_info(),
    }
    meta.pop("schema_version", None)
    meta.setdefault("started_at", None)
    meta["finished_at"] = meta.get("finished_at") or _now_iso()
    clash = sorted(set(meta) & _BODY_KEYS)
    if clash:
        raise RunDirError(f"RunResult.meta keys {clash} are reserved by the schema; rename them")
    tensor_index = {n: {"shape": list(t.shape), "dtype": _dtype_name(t.dtype)} for n, t in tensors.items()}
    doc = {
        "schema_version": SCHEMA_VERSION,
        "analysis": result.analysis,
        **to_jsonable(meta, "meta"),
        **body,
        "tables": {n: s["file"] for n, (_, s) in tables.items()},
        "table_schemas": {n: s for n, (_, s) in tables.items()},
        "tensors": tensor_index,
        "tensors_file": TENSORS_FILE if tensors else None,
        "notes": list(result.notes),
    }
    non_finite: list[list[Any]] = []
    clean = _split_non_finite(doc, [], non_finite)
    text = json.dumps({**clean, "non_finite": non_finite}, indent=2, allow_nan=False) + "\n"

    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        if tables:
            (tmp / TABLES_DIR).mkdir()
            for _name, (frame, schema) in tables.items():
                frame.to_csv(tmp / schema["file"], index=False)
        if tensors:
            from safetensors.torch import save_file

            save_file(
                tensors,
                str(tmp / TENSORS_FILE),
                metadata={"analysis": result.analysis, "schema_version": str(SCHEMA_VERSION), "format": "pt"},
            )
        atomic_write_text(tmp / RESULT_FILE, text)
    result.meta = {k: v for k, v in doc.items() if k not in _BODY_KEYS or k == "schema_version"}
    return out_dir


def _check_doc_paths(path: Path, doc: dict[str, Any]) -> None:
    """Names in result.json that become file names stay inside the run dir (a crafted file cannot redirect)."""
    if not isinstance(doc["analysis"], str) or not _TABLE_NAME.fullmatch(doc["analysis"]):
        raise RunDirError(f"{path}: analysis name {doc['analysis']!r} is not a file-safe identifier; damaged run dir")
    for name, schema in (doc.get("table_schemas") or {}).items():
        file = schema.get("file") if isinstance(schema, dict) else None
        if not _TABLE_NAME.fullmatch(str(name)) or file != f"{TABLES_DIR}/{name}.csv":
            raise RunDirError(
                f"{path}: table {name!r} points at {file!r}, not {TABLES_DIR}/{name}.csv inside the run dir; "
                "the run dir is damaged"
            )
    if doc.get("tensors_file") not in (None, TENSORS_FILE):
        raise RunDirError(f"{path}: tensors_file {doc['tensors_file']!r} is not {TENSORS_FILE}; damaged run dir")


def _load_doc(run_dir: Path) -> dict[str, Any]:
    path = run_dir / RESULT_FILE
    if not path.is_file():
        raise RunDirError(
            f"{run_dir} is not a run dir: {RESULT_FILE} is missing; pass a folder an analysis wrote (its --out)"
        )
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunDirError(f"{path}: not valid JSON ({e}); the run dir is damaged") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("schema_version"), int) or "analysis" not in doc:
        raise RunDirError(f"{path}: no integer schema_version / analysis; not a posttrain_probe result")
    _check_doc_paths(path, doc)
    if doc["schema_version"] > SCHEMA_VERSION:
        raise RunDirError(
            f"{run_dir} has schema_version {doc['schema_version']} > {SCHEMA_VERSION} "
            "(newer than this posttrain_probe); upgrade posttrain_probe to read it"
        )
    _restore_non_finite(path, doc)
    return doc


def read_run(run_dir: str | Path) -> RunResult:
    """The RunResult stored in `run_dir` (equal to the one `write_run` was given, after it filled meta)."""
    run_dir = Path(run_dir)
    doc = _load_doc(run_dir)
    tables = {n: _read_table(run_dir, n, s) for n, s in doc.get("table_schemas", {}).items()}
    tensors: dict[str, torch.Tensor] = {}
    if doc.get("tensors"):
        from safetensors import safe_open
        from safetensors.torch import load_file

        path = run_dir / (doc.get("tensors_file") or TENSORS_FILE)
        if not path.is_file():
            raise RunDirError(f"{run_dir}: {path.name} is missing; the run dir is damaged")
        try:
            with safe_open(str(path), framework="pt") as f:
                header = f.metadata() or {}
            loaded = load_file(str(path))
        except Exception as e:  # safetensors raises its own SafetensorError on a corrupt file
            raise RunDirError(
                f"{path}: not a readable safetensors file ({type(e).__name__}: {(str(e) or '?').splitlines()[0]}); "
                "the run dir is damaged: rerun the analysis"
            ) from None
        if header.get("analysis") != doc["analysis"]:
            raise RunDirError(f"{path}: header names analysis {header.get('analysis')!r}, not {doc['analysis']!r}")
        if set(loaded) != set(doc["tensors"]):
            raise RunDirError(f"{path}: tensors {sorted(loaded)} do not match result.json {sorted(doc['tensors'])}")
        for n, spec in doc["tensors"].items():
            t = loaded[n]
            if list(t.shape) != spec["shape"] or _dtype_name(t.dtype) != spec["dtype"]:
                raise RunDirError(
                    f"{path}: tensor {n!r} is {_dtype_name(t.dtype)}{list(t.shape)}, result.json says "
                    f"{spec['dtype']}{spec['shape']}; the run dir is damaged"
                )
            tensors[n] = t
    meta = {k: v for k, v in doc.items() if k not in _BODY_KEYS or k == "schema_version"}
    return RunResult(
        analysis=doc["analysis"],
        config=doc.get("config", {}),
        summary=doc.get("summary", {}),
        tables=tables,
        tensors=tensors,
        provenance=doc.get("provenance", {}),
        seeds=doc.get("seeds", {}),
        notes=list(doc.get("notes", [])),
        meta=meta,
    )


def reproducible_json(run_dir: str | Path, roots: Sequence[str | Path] = ()) -> dict[str, Any]:
    """result.json of `run_dir` without the `VOLATILE_META_KEYS`, with every string that starts with one of
    `roots` (input folders that legitimately differ between two runs) rewritten as '<root>/rest'."""
    doc = _load_doc(Path(run_dir))
    prefixes = sorted((str(r).rstrip("/") for r in roots), key=len, reverse=True)

    def norm(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: norm(x) for k, x in v.items()}
        if isinstance(v, list):
            return [norm(x) for x in v]
        if isinstance(v, str):
            for p in prefixes:
                if v == p or v.startswith(p + "/"):
                    return "<root>" + v[len(p) :]
        return v

    return {k: norm(v) for k, v in doc.items() if k not in VOLATILE_META_KEYS}


def is_run_dir(path: str | Path) -> bool:
    """True when `path` holds a result.json this version can read (schema_version and analysis present)."""
    try:
        _load_doc(Path(path))
    except (RunDirError, OSError):
        return False
    return True


__all__ = [
    "MODEL_PROVENANCE_KEYS",
    "SCHEMA_VERSION",
    "VOLATILE_META_KEYS",
    "RunDirError",
    "RunResult",
    "RunTimer",
    "git_state",
    "host_info",
    "provenance",
    "is_run_dir",
    "package_versions",
    "read_run",
    "reproducible_json",
    "to_jsonable",
    "write_run",
]
