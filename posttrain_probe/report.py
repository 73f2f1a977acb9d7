"""One self-contained HTML report from saved run directories (figures embedded, no network needed).

The report never runs a model: it reads `RunResult`s, asks each analysis's plot module for its figures,
embeds them as base64 PNGs, and prints the summary numbers (as nested tables, numbers to three significant
digits), provenance and an explanation of each figure. A table of contents leads to one section per analysis
(its id is the analysis's registry name), and every verdict row links to the section it comes from.
"""

from __future__ import annotations

import ast
import base64
import html
import math
import numbers
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from posttrain_probe import registry
from posttrain_probe.results import RunResult, read_run
from posttrain_probe.utils.io import atomic_write_text

VERDICT_WORDS = ("not reproduced", "reproduced", "refuted", "inconclusive", "mixed")
NOT_JUDGED = "smoke test: not judged"
_MAX_TEXT = 600  # characters of one string value before it is shortened (at a word boundary)
_MAX_ITEMS = 12  # list items shown inline
_MAX_ROWS = 30  # rows of a table built from a list of records


def _figures_for(result: RunResult) -> list[tuple[str, bytes]]:
    entry = registry.by_analysis(result.analysis)
    if entry is None:
        return []
    with tempfile.TemporaryDirectory() as tmp:
        entry.save_figures(result, tmp)
        return [(p.stem, p.read_bytes()) for p in sorted(Path(tmp).rglob("*.png"))]


def _render_main(argv: Sequence[str]) -> int:
    """`python -m posttrain_probe.report OUT RUN_DIR...`: the figures of the i-th run as PNGs in OUT/i/."""
    out, *run_dirs = argv
    for i, rd in enumerate(run_dirs):
        dest = Path(out) / str(i)
        dest.mkdir(parents=True)
        for name, png in _figures_for(read_run(rd)):
            (dest / f"{name}.png").write_bytes(png)
    return 0


