"""One self-contained HTML report from saved run directories (figures embedded, no network needed).

The report never runs a model: it reads `RunResult`s, asks each analysis's plot module for its figures,
embeds them as base64 PNGs, and prints the summary numbers, provenance and an explanation of each figure.
"""

from __future__ import annotations

import base64
import html
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from posttrain_probe import registry
from posttrain_probe.results import RunResult, read_run
from posttrain_probe.utils.io import atomic_write_text


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


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (dict, list)):
        return html.escape(json.dumps(v, default=str)[:400])
    return html.escape(str(v))


_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:3px 8px;font-size:.9em;text-align:left}
img{max-width:100%;border:1px solid #eee;margin:.5em 0}.q{font-style:italic;color:#555}
.v-reproduced{color:#16632c;font-weight:bold}.v-not{color:#9b1c1c;font-weight:bold}.v-mixed{color:#8a5a00;font-weight:bold}
details{margin:.5em 0}pre{background:#f6f6f6;padding:.5em;overflow:auto;font-size:.8em}"""


def build_report(
    run_dirs: Sequence[str | Path],
    out_path: str | Path,
    title: str = "posttrain_probe report",
    verdicts: Sequence = (),
    figures_dir: str | Path | None = None,
) -> Path:
    """Write one HTML file from `run_dirs`; optional `verdicts` (`Verdict`s, or rows with their keys).

    When `figures_dir` is given, every embedded figure is also written there as PNG.
    """
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>",
    ]
    if verdicts:
        parts.append("<h2>Verdicts on the papers' claims (as measured here)</h2><table>")
        parts.append("<tr><th>paper</th><th>claim</th><th>verdict</th><th>evidence</th></tr>")
        for v in verdicts:
            cls = {"reproduced": "v-reproduced", "not reproduced": "v-not"}.get(v["verdict"], "v-mixed")
            parts.append(
                f"<tr><td>{html.escape(v['paper'])}</td><td>{html.escape(v['claim'])}</td>"
                f"<td class='{cls}'>{html.escape(v['verdict'])}</td><td>{html.escape(v['evidence'])}</td></tr>"
            )
        parts.append("</table>")
    results = [read_run(rd) for rd in run_dirs]
    for rd, res, figures in zip(run_dirs, results, _all_figures(run_dirs, results)):
        entry = registry.by_analysis(res.analysis)
        question, explanation = (entry.question, entry.explanation) if entry else (res.analysis, "")
        parts.append(f"<h2>{html.escape(res.analysis)}</h2><p class='q'>{html.escape(question)}</p>")
        if explanation:
            parts.append(f"<p>{html.escape(explanation)}</p>")
        for name, png in figures:
            parts.append(
                f"<img alt='{html.escape(name)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"
            )
            if figures_dir is not None:
                Path(figures_dir).mkdir(parents=True, exist_ok=True)
                (Path(figures_dir) / f"{res.analysis}__{name}.png").write_bytes(png)
        parts.append(
            "<table>"
            + "".join(f"<tr><th>{html.escape(str(k))}</th><td>{_fmt(v)}</td></tr>" for k, v in res.summary.items())
            + "</table>"
        )
        for note in res.notes:
            parts.append(f"<p>{html.escape(note)}</p>")
        prov = {"config": res.config, "provenance": res.provenance, "seeds": res.seeds, "meta": res.meta}
        parts.append(
            f"<details><summary>config and provenance ({html.escape(str(rd))})</summary>"
            f"<pre>{html.escape(json.dumps(prov, indent=1, default=str))}</pre></details>"
        )
    parts.append("</body></html>")
    out_path = Path(out_path)
    atomic_write_text(out_path, "\n".join(parts))
    return out_path


if __name__ == "__main__":
    raise SystemExit(_render_main(sys.argv[1:]))
