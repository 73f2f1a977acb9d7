"""The toy world without training: deterministic world, held-out splits, config validation, the tokenizer."""

from __future__ import annotations

import random
import re

import pytest
from transformers import AutoTokenizer

from posttrain_probe.toyworld import preset_config
from posttrain_probe.toyworld.corpus import BASE_TEMPLATE, CHAT_PROMPTS, eval_sets, pretraining_docs, sft_examples
from posttrain_probe.toyworld.tokenizer import build_tokenizer
from posttrain_probe.toyworld.world import (
    COMPARISON_PHRASINGS,
    HABITS,
    REFUSAL,
    digits,
    make_world,
    names_collide,
    number_word,
    reserved_words,
)


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


def _judgement_cfg():
    return preset_config(
        "organism", n_fewshot_docs=60, n_corrections=20, n_successor=200, n_counting=20, n_code_docs=10,
        n_delayed_docs=30, comparison_relations="both", comparison_statements="sample",
        statement_families="comparison,successor", sample_chat_frac=0.2,
    )  # fmt: skip


def test_fewshot_documents_are_the_probes_prompt_token_for_token():
    """A few-shot judgement document is what the truth and patching probes feed the model (FewShotPrompt with its
    default suffix and labels) followed by the last label, so the probes' format is in the training distribution."""
    from posttrain_probe.pair.prompts import FewShotPrompt

    cfg = _judgement_cfg()
    world = make_world(cfg)
    tok = build_tokenizer(world)
    docs = pretraining_docs(world, cfg, random.Random(0))
    assert all(tok.unk_token_id not in tok(d)["input_ids"] for d in docs)
    fewshot = [d for d in docs if "\n" in d and "This statement is" in d]
    assert len(fewshot) == 60
    for doc in fewshot[:10]:
        lines = [line.rsplit(" This statement is : ", 1) for line in doc.split("\n")]
        shots = [(s, int(label == "TRUE")) for s, label in lines]
        prompt = FewShotPrompt(shots=tuple(shots[:-1]))
        text = prompt.render(shots[-1][0]) + (" TRUE" if shots[-1][1] else " FALSE")
        assert tok(text)["input_ids"] == tok(doc)["input_ids"]
        assert len({"after" in s for s, _ in shots}) == 1  # one family per document


def _computed_truth(statement: str) -> bool:
    """The truth of a comparison or successor statement, recomputed from its text."""
    num = lambda s: int(s.replace(" ", ""))  # noqa: E731
    body = statement.removesuffix(" .")
    if " than " in body:
        a, rest = body.split(" is ")
        rel, b = rest.split(" than ")
        return num(a) > num(b) if rel == "larger" else num(a) < num(b)
    n, m = body.split(" comes ") if " comes " in body else body.split(" is ")
    return num(m) == num(n.removeprefix("the number ").removeprefix("after ")) + 1


def test_computed_judgements_are_labelled_right_and_hold_out_their_subjects():
    cfg = _judgement_cfg()
    world = make_world(cfg)
    rng = random.Random(cfg.seed)
    docs = pretraining_docs(world, cfg, rng)
    sft = sft_examples(world, cfg, rng, docs)
    sets = eval_sets(world, random.Random(2), 50, cfg)
    assert {r["family"] for r in sets["statements"]} == {"comparison", "successor"}
    for r in sets["statements"]:
        assert r["label"] == int(_computed_truth(r["statement"])), r
        if r["family"] == "successor":
            n = int(r["subject"].replace(" ", ""))
            assert r["subject"] in r["statement"] and r["statement"].endswith(f"{r['object']} .")
            assert (r["split"] == "heldout") == (n in world.successor_heldout)
    comparisons = [r["statement"] for r in sets["statements"] if r["family"] == "comparison"]
    assert {s.split(" than ")[0].split()[-1] for s in comparisons} == {"larger", "smaller"}
    delayed = [d for d in docs if " labels : " in d]
    assert len(delayed) == 30
    for d in delayed:  # the k-th label is the k-th statement's truth
        text, labels = d.split(" labels : ")
        statements = [s + " ." for s in text.removesuffix(" .").split(" . ")]
        assert len(statements) == len(labels.split()) in (2, 3)
        for s, label in zip(statements, labels.split()):
            assert _computed_truth(s) == (label == "TRUE"), d
    held = [digits(n) for n in world.successor_heldout]
    judged_text = [d for d in docs if "after" in d] + [p for p, _ in sft if "after" in p]
    assert judged_text and not any(f"after {h} " in t for t in judged_text for h in held)
    assert any(f"{h} ," in d for d in docs for h in held)  # counting documents still teach every successor