def _all_figures(run_dirs: Sequence[Path], results: Sequence[RunResult]) -> list[list[tuple[str, bytes]]]:
    """Figures of every run. Matplotlib draws on one core, so with two or more cores and several analyses the
    first half of the runs is drawn by a second Python process while this one draws the rest (a quick demo's
    report: 17 s → 11 s on 2 cores). If that process fails, its share is drawn here, where an error surfaces
    with its traceback."""
    entries = [registry.by_analysis(r.analysis) for r in results]
    has_figs = [i for i, e in enumerate(entries) if e is not None]
    figs: list[list[tuple[str, bytes]]] = [[] for _ in results]
    # the second process knows only the package's own analyses (not ones registered at run time)
    shareable = [i for i in has_figs if registry.is_builtin(entries[i].name)]
    remote = shareable[: len(has_figs) // 2] if (os.cpu_count() or 1) > 1 else []
    with tempfile.TemporaryDirectory() as tmp:
        proc = None
        if remote:
            cmd = [sys.executable, "-m", "posttrain_probe.report", tmp, *(str(run_dirs[i]) for i in remote)]
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for i in [i for i in has_figs if i not in remote]:
                figs[i] = _figures_for(results[i])
        finally:
            ok = proc is None or proc.wait() == 0
        for j, i in enumerate(remote):
            if ok:
                figs[i] = [(p.stem, p.read_bytes()) for p in sorted((Path(tmp) / str(j)).glob("*.png"))]
            else:
                figs[i] = _figures_for(results[i])
    return figs


# ------------------------------------------------------------------------------------------------ text


def fmt_number(v: Any) -> str:
    """A number as a reader wants it: three significant digits, thousands separated, n/a for NaN."""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return (f"{v:,}" if abs(v) >= 10_000 else str(v)).replace("-", "−")
    v = float(v)
    if math.isnan(v):
        return "n/a"
    if math.isinf(v):
        return "∞" if v > 0 else "−∞"
    if v == 0:
        return "0"
    if 1_000 <= abs(v) < 1e9:
        text = f"{v:,.0f}"
    else:
        text = f"{v:.3g}" if abs(v) >= 1e-4 else f"{v:.2e}"
    return text.replace("-", "−")


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _inline(v: Any) -> str:
    """A Python value written as words: `{'base': 100, 'post': 100}` → `base 100, post 100`."""
    if isinstance(v, Mapping):
        return ", ".join(f"{_key(k)} {_inline(x)}" for k, x in v.items())
    if isinstance(v, (list, tuple, set)):
        return ", ".join(_inline(x) for x in v)
    if _is_number(v) or isinstance(v, bool):
        return fmt_number(v)
    return "n/a" if v is None else str(v)


def _literal_reprs(s: str) -> str:
    """Replace Python dict/list/tuple reprs inside `s` (e.g. `({'base': 100, 'post': 100})`) by words."""
    out, i = [], 0
    while i < len(s):
        c = s[i]
        if c == "{" or (c == "[" and s[i + 1 : i + 2] in ("'", '"', "{")):
            close = {"{": "}", "[": "]"}[c]
            depth, j = 0, i
            while j < len(s):
                depth += s[j] == c
                depth -= s[j] == close
                if depth == 0:
                    break
                j += 1
            if depth == 0:
                try:
                    value = ast.literal_eval(s[i : j + 1])
                except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                    value = None
                if isinstance(value, (dict, list)):
                    out.append(_inline(value))
                    i = j + 1
                    continue
        out.append(c)
        i += 1
    return "".join(out)


_LONG_FLOAT = re.compile(r"(?<![\w.])-?\d+\.\d{5,}(?:e[-+]?\d+)?")
_NAN = re.compile(r"\b(?:nan|NaN|NAN)\b")


def prose(s: Any) -> str:
    """Text for the report: `→` for `->`, no Python reprs, long floats to three digits, NaN as n/a."""
    s = _literal_reprs(str(s)).replace("->", "→")
    s = _LONG_FLOAT.sub(lambda m: fmt_number(float(m.group())), s)
    return _NAN.sub("n/a", s)


def shorten(s: str, limit: int = _MAX_TEXT) -> str:
    """`s` cut to at most about `limit` characters at a word boundary, with an ellipsis when cut."""
    if len(s) <= limit:
        return s
    cut = s[:limit].rsplit(None, 1)[0] if " " in s[:limit] else s[:limit]
    return cut.rstrip(",;:") + " …"


def _key(k: Any) -> str:
    return prose(k).replace("_", " ")


def _esc(s: Any) -> str:
    return html.escape(prose(s))


# ---------------------------------------------------------------------------------------------- values


def _scalar(v: Any) -> bool:
    return v is None or isinstance(v, (str, bool)) or _is_number(v)


def _cell(v: Any) -> str:
    if v is None:
        return "—"
    if _is_number(v) or isinstance(v, bool):
        return fmt_number(v)
    return html.escape(shorten(prose(v)))


def _records_table(rows: Sequence[Mapping[str, Any]], index: Sequence[str] | None = None) -> str:
    """Rows of scalar records as one table (columns: the union of their keys, in first-seen order)."""
    cols = list(dict.fromkeys(k for r in rows for k in r))
    head = ("<th></th>" if index is not None else "") + "".join(f"<th>{html.escape(_key(c))}</th>" for c in cols)
    body = []
    for n, r in enumerate(rows[:_MAX_ROWS]):
        lead = f"<th>{html.escape(_key(index[n]))}</th>" if index is not None else ""
        body.append("<tr>" + lead + "".join(f"<td class='n'>{_cell(r.get(c))}</td>" for c in cols) + "</tr>")
    more = ""
    if len(rows) > _MAX_ROWS:
        more = f"<tr><td colspan='{len(cols) + 1}'>… {len(rows) - _MAX_ROWS} more rows</td></tr>"
    return f"<table class='grid'><tr>{head}</tr>{''.join(body)}{more}</table>"


def _flat_record(v: Any) -> bool:
    return isinstance(v, Mapping) and bool(v) and all(_scalar(x) for x in v.values())


def _matrix(v: Any) -> bool:
    """A list of equal-length lists of scalars (a map: rows × columns)."""
    return (
        isinstance(v, (list, tuple))
        and len(v) >= 2
        and all(isinstance(r, (list, tuple)) and r and all(_scalar(x) for x in r) for r in v)
        and len({len(r) for r in v}) == 1
    )


def _matrix_table(rows: Sequence[Sequence[Any]], labels: Sequence[str] | None) -> str:
    """A map as a grid; rows are named by `labels` when their count matches, else numbered."""
    names = labels if labels is not None and len(labels) == len(rows) else [str(i) for i in range(len(rows))]
    head = "<tr><th></th>" + "".join(f"<th>{j}</th>" for j in range(len(rows[0]))) + "</tr>"
    body = "".join(
        f"<tr><th>{html.escape(_key(n))}</th>" + "".join(f"<td class='n'>{_cell(x)}</td>" for x in r) + "</tr>"
        for n, r in zip(names, rows)
    )
    return f"<table class='grid'>{head}{body}</table>"


def _leaves(v: Any) -> int:
    if isinstance(v, Mapping):
        return sum(_leaves(x) for x in v.values())
    if isinstance(v, (list, tuple)):
        return sum(_leaves(x) for x in v)
    return 1


def summary_html(summary: Mapping[str, Any], fold_over: int = 40) -> str:
    """A result's summary as one key/value table; values with more than `fold_over` numbers (maps the figures
    draw) are folded under a one-line summary, and matrices name their rows from a list of labels of the same
    length in the summary (e.g. token classes). A summary of records (one per run) is one grid."""
    vals = list(summary.values())
    if len(vals) >= 2 and all(_flat_record(x) for x in vals):  # one record per run/model: one grid
        return _records_table(vals, index=list(summary))
    labels = [v for v in vals if isinstance(v, list) and v and all(isinstance(x, str) for x in v)]
    rows = []
    for k, v in summary.items():
        body = value_html(v, labels)
        n = _leaves(v)
        if n > fold_over:
            body = f"<details><summary>{n} values (show)</summary>{body}</details>"
        rows.append(f"<tr><th>{html.escape(_key(k))}</th><td>{body}</td></tr>")
    return f"<table class='kv'>{''.join(rows)}</table>" if rows else "<p>(empty summary)</p>"


def value_html(v: Any, labels: Sequence[Sequence[str]] = ()) -> str:
    """Any JSON-like value as HTML: scalars formatted, records of records and matrices as grids, other mappings
    as nested key/value tables, short lists inline and long ones summarized. `labels`: candidate row names."""
    if _scalar(v):
        return _cell(v)
    if _matrix(v):
        match = [lab for lab in labels if len(lab) == len(v)]
        return _matrix_table(v, match[0] if len(match) == 1 else None)
    if isinstance(v, Mapping):
        if not v:
            return "—"
        vals = list(v.values())
        if len(vals) >= 2 and all(_flat_record(x) for x in vals) and len({k for x in vals for k in x}) <= 14:
            return _records_table(vals, index=list(v))
        rows = "".join(
            f"<tr><th>{html.escape(_key(k))}</th><td>{value_html(x, labels)}</td></tr>" for k, x in v.items()
        )
        return f"<table class='kv'>{rows}</table>"
    items = list(v)
    if not items:
        return "—"
    if all(_scalar(x) for x in items):
        if any(isinstance(x, str) and not any(ch.isalnum() for ch in x) for x in items):  # tokens such as ","
            return " ".join(f"<code>{_cell(x)}</code>" for x in items[:_MAX_ROWS])
        shown = ", ".join(_cell(x) for x in items[:_MAX_ITEMS])
        if len(items) <= _MAX_ITEMS:
            return shown
        nums = [float(x) for x in items if _is_number(x) and math.isfinite(float(x))]
        rng = f"; range {fmt_number(min(nums))} to {fmt_number(max(nums))}" if nums else ""
        return f"{shown}, … ({len(items)} values{rng})"
    if all(_flat_record(x) for x in items):
        return _records_table(items)
    return "<ol>" + "".join(f"<li>{value_html(x, labels)}</li>" for x in items[:_MAX_ROWS]) + "</ol>"


# ---------------------------------------------------------------------------------------------- report


def _get(v: Any, key: str, default: Any = None) -> Any:
    try:
        return v[key]
    except (KeyError, AttributeError, TypeError):
        return default


def _estimate_cells(v: Any) -> tuple[str, str]:
    est, lo, hi = _get(v, "estimate"), _get(v, "ci_low"), _get(v, "ci_high")
    ci = f"[{fmt_number(lo)}, {fmt_number(hi)}]" if lo is not None and hi is not None else "n/a"
    return ("n/a" if est is None else fmt_number(est)), ci


def verdict_rows(verdicts: Sequence[Any], judged: bool = True) -> list[tuple[str, str, str, str]]:
    """(claim, verdict, estimate, 95% CI) of each verdict, as plain text (the console's table)."""
    out = []
    for v in verdicts:
        est, ci = _estimate_cells(v)
        out.append((prose(v["claim"]), v["verdict"] if judged else NOT_JUDGED, est, ci))
    return out


def verdict_table_text(verdicts: Sequence[Any], judged: bool = True, width: int = 72) -> str:
    """The verdict table for a terminal: claim (shortened at a word), verdict, estimate [95% CI]."""
    rows = verdict_rows(verdicts, judged)
    if not rows:
        return "no verdicts"
    vw = max(len("verdict"), *(len(r[1]) for r in rows))
    lines = [f"{'claim':<{width}}  {'verdict':<{vw}}  estimate [95% CI]"]
    for claim, word, est, ci in rows:
        number = "" if est == "n/a" and ci == "n/a" else f"{est} {ci}" if ci != "n/a" else est
        lines.append(f"{shorten(claim, width - 2):<{width}}  {word:<{vw}}  {number}".rstrip())
    return "\n".join(lines)


_CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222;line-height:1.4}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.4em 0}
td,th{border:1px solid #ddd;padding:3px 8px;font-size:.9em;text-align:left;vertical-align:top}
th{background:#fafafa;font-weight:600}table table{margin:0}table table td,table table th{font-size:.85em}
td.n{font-variant-numeric:tabular-nums}code{background:#f1f1f1;padding:0 .3em;margin-right:.2em}
img{max-width:100%;border:1px solid #eee;margin:.5em 0}
.q{font-style:italic;color:#555}.v-reproduced{color:#16632c;font-weight:bold}
.v-not{color:#9b1c1c;font-weight:bold}.v-mixed{color:#8a5a00;font-weight:bold}.v-none{color:#666}
.smoke{background:#fff4d6;border:1px solid #e0b040;padding:.6em 1em;margin:1em 0}
nav.toc{background:#f7f7f7;border:1px solid #e4e4e4;padding:.4em 1.2em;margin:1em 0}
nav.toc h2{margin-top:.3em;border:0;font-size:1.1em}nav.toc ol{margin:.3em 0}ol{padding-left:1.5em}
details{margin:.5em 0}a{color:#1a4f9c}"""

_SMOKE = (
    "Smoke test: this report comes from the quick preset, whose toy model learns little. It shows that every "
    "step of the chain runs and draws; its numbers are not evidence for or against the papers' claims, so no claim "
    "is judged. Run the default demo for the verdicts."
)


def _section_ids(results: Sequence[RunResult]) -> list[str]:
    """One unique HTML id per result: the registry name of its analysis (else its analysis id)."""
    ids: list[str] = []
    for res in results:
        entry = registry.by_analysis(res.analysis)
        base = re.sub(r"[^A-Za-z0-9_-]", "-", entry.name if entry else res.analysis) or "section"
        sid, n = base, 2
        while sid in ids or sid in ("contents", "verdicts"):
            sid, n = f"{base}-{n}", n + 1
        ids.append(sid)
    return ids


def _verdict_table(verdicts: Sequence[Any], ids: Sequence[str], judged: bool) -> list[str]:
    has_numbers = judged and any(_get(v, "estimate") is not None or _get(v, "ci_low") is not None for v in verdicts)
    head = "<th>paper</th><th>claim</th><th>verdict</th>"
    head += "<th>estimate</th><th>95% CI</th>" if has_numbers else ""
    head += "<th>evidence</th>" if judged else ""
    parts = [f"<table class='verdicts'><tr>{head}</tr>"]
    for v in verdicts:
        section = _get(v, "section") or ""
        claim = _esc(v["claim"])
        if section in ids:
            claim = f"<a href='#{section}'>{claim}</a>"
        if judged:
            word = v["verdict"]
            cls = {"reproduced": "v-reproduced", "not reproduced": "v-not", "refuted": "v-not"}.get(word, "v-mixed")
        else:
            word, cls = NOT_JUDGED, "v-none"
        row = f"<tr><td>{_esc(v['paper'])}</td><td>{claim}</td><td class='{cls}'>{html.escape(word)}</td>"
        if has_numbers:
            est, ci = _estimate_cells(v)
            row += f"<td class='n'>{est}</td><td class='n'>{ci}</td>"
        if judged:
            row += f"<td>{_esc(v['evidence'])}</td>"
        parts.append(row + "</tr>")
    parts.append("</table>")
    return parts


def build_report(
    run_dirs: Sequence[str | Path],
    out_path: str | Path,
    title: str = "posttrain_probe report",
    verdicts: Sequence = (),
    figures_dir: str | Path | None = None,
    smoke_test: bool = False,
) -> Path:
    """Write one HTML file from `run_dirs`; optional `verdicts` (`Verdict`s, or rows with their keys).

    When `figures_dir` is given, every embedded figure is also written there as PNG. `smoke_test=True` (the
    quick preset) labels the report a smoke test and lists the claims without judging them.
    """
    results = [read_run(rd) for rd in run_dirs]
    entries = [registry.by_analysis(res.analysis) for res in results]
    ids = _section_ids(results)
    titles = [e.title if e is not None and e.title else res.analysis for e, res in zip(entries, results)]
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{_esc(title)}</title>",
        f"<style>{_CSS}</style></head><body><h1>{_esc(title)}</h1>",
    ]
    if smoke_test:
        parts.append(f"<p class='smoke'><strong>{html.escape(_SMOKE)}</strong></p>")
    toc = ["<nav class='toc' id='contents'><h2>Contents</h2><ol>"]
    if verdicts:
        label = "Verdicts on the papers' claims" + (" (not judged)" if smoke_test else "")
        toc.append(f"<li><a href='#verdicts'>{html.escape(label)}</a></li>")
    toc += [f"<li><a href='#{sid}'>{_esc(t)}</a></li>" for sid, t in zip(ids, titles)]
    parts += toc + ["</ol></nav>"]
    if verdicts:
        heading = (
            "Verdicts on the papers' claims: not judged (smoke test)"
            if smoke_test
            else "Verdicts on the papers' claims (as measured here)"
        )
        parts.append(f"<section id='verdicts'><h2>{heading}</h2>")
        parts += _verdict_table(verdicts, ids, judged=not smoke_test)
        parts.append("</section>")
    for rd, res, entry, sid, sec_title, figures in zip(
        run_dirs, results, entries, ids, titles, _all_figures(run_dirs, results)
    ):
        question, explanation = (entry.question, entry.explanation) if entry else ("", "")
        parts.append(f"<section id='{sid}'><h2>{_esc(sec_title)}</h2>")
        if question:
            parts.append(f"<p class='q'>{_esc(question)}</p>")
        if explanation:
            parts.append(f"<p>{_esc(explanation)}</p>")
        for name, png in figures:
            parts.append(
                f"<img alt='{html.escape(name)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"
            )
            if figures_dir is not None:
                Path(figures_dir).mkdir(parents=True, exist_ok=True)
                (Path(figures_dir) / f"{res.analysis}__{name}.png").write_bytes(png)
        parts.append("<h3>Summary</h3>" + summary_html(res.summary))
        for note in res.notes:
            parts.append(f"<p>{_esc(note)}</p>")
        prov = {"run directory": str(rd), "seeds": res.seeds, "config": res.config, "provenance": res.provenance}
        prov.update({"meta": res.meta} if res.meta else {})
        parts.append(f"<details><summary>config and provenance</summary>{value_html(prov)}</details></section>")
    parts.append("</body></html>")
    out_path = Path(out_path)
    atomic_write_text(out_path, "\n".join(parts))
    return out_path


if __name__ == "__main__":
    raise SystemExit(_render_main(sys.argv[1:]))
