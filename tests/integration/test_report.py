"""The HTML report reads like a paper's appendix (contents, linked verdicts, formatted numbers, no reprs), a quick
(smoke-test) report judges nothing, the demo prints its verdict table, and unread RLVR checkpoints are pruned."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from posttrain_probe import registry
from posttrain_probe.probes.base import Analysis
from posttrain_probe.report import VERDICT_WORDS, build_report, fmt_number, prose, verdict_table_text
from posttrain_probe.results import RunResult, write_run
from posttrain_probe.verdict import Verdict

# a registry entry defined here: this module is its figures module (save_figures below)
ANALYSIS = Analysis(
    name="reportcheck",
    analysis="report_check",
    title="Report check: a nested summary",
    question="Does the report render every kind of summary value?",
    explanation="Synthetic numbers.",
    figures=__name__,
)


def save_figures(result: RunResult, out_dir: str | Path) -> list[Path]:
    """One small figure, so the section has an image."""
    import matplotlib.pyplot as plt

    from posttrain_probe.plots import write_figures

    fig, ax = plt.subplots(figsize=(2, 1.5))
    ax.plot([0, 1], [result.summary["accuracy"]["base"], result.summary["accuracy"]["post"]])
    return write_figures({"line": fig}, out_dir, dpi=40)


class _Page(HTMLParser):
    """Ids, link targets (per verdict row), and the visible text of an HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.hrefs: list[str] = []
        self.text: list[str] = []
        self.rows: list[list[str]] = []  # hrefs of each row of the verdict table
        self._in_verdicts = self._skip = False

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "table" and "verdicts" in (a.get("class") or ""):
            self._in_verdicts = True
        if tag == "tr" and self._in_verdicts:
            self.rows.append([])
        if tag == "a" and "href" in a:
            self.hrefs.append(a["href"])
            if self._in_verdicts and self.rows:
                self.rows[-1].append(a["href"])
        self._skip = tag in ("style", "script")

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._in_verdicts = False
        self._skip = False

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.text.append(data)


def _page(path: Path) -> _Page:
    p = _Page()
    p.feed(path.read_text())
    return p


@pytest.fixture
def runs(tmp_path):
    """Two run dirs: a registered analysis with a messy nested summary, and an analysis the registry lacks."""
    registry.register("reportcheck", f"{__name__}:ANALYSIS")
    summary = {
        "accuracy": {"base": 0.5123456789012345, "post": 0.89999999999},
        "n_known": {"base": 100, "post": 100},
        "per_layer": [float("nan"), 0.25, 0.1234567891234] + [0.5] * 30,
        "runs": {
            "grpo": {"entropy_first": 0.71, "entropy_last": 0.5},
            "steer": {"entropy_first": 0.7, "entropy_last": 0.45},
        },
        "token_class_note": "token_class " * 80 + "last->first",
        "undefined": float("nan"),
        "candidates": [{"layer": 1, "score": 0.3}, {"layer": 2, "score": 0.7}],
    }
    res = RunResult("report_check", {"seed": 0, "path": "a->b"}, summary, notes=["counts ({'base': 100, 'post': 100})"])
    other = RunResult("unregistered_thing", {}, {"value": 1.0000000001})
    dirs = [write_run(tmp_path / "check", res), write_run(tmp_path / "other", other)]
    yield dirs
    registry.unregister("reportcheck")


VERDICTS = [
    Verdict(
        "Paper A",
        "claim with an interval",
        "reproduced",
        "r 0.51 ({'base': 1, 'post': 2}) a->b",
        0.51,
        0.4,
        0.6,
        section="reportcheck",
    ),  # fmt: skip
    Verdict("Paper A", "claim without an interval", "inconclusive", "Pearson nan", 0.2, section="reportcheck"),
    Verdict("Paper B", "claim without numbers", "not reproduced", "no numbers", section="reportcheck"),
]


def test_report_has_contents_section_ids_and_verdict_rows_linked_to_them(runs, tmp_path):
    out = build_report(runs, tmp_path / "report.html", verdicts=VERDICTS)
    page = _page(out)
    assert {"contents", "verdicts", "reportcheck"} <= page.ids
    assert "#reportcheck" in page.hrefs and "#verdicts" in page.hrefs  # the table of contents
    linked = [r for r in page.rows if r]
    assert len(linked) == len(VERDICTS) and all(h[0].lstrip("#") in page.ids for h in linked)
    text = " ".join(page.text)
    assert "Report check: a nested summary" in text  # the registry title
    assert "95% CI" in text and "[0.4, 0.6]" in text and "n/a" in text
    for bad in ("NaN", "->", "{'", '{"', "0.5123", "0.8999"):
        assert bad not in text, bad
    assert not re.search(r"\bnan\b", text)
    assert not re.search(r"\d\.\d{6,}", text)
    assert "0.512" in text and "0.9" in text and "→" in text
    assert "token_cl " not in text and "token_cl…" not in text  # shortened at a word, never mid-word


def test_quick_report_is_labelled_a_smoke_test_and_judges_nothing(runs, tmp_path):
    out = build_report(runs, tmp_path / "report.html", verdicts=VERDICTS, smoke_test=True)
    page = _page(out)
    text = " ".join(page.text).lower()
    assert "smoke test" in text[:600]
    assert "smoke test: not judged" in text
    for word in VERDICT_WORDS:
        assert not re.search(rf"\b{word}\b", text), word
    assert all(r and r[0].lstrip("#") in page.ids for r in page.rows if r)


