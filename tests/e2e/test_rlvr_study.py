"""`posttrain-probe rlvr study` end to end at smoke sizes on the quick toy pair: arms and a dose arm on paired
seeds, the paired-effects and dose tables, timings, reuse of finished runs, a refused config change, and
`rlvr arms`."""

from __future__ import annotations

import pytest

from posttrain_probe.cli import main
from posttrain_probe.results import read_run


@pytest.fixture(scope="module")
def study(toy_pair_quick, tmp_path_factory):
    out = tmp_path_factory.mktemp("rlvr_study") / "study"
    argv = [
        "rlvr", "study", "--preset", "quick", "--smoke", "--no-progress", "--out", str(out),
        "--arms", "clip_cov", "--seeds", "2", "--workers", "1",
        "--dose", "clip_cov:clip_cov_ratio=0.08", "--dose-seeds", "1",
    ]  # fmt: skip
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("POSTTRAIN_PROBE_CACHE", str(toy_pair_quick.root.parent.parent))
        code = main(argv)
        yield out, argv, code


def test_study_trains_every_arm_on_paired_seeds_and_writes_paired_effects(study):
    import json

    from posttrain_probe.verdict import FIELDS

    out, _, code = study
    assert code == 0
    runs = sorted(p.name for p in (out / "rlvr").iterdir() if p.is_dir())
    dose_run = "clip_cov@clip_cov_ratio=0.08_seed0"
    assert runs == [dose_run, "clip_cov_seed0", "clip_cov_seed1", "grpo_seed0", "grpo_seed1"]
    dyn = read_run(out / "dynamics")
    assert set(dyn.summary) == set(runs)
    paired = dyn.tables["paired"].set_index("arm")
    assert paired.loc["clip_cov", "baseline"] == "grpo" and paired.loc["clip_cov", "n_seeds"] == 2
    assert paired.loc["clip_cov@clip_cov_ratio=0.08", "n_seeds"] == 1
    dose = dyn.tables["dose_response"]
    assert set(dose["dose_value"].astype(float)) >= {0.08}
    rows = json.loads((out / "verdicts.json").read_text())
    assert rows and all(set(FIELDS) <= set(row) for row in rows)
    assert any("Cui" in row["paper"] for row in rows)
    timings = dict(line.split("\t") for line in (out / "timings.txt").read_text().splitlines())
    assert set(runs) | {"train_total", "total"} == set(timings)
    assert all(float(v) > 0 for v in timings.values())


def _rows(rd) -> list[dict]:
    """A run's metrics rows without its wall-clock times (the only fields a resumed run may change)."""
    import json

    from posttrain_probe.rlvr.trainer import TIMING_KEYS

    rows = [json.loads(line) for line in (rd / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in rows]


def test_an_interrupted_study_resumes_exactly_and_a_changed_config_is_refused(study, capsys):
    import shutil

    from posttrain_probe.rlvr.run import RLVRRun

    out, argv, _ = study
    rlvr = out / "rlvr"
    assert main(argv) == 1  # dynamics exists and --force is not given: refused in one line, nothing retrained
    assert "dynamics" in capsys.readouterr().err
    rows = {p.name: _rows(p) for p in rlvr.iterdir() if p.is_dir()}
    kept = (rlvr / "grpo_seed0" / "metrics.jsonl").stat().st_mtime_ns
    for _, path in RLVRRun(rlvr / "grpo_seed1").checkpoints():  # killed before its final checkpoint
        shutil.rmtree(path)
    shutil.rmtree(rlvr / "clip_cov_seed1")  # never started
    shutil.rmtree(out / "dynamics")
    assert not RLVRRun(rlvr / "grpo_seed1").is_finished
    assert main(argv) == 0
    assert (rlvr / "grpo_seed0" / "metrics.jsonl").stat().st_mtime_ns == kept  # finished runs are reused
    assert {p.name: _rows(p) for p in rlvr.iterdir() if p.is_dir()} == rows  # and the others recomputed exactly
    timings = {line.split("\t")[0] for line in (out / "timings.txt").read_text().splitlines()}
    assert timings == {"grpo_seed1", "clip_cov_seed1", "train_total", "total"}
    shutil.rmtree(out / "dynamics")
    capsys.readouterr()
    assert main([*argv, "--steps", "4"]) == 1
    header, *error = capsys.readouterr().err.strip().splitlines()  # the study's header, then one line of error
    assert header.startswith("rlvr_study:") and len(error) == 1
    assert "another config" in error[0] and "--force" in error[0]
    assert {p.name: _rows(p) for p in rlvr.iterdir() if p.is_dir()} == rows


def test_rlvr_arms_lists_every_arm_and_dose(capsys):
    from posttrain_probe.rlvr.paired import ARMS, DOSES

    assert main(["rlvr", "arms"]) == 0
    text = capsys.readouterr().out
    assert all(name in text for name in ARMS)
    assert all(f"dose {m}@{p}=" in text for m, params in DOSES.items() for p in params)
