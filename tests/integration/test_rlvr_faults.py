"""Fault injection: an RLVR run SIGKILLed at five seeded random points and resumed each time ends with the
weights, optimizer state, metrics, evaluations and token dumps of an uninterrupted run, and no leftovers.

The processes run `posttrain_probe.cli.main(["rlvr", "train" | "resume", ...])`, forked from a server that did
the imports once (tests/integration/_cli_fork_server.py); every kill is a real SIGKILL of such a process.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from posttrain_probe.rlvr import checkpoint as ckpt
from posttrain_probe.rlvr.trainer import TIMING_KEYS, read_jsonl

pytestmark = pytest.mark.slow
if not hasattr(os, "fork"):  # pragma: no cover - the suite runs on Linux
    pytest.skip("needs os.fork", allow_module_level=True)

STEPS = 24
WORDS = "one two three four five six seven eight nine".split()
CONFIG = f"""\
task: digits
n_eval: 4
eval_every: 4
eval_samples: 2
prompts_per_step: 2
group_size: 4
max_new_tokens: 4
steps: {STEPS}
minibatches: 2
checkpoint_every: 2
token_dump_every: 2
lr: 0.003
threads: 1
progress: false
"""


class ForkServer:
    def __init__(self, log_dir: Path):
        env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
        server = Path(__file__).with_name("_cli_fork_server.py")
        self.proc = subprocess.Popen(
            [sys.executable, str(server)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
        self.log_dir = log_dir
        self.n = 0
        assert self._read() == {"ready": True}

    def _read(self) -> dict[str, Any]:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"fork server died with code {self.proc.wait()}")
        return json.loads(line)

    def _ask(self, req: dict[str, Any]) -> dict[str, Any]:
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def start(self, argv: list[str], die: dict[str, Any] | None = None) -> int:
        self.n += 1
        log = self.log_dir / f"process_{self.n}.log"
        return int(self._ask({"run": argv, "log": str(log), "die": die})["pid"])

    def poll(self, pid: int) -> dict[str, Any] | None:
        reply = self._ask({"poll": pid})
        return None if reply.get("running") else reply

    def wait(self, pid: int, timeout: float = 120.0) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if (status := self.poll(pid)) is not None:
                return status
            time.sleep(0.005)
        os.kill(pid, signal.SIGKILL)
        raise AssertionError(f"process {pid} did not finish within {timeout} s")

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted(self.log_dir.glob("*.log")))


def _rows(path: Path) -> int:
    try:
        return path.read_text().count("\n")
    except FileNotFoundError:
        return 0


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except FileNotFoundError:
        return None


def _kill_plan(seed: int) -> list[dict[str, Any]]:
    """Five kill points: a kill inside a checkpoint write, one inside a metrics line, and three drawn at random
    from 'after k new metrics rows + a random delay' and 'a random time after the start'."""
    rng = random.Random(seed)
    plan: list[dict[str, Any]] = [
        {"kind": "die", "die": {"at": "checkpoint", "nth": rng.randint(1, 2)}},
        {"kind": "die", "die": {"at": "metrics", "nth": rng.randint(1, 3)}},
    ]
    for _ in range(3):
        if rng.random() < 0.5:
            plan.append({"kind": "rows", "k": rng.randint(1, 3), "delay": rng.uniform(0.0, 0.03)})
        else:
            plan.append({"kind": "time", "t": rng.uniform(0.05, 1.0)})
    rng.shuffle(plan)
    return plan


def _kill_once(server: ForkServer, run: Path, cfg: Path, point: dict[str, Any]) -> dict[str, Any]:
    """Start train (fresh dir) or resume, kill it at `point` (at the latest after 3 new metrics rows, or before the
    last step's row when fewer steps are left)."""
    latest = ckpt.latest_checkpoint(run)
    base = int(ckpt.read_metadata(latest)["step"]) if latest is not None else 0
    metrics = run / "metrics.jsonl"
    inode_before = _inode(metrics)
    fresh = not (run / "config.json").exists()
    argv = ["rlvr", "train", "--config", str(cfg), "--out", str(run)] if fresh else ["rlvr", "resume", str(run)]
    pid = server.start(argv, point.get("die"))
    t0 = time.monotonic()
    fire_at: float | None = t0 + point["t"] if point["kind"] == "time" else None
    # backstop: every planned kill happens before the run can finish, however fast the machine (a resume with one
    # step left is killed at once: no "time" point is short enough to land inside it for sure)
    backstop = max(0, min(3, STEPS - base - 1))
    while True:
        if (status := server.poll(pid)) is not None:
            break
        now = time.monotonic()
        new_file = fresh or inode_before is None or _inode(metrics) != inode_before  # resume rewrote it
        new_rows = _rows(metrics) - base if new_file else 0
        if point["kind"] == "rows" and fire_at is None and new_rows >= point["k"]:
            fire_at = now + point["delay"]
        if new_rows >= backstop:  # also cuts a "time" point short: a fast machine may finish before it
            fire_at = now if fire_at is None else min(fire_at, now)
        if fire_at is not None and now >= fire_at:
            os.kill(pid, signal.SIGKILL)
            status = server.wait(pid)
            break
        if now - t0 > 120:
            os.kill(pid, signal.SIGKILL)
            raise AssertionError(f"process {pid} made no progress in 120 s\n{server.logs()}")
        time.sleep(0.002)
    assert status == {"signal": signal.SIGKILL}, f"{point}: expected a SIGKILL, got {status}\n{server.logs()}"
    return {"point": point, "resumed_from": base, "process": "train" if fresh else "resume"}


def _strip(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _files(run: Path) -> list[str]:
    return sorted(str(p.relative_to(run)) for p in run.rglob("*"))


def _equal_tensors(a: Path, b: Path) -> bool:
    ta, tb = load_file(str(a)), load_file(str(b))
    return ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


def test_sigkill_at_five_random_points_then_resume_equals_an_uninterrupted_run(tmp_path):
    from posttrain_probe.testing import make_tiny_checkpoint

    model = make_tiny_checkpoint("llama", tmp_path / "start", d_model=32, n_layers=2)
    rng = random.Random(0)
    data = tmp_path / "problems.jsonl"
    data.write_text(
        "".join(
            json.dumps({"question": f"{WORDS[a - 1]} and {WORDS[b - 1]} is", "answer": str(a + b)}) + "\n"
            for a, b in ((rng.randint(1, 4), rng.randint(1, 4)) for _ in range(40))
        )
    )
    cfg = tmp_path / "rlvr.yaml"
    cfg.write_text(CONFIG + f"model: {model}\ndata: {data}\n")
    (tmp_path / "logs").mkdir()
    server = ForkServer(tmp_path / "logs")
    try:
        full, cut = tmp_path / "full", tmp_path / "cut"
        ref = server.start(["rlvr", "train", "--config", str(cfg), "--out", str(full)])  # alongside the kills
        kills = [_kill_once(server, cut, cfg, point) for point in _kill_plan(seed=0)]
        last = server.start(["rlvr", "resume", str(cut)])
        assert server.wait(last) == {"exit": 0}, server.logs()
        assert server.wait(ref) == {"exit": 0}, server.logs()
    finally:
        server.close()

    assert len(kills) == 5 and sum(k["point"]["kind"] == "die" for k in kills) == 2
    final = ckpt.step_dir_name(STEPS)
    for name in ("model.safetensors", ckpt.STATE_TENSORS):  # weights, then optimizer moments and RNG states
        assert _equal_tensors(full / "checkpoints" / final / name, cut / "checkpoints" / final / name), (name, kills)
    start = load_file(str(model / "model.safetensors"))
    end = load_file(str(full / "checkpoints" / final / "model.safetensors"))
    assert any(not torch.equal(start[k], end[k]) for k in start)  # training moved the weights
    rows_full, rows_cut = read_jsonl(full / "metrics.jsonl"), read_jsonl(cut / "metrics.jsonl")
    assert [r["step"] for r in rows_cut] == list(range(1, STEPS + 1))  # no duplicated or missing rows
    assert _same(_strip(rows_full), _strip(rows_cut)), kills
    assert _same(read_jsonl(full / "eval.jsonl"), read_jsonl(cut / "eval.jsonl"))
    for dump in sorted((full / "token_dumps").iterdir()):
        assert _equal_tensors(dump, cut / "token_dumps" / dump.name), dump.name
    assert _files(full) == _files(cut)  # no half-written temp folder or file is left behind
    state = json.loads((cut / "checkpoints" / final / ckpt.STATE_JSON).read_text())
    assert state["step"] == STEPS