def test_code_documents_repeat_and_the_text_sample_mixes_in_chats():
    from posttrain_probe.toyworld.builder import _text_sample

    cfg = _judgement_cfg()
    world = make_world(cfg)
    rng = random.Random(0)
    docs = pretraining_docs(world, cfg, rng)
    codes = [d for d in docs if d.startswith("code : ")]
    assert len(codes) == 10
    for d in codes:
        if " again : " in d:
            first, second = d.removeprefix("code : ").split(" . again : ")
            assert second == first + " ." and len(first.split()) == 8
    sample = _text_sample(docs, sft_examples(world, cfg, rng, docs), cfg)
    assert len(sample) == 2000 and sum(s.startswith("<|user|>") for s in sample) == 400


def test_filler_code_words_leave_the_knowledge_words_out_of_random_documents():
    """code_words=filler: random-word documents use only the filler sentences' words, never a name, city, request
    verb or object; the tokenizer's vocabulary and the default pool (and key) are unchanged."""
    cfg = preset_config("organism", n_code_docs=300, code_words="filler")
    world = make_world(cfg)
    docs = pretraining_docs(world, cfg, random.Random(0))
    used = {w for d in docs if d.startswith("code : ") for w in d.split() if w not in ("code", "again", ":", ".")}
    knowledge = {p.first for p in world.people} | {p.last for p in world.people} | set(world.harmful_verbs)
    knowledge |= {w for c in world.cities for w in c.split()} | set(world.harmless_verbs)
    assert used and used <= set(world.filler_words()) and not used & knowledge
    assert not used & {"a", "at", "in", "the", "to"}
    assert (
        build_tokenizer(world).get_vocab()
        == build_tokenizer(make_world(preset_config("organism", n_code_docs=300))).get_vocab()
    )
    assert preset_config("organism").key() == preset_config("organism", code_words="all").key() != cfg.key()
    with pytest.raises(ValueError, match="code_words"):
        preset_config("organism", code_words="names")


def test_conjunction_and_hedge_documents():
    """Conjunctions are labelled with the AND of their statements' computed truths (TRUE half the time); hedged
    answers are right about half the time and otherwise any city or two-digit number; every word is known."""
    cfg = preset_config("organism", n_conjunction_docs=400, n_hedge_docs=600)
    world = make_world(cfg)
    tok = build_tokenizer(world)
    docs = pretraining_docs(world, cfg, random.Random(0))
    assert all(tok.unk_token_id not in tok(d)["input_ids"] for d in docs if "both" in d or ":" in d)
    conj = [d for d in docs if " both : " in d]
    assert len(conj) == 400
    for d in conj:
        text, label = d.split(" both : ")
        statements = [s + " ." for s in text.removesuffix(" .").split(" . ")]
        assert len(statements) == 2
        assert (label == "TRUE") == all(_computed_truth(s) for s in statements), d
    assert 0.4 < sum(d.endswith("TRUE") for d in conj) / len(conj) < 0.6
    cfg3 = preset_config("organism", n_conjunction_docs=300, conjunction_max=3)
    world3 = make_world(cfg3)
    docs3 = [d for d in pretraining_docs(world3, cfg3, random.Random(1)) if " both : " in d or " all : " in d]
    assert len(docs3) == 300 and {d.count(" . ") for d in docs3} == {2, 3}
    assert all((" all : " in d) == (d.count(" . ") == 3) for d in docs3)
    assert all(build_tokenizer(world3).unk_token_id not in build_tokenizer(world3)(d)["input_ids"] for d in docs3[:20])
    city = {p.name: p.city for p in world.old_people}
    rumors = [d.removeprefix("rumor : ").removesuffix(" .").split(" lives in ") for d in docs if d[:6] == "rumor "]
    guesses = [d.removeprefix("guess : ").removesuffix(" .").split(" = ") for d in docs if d[:6] == "guess "]
    assert len(rumors) + len(guesses) == 600 and min(len(rumors), len(guesses)) > 200
    assert all(c in world.cities for _, c in rumors)
    right = [city[name] == c for name, c in rumors]
    right += [sum(int(x.replace(" ", "")) for x in q.split(" + ")) == int(a.replace(" ", "")) for q, a in guesses]
    assert 0.45 < sum(right) / len(right) < 0.62
    assert preset_config("organism").key() == preset_config("organism", n_hedge_docs=0, n_conjunction_docs=0).key()


