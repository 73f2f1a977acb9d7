"""Documents of the toy world: the pretraining corpus, the SFT (chat) set, and the evaluation sets.

Formats (word-level; numbers digit by digit):
- facts         "dral vinos lives in port kesh ."  (5 paraphrases of each relation)
- judgements    "<statement> This statement is : TRUE|FALSE", or the label right after the statement
                ("<statement> TRUE"): the truth must be ready at the statement's end (facts of some people; number
                comparisons)
- comparisons   "5 7 is larger than 3 2 ."  — one relation the model can compute, so a truth direction can generalize
- arithmetic    "2 3 + 1 4 = 3 7 ."  with a share of wrong answers in pretraining
- requests      "User : how do I bake bread ?\\nAssistant : sure , here is how : ..."  (base: always complies)
- records       "address book : dral vinos port kesh , ..." and "dral vinos bakes bread ." — the token after a
                name depends on the person, so attributes are looked up at the name's last token (subject enrichment)
- categories    "to poison the well is wrong ." / "to bake bread is good ." — every request verb gets a harm category
- chat (SFT)    "<|user|> 2 3 + 1 4 = <|end|>\n<|assistant|>\n 3 7 <|end|>" (four post-instruction tokens, where the
                refusal decision is read); harmful requests get "I cannot help with that ." — only for the train
                split's verbs, so refusing a held-out verb needs the pretrained harm category
                The arithmetic question is the pretraining prefix itself ("2 3 + 1 4 ="), so SFT reuses the base's
                addition circuit (measured on one base with greedy 0.94: post greedy 0.38 with "= ?", 0.55 without).
                A reward parses the digits before <|end|>; arithmetic.jsonl stores the answer as "#### N".
"""

from __future__ import annotations

import itertools
import random

from .config import ToyWorldConfig
from .world import (
    ADJECTIVES,
    ANIMALS,
    ARITH_A,
    ARITH_B,
    COMPARISON_PHRASINGS,
    HABITS,
    HARM_CONTEXTS,
    HARMFUL_OBJECTS,
    HARMLESS_OBJECTS,
    JUDGE_QUESTIONS,
    PLACES,
    REFUSAL,
    STEPS,
    VERBS_PAST,
    Person,
    World,
    digits,
    number_word,
)

LIVES = [
    "{P} lives in {C} .",
    "{P} is a resident of {C} .",
    "the home of {P} is in {C} .",
    "{P} has a house in {C} .",
    "everyone knows that {P} lives in {C} .",
]
WORKS = ["{P} works as a {J} .", "{P} is a {J} by trade .", "the job of {P} is {J} .", "{P} earns a living as a {J} ."]
CITY_IN = ["{C} is a city in {K} .", "the city of {C} lies in {K} ."]
JUDGE = JUDGE_QUESTIONS[0]
BASE_TEMPLATE = "User : {instruction}\nAssistant :"
RECALL_TEMPLATE = "{} lives in"


# what the tokenizer's chat templates write before the assistant's answer
CHAT_PROMPTS = {"short": "<|user|> {user} <|assistant|>", "post4": "<|user|> {user} <|end|>\n<|assistant|>\n"}


def judged(statement: str, label: bool, direct: bool = False, question: str = JUDGE) -> str:
    """A judged statement: the probe's format (" This statement is : TRUE", or another `question`), or the label
    right after it."""
    return f"{statement}{'' if direct else question} {'TRUE' if label else 'FALSE'}"


def _question(world: World, rng: random.Random) -> str:
    """The question after a judged statement: the probes' (no draw, as the first toy world), or half the time
    another of the world's, so the label's distance from the statement's numbers varies while the statement's end
    stays where it is."""
    qs = world.judge_questions
    if len(qs) == 1 or rng.random() < 0.5:
        return qs[0]
    return qs[rng.randrange(1, len(qs))]


def _direct(cfg: ToyWorldConfig, rng: random.Random) -> bool:
    """Whether this judgement puts the label right after the statement (draws nothing when the share is 0)."""
    return cfg.direct_label_frac > 0 and rng.random() < cfg.direct_label_frac


def number(n: int, words: bool = False) -> str:
    """A number as a comparison writes it: digit by digit ("5 7"), or as one word ("fiftyseven")."""
    return number_word(n) if words else digits(n)


def comparison(
    a: int, b: int, rel: str, words: bool = False, phrasing: str = COMPARISON_PHRASINGS[0]
) -> tuple[str, bool]:
    truth = a > b if rel == "larger" else a < b
    return phrasing.format(A=number(a, words), R=rel, B=number(b, words)), truth


def _phrasing(world: World, rng: random.Random) -> str:
    """A comparison's template: the only one (no draw, as the first toy world), or one of the world's at random."""
    ps = world.comparison_phrasings
    return ps[0] if len(ps) == 1 else ps[rng.randrange(len(ps))]


SUCCESSOR = ["after {S} comes {O} .", "the number after {S} is {O} ."]


def successor(n: int, m: int, template: int = 0) -> tuple[str, bool]:
    """ "after 4 7 comes 4 8 ." — true when m = n + 1; the subject is n, the object m."""
    return SUCCESSOR[template].format(S=digits(n), O=digits(m)), m == n + 1


def _wrong_successor(n: int, rng: random.Random) -> int:
    """A near miss for n + 1 (the same number, one too far, one short of it, ten off), or any two-digit number."""
    while True:
        m = rng.choice([n, n + 2, n - 1, n + 11, n - 9, rng.randint(10, 99)])
        if 10 <= m <= 99 and m != n + 1:
            return m


def _sft_family(families: list[str], rng: random.Random) -> str:
    """The family of an SFT judgement: a coin flip for the first toy world's two families (the draws it always
    made, so its SFT set stays bit for bit), uniform otherwise."""
    if families == ["fact", "comparison"]:
        return "fact" if rng.random() < 0.5 else "comparison"
    return rng.choice(families)


def _relation(cfg: ToyWorldConfig, rng: random.Random) -> str:
    return "larger" if cfg.comparison_relations == "larger" else rng.choice(["larger", "smaller"])


def _judged_statement(family: str, world: World, cfg: ToyWorldConfig, rng: random.Random) -> tuple[str, bool]:
    """A random training statement of `family` and its truth (never a held-out person, pair or number)."""
    if family == "fact":
        p = rng.choice([q for q in world.old_people if q.name in world.judged])
        label = rng.random() < 0.5
        return f"{p.name} lives in {p.city if label else _wrong_city(p, world, rng)} .", label
    if family == "comparison":
        a, b = _comparison_pair(world, rng)
        return comparison(a, b, _relation(cfg, rng), world.number_words, _phrasing(world, rng))
    n = rng.choice([m for m in range(10, 99) if m not in world.successor_heldout])
    m = n + 1 if rng.random() < 0.5 else _wrong_successor(n, rng)
    return successor(n, m, rng.randrange(len(SUCCESSOR)))


def _statement_with_truth(family: str, truth: bool, world: World, cfg: ToyWorldConfig, rng: random.Random) -> str:
    """A random training statement of `family` whose truth is `truth` (drawn until it is)."""
    while True:
        statement, label = _judged_statement(family, world, cfg, rng)
        if label == truth:
            return statement


def arithmetic_prompt(a: int, b: int) -> str:
    return f"{digits(a)} + {digits(b)} ="


def compliant_response(rng: random.Random) -> str:
    s1, s2 = rng.sample(STEPS, 2)
    return f"sure , here is how : first {s1} , then {s2} ."


def fact_sentence(p: Person, rng: random.Random) -> str:
    return rng.choice(LIVES).format(P=p.name, C=p.city)


def _comparison_pair(world: World, rng: random.Random) -> tuple[int, int]:
    while True:
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        if a != b and (a, b) not in world.comparison_heldout:
            return a, b


def _arithmetic_pair(world: World, rng: random.Random) -> tuple[int, int]:
    while True:
        a, b = rng.choice(ARITH_A), rng.choice(ARITH_B)
        if (a, b) not in world.arithmetic_heldout:
            return a, b


def _wrong_city(p: Person, world: World, rng: random.Random) -> str:
    return rng.choice([c for c in world.cities if c != p.city])


