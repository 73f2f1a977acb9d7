"""The README's verdict table, generated from saved `verdicts.json` files (never typed by hand):

    python scripts/verdict_table.py runs/demo/verdicts.json runs/rlvr_study/verdicts.json

Each row: claim (paper), verdict, estimate [95% CI], n and the run it comes from (the evidence behind each row is
in the report and in `verdicts.json`; `--evidence` adds it as a column). A claim found in several files is
taken from the last file that has it (so the paired RLVR study's ≥ 5-seed rows replace the demo's 3-seed ones),
and its row names the file's folder.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from posttrain_probe.report import prose, verdict_rows


def _cell(text: str) -> str:
    return prose(text).replace("|", "\\|").replace("\n", " ")


def table(paths: list[Path], evidence: bool = False) -> str:
    rows: dict[tuple[str, str], tuple[dict, str]] = {}
    for path in paths:
        for v in json.loads(path.read_text()):
            rows[(v["paper"], v["claim"])] = (v, path.parent.name)
    head = ["claim (paper)", "verdict", "estimate [95% CI]", "n", *(["evidence"] if evidence else []), "run"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for v, src in rows.values():
        claim, word, est, ci = verdict_rows([v])[0]
        cells = [f"{_cell(claim)} ({_cell(v['paper'])})", word, est if ci == "n/a" else f"{est} {ci}"]
        cells += ["" if v.get("n") is None else str(v["n"])]
        cells += [_cell(v.get("evidence") or "")] if evidence else []
        lines.append("| " + " | ".join([*cells, src]) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", type=Path, help="verdicts.json files, later ones win for the same claim")
    ap.add_argument("--evidence", action="store_true", help="add each verdict's evidence as a column")
    args = ap.parse_args(argv)
    missing = [str(p) for p in args.files if not p.is_file()]
    if missing:
        print(f"error: no such verdicts file: {', '.join(missing)}; run the demo or the study first", file=sys.stderr)
        return 1
    print(table(args.files, args.evidence))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
