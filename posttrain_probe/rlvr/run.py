"""`RLVRRun`: the one reader of an RLVR run directory (what `train` / `resume` write, see `trainer.py`).

    run = RLVRRun("runs/demo/rlvr/grpo")
    run.config["steps"], run.label             # config.json (the resolved RLVRConfig), the loss name
    run.metrics(), run.eval_rows()             # metrics.jsonl / eval.jsonl rows; a torn last line is no row
    run.token_dumps(), run.checkpoints()       # [(step, path)], oldest first; only complete checkpoints
    run.steps_done, run.is_finished            # last step with a metrics row; all steps and the final checkpoint

config.json is read once, everything else when asked, so one object can follow a run that is still training.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from posttrain_probe.rlvr.checkpoint import METADATA, list_checkpoints
from posttrain_probe.rlvr.config import ConfigError, RLVRConfig
from posttrain_probe.rlvr.trainer import CONFIG_FILE, DUMP_DIR, EVAL_FILE, METRICS_FILE, read_jsonl

CHECKPOINTS_DIR = "checkpoints"
RUNTIME_KEYS = ("threads", "progress")  # how a run is executed, not what it computes
_DUMP = re.compile(r"step_(\d+)\.safetensors$")


def checkpoint_step(path: str | os.PathLike) -> int | None:
    """The training step a checkpoint folder records (metadata.json "step"); None for a folder without one
    (a plain HF model directory)."""
    meta = Path(path) / METADATA
    if not meta.is_file():
        return None
    step = json.loads(meta.read_text()).get("step")
    return None if step is None else int(step)


def same_config(saved: dict[str, Any], cfg: RLVRConfig | dict[str, Any]) -> bool:
    """Whether a run's saved config.json describes the run `cfg` would train (ignoring `RUNTIME_KEYS`: a paired
    study's workers run one thread each, a run trained in-process may use more)."""
    want = cfg.to_dict() if isinstance(cfg, RLVRConfig) else cfg
    want = json.loads(json.dumps(want))
    return {k: v for k, v in saved.items() if k not in RUNTIME_KEYS} == {
        k: v for k, v in want.items() if k not in RUNTIME_KEYS
    }


@dataclass(frozen=True, init=False)
class RLVRRun:
    """An RLVR run directory: config.json, metrics.jsonl, eval.jsonl, token_dumps/, checkpoints/step_NNNNNN/."""

    path: Path

    def __init__(self, path: str | os.PathLike) -> None:
        object.__setattr__(self, "path", Path(path))
        if not self.path.is_dir():
            raise FileNotFoundError(f"{self.path} is not a directory; pass the --out folder of an RLVR run")

    @staticmethod
    def is_run_dir(path: str | os.PathLike) -> bool:
        """Whether `path` looks like an RLVR run (a checkpoints/ folder or a metrics.jsonl), not a model dir."""
        p = Path(path)
        return p.is_dir() and ((p / CHECKPOINTS_DIR).is_dir() or (p / METRICS_FILE).is_file())

    # ------------------------------------------------------------------------------------------ config

    @cached_property
    def config(self) -> dict[str, Any]:
        """config.json as written by `train` (a plain dict; `rlvr_config()` gives the validated RLVRConfig)."""
        file = self.path / CONFIG_FILE
        if not file.is_file():
            raise ConfigError(f"{self.path} is not an RLVR run directory (no {CONFIG_FILE}); pass the --out of a run")
        return json.loads(file.read_text())

    def rlvr_config(self) -> RLVRConfig:
        return RLVRConfig.from_dict(self.config)

    @property
    def label(self) -> str:
        """The run's label in analyses: its `arm` when set (e.g. 'null'), else its loss recipe (e.g. 'steer_paper'),
        else its loss name (e.g. 'grpo'); '?' when the config names none."""
        if self.config.get("arm"):
            return str(self.config["arm"])
        loss = self.config.get("loss", {})
        if not isinstance(loss, dict):
            return str(loss)
        return loss.get("recipe") or loss.get("name", "?")

    @property
    def steps(self) -> int:
        """The configured number of steps."""
        return int(self.config["steps"])

    # ------------------------------------------------------------------------------------------- files

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def eval_path(self) -> Path:
        return self.path / EVAL_FILE

    def metrics(self) -> list[dict[str, Any]]:
        """metrics.jsonl rows, one per finished step; an unterminated last line (a kill mid-write) is no row."""
        return read_jsonl(self.metrics_path)

    def eval_rows(self) -> list[dict[str, Any]]:
        """eval.jsonl rows (step 0, every eval_every steps and the last step), read as `metrics`."""
        return read_jsonl(self.eval_path)

    def token_dumps(self) -> list[tuple[int, Path]]:
        """(step, file) of the per-token dumps (token_dumps/step_NNNNNN.safetensors), oldest first."""
        folder = self.path / DUMP_DIR
        found = []
        if folder.is_dir():
            for f in folder.iterdir():
                m = _DUMP.match(f.name)
                if m and f.is_file():
                    found.append((int(m.group(1)), f))
        return sorted(found)

    def checkpoints(self) -> list[tuple[int, Path]]:
        """(step, folder) of the complete checkpoints, oldest first (`checkpoint.list_checkpoints`)."""
        return list_checkpoints(self.path)

    def latest_checkpoint(self) -> Path | None:
        found = self.checkpoints()
        return found[-1][1] if found else None

    # ------------------------------------------------------------------------------------------ status

    @property
    def steps_done(self) -> int:
        """The last step with a complete metrics row (0 before the first)."""
        rows = self.metrics()
        return max((int(r["step"]) for r in rows), default=0)

    @property
    def is_finished(self) -> bool:
        """Every configured step has its metrics row and the final checkpoint (always written) is complete.
        A run killed between the two is unfinished: `resume` redoes the steps after its last checkpoint."""
        n = self.steps
        return self.steps_done >= n and any(step == n for step, _ in self.checkpoints())

    def start_model(self) -> dict[str, Any]:
        """Where the run started: the latest checkpoint's record of the start model (source, resolved path and
        provenance), else just the configured source."""
        latest = self.latest_checkpoint()
        if latest is not None:
            meta = json.loads((latest / METADATA).read_text())
            if meta.get("start_model"):
                return dict(meta["start_model"])
        return {"source": self.config.get("model")}

    def __repr__(self) -> str:
        return f"RLVRRun({str(self.path)!r})"


__all__ = ["CHECKPOINTS_DIR", "RUNTIME_KEYS", "RLVRRun", "checkpoint_step", "same_config"]
