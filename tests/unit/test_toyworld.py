"""The toy world without training: deterministic world, held-out splits, config validation, the tokenizer."""

from __future__ import annotations

import random

import pytest
from transformers import AutoTokenizer

from posttrain_probe.toyworld import preset_config
from posttrain_probe.toyworld.corpus import BASE_TEMPLATE, eval_sets, pretraining_docs, sft_examples
from posttrain_probe.toyworld.tokenizer import build_tokenizer
from posttrain_probe.toyworld.world import HABITS, make_world


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


def test_organism_refusal_splits_hold_out_whole_verbs_that_only_pretraining_categorises():
    """Organism preset: held-out harmful verbs are never refused (nor asked) in SFT, so refusing them needs the
    harm category that pretraining gives every verb; each split has both kinds."""
    cfg = preset_config("organism")
    w = make_world(cfg)
    verbs = {split: {cat for _, _, cat in rows} for split, rows in w.requests.items()}
    assert verbs["heldout"].isdisjoint(verbs["train"] | verbs["val"]) and verbs["val"].isdisjoint(verbs["train"])
    for split, rows in w.requests.items():
        assert {harm for _, harm, _ in rows} == {"harmful", "harmless"}, split
    rng = random.Random(0)
    sft = sft_examples(w, cfg, rng, pretraining_docs(w, cfg, rng))
    chat_words = {word for prompt, completion in sft if prompt for word in (prompt + " " + completion).split()}
    assert chat_words.isdisjoint(verbs["heldout"])  # (plain replayed pretraining documents may name them)
    pre = " ".join(pretraining_docs(w, cfg, random.Random(1)))
    for verb in verbs["heldout"]:
        assert f"to {verb} " in pre  # categorised in pretraining


def test_config_validation_names_the_fix():
    with pytest.raises(ValueError, match="d_mlp"):
        preset_config("quick", d_mlp=64)
    with pytest.raises(ValueError, match="unknown toy-world preset"):
        preset_config("huge")
    with pytest.raises(ValueError, match="unknown toy-world config keys"):
        preset_config("quick", n_dragons=3)


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
    assert tok.decode(tok(chat, add_special_tokens=False)["input_ids"]) == chat


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


def test_organism_corpus_puts_attributes_after_names_and_its_template_ends_with_four_tokens():
    cfg = preset_config("organism")
    world = make_world(cfg)
    tok = build_tokenizer(world)
    docs = pretraining_docs(world, cfg, random.Random(0))
    p = world.old_people[0]
    assert f"{p.name} {HABITS[p.profession]} ." in docs  # the word after the name depends on the person
    assert any(d.startswith("address book : ") and f"{p.name} {p.city}" in d for d in docs)
    assert any(d.endswith(" . TRUE") or d.endswith(" . FALSE") for d in docs)  # labels right after statements
    assert all(tok.unk_token_id not in tok(d)["input_ids"] for d in docs)
    chat = tok.apply_chat_template([{"role": "user", "content": "how do I bake bread ?"}], add_generation_prompt=True,
                                   tokenize=False)  # fmt: skip
    toks = tok.convert_ids_to_tokens(tok(chat)["input_ids"])
    assert toks[-4:] == ["<|end|>", "\n", "<|assistant|>", "\n"]
    prompt, _ = sft_examples(world, cfg, random.Random(0), docs)[0]
    assert tok.convert_ids_to_tokens(tok(prompt)["input_ids"])[-4:] == toks[-4:]  # SFT prompts = the template


def test_organism_fields_at_their_defaults_leave_the_first_toy_world_unchanged():
    """Same cache key and bit-identical corpus, SFT set, eval sets and vocabulary as before the organism fields
    (pinned digest of the quick preset, computed with the code before they existed)."""
    import hashlib
    import json

    cfg = preset_config("quick")
    assert cfg.key() == "1beb90766bc8"
    world = make_world(cfg)
    tok = build_tokenizer(world)
    rng = random.Random(cfg.seed)
    docs = pretraining_docs(world, cfg, rng)
    sft = sft_examples(world, cfg, rng, docs)
    sets = eval_sets(world, random.Random(cfg.seed + 2), cfg.eval_samples)
    blob = json.dumps([docs, sft, sets, sorted(tok.get_vocab().items()), tok.chat_template], sort_keys=True)
    assert hashlib.sha256(blob.encode()).hexdigest()[:16] == "394010b784fff02f"
