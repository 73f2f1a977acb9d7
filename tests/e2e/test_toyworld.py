"""The toy world built: a loadable HF pair, eval files in the real-data formats, caching, seeds, interrupts."""

from __future__ import annotations

import json
import time

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from posttrain_probe.data import load_facts, load_instructions, load_problems, load_statements
from posttrain_probe.toyworld import build, builder, preset_config


def test_quick_build_loads_as_hf_and_writes_eval_sets(toy_pair_quick):
    pair = toy_pair_quick
    for d in (pair.base_dir, pair.post_dir):
        model = AutoModelForCausalLM.from_pretrained(d)
        tok = AutoTokenizer.from_pretrained(d)
        assert model.config.vocab_size == len(tok) > model.config.hidden_size
        assert model.config.intermediate_size >= 4 * model.config.hidden_size
    chat = tok.apply_chat_template(
        [{"role": "user", "content": "how do I bake bread ?"}], add_generation_prompt=True, tokenize=False
    )
    toks = tok.convert_ids_to_tokens(tok(chat)["input_ids"])
    assert toks[:2] == ["<s>", "<|user|>"] and toks[-1] == "<|assistant|>"
    facts = load_facts(pair.data_dir / "facts.json")
    assert {f.split for f in facts} == {"pretrain", "sft_new"}
    assert all(f.subject in f.prompt for f in facts)
    statements = load_statements(pair.data_dir / "statements.csv")
    assert {s.extra["family"] for s in statements} == {"comparison", "fact"}
    assert load_instructions(pair.data_dir / "harmful.json", harmful=True)
    assert load_instructions(pair.data_dir / "harmless.json", harmful=False)
    problems = load_problems(pair.data_dir / "arithmetic.jsonl", task="gsm8k")
    assert all(p.answer.isdigit() for p in problems)
    report = json.loads((pair.root / "report.json").read_text())
    for key in ("fact_recall", "truth_probe_base", "refusal", "arithmetic_heldout", "times_s", "weights_sha256"):
        assert key in report
    # weights are bit-reproducible per machine, not across CPUs: the report says which machine built them
    assert report["host"]["cpu"] and report["host"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert report["versions"]["torch"] == torch.__version__


def test_cache_is_reused_and_same_seed_gives_identical_weights(toy_pair_quick, tmp_path):
    t0 = time.perf_counter()
    again = build("quick", seed=0, cache_root=toy_pair_quick.root.parent, progress=False)
    assert time.perf_counter() - t0 < 5 and again.root == toy_pair_quick.root
    fresh = build("quick", seed=0, cache_root=tmp_path, progress=False)
    assert fresh.report["weights_sha256"] == toy_pair_quick.report["weights_sha256"]


def test_toyworld_alias_loads_through_load_pair(toy_pair_quick, monkeypatch):
    from posttrain_probe import load_pair

    monkeypatch.setenv("POSTTRAIN_PROBE_CACHE", str(toy_pair_quick.root.parent.parent))
    pair = load_pair("toyworld:quick:base", "toyworld:quick:post", backend="nnsight")
    assert pair.parity.ok and pair.base.provenance["kind"] == "toyworld"


TINY = dict(pretrain_epochs=0.05, sft_epochs=0.05, eval_samples=5)


def test_other_seed_gives_other_weights_and_force_rebuilds(tmp_path):
    a = build(config=preset_config("quick", seed=0, **TINY), cache_root=tmp_path, progress=False)
    b = build(config=preset_config("quick", seed=1, **TINY), cache_root=tmp_path, progress=False)
    assert a.root != b.root
    assert a.report["weights_sha256"]["base"] != b.report["weights_sha256"]["base"]
    (a.root / "stray.txt").write_text("from an older build")
    again = build(config=preset_config("quick", seed=0, **TINY), cache_root=tmp_path, force=True, progress=False)
    assert again.root == a.root and not (a.root / "stray.txt").exists()
    assert again.report["weights_sha256"] == a.report["weights_sha256"]


def test_interrupted_build_leaves_nothing_behind(tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(builder, "_evaluate", fail)
    with pytest.raises(KeyboardInterrupt):
        build(config=preset_config("quick", seed=5, **TINY), cache_root=tmp_path, progress=False)
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []
