"""Devices and autocast on a tiny Llama: the output head stays fp32; the toy-world train loop and RLVR
under bf16 autocast."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from posttrain_probe.rlvr import tasks
from posttrain_probe.rlvr.config import RLVRConfig


def _tiny_llama(tmp_path: Path):
    from transformers import AutoModelForCausalLM

    from posttrain_probe.testing import make_tiny_checkpoint

    path = make_tiny_checkpoint("llama", tmp_path / "tiny", d_model=32, n_layers=2)
    return path, AutoModelForCausalLM.from_pretrained(path).eval()


def test_output_head_stays_fp32_under_autocast(tmp_path):
    from posttrain_probe.rlvr.entropy import output_head

    _, model = _tiny_llama(tmp_path)
    head = output_head(model)
    h = torch.randn(5, model.config.hidden_size)
    plain = head(h)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model.get_output_embeddings()(h).dtype == torch.bfloat16  # autocast is on
        inside = head(h)
    assert inside.dtype == torch.float32 and torch.equal(inside, plain)


def test_toyworld_train_loop_with_bf16_autocast(tmp_path):
    from posttrain_probe.toyworld.train import train

    _, model = _tiny_llama(tmp_path)
    ids = torch.randint(4, 60, (16, 12), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids, dtype=torch.bool)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    kw = dict(epochs=2.0, batch_size=8, lr=3e-3, warmup_steps=1, seed=0, device="cpu", desc="t")
    fp32 = train(model, ids, mask, **kw)
    model.load_state_dict(state)
    again = train(model, ids, mask, **kw)
    model.load_state_dict(state)
    bf16 = train(model, ids, mask, **kw, autocast=torch.bfloat16)
    assert fp32 == again  # no autocast: deterministic, as before
    assert all(isinstance(x, float) and x == x for x in bf16) and len(bf16) == len(fp32) == 4
    assert bf16 != fp32 and max(abs(a - b) for a, b in zip(bf16, fp32)) < 0.1
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast never casts the weights


def _rlvr_run(tmp_path: Path, name: str, **kw) -> Path:
    from posttrain_probe.rlvr.losses import LossConfig
    from posttrain_probe.rlvr.trainer import train

    model = tmp_path / "tiny"
    if not model.exists():
        _tiny_llama(tmp_path)
    data = tmp_path / "problems.jsonl"
    if not data.exists():
        words = "one two three four five six seven eight nine".split()
        rng = random.Random(0)
        rows = [(rng.randint(1, 4), rng.randint(1, 4)) for _ in range(40)]
        lines = [json.dumps({"question": f"{words[a]} and {words[b]} is", "answer": "0"}) + "\n" for a, b in rows]
        data.write_text("".join(lines))
    cfg = RLVRConfig(
        model=str(model), data=str(data), task="digits", n_eval=8, eval_every=2, eval_samples=2, prompts_per_step=4,
        group_size=4, max_new_tokens=5, steps=2, minibatches=2, checkpoint_every=2, token_dump_every=2,
        progress=False, lr=3e-3, loss=LossConfig("clip_cov", cov_preset="toy", clip_cov_ratio=0.1), **kw,
    )  # fmt: skip
    return train(cfg, tmp_path / name)


@pytest.mark.slow
def test_rlvr_cpu_default_is_fp32_and_bf16_autocast_keeps_log_probs_fp32(tmp_path, monkeypatch):
    from posttrain_probe.rlvr.trainer import METRICS_FILE, TIMING_KEYS, read_jsonl

    digits = tasks.Task("digits", lambda c, p: sum(t.isdigit() for t in c.split()) / max(len(c.split()), 1), None)
    monkeypatch.setitem(tasks.TASKS, "digits", digits)
    runs = {a: _rlvr_run(tmp_path, a, autocast=a) for a in ("auto", "off", "bf16")}

    def rows(run):
        return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in read_jsonl(run / METRICS_FILE)]

    def weights(run):
        return load_file(str(run / "checkpoints" / "step_000002" / "model.safetensors"))

    assert json.dumps(rows(runs["auto"])) == json.dumps(rows(runs["off"]))  # auto on the CPU: fp32, bit for bit
    a, b, c = weights(runs["auto"]), weights(runs["off"]), weights(runs["bf16"])
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a) and all(v.dtype == torch.float32 for v in c.values())
    for r32, r16 in zip(rows(runs["off"]), rows(runs["bf16"])):
        assert abs(r32["entropy_mean"] - r16["entropy_mean"]) < 0.05
    dump = load_file(str(runs["bf16"] / "token_dumps" / "step_000002.safetensors"))
    assert dump["logp_old"].dtype == dump["entropy_new"].dtype == torch.float32
    assert torch.isfinite(dump["logp_new"]).all()
