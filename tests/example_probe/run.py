"""The example probe's run: mean next-token entropy per model."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from posttrain_probe.results import RunResult
from tests.example_probe.config import ExampleConfig, ExampleData


def load_inputs(data: ExampleData, sources, cfg: ExampleConfig) -> list[str]:
    path = Path(data.texts or sources.texts)
    return [t for t in path.read_text().splitlines() if t.strip()][: cfg.n_texts]


@torch.no_grad()
def run(pair, texts: list[str], cfg: ExampleConfig) -> RunResult:
    ids, mask = pair.encode(texts, padding_side="right")
    summary = {}
    for role, model in pair.models().items():
        logp = torch.log_softmax(model.run(ids, mask).logits.float(), -1)
        h = -(logp.exp() * logp).sum(-1)  # (B, T)
        summary[f"entropy_{role}"] = float((h * mask).sum() / mask.sum())
    return RunResult("example_entropy", asdict(cfg), summary, provenance={"pair": pair.provenance()})


def format_summary(summary: dict) -> str:
    return f"entropy base {summary['entropy_base']:.3f}, post {summary['entropy_post']:.3f}"
