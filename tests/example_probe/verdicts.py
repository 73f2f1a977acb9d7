"""The example probe's verdict, from the saved result only."""

from __future__ import annotations

from posttrain_probe.verdict import Verdict


def verdicts(result) -> list[Verdict]:
    s = result.summary
    lower = s["entropy_post"] < s["entropy_base"]
    return [
        Verdict(
            "example",
            "post-training lowers next-token entropy on plain text",
            "reproduced" if lower else "refuted",
            f"entropy base {s['entropy_base']:.3f}, post {s['entropy_post']:.3f}",
            estimate=s["entropy_post"] - s["entropy_base"],
            threshold=0.0,
            rule="point estimate only (an example)",
            section="example",
        )
    ]