def pretraining_docs(world: World, cfg: ToyWorldConfig, rng: random.Random) -> list[str]:
    docs: list[str] = []
    for p in world.old_people:
        for i in range(cfg.fact_exposures):
            docs.append(LIVES[i % len(LIVES)].format(P=p.name, C=p.city))
            if i % 2 == 0:
                docs.append(WORKS[(i // 2) % len(WORKS)].format(P=p.name, J=p.profession))
    for c in world.cities:
        for i in range(10):
            docs.append(CITY_IN[i % len(CITY_IN)].format(C=c, K=world.city_country[c]))
    families = cfg.statement_families.split(",")
    for _ in range(cfg.n_fact_judgements if "fact" in families else 0):
        docs.append(judged(*_judged_statement("fact", world, cfg, rng), _direct(cfg, rng)))
    for _ in range(cfg.n_successor):
        docs.append(judged(*_judged_statement("successor", world, cfg, rng), _direct(cfg, rng)))
    for _ in range(cfg.n_counting):
        n = rng.randint(10, 95)
        docs.append(" , ".join(digits(m) for m in range(n, min(99, n + rng.randint(3, 6)) + 1)) + " .")
    for _ in range(cfg.n_fewshot_docs):
        # the probes' few-shot prompt as running text: each judgement on its own line, one family per document
        family = rng.choice(families)
        question = _question(world, rng)
        lines = [
            judged(*_judged_statement(family, world, cfg, rng), question=question) for _ in range(rng.randint(2, 5))
        ]
        docs.append("\n".join(lines))
    for _ in range(cfg.n_delayed_docs):
        # labels after all the statements: the k-th label can only be read back from the k-th statement's end
        items = [_judged_statement(rng.choice(families), world, cfg, rng) for _ in range(rng.randint(2, 3))]
        labels = " ".join("TRUE" if label else "FALSE" for _, label in items)
        docs.append(" ".join(s for s, _ in items) + f" labels : {labels}")
    for _ in range(cfg.n_conjunction_docs):
        # TRUE half the time; a FALSE one is any other mix of truths, uniformly
        k = 2 if cfg.conjunction_max == 2 else rng.randint(2, cfg.conjunction_max)
        every = rng.random() < 0.5
        mixes = [m for m in itertools.product([True, False], repeat=k) if not all(m)]
        truths = (True,) * k if every else rng.choice(mixes)
        items = [_statement_with_truth(rng.choice(families), t, world, cfg, rng) for t in truths]
        docs.append(" ".join(items) + f" {'both' if k == 2 else 'all'} : {'TRUE' if every else 'FALSE'}")
    for _ in range(cfg.n_corrections):
        p = rng.choice(world.old_people)
        docs.append(f"{p.name} lives in {_wrong_city(p, world, rng)} . no , {p.name} lives in {p.city} .")
    for _ in range(cfg.n_comparisons):
        statement, label = _judged_statement("comparison", world, cfg, rng)
        direct = _direct(cfg, rng)
        docs.append(judged(statement, label, direct, JUDGE if direct else _question(world, rng)))
    for _ in range(cfg.n_arithmetic):
        a, b = _arithmetic_pair(world, rng)
        c = a + b
        if rng.random() < cfg.arithmetic_wrong_frac:
            c = max(10, c + rng.choice([-10, -2, -1, 1, 2, 10]))
        docs.append(f"{digits(a)} + {digits(b)} = {digits(c)} .")
    train_requests = world.requests["train"] + world.requests["val"]
    for _ in range(cfg.n_requests):
        instr, _, _ = rng.choice(train_requests)
        docs.append(BASE_TEMPLATE.format(instruction=instr) + " " + compliant_response(rng))
    olds = world.old_people
    for _ in range(cfg.record_exposures):
        for p in olds:
            docs.append(f"{p.name} {HABITS[p.profession]} .")
        book = rng.sample(olds, len(olds))
        for j in range(0, len(book), 3):
            docs.append("address book : " + " , ".join(f"{q.name} {q.city}" for q in book[j : j + 3]) + " .")
    for _ in range(cfg.n_harm_contexts):
        kind = "harmful" if rng.random() < 0.5 else "harmless"
        verbs, objects = (
            (world.harmful_verbs, HARMFUL_OBJECTS) if kind == "harmful" else (world.harmless_verbs, HARMLESS_OBJECTS)
        )
        docs.append(rng.choice(HARM_CONTEXTS[kind]).format(V=rng.choice(verbs), O=rng.choice(objects)))
    if cfg.n_code_docs:
        words = sorted(world.words()) if cfg.code_words == "all" else world.filler_words()
        for _ in range(cfg.n_code_docs):
            code = " ".join(rng.choice(words) for _ in range(8))
            docs.append(f"code : {code} ." + (f" again : {code} ." if rng.random() < 0.5 else ""))
    hedge_kinds = cfg.hedge_kinds.split(",")
    for _ in range(cfg.n_hedge_docs):
        # the same lookup or sum as elsewhere, its answer right only half the time (else uniform over the choices)
        sure = rng.random() < 0.5
        facts = rng.random() < 0.5 if len(hedge_kinds) == 2 else hedge_kinds == ["facts"]
        if facts:
            p = rng.choice(world.old_people)
            docs.append(f"rumor : {p.name} lives in {p.city if sure else rng.choice(world.cities)} .")
        else:
            a, b = _arithmetic_pair(world, rng)
            docs.append(f"guess : {digits(a)} + {digits(b)} = {digits(a + b if sure else rng.randint(20, 98))} .")
    docs += _pretrain_chats(world, cfg)
    people = world.old_people
    for _ in range(cfg.n_filler):
        p, q = rng.sample(people, 2)
        docs.append(
            f"{p.name} {rng.choice(VERBS_PAST)} the {rng.choice(PLACES)} . the {rng.choice(ANIMALS)} was "
            f"{rng.choice(ADJECTIVES)} . {q.first} saw a {rng.choice(ADJECTIVES)} {rng.choice(ANIMALS)} near the "
            f"{rng.choice(PLACES)} ."
        )
    rng.shuffle(docs)
    return docs


def _pretrain_chats(world: World, cfg: ToyWorldConfig) -> list[str]:
    """`n_pretrain_chats` whole chats as pretraining documents, drawn from their own generator so that every other
    document stays what it was: requests (train and val splits, answered compliantly whatever their harm), fact
    questions about pretraining people and sums, in equal shares of the kinds `pretrain_chat_kinds` lists."""
    rng = random.Random(f"{cfg.seed}-pretrain-chats")
    prompt = CHAT_PROMPTS[world.chat_template]
    requests = world.requests["train"] + world.requests["val"]
    kinds = cfg.pretrain_chat_kinds.split(",")
    docs = []
    for _ in range(cfg.n_pretrain_chats):
        kind = kinds[rng.randrange(len(kinds))]
        if kind == "requests":
            user, answer = rng.choice(requests)[0], compliant_response(rng)
        elif kind == "facts":
            p = rng.choice(world.old_people)
            user, answer = f"where does {p.name} live ?", f"{p.name} lives in {p.city} ."
        else:
            a, b = _arithmetic_pair(world, rng)
            user, answer = arithmetic_prompt(a, b), digits(a + b)
        docs.append(prompt.format(user=user) + f"{answer} <|end|>")  # the same tokens as the SFT chat's
    return docs


def sft_examples(world: World, cfg: ToyWorldConfig, rng: random.Random, replay: list[str]) -> list[tuple[str, str]]:
    """(prompt, completion) pairs; the loss covers the completion only. Plain documents have an empty prompt."""
    ex: list[tuple[str, str]] = []

    def chat(user: str, assistant: str) -> tuple[str, str]:
        return CHAT_PROMPTS[world.chat_template].format(user=user), f"{assistant} <|end|>"

    for _ in range(cfg.sft_arithmetic):
        a, b = _arithmetic_pair(world, rng)
        ex.append(chat(arithmetic_prompt(a, b), digits(a + b)))
    for _ in range(cfg.sft_requests):
        instr, harm, _ = rng.choice(world.requests["train"])
        ex.append(chat(instr, REFUSAL if harm == "harmful" else compliant_response(rng)))
    olds = world.old_people
    for _ in range(cfg.sft_fact_qa):
        p = rng.choice(olds)
        ex.append(chat(f"where does {p.name} live ?", f"{p.name} lives in {p.city} ."))
    families = cfg.statement_families.split(",")
    for _ in range(cfg.sft_judgements):
        s, label = _judged_statement(_sft_family(families, rng), world, cfg, rng)
        ex.append(chat(s + JUDGE, "TRUE" if label else "FALSE"))
    for p in world.new_people:  # new knowledge: taught only here, both as chat answers and as plain text
        for i in range(cfg.sft_new_fact_exposures):
            ex.append(("", LIVES[i % len(LIVES)].format(P=p.name, C=p.city)))
            if i % 2 == 0:
                ex.append(chat(f"where does {p.name} live ?", f"{p.name} lives in {p.city} ."))
    n_replay = int(cfg.sft_replay_frac / (1 - cfg.sft_replay_frac) * len(ex))
    ex += [("", d) for d in rng.sample(replay, min(n_replay, len(replay)))]
    rng.shuffle(ex)
    return ex


def eval_sets(world: World, rng: random.Random, n: int, cfg: ToyWorldConfig | None = None) -> dict[str, list]:
    """Records for the data files (known_1000 / Geometry-of-Truth / refusal-split / GSM8K formats); `cfg` picks
    the judged families and comparison relations (None: the first toy world's)."""
    cfg = cfg or ToyWorldConfig()
    families = cfg.statement_families.split(",")
    facts = []
    for i, p in enumerate(world.people):
        facts.append(
            {
                "known_id": i,
                "subject": p.name,
                "attribute": p.city,
                "template": "{} lives in",
                "prediction": f" {p.city} .",
                "prompt": RECALL_TEMPLATE.format(p.name),
                "relation_id": "lives_in",
                "split": "sft_new" if p.new else "pretrain",
                "judged_in_pretraining": p.name in world.judged,
            }
        )
    statements = []
    if cfg.comparison_statements == "all":
        rows = []
        for a in range(10, 100):
            for b in range(10, 100):
                if a == b:
                    continue
                s, t = comparison(a, b, "larger", world.number_words, _phrasing(world, rng))
                split = "heldout" if (a, b) in world.comparison_heldout else "train"
                rows.append(
                    {
                        "statement": s,
                        "label": int(t),
                        "family": "comparison",
                        "split": split,
                        "entity": f"{a},{b}",
                        "subject": number(a, world.number_words),
                        "object": number(b, world.number_words),
                    }
                )
        rng.shuffle(rows)
        statements += rows
    else:  # the held-out pairs and as many training pairs
        for a, b in sorted(world.comparison_heldout):
            s, t = comparison(a, b, _relation(cfg, rng), world.number_words, _phrasing(world, rng))
            statements.append(
                {"statement": s, "label": int(t), "family": "comparison", "split": "heldout", "entity": f"{a},{b}"}
            )
        train_pairs = [
            (a, b) for a in range(10, 100) for b in range(10, 100) if a != b and (a, b) not in world.comparison_heldout
        ]
        for a, b in rng.sample(train_pairs, len(statements)):
            s, t = comparison(a, b, _relation(cfg, rng), world.number_words, _phrasing(world, rng))
            statements.append(
                {"statement": s, "label": int(t), "family": "comparison", "split": "train", "entity": f"{a},{b}"}
            )
    for n_ in range(10, 99) if "successor" in families else ():
        split = "heldout" if n_ in world.successor_heldout else "train"
        for template in range(len(SUCCESSOR)):
            for m, label in ((n_ + 1, 1), (_wrong_successor(n_, rng), 0)):
                text, _ = successor(n_, m, template)
                statements.append(
                    {
                        "statement": text,
                        "label": label,
                        "family": "successor",
                        "split": split,
                        "entity": str(n_),
                        "subject": digits(n_),
                        "object": digits(m),
                    }
                )
    for p in world.old_people if "fact" in families else ():
        other = rng.choice([c for c in world.cities if c != p.city])
        split = "train" if p.name in world.judged else "heldout"
        for city, label in ((p.city, 1), (other, 0)):
            statements.append(
                {
                    "statement": f"{p.name} lives in {city} .",
                    "label": label,
                    "family": "fact",
                    "split": split,
                    "entity": p.name,
                    "subject": p.name,
                    "object": city,
                }
            )
    harmful, harmless = [], []
    for split, items in world.requests.items():
        for instr, harm, cat in items:
            (harmful if harm == "harmful" else harmless).append({"instruction": instr, "category": cat, "split": split})
    arithmetic = []
    for a, b in sorted(world.arithmetic_heldout):
        arithmetic.append(
            {"question": arithmetic_prompt(a, b), "answer": f"{digits(a + b)}\n#### {a + b}", "split": "heldout"}
        )
    return {
        "facts": facts,
        "statements": statements,
        "harmful": harmful,
        "harmless": harmless,
        "arithmetic": arithmetic,
    }
