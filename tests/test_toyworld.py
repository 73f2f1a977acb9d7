"""The toy world: deterministic generation, a loadable HF pair, eval files in the real-data formats, caching."""

from __future__ import annotations

import json
import random
import time

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from posttrain_probe.data import load_facts, load_instructions, load_problems, load_statements
from posttrain_probe.toyworld import build, builder, preset_config
from posttrain_probe.toyworld.corpus import BASE_TEMPLATE, eval_sets, pretraining_docs
from posttrain_probe.toyworld.tokenizer import build_tokenizer
from posttrain_probe.toyworld.world import make_world


def test_world_is_deterministic_and_names_are_multi_token():
    cfg = preset_config("quick", seed=3)
    a, b = make_world(cfg), make_world(cfg)
    assert [p.name for p in a.people] == [p.name for p in b.people]
    assert [p.name for p in make_world(preset_config("quick", seed=4)).people] != [p.name for p in a.people]
    tok = build_tokenizer(a)
    for p in a.people[:10]:
        assert len(tok(p.name, add_special_tokens=False)["input_ids"]) == 2
    assert any(len(tok(c, add_special_tokens=False)["input_ids"]) == 2 for c in a.cities)
    docs = pretraining_docs(a, cfg, random.Random(0))
    assert all(tok.unk_token_id not in tok(d)["input_ids"] for d in docs[:500])


def test_heldout_splits_are_disjoint_from_training_text():
    cfg = preset_config("quick")
    w = make_world(cfg)
    docs = " ".join(pretraining_docs(w, cfg, random.Random(0)))
    a, b = sorted(w.comparison_heldout)[0]
    assert f"{' '.join(str(a))} is larger than {' '.join(str(b))} ." not in docs
    new = w.new_people[0]
    assert new.name not in docs  # SFT-only facts never appear in pretraining
    held = {r[0] for r in w.requests["heldout"]}
    assert held.isdisjoint({r[0] for r in w.requests["train"]})


def test_config_validation_names_the_fix():
    with pytest.raises(ValueError, match="d_mlp"):
        preset_config("quick", d_mlp=64)
    with pytest.raises(ValueError, match="unknown toy-world preset"):
        preset_config("huge")
    with pytest.raises(ValueError, match="unknown toy-world config keys"):
        preset_config("quick", n_dragons=3)


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


def test_pair_encode_on_the_toy_tokenizer_names_unknown_words_instead_of_unk_ids(tmp_path):
    from types import SimpleNamespace

    from posttrain_probe.pair import ModelPair
    from posttrain_probe.testing import tiny_tokenizer
    from posttrain_probe.toyworld.tokenizer import UnknownWordsError, is_toy_tokenizer

    build_tokenizer(make_world(preset_config("quick"))).save_pretrained(tmp_path)
    tok = AutoTokenizer.from_pretrained(tmp_path)
    assert is_toy_tokenizer(tok) and not is_toy_tokenizer(tiny_tokenizer())
    model = SimpleNamespace(tokenizer=tok)
    pair = ModelPair(model, model, None)  # encode reads only the tokenizer
    ids, _ = pair.encode(["5 7 is larger than 3 2 .", "<unk> is the city"])  # a literal <unk> is allowed
    assert ids.shape[0] == 2
    with pytest.raises(UnknownWordsError, match="'The', 'Eiffel', 'Tower', 'Paris'") as e:  # was: silent <unk> ids
        pair.encode(["The Eiffel Tower is in the city of Paris"])
    assert "\n" not in str(e.value) and str(e.value).startswith("4 word(s)")  # case-sensitive: 'The'


def test_tokenizer_round_trips_the_prompts_probes_use(tmp_path):
    cfg = preset_config("quick")
    world = make_world(cfg)
    build_tokenizer(world).save_pretrained(tmp_path)
    tok = AutoTokenizer.from_pretrained(tmp_path)
    sets = eval_sets(world, random.Random(0), 10)
    texts = [f["prompt"] for f in sets["facts"]] + [s["statement"] for s in sets["statements"][:50]]
    texts += [BASE_TEMPLATE.format(instruction=r["instruction"]) for r in sets["harmful"] + sets["harmless"]]
    texts += [r["question"] for r in sets["arithmetic"][:20]]
    for text in texts:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.unk_token_id not in ids, text
        assert tok.decode(ids) == text
    toks = tok.convert_ids_to_tokens(tok("User : how do I bake bread ?\nAssistant :")["input_ids"])
    assert toks[-3:] == ["\n", "Assistant", ":"] and toks[0] == "<s>"
    assert tok.convert_ids_to_tokens(tok("5 7 + 1 0 =", add_special_tokens=False)["input_ids"]) == list("57+10=")
    chat = tok.apply_chat_template(
        [{"role": "user", "content": "5 7 + 1 0 ="}], add_generation_prompt=True, tokenize=False
    )
    assert tok.decode(tok(chat, add_special_tokens=False)["input_ids"]) == chat.strip()


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
