"""The verdict the toy build itself decides: Du et al.'s "post-training develops new knowledge", from its report."""

from __future__ import annotations

from typing import Any

from posttrain_probe.verdict import Verdict


def _v(paper: str, claim: str, verdict: str, evidence: str, **numbers) -> Verdict:
    return Verdict(paper, claim, verdict, evidence, section="patching", **numbers)


def new_knowledge_verdicts(toy_report: dict[str, Any]) -> list[Verdict]:
    """Du et al.'s 'develops new knowledge representations', from the toy build's recall of facts taught only in SFT."""
    fr = toy_report.get("fact_recall", {})
    if "post_sft_new_facts" not in fr:
        return []
    base, post = fr["base_sft_new_facts"], fr["post_sft_new_facts"]
    verdict = "reproduced" if post >= 0.5 and post - base >= 0.3 else "not reproduced"
    return [
        _v(
            "Du et al. 2025",
            "post-training develops new knowledge (facts taught only in SFT are recalled by post, not by base)",
            verdict,
            f"recall of {fr.get('n_sft_new', '?')} SFT-only facts: base {base:.2f}, post {post:.2f}; of pretraining "
            f"facts: base {fr.get('base_pretrain_facts', float('nan')):.2f}, post "
            f"{fr.get('post_pretrain_facts', float('nan')):.2f} (reproduced: post ≥ 0.5 and ≥ base + 0.3)",
        )
    ]