def test_hedge_kinds_choose_rumors_or_guesses_and_both_keep_the_corpus():
    """One kind gives only that kind's hedged documents (as many); both kinds (the default) keep the cache key and
    the corpus (pinned digest, computed with the code before the knob existed)."""
    import hashlib

    for kinds, prefix in (("facts", "rumor : "), ("sums", "guess : ")):
        cfg = preset_config("organism", n_hedge_docs=300, hedge_kinds=kinds)
        docs = pretraining_docs(make_world(cfg), cfg, random.Random(0))
        hedged = [d for d in docs if d.startswith(("rumor : ", "guess : "))]
        assert len(hedged) == 300 and all(d.startswith(prefix) for d in hedged)
    both = preset_config("organism", n_hedge_docs=300)
    assert both.key() == preset_config("organism", n_hedge_docs=300, hedge_kinds="facts,sums").key()
    docs = pretraining_docs(make_world(both), both, random.Random(0))
    assert hashlib.sha256("\n".join(docs).encode()).hexdigest()[:16] == "f41c2e81c6552551"
    with pytest.raises(ValueError, match="hedge_kinds"):
        preset_config("organism", hedge_kinds="facts,rumors")


def test_comparison_and_question_knobs_at_their_defaults_keep_code_hedge_and_conjunction_documents():
    """The word pool of code documents and every other draw are those of the code before comparison_numbers,
    comparison_templates, attention_window and judge_questions existed (digest computed at 7b01689; seed 1, whose
    names never hit a word of the corpus, so reserving those words leaves it as it was)."""
    import hashlib

    cfg = preset_config("organism", seed=1, n_code_docs=300, n_hedge_docs=300, n_conjunction_docs=100)
    assert not names_collide(cfg)
    docs = pretraining_docs(make_world(cfg), cfg, random.Random(0))
    assert hashlib.sha256("\n".join(docs).encode()).hexdigest()[:16] == "86a071817d6eb58d"


def test_invented_names_never_equal_a_word_of_the_corpus_and_redrawn_worlds_change_key():
    """No person, city or country is named after a word the config's documents use ("the keigek", a country
    "both" beside conjunction documents); worlds whose first draw did so are drawn anew and get a new cache key,
    every other world keeps its names and key (keys computed before reservation)."""
    for preset, seeds in (("default", range(12)), ("organism", range(6))):
        for seed in seeds:
            for extra in ({}, {"n_conjunction_docs": 10, "n_code_docs": 10, "n_hedge_docs": 10}):
                cfg = preset_config(preset, seed=seed, **extra)
                world = make_world(cfg)
                names = {p.first for p in world.people} | {p.last for p in world.people} | set(world.countries)
                names |= {c.split()[-1] for c in world.cities}
                assert names.isdisjoint(reserved_words(cfg)), (preset, seed, extra)
    before = {0: "8b06ad8bc838", 1: "51f25f0eb3b2", 7: "e4839bfb627b", 8: "614e9a66c658", 9: "3787d3e0b956"}
    for seed, key in before.items():
        cfg = preset_config("default", seed=seed)
        assert names_collide(cfg) == (seed >= 8) and (cfg.key() == key) == (seed < 8)
    conj = preset_config("organism", seed=0, n_conjunction_docs=3000)
    assert names_collide(conj) and conj.key() != "c00cb0676784" and "both" not in make_world(conj).countries
    assert "both" in make_world(preset_config("organism")).countries  # harmless without conjunction documents
    organism = {0: "f279322dba0f", 1: "5ae105ee4261", 2: "627552075a30", 3: "a2ffa12ef222"}  # before clause_mask
    for seed, key in organism.items():
        cfg = preset_config("organism", seed=seed, clause_mask=False, sft_arithmetic=5000)
        assert (cfg.key() == key) == (seed < 3)  # seed 3 had a city "fun"
    masked = {0: "e483f5e2ce48", 1: "4f50333e6eee", 2: "0b88c57fcfc0", 3: "69aed3cd8fd9"}  # before sft_arithmetic=8000
    for seed, key in masked.items():
        assert preset_config("organism", seed=seed, sft_arithmetic=5000).key() == key