def test_numbers_and_text_are_formatted_for_readers():
    assert [fmt_number(x) for x in (0.51234, 1234.7, float("nan"), 3, 1e-5, -0.25)] == [
        "0.512", "1,235", "n/a", "3", "1.00e−05", "−0.25",
    ]  # fmt: skip
    assert prose("n ({'base': 100, 'post': 100}) a->b nan 0.123456789") == "n (base 100, post 100) a→b n/a 0.123"


def test_verdict_table_text_gives_claim_verdict_estimate_and_interval():
    text = verdict_table_text([v.as_dict() for v in VERDICTS])
    lines = text.splitlines()
    assert lines[0].split()[:2] == ["claim", "verdict"] and "95% CI" in lines[0]
    assert "reproduced" in lines[1] and lines[1].endswith("0.51 [0.4, 0.6]")
    assert lines[2].endswith("0.2") and "not reproduced" in lines[3]
    quick = verdict_table_text([v.as_dict() for v in VERDICTS], judged=False)
    assert not any(re.search(rf"\b{w}\b", quick) for w in VERDICT_WORDS)


@pytest.mark.parametrize("preset", ["default", "quick"])
def test_demo_prints_the_verdict_table_and_the_report_path(preset, tmp_path, monkeypatch, capsys):
    from posttrain_probe import demo
    from posttrain_probe.cli import main
    from posttrain_probe.verdicts import write_verdicts

    def fake_run_demo(out, **kwargs):
        write_verdicts(Path(out) / "verdicts.json", VERDICTS)
        return Path(out) / "report.html"

    monkeypatch.setattr(demo, "run_demo", fake_run_demo)
    (tmp_path / "d").mkdir()
    assert main(["demo", "--out", str(tmp_path / "d"), "--preset", preset]) == 0
    printed = capsys.readouterr().out
    assert "claim with an interval" in printed and "0.51 [0.4, 0.6]" in printed
    assert printed.rstrip().endswith(f"report: {tmp_path / 'd' / 'report.html'}")
    judged = [w for w in VERDICT_WORDS if re.search(rf"\b{w}\b", printed)]
    assert (judged == []) == (preset == "quick")


def _fake_rlvr(out: Path, loss: str) -> Path:
    run = out / "rlvr" / loss
    (run / "checkpoints" / "step_000003").mkdir(parents=True)
    (run / "checkpoints" / "step_000003" / "model.safetensors").write_bytes(b"0" * 100)
    (run / "metrics.jsonl").write_text("{}\n")
    return run


def test_prune_keeps_only_the_checkpoints_an_analysis_reads(tmp_path):
    from posttrain_probe.demo import prune_checkpoints

    grpo, steer = _fake_rlvr(tmp_path, "grpo_seed3"), _fake_rlvr(tmp_path, "steer_seed3")
    grpo0 = _fake_rlvr(tmp_path, "grpo_seed0")
    assert prune_checkpoints(tmp_path, seed=3) == []  # dynamics and drift not computed yet: nothing goes
    write_run(tmp_path / "dynamics", RunResult("rlvr_dynamics", {}, {}))
    assert prune_checkpoints(tmp_path, seed=3) == []
    write_run(tmp_path / "drift", RunResult("checkpoint_drift", {}, {}))
    assert prune_checkpoints(tmp_path, seed=3) == [grpo0 / "checkpoints", steer / "checkpoints"]
    assert (grpo / "checkpoints" / "step_000003").is_dir() and not (steer / "checkpoints").exists()
    assert (steer / "metrics.jsonl").is_file()  # so a rerun of the demo does not retrain it


def test_refusal_panel_of_a_model_that_never_refuses_says_why():
    from posttrain_probe.probes.refusal.figures import refusal_rates

    rows = []
    for to in ("base", "post"):
        for pset in ("harmful", "harmless"):
            for cond, src in (("baseline", "none"), ("ablation", "post"), ("addition", "post")):
                rate = 0.0 if to == "base" else 0.8
                rows.append(dict(applied_to=to, prompt_set=pset, condition=cond, direction_from=src,
                                 refusal_rate=rate, refusal_score=-2.0))  # fmt: skip
    fig = refusal_rates(RunResult("refusal", {}, {}, tables={"evaluation": pd.DataFrame(rows)}))
    base_ax, post_ax = fig.axes[:2]
    assert not base_ax.patches and "refuses none" in " ".join(t.get_text() for t in base_ax.texts)
    assert post_ax.patches and not post_ax.texts


def test_drift_figure_gives_17_modules_distinct_styles_and_keeps_the_legend_off_the_data():
    import matplotlib

    from posttrain_probe.plots.drift import lined_up, module_styles

    modules = [f"layers.{i}.{k}" for i in range(5) for k in ("attn", "mlp", "norm")] + ["embed", "final_norm"]
    styles = module_styles(modules)
    keys = {(matplotlib.colors.to_hex(s["color"]), s["ls"]) for s in styles.values()}
    assert len(modules) == 17 and len(keys) == 17
    rows = [dict(step=s, module=m, relative_change=0.01 * s) for s in (0, 3, 6) for m in modules]
    curve = pd.DataFrame({"step": np.arange(7), "entropy_mean": np.linspace(0.7, 0.5, 7)})
    fig = lined_up(RunResult("checkpoint_drift", {}, {}, tables={"weight_change": pd.DataFrame(rows),
                                                                 "entropy_curve": curve}))  # fmt: skip
    fig.canvas.draw()
    ax = fig.axes[0]
    legend = ax.get_legend()
    assert len(legend.get_texts()) == 17
    assert legend.get_window_extent().x0 >= ax.get_window_extent().x1  # right of the axes, not over the lines
    assert legend.get_window_extent().x1 <= fig.bbox.x1 + 1  # and inside the figure
