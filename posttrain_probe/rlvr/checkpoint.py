"""RLVR checkpoints without pickle: an HF model directory plus the exact trainer state.

    <run>/checkpoints/step_000050/
        config.json, model.safetensors, tokenizer files      the policy, loadable by any HF tool
        trainer_state.safetensors                             optimizer tensors, torch RNG states
        trainer_state.json                                    optimizer structure, scheduler, python and
                                                              numpy RNG, data cursor, step
        metadata.json                                         run config, parent checkpoint, weights
                                                              hash, last metrics, versions

The optimizer's `state_dict()` is split into its tensors (safetensors, keys "optim.<param>.<name>") and
the rest (JSON), and put back together on load; every RNG the process uses is saved and restored. The
folder is written to a temporary name and renamed, so a checkpoint exists completely or not at all.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from posttrain_probe.utils.hf import no_hf_progress_bars
from posttrain_probe.utils.io import atomic_dir, atomic_write_json, sha256_file

STATE_TENSORS = "trainer_state.safetensors"
STATE_JSON = "trainer_state.json"
METADATA = "metadata.json"
_STEP_DIR = re.compile(r"step_(\d+)$")


class CheckpointError(ValueError):
    """A checkpoint that is missing, incomplete or does not match the run."""


def step_dir_name(step: int) -> str:
    return f"step_{step:06d}"


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of the complete checkpoints of a run, oldest first."""
    root = Path(run_dir) / "checkpoints"
    found = []
    if root.is_dir():
        for p in root.iterdir():
            m = _STEP_DIR.match(p.name)
            if m and (p / METADATA).is_file() and (p / STATE_JSON).is_file():
                found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1][1] if found else None


# ----------------------------------------------------------------------------------------- optimizer


def flatten_optimizer_state(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split `optimizer.state_dict()` into {key: tensor} and a JSON structure that points at the keys."""
    tensors: dict[str, torch.Tensor] = {}
    structure: dict[str, Any] = {"state": {}, "param_groups": state["param_groups"]}
    for pid, entries in state["state"].items():
        slot = {}
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                key = f"optim.{pid}.{name}"
                tensors[key] = value.detach().cpu().contiguous()
                slot[name] = {"tensor": key}
            else:
                slot[name] = {"value": value}
        structure["state"][str(pid)] = slot
    return tensors, structure


def unflatten_optimizer_state(tensors: dict[str, torch.Tensor], structure: dict[str, Any]) -> dict[str, Any]:
    """Inverse of `flatten_optimizer_state`."""
    state = {}
    for pid, slot in structure["state"].items():
        state[int(pid)] = {name: tensors[v["tensor"]] if "tensor" in v else v["value"] for name, v in slot.items()}
    groups = []
    for g in structure["param_groups"]:
        g = dict(g)
        if isinstance(g.get("betas"), list):
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    return {"state": state, "param_groups": groups}


# ---------------------------------------------------------------------------------------------- RNG


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Every global RNG: torch CPU (and CUDA) as tensors, python and numpy as JSON."""
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state(legacy=True)
    as_json = {
        "python": [version, list(internal), gauss],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
    }
    return tensors, as_json


def set_rng_state(tensors: dict[str, torch.Tensor], as_json: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    version, internal, gauss = as_json["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = as_json["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


# ------------------------------------------------------------------------------------------ save/load


def save_checkpoint(
    path: str | Path,
    model: torch.nn.Module,
    tokenizer: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    trainer_state: dict[str, Any],
    metadata: dict[str, Any],
) -> Path:
    """Write a complete checkpoint folder atomically; `metadata` gets the weights hash added."""
    path = Path(path)
    with atomic_dir(path, overwrite=True) as tmp:
        with no_hf_progress_bars():
            model.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
        opt_tensors, opt_structure = flatten_optimizer_state(optimizer.state_dict())
        rng_tensors, rng_json = rng_state()
        save_file({**opt_tensors, **rng_tensors}, str(tmp / STATE_TENSORS))
        state = dict(trainer_state, optimizer=opt_structure, scheduler=scheduler.state_dict(), rng=rng_json)
        atomic_write_json(tmp / STATE_JSON, state)
        weights = sorted(tmp.glob("*.safetensors"))
        hashes = {p.name: sha256_file(p) for p in weights if p.name != STATE_TENSORS}
        atomic_write_json(tmp / METADATA, dict(metadata, weights_sha256=hashes))
    return path


def read_metadata(path: str | Path) -> dict[str, Any]:
    file = Path(path) / METADATA
    if not file.is_file():
        raise CheckpointError(f"{path} is not a checkpoint (no {METADATA}); pass a checkpoints/step_* folder")
    return json.loads(file.read_text())


def load_trainer_state(
    path: str | Path,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    restore_rng: bool = True,
) -> dict[str, Any]:
    """Restore optimizer, scheduler and (optionally) the global RNGs from a checkpoint; return the JSON
    trainer state (step, data cursor, ...)."""
    path = Path(path)
    if not (path / STATE_JSON).is_file() or not (path / STATE_TENSORS).is_file():
        raise CheckpointError(f"{path} has no trainer state; it is not a complete RLVR checkpoint")
    state = json.loads((path / STATE_JSON).read_text())
    tensors = load_file(str(path / STATE_TENSORS))
    optimizer.load_state_dict(unflatten_optimizer_state(tensors, state["optimizer"]))
    scheduler.load_state_dict(state["scheduler"])
    if restore_rng:
        set_rng_state(tensors, state["rng"])
    return state