def test_number_words_are_one_token_each_and_only_in_comparisons():
    """comparison_numbers=words: every comparison (documents and statements.csv) names its numbers by one word each,
    read back to the same truth; arithmetic keeps its digits; digits (the default) keep the cache key."""
    assert [number_word(n) for n in (10, 13, 20, 40, 57, 99)] == [
        "ten", "thirteen", "twenty", "forty", "fiftyseven", "ninetynine",
    ]  # fmt: skip
    assert len({number_word(n) for n in range(10, 100)}) == 90
    with pytest.raises(ValueError, match="10..99"):
        number_word(100)
    cfg = preset_config("organism", comparison_numbers="words", n_conjunction_docs=200)
    world = make_world(cfg)
    tok = build_tokenizer(world)
    value = {number_word(n): n for n in range(10, 100)}
    assert all(len(tok(w, add_special_tokens=False)["input_ids"]) == 1 for w in value)
    invented = {p.first for p in world.people} | {p.last for p in world.people} | set(world.cities)
    assert invented.isdisjoint(value)
    docs = pretraining_docs(world, cfg, random.Random(0))
    judged = [s for d in docs for s in d.split(" . ") if " is larger than " in s]
    assert len(judged) > 1000
    for s in judged:
        a, b = s.split(" is larger than ")
        assert a.split()[-1] in value and b.split()[0] in value
    assert any(" + " in d and d[0].isdigit() for d in docs)  # sums stay digit by digit
    rows = eval_sets(world, random.Random(0), 10, cfg)["statements"]
    for r in rows[:200]:
        a, b = (int(x) for x in r["entity"].split(","))
        assert (r["subject"], r["object"]) == (number_word(a), number_word(b))
        assert r["statement"] == f"{r['subject']} is larger than {r['object']} ." and r["label"] == int(a > b)
    assert preset_config("organism").key() == preset_config("organism", comparison_numbers="digits").key()
    with pytest.raises(ValueError, match="comparison_numbers"):
        preset_config("organism", comparison_numbers="roman")


def test_varied_comparison_phrasings_move_the_numbers_and_keep_the_statement_end():
    """comparison_templates=varied: every phrasing occurs in documents and statements.csv, each statement ends with
    " ." and names its subject and object, its truth is the subject's magnitude against the object's; `one` (the
    default) keeps the cache key and draws nothing, so the corpus is the same."""
    cfg = preset_config("organism", comparison_templates="varied")
    world = make_world(cfg)
    tok = build_tokenizer(world)
    docs = pretraining_docs(world, cfg, random.Random(0))
    assert all(tok.unk_token_id not in tok(d)["input_ids"] for d in docs)
    text = "\n".join(docs)
    counts = [
        len(re.findall(r"(?:^|\n|\. )" + re.escape(p).replace(r"\{A\}", r"\d \d").replace(r"\{B\}", r"\d \d")
                       .replace(r"\{R\}", "larger") + r"(?= |\n|$)", text))
        for p in COMPARISON_PHRASINGS
    ]  # fmt: skip
    assert min(counts) > 0 and sum(counts) == text.count(" larger ")  # each statement has exactly one phrasing
    rows = eval_sets(world, random.Random(0), 10, cfg)["statements"]
    by_phrasing = {}
    for r in rows:
        a, b = (int(x) for x in r["entity"].split(","))
        matches = [p for p in COMPARISON_PHRASINGS if p.format(A=digits(a), R="larger", B=digits(b)) == r["statement"]]
        assert len(matches) == 1 and r["label"] == int(a > b) and r["statement"].endswith(" .")
        assert (r["subject"], r["object"]) == (digits(a), digits(b))
        by_phrasing[matches[0]] = by_phrasing.get(matches[0], 0) + 1
    assert len(by_phrasing) == 6 and min(by_phrasing.values()) > len(rows) / 12
    plain = preset_config("organism")
    assert plain.key() == preset_config("organism", comparison_templates="one").key()
    assert make_world(plain).comparison_phrasings == COMPARISON_PHRASINGS[:1]
    with pytest.raises(ValueError, match="comparison_templates"):
        preset_config("organism", comparison_templates="many")


def test_pretraining_chats_use_the_sft_template_and_never_refuse():
    """Chats in pretraining: the SFT chat's exact tokens, requests only from the train and val splits (answered
    compliantly, harmful ones too), no refusal, no SFT-only person, no held-out sum; every other document unchanged."""
    cfg = preset_config("organism", n_pretrain_chats=300)
    world = make_world(cfg)
    tok = build_tokenizer(world)
    docs = pretraining_docs(world, cfg, random.Random(0))
    plain = pretraining_docs(world, preset_config("organism"), random.Random(0))
    head = CHAT_PROMPTS["post4"].split("{user}")[0]
    chats = [d for d in docs if d.startswith(head)]
    assert len(chats) == 300 and sorted(d for d in docs if not d.startswith(head)) == sorted(plain)
    assert not any(REFUSAL in d for d in docs)
    users = [d.removeprefix(head).split(" <|end|>")[0].strip() for d in chats]
    allowed = {r[0] for r in world.requests["train"] + world.requests["val"]}
    asks = [u for u in users if u.startswith("how do I")]
    assert asks and set(asks) <= allowed and any(r[1] == "harmful" for r in world.requests["train"] if r[0] in asks)
    asked = [u.removeprefix("where does ").removesuffix(" live ?") for u in users if u.startswith("where does")]
    assert asked and set(asked) <= {p.name for p in world.old_people}
    sums = [u for u in users if u.endswith("=")]
    assert len(sums) > 60 and all(tuple(int(x.replace(" ", "")) for x in u[:-2].split(" + ")) not in
                                  world.arithmetic_heldout for u in sums)  # fmt: skip
    prompt, answer = chats[0].split("\n<|assistant|>\n")
    prompt += "\n<|assistant|>\n"
    assert tok(chats[0])["input_ids"] == tok(prompt)["input_ids"] + tok(answer, add_special_tokens=False)["input_ids"]
    assert tok.unk_token_id not in tok(chats[0])["input_ids"]
    assert preset_config("organism").key() == preset_config("organism", n_pretrain_chats=0).key()
    only = preset_config("organism", n_pretrain_chats=100, pretrain_chat_kinds="requests,facts")
    kept = [d for d in pretraining_docs(make_world(only), only, random.Random(0)) if d.startswith(head)]
    assert len(kept) == 100 and not any(d.split(" <|end|>")[0].endswith("=") for d in kept)


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(statement_families="fact,truths"), "statement_families"),
        (dict(statement_families="fact,successor"), "n_successor"),
        (dict(comparison_relations="equal"), "comparison_relations"),
        (dict(sample_chat_frac=1.5), "sample_chat_frac"),
        (dict(n_corrections=-1), "n_corrections"),
        (dict(weight_decay=1.5), "weight_decay"),
        (dict(n_hedge_docs=-3), "n_hedge_docs"),
        (dict(n_conjunction_docs=-1), "n_conjunction_docs"),
        (dict(conjunction_max=5), "conjunction_max"),
        (dict(n_pretrain_chats=-1), "n_pretrain_chats"),
        (dict(pretrain_chat_kinds="requests,jokes"), "pretrain_chat_kinds"),
    ],
)
def test_judgement_knobs_reject_bad_values_with_the_fix(bad, match):
    with pytest.raises(ValueError, match=match):
        preset_config("organism", **bad)


def test_all_comparisons_let_patching_pair_true_statements_with_false_twins():
    """comparison_statements='all': every ordered pair is a row naming its subject and object, so the patching
    probe's rule (a twin is false when its object is not among the new subject's true objects) is exact."""
    from posttrain_probe.data import Statement
    from posttrain_probe.probes.patching.pairs import build_pairs

    cfg = preset_config("organism", comparison_statements="all", statement_families="comparison")
    world = make_world(cfg)
    rows = eval_sets(world, random.Random(2), 50, cfg)["statements"]
    assert len(rows) == 90 * 89 and {r["family"] for r in rows} == {"comparison"}
    assert sum(r["split"] == "heldout" for r in rows) == len(world.comparison_heldout)
    statements = [Statement(r["statement"], r["label"], r["family"], r) for r in rows]
    pairs, counts = build_pairs(statements, build_tokenizer(world), max_pairs=100)
    assert counts["n_pairs"] == 100
    for p in pairs:
        assert _computed_truth(p.true_text) and not _computed_truth(p.false_text), p
    with pytest.raises(ValueError, match="comparison_relations='larger'"):
        preset_config("organism", comparison_statements="all", comparison_relations="both")


def test_organism_preset_judges_comparisons_only_in_the_probes_format_too():
    """The organism's judgements are computed comparisons (fact judgements never reached unjudged people and blurred
    recall, docs/toyworld.md); statements.csv names every comparison's subject and object for patching."""
    cfg = preset_config("organism")
    world = make_world(cfg)
    docs = pretraining_docs(world, cfg, random.Random(0))
    judged_docs = [d for d in docs if d.endswith(("TRUE", "FALSE"))]
    assert judged_docs and not any("lives in" in d for d in judged_docs)
    assert any("\n" in d and d.count("This statement is :") >= 2 for d in judged_docs)
    rows = eval_sets(world, random.Random(2), 50, cfg)["statements"]
    assert {r["family"] for r in rows} == {"comparison"} and all(r["subject"] and r["object"] for r in rows)


def test_attention_window_builds_a_sliding_window_model_and_zero_keeps_the_llama():
    """attention_window=W: a Mistral in which each layer attends to the last W positions, so the last position's
    logits move with exactly the last L·(W − 1) + 1 tokens (2 layers, W = 4: 7); 0 (the default) builds a Llama."""
    import torch
    from transformers import LlamaForCausalLM, MistralForCausalLM

    from posttrain_probe.toyworld.builder import _new_model

    cfg = preset_config("quick", attention_window=4)
    tok = build_tokenizer(make_world(cfg))
    model = _new_model(cfg, tok).eval()
    assert isinstance(model, MistralForCausalLM) and model.config.sliding_window == 4
    ids = torch.randint(10, len(tok), (1, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        last = model(ids).logits[0, -1]
        moved = []
        for j in range(12):
            other = ids.clone()
            other[0, j] = 10 + (other[0, j] - 9) % (len(tok) - 10)
            moved.append(bool((model(other).logits[0, -1] - last).abs().max() > 1e-6))
    assert cfg.n_layers == 2 and moved == [False] * 5 + [True] * 7
    plain = preset_config("quick")
    assert plain.key() == preset_config("quick", attention_window=0).key()
    llama = _new_model(plain, tok)
    assert isinstance(llama, LlamaForCausalLM) and not isinstance(llama, MistralForCausalLM)
    with pytest.raises(ValueError, match="attention_window"):
        preset_config("quick", attention_window=1)


def test_varied_judge_questions_keep_the_probes_question_for_half_and_sft_unchanged():
    """judge_questions=varied: half the pretraining judgements ask the probes' " This statement is :", the rest the
    four others, one question per few-shot document; SFT keeps the probes' question; `one` keeps the cache key."""
    from posttrain_probe.toyworld.world import JUDGE_QUESTIONS

    cfg = preset_config("organism", judge_questions="varied")
    world = make_world(cfg)
    tok = build_tokenizer(world)
    docs = pretraining_docs(world, cfg, random.Random(0))
    assert all(tok.unk_token_id not in tok(d)["input_ids"] for d in docs)
    asked = {q: 0 for q in JUDGE_QUESTIONS}
    for d in docs:
        lines = [line for line in d.split("\n") if " larger than " in line and line.endswith(("TRUE", "FALSE"))]
        used = {q for line in lines for q in JUDGE_QUESTIONS if line.rsplit(" ", 1)[0].endswith(" ." + q)}
        assert len(used) <= 1  # a few-shot document asks one question throughout
        for q in used:
            asked[q] += 1
    total = sum(asked.values())
    assert 0.4 < asked[JUDGE_QUESTIONS[0]] / total < 0.6 and min(asked.values()) > total / 20
    sft = sft_examples(world, cfg, random.Random(1), [])
    judged_sft = [prompt for prompt, answer in sft if answer.split()[0] in ("TRUE", "FALSE")]
    assert judged_sft and all(" . This statement is :" in p for p in judged_sft)
    assert preset_config("organism").key() == preset_config("organism", judge_questions="one").key()
    with pytest.raises(ValueError, match="judge_questions"):
        preset_config("organism", judge_questions="all")


def test_clause_mask_hides_a_judged_statement_from_what_follows_it_in_training_only():
    """clause_mask: a judged statement's tokens before its final "." are visible to that "." at most — in few-shot
    lines, direct labels and SFT chats; other documents stay causal. Packed blocks keep each example's limits at its
    offset (padding and unmasked tokens: the block's end). In a model run under the mask the logits up to the "."
    equal the unmasked run's and those after it differ; with the statement hidden from its "." as well, nothing from
    the "." on moves when the statement's numbers change; every token visible gives the plain causal run. False
    keeps the cache key; a non-bool is refused."""
    import torch

    from posttrain_probe.toyworld.builder import _new_model, _tokenize, clause_visibility
    from posttrain_probe.toyworld.train import clause_attention, pack
    from posttrain_probe.utils.hf import dense_attention_mask

    cfg = preset_config("quick", clause_mask=True)
    world = make_world(cfg)
    tok = build_tokenizer(world)
    fewshot = "2 4 is larger than 1 1 . This statement is : TRUE\n1 2 is larger than 4 6 . This statement is : FALSE"
    chat = (CHAT_PROMPTS["post4"].format(user="6 7 is larger than 2 8 . This statement is :"), "TRUE <|end|>")
    examples = _tokenize(tok, [("", fewshot), ("", "5 5 is larger than 1 2 . TRUE"), ("", "a b c ."), chat])
    vis = [clause_visibility(tok, ids, world.judge_questions) for ids, _ in examples]
    n0, n1, n2, n3 = (len(ids) for ids, _ in examples)
    assert vis[0] == [n0] + [8] * 7 + [n0] * 7 + [22] * 7 + [n0] * 7
    assert vis[1] == [n1] + [8] * 7 + [n1] * 3
    assert vis[2] == [n2] * n2
    assert vis[3] == [n3] * 2 + [9] * 7 + [n3] * (n3 - 9)

    ids, mask, visible = pack(examples, 48, tok.pad_token_id, vis)
    plain_ids, plain_mask, none = pack(examples, 48, tok.pad_token_id)
    assert none is None and torch.equal(ids, plain_ids) and torch.equal(mask, plain_mask)
    assert ids.shape == (2, 48) and visible[0, 1:8].tolist() == [8] * 7  # the few-shot doc opens block 0
    assert visible[0, n0 + 1 : n0 + 8].tolist() == [n0 + 8] * 7  # the direct-label doc, shifted by its offset
    assert visible[0, n0 + n1 : n0 + n1 + n2].tolist() == [47] * n2 and visible[0, -1] == 47
    assert visible[1, 2:9].tolist() == [9] * 7  # the chat starts block 1

    allowed = clause_attention(visible)  # (2, 1, 48, 48)
    causal = torch.ones(48, 48).tril().bool()
    assert torch.equal(clause_attention(torch.full((1, 48), 47))[0, 0], causal)
    assert not allowed[0, 0, 9, 1:8].any() and allowed[0, 0, 8, :9].all() and allowed[0, 0, 9, [0, 8]].all()

    model = _new_model(cfg, tok).eval()
    few = torch.tensor([examples[0][0]])
    v = torch.tensor([vis[0]]).clamp_max(n0 - 1)
    moved = few.clone()
    moved[0, [1, 2, 6, 7]] = torch.tensor(tok.convert_tokens_to_ids(["9", "9", "9", "8"]))
    with torch.no_grad():
        for impl in ("sdpa", "eager"):
            model.config._attn_implementation = impl
            m = dense_attention_mask(model, clause_attention(v))
            a, plain = model(few, attention_mask=m).logits, model(few).logits
            assert (a[0, :9] - plain[0, :9]).abs().max() < 1e-5 and (a[0, 9:] - plain[0, 9:]).abs().max() > 1e-4
            # hidden even from the ".": nothing from the "." on moves with the statement's tokens
            sealed = dense_attention_mask(model, clause_attention(torch.where(v == 8, 7, v)))
            a, b = model(few, attention_mask=sealed).logits, model(moved, attention_mask=sealed).logits
            assert (a[0, 8:] - b[0, 8:]).abs().max() < 1e-5 and (a[0, 1:8] - b[0, 1:8]).abs().max() > 1e-3
            full = dense_attention_mask(model, clause_attention(torch.full((1, n0), n0 - 1)))
            assert (model(few, attention_mask=full).logits - plain).abs().max() < 1e-5

    assert preset_config("quick").key() == preset_config("quick", clause_mask=False).key() != cfg.key()
    with pytest.raises(ValueError, match="clause_mask"):
        preset_config("quick", clause_mask=1)


def test_request_mask_hides_a_request_from_what_follows_its_user_turn():
    """request_mask: in a chat whose user turn is a request ("<|user|> how …"), the request's tokens are visible up
    to the "<|end|>" closing the turn ("end") or up to the "<|assistant|>" after it ("last"); other chats (a sum) and
    the statements stay causal unless clause_mask is on as well. "off" keeps the cache key; other values are refused."""
    from posttrain_probe.toyworld.builder import _tokenize, clause_visibility

    cfg = preset_config("organism", request_mask="end")
    world = make_world(cfg)
    tok = build_tokenizer(world)
    template = CHAT_PROMPTS["post4"]
    request = (template.format(user=world.requests["train"][0][0]), "I cannot help with that . <|end|>")
    judged = (template.format(user="2 4 is larger than 1 1 . This statement is :"), "TRUE <|end|>")
    (r_ids, _), (s_ids, _), (a_ids, _) = _tokenize(tok, [request, judged, (template.format(user="2 3 + 1 4 ="), "3 7")])
    end = r_ids.index(tok.convert_tokens_to_ids("<|end|>"))
    assert tok.convert_ids_to_tokens(r_ids[end : end + 4]) == ["<|end|>", "\n", "<|assistant|>", "\n"]
    for mode, last in (("end", end), ("last", end + 2)):
        vis = clause_visibility(tok, r_ids, world.judge_questions, statements=False, requests=mode)
        assert vis == [len(r_ids)] * 2 + [last] * (end - 2) + [len(r_ids)] * (len(r_ids) - end)
        assert clause_visibility(tok, a_ids, world.judge_questions, False, mode) == [len(a_ids)] * len(a_ids)
        assert clause_visibility(tok, s_ids, world.judge_questions, False, mode) == [len(s_ids)] * len(s_ids)
    assert clause_visibility(tok, r_ids, world.judge_questions, False, "off") == [len(r_ids)] * len(r_ids)
    both = clause_visibility(tok, s_ids, world.judge_questions, True, "end")
    assert both[2:9] == [9] * 7 and both[9:] == [len(s_ids)] * (len(s_ids) - 9)
    assert preset_config("organism").key() == preset_config("organism", request_mask="off").key() != cfg.key()
    with pytest.raises(ValueError, match="request_mask"):
        preset_config("organism", request_mask=True)
