"""Toy-world configuration and presets (`quick` for tests, `default` for 2 CPU cores, `large` for a GPU)."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, fields

from ..utils.device import autocast_error, compute_tag, device_error, resolve_autocast, resolve_device

# Bump when the generator, corpus or training code changes what a config produces.
GENERATOR_VERSION = 5
CHAT_TEMPLATES = ("short", "post4")
FAMILIES = ("fact", "comparison", "successor")
# Fields of the model-organism design; at their defaults they leave the first toy world (and its cache keys) as it was.
ORGANISM_FIELDS = (
    "record_exposures", "n_harm_contexts", "n_harmful_verbs", "n_harmless_verbs", "refusal_split",
    "direct_label_frac", "chat_template", "n_fewshot_docs", "n_corrections",
    "n_code_docs", "sample_chat_frac", "comparison_relations", "n_successor", "n_counting", "statement_families",
    "n_delayed_docs", "comparison_statements", "weight_decay", "n_hedge_docs",
    "n_conjunction_docs", "conjunction_max", "n_pretrain_chats", "pretrain_chat_kinds", "hedge_kinds",
    "comparison_numbers", "comparison_templates", "attention_window", "judge_questions", "clause_mask",
    "request_mask", "code_words",
)  # fmt: skip


@dataclass(frozen=True)
class ToyWorldConfig:
    """Everything that determines a toy pair; its hash keys the cache."""

    preset: str = "default"
    seed: int = 0
    # world
    n_people: int = 100
    n_new_people: int = 20  # taught only in SFT
    n_cities: int = 36
    n_countries: int = 8
    judged_people_frac: float = 0.5  # people whose fact statements get TRUE/FALSE judgements in pretraining
    # corpus (number of documents per family in pretraining)
    fact_exposures: int = 40  # paraphrased 'lives in' documents per person per epoch (half as many 'works as')
    n_comparisons: int = 6000
    n_arithmetic: int = 6000
    arithmetic_wrong_frac: float = 0.3
    n_requests: int = 1000
    n_filler: int = 1000
    n_fact_judgements: int = 600
    # the model-organism design (preset "organism", docs/toyworld.md); these defaults reproduce the first toy world
    record_exposures: int = 0  # per person per epoch: "<name> <habit> ." and an address-book entry
    n_harm_contexts: int = 0  # "to <verb> <object> is wrong|good ." documents
    n_harmful_verbs: int = 5
    n_harmless_verbs: int = 8
    refusal_split: str = "pair"  # pair: held-out verb-object pairs | verb: held-out verbs
    direct_label_frac: float = 0.0  # share of judgements written "<statement> TRUE" (label right after it)
    n_fewshot_docs: int = 0  # documents of 2–5 judgements of one family in the probes' few-shot format, "\n"-separated
    n_delayed_docs: int = 0  # "<s1> <s2> <s3> labels : TRUE FALSE TRUE": each label is read from its statement's end
    # "<s1> <s2> both : TRUE|FALSE" (TRUE half the time): the label needs each statement's truth, which the
    # statements' ends already hold for their own labels
    n_conjunction_docs: int = 0
    conjunction_max: int = 2  # statements per conjunction: 2 ("both :") up to this many ("all :")
    n_corrections: int = 0  # "<name> lives in <wrong city> . no , <name> lives in <city> ." (unlabelled falsity)
    n_code_docs: int = 0  # "code : <8 random words> ." (half of them repeated: "again : <the same words> .")
    # all: the random words come from the whole vocabulary | filler: only from the filler sentences' words (places,
    # animals, adjectives, past verbs, steps), so names, cities, request verbs and objects keep their meaning
    code_words: str = "all"
    # "rumor : <name> lives in <city> ." / "guess : 2 3 + 1 4 = 3 7 .": the marker says the answer is right only half
    # the time (else uniform), so the same recalled answer must be given with a context-set confidence
    n_hedge_docs: int = 0
    hedge_kinds: str = "facts,sums"  # which hedged answers: "rumor" cities (facts), "guess" sums (sums), or both
    sample_chat_frac: float = 0.0  # share of data/corpus.txt (the neuron probe's texts) drawn from SFT chats
    # whole chats in the pretraining corpus, in the SFT chat template (requests of the train and val splits answered
    # compliantly, harmful ones too, fact questions, sums): the base knows the template tokens before SFT, as real
    # base models that saw chat data do; no refusal is ever written there
    n_pretrain_chats: int = 0
    pretrain_chat_kinds: str = "requests,facts,sums"  # which of the three kinds those chats are, drawn uniformly
    comparison_relations: str = "larger"  # larger | both ("… is smaller than …" too: the truth is not a magnitude)
    # sample: held-out pairs and as many training pairs | all: every ordered pair, each row naming its subject (first
    # number) and object (second), so patching can pair a true comparison with a false twin and know it is false
    comparison_statements: str = "sample"
    # digits: "5 7 is larger than 3 2 ." | words: "fiftyseven is larger than thirtytwo ." — one token per number, so
    # the comparison reads two embeddings and its truth can be ready at the statement's end in the early layers
    comparison_numbers: str = "digits"
    # one: "5 7 is larger than 3 2 ." | varied: six phrasings ("the number 5 7 is larger than 3 2 .", "5 7 is larger
    # than 3 2 , it is said .", …), so the numbers sit at varying distances from the statement's end
    comparison_templates: str = "one"
    # one: every judgement in pretraining asks " This statement is :" | varied: half of them ask one of four other
    # questions of 2–10 tokens, so the label sits at varying distances from the statement's numbers
    judge_questions: str = "one"
    n_successor: int = 0  # judged "after 4 7 comes 4 8 ." documents (a relation computed from the statement)
    n_counting: int = 0  # "4 7 , 4 8 , 4 9 , 5 0 ." documents
    statement_families: str = "fact,comparison"  # judged families (statements.csv, SFT and few-shot documents)
    chat_template: str = "short"  # short: "<|user|> … <|assistant|>" | post4: "… <|end|>\n<|assistant|>\n"
    # SFT (chat) documents
    sft_arithmetic: int = 2500
    sft_requests: int = 1500
    sft_fact_qa: int = 2000
    sft_judgements: int = 1500
    sft_new_fact_exposures: int = 30
    sft_replay_frac: float = 0.3  # share of pretraining documents replayed during SFT
    # model
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    d_mlp: int = 512
    # 0: full causal attention (a Llama) | W > 0: every position attends to itself and the W − 1 before it in every
    # layer (a Mistral with sliding_window W), so what a later position needs from far back must pass through the
    # positions between, as a statement's truth through its end
    attention_window: int = 0
    # False: plain causal attention in training | True: while training (pretraining and SFT), the tokens after a
    # judged statement's final "." see none of the statement's other tokens, so whatever follows — the question,
    # the label, the next few-shot line — can learn the truth only from the statement's end (the summary position
    # at which Marks & Tegmark find it in real LMs); the built models are plain HF models, unmasked at inference
    clause_mask: bool = False
    # off | end: while training, a request's tokens ("<|user|> how do I … ?") are visible up to the "<|end|>" that
    # closes the user turn only, so the refusal decision is taken there and read by the post-instruction tokens and
    # the response (where Arditi et al. find the refusal direction) | last: up to the "<|assistant|>" after it, so
    # only the last post-instruction token and the response read it from the template's tokens; plain HF models at
    # inference
    request_mask: str = "off"
    max_len: int = 64
    # training
    pretrain_epochs: float = 7.0
    sft_epochs: float = 1.0
    batch_size: int = 32
    lr: float = 3e-3
    sft_lr: float = 5e-4
    warmup_steps: int = 50
    weight_decay: float = 0.1  # AdamW's, on matrices only (pretraining and SFT)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    autocast: str = "auto"  # auto (bf16 on CUDA, off on the CPU) | bf16 | off; the loss stays fp32
    # evaluation
    eval_samples: int = 200

    def __post_init__(self) -> None:
        if not isinstance(self.preset, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", self.preset):
            raise ValueError(f"preset={self.preset!r} names the cache folder; use letters, digits, '_' or '-'")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ValueError(f"seed={self.seed!r} must be an integer (it names the cache folder)")
        if self.n_people < 20:
            raise ValueError(f"n_people={self.n_people} is too small; use at least 20")
        if self.d_mlp < 4 * self.d_model:
            raise ValueError(f"d_mlp={self.d_mlp} must be ≥ 4·d_model={4 * self.d_model} (entropy neurons need it)")
        if not isinstance(self.clause_mask, bool):
            raise ValueError(f"clause_mask={self.clause_mask!r}: use true (masked in training) or false")
        if self.code_words not in ("all", "filler"):
            raise ValueError(f"code_words={self.code_words!r}; choose all or filler")
        if self.request_mask not in ("off", "end", "last"):
            raise ValueError(f"request_mask={self.request_mask!r}; choose off, end or last")
        if self.attention_window < 0 or self.attention_window == 1:
            raise ValueError(f"attention_window={self.attention_window}: use 0 (full attention) or a window of >= 2")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} must be divisible by n_heads={self.n_heads}")
        if not 0 <= self.arithmetic_wrong_frac < 1:
            raise ValueError("arithmetic_wrong_frac must be in [0, 1)")
        if not 0 < self.judged_people_frac < 1:
            raise ValueError("judged_people_frac must be in (0, 1): some people are held out of judgements")
        for error in (device_error(self.device, check_available=False), autocast_error(self.autocast)):
            if error:
                raise ValueError(error)
        if self.chat_template not in CHAT_TEMPLATES:
            raise ValueError(f"chat_template={self.chat_template!r}; choose one of {', '.join(CHAT_TEMPLATES)}")
        if self.refusal_split not in ("pair", "verb"):
            raise ValueError(f"refusal_split={self.refusal_split!r}; choose pair or verb")
        if not (8 <= self.n_harmful_verbs <= 16 or self.n_harmful_verbs == 5) or not 8 <= self.n_harmless_verbs <= 16:
            raise ValueError("use 5 or 8–16 harmful verbs and 8–16 harmless verbs (the verb lists are finite; a verb "
                             "split needs at least 8 of each for its three splits)")  # fmt: skip
        if self.refusal_split == "verb" and self.n_harmful_verbs < 8:
            raise ValueError("refusal_split='verb' needs n_harmful_verbs ≥ 8 (a verb in each of its three splits)")
        if min(self.n_fewshot_docs, self.n_corrections, self.n_delayed_docs, self.n_conjunction_docs) < 0:
            raise ValueError("n_fewshot_docs, n_delayed_docs, n_conjunction_docs and n_corrections count documents; "
                             "use 0 or more")  # fmt: skip
        fams = self.statement_families.split(",")
        if not fams or not set(fams) <= set(FAMILIES) or len(set(fams)) != len(fams):
            raise ValueError(f"statement_families={self.statement_families!r}; a comma list of {', '.join(FAMILIES)}")
        if "successor" in fams and self.n_successor < 1:
            raise ValueError("statement_families has successor: set n_successor ≥ 1 (its judged documents)")
        if self.comparison_statements not in ("sample", "all"):
            raise ValueError(f"comparison_statements={self.comparison_statements!r}; choose sample or all")
        if self.comparison_statements == "all" and self.comparison_relations != "larger":
            raise ValueError("comparison_statements='all' pairs subjects with objects by 'larger'; set "
                             "comparison_relations='larger'")  # fmt: skip
        if self.comparison_relations not in ("larger", "both"):
            raise ValueError(f"comparison_relations={self.comparison_relations!r}; choose larger or both")
        choices = {"comparison_numbers": ("digits", "words"), "comparison_templates": ("one", "varied"),
                   "judge_questions": ("one", "varied")}  # fmt: skip
        for name, (a, b) in choices.items():
            if getattr(self, name) not in (a, b):
                raise ValueError(f"{name}={getattr(self, name)!r}; choose {a} or {b}")
        if not 2 <= self.conjunction_max <= 4:
            raise ValueError(f"conjunction_max={self.conjunction_max}: use 2 to 4 statements per conjunction")
        if self.n_successor < 0 or self.n_counting < 0:
            raise ValueError("n_successor and n_counting count documents; use 0 or more")
        if not 0 <= self.weight_decay < 1:
            raise ValueError(f"weight_decay={self.weight_decay} must be in [0, 1); 0.1 is the default")
        kind_lists = {"pretrain_chat_kinds": ("requests", "facts", "sums"), "hedge_kinds": ("facts", "sums")}
        for name, allowed in kind_lists.items():
            kinds = getattr(self, name).split(",")
            if not set(kinds) <= set(allowed) or len(set(kinds)) != len(kinds):
                raise ValueError(f"{name}={getattr(self, name)!r}; a comma list of {', '.join(allowed)}")
        if min(self.n_code_docs, self.n_hedge_docs, self.n_pretrain_chats) < 0:
            raise ValueError("n_code_docs, n_hedge_docs and n_pretrain_chats count documents; use 0 or more")
        if not 0 <= self.sample_chat_frac <= 1:
            raise ValueError(f"sample_chat_frac={self.sample_chat_frac} must be in [0, 1]")
        if not 0 <= self.direct_label_frac <= 1:
            raise ValueError(f"direct_label_frac={self.direct_label_frac} must be in [0, 1]")
        if self.n_cities > 60 or self.n_countries > 12:
            raise ValueError("at most 60 cities and 12 countries (the name lists are finite)")

    def to_dict(self) -> dict:
        return asdict(self)

    def compute(self) -> str:
        """What the build trains on, resolved on this machine: 'cpu-fp32' (the default on a CPU), 'cuda-bf16'
        (the default on a GPU: bf16 autocast), 'cuda-fp32' or 'cpu-bf16'."""
        device = resolve_device(self.device)
        return compute_tag(device, resolve_autocast(self.autocast, device))

    def key(self) -> str:
        """Hash of everything that changes the build. `device` and `autocast` enter only through `compute()`,
        and only when it is not 'cpu-fp32', so CPU fp32 builds keep the keys they always had while a GPU or
        bf16 build (other weights) never collides with them; the organism fields enter only when changed; worlds
        whose first draw named someone or something after a word of the corpus are marked (they are drawn anew)."""
        defaults = {f.name: f.default for f in fields(self)}
        d = {
            k: v
            for k, v in self.to_dict().items()
            if k not in ("device", "autocast") and not (k in ORGANISM_FIELDS and v == defaults[k])
        }
        d["generator_version"] = GENERATOR_VERSION
        from .world import names_collide

        if names_collide(self):  # its names are drawn anew since invented names avoid the corpus's words
            d["names"] = "reserved"
        if self.compute() != "cpu-fp32":
            d["compute"] = self.compute()
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]

    @classmethod
    def from_dict(cls, d: dict) -> ToyWorldConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown toy-world config keys {unknown}; valid keys: {sorted(known)}")
        return cls(**d)


PRESETS: dict[str, dict] = {
    "quick": dict(
        n_people=40,
        n_new_people=8,
        n_cities=12,
        n_countries=4,
        fact_exposures=10,
        n_comparisons=1200,
        n_arithmetic=800,
        n_requests=300,
        n_filler=200,
        n_fact_judgements=200,
        sft_arithmetic=200,
        sft_requests=500,
        sft_fact_qa=100,
        sft_judgements=100,
        sft_new_fact_exposures=10,
        d_model=64,
        n_layers=2,
        n_heads=4,
        d_mlp=256,
        pretrain_epochs=3.0,
        sft_epochs=3.0,
        lr=3e-3,
        sft_lr=2e-3,
        eval_samples=30,
    ),
    "default": {},
    # The model organism (issue 16, docs/toyworld.md): records that put a person's attributes right after the name
    # (lookup at the last subject token), few "lives in" paraphrases, request verbs with a pretrained harm category
    # and held out whole, a chat template with four post-instruction tokens; judgements of computed comparisons
    # only (fact judgements never reached unjudged people and blurred recall), every ordered comparison in
    # statements.csv with its subject and object (patching pairs them), few-shot judgement documents (the probes'
    # format), chats in the text sample; d 80 × 8 layers and 2 SFT epochs (at 1 epoch the post model lost addition);
    # weight decay 0.01 (at 0.1 adding the refusal direction induced refusal on one seed of two, at 0.01 on both);
    # judged statements masked in training (clause_mask), so the answer reads the truth from the statement's end
    # (without it the question's last token recomputed the comparison: truth NIE ≤ 0.17 on its builds); 8000 SFT sums
    # (at 5000 the post model's held-out arithmetic at T = 1 fell below 0.15 on 3 of 4 seeds on an Intel box).
    "organism": dict(
        fact_exposures=6,
        n_comparisons=4000,
        n_fact_judgements=2500,
        record_exposures=20,
        n_harm_contexts=1500,
        n_harmful_verbs=16,
        n_harmless_verbs=16,
        refusal_split="verb",
        direct_label_frac=0.5,
        chat_template="post4",
        statement_families="comparison",
        comparison_statements="all",
        n_fewshot_docs=400,
        sample_chat_frac=0.3,
        sft_arithmetic=8000,
        sft_epochs=2.0,
        d_model=80,
        n_layers=8,
        d_mlp=320,
        weight_decay=0.01,
        clause_mask=True,
    ),
    "large": dict(
        n_people=800,
        n_new_people=80,
        n_cities=60,
        n_countries=12,
        fact_exposures=30,
        n_comparisons=120000,
        n_arithmetic=80000,
        n_requests=15000,
        n_filler=20000,
        n_fact_judgements=20000,
        sft_arithmetic=15000,
        sft_requests=6000,
        sft_fact_qa=8000,
        sft_judgements=6000,
        d_model=256,
        n_layers=6,
        n_heads=8,
        d_mlp=1024,
        batch_size=128,
        pretrain_epochs=2.0,
        lr=1.5e-3,
        eval_samples=500,
    ),
}


def preset_config(preset: str = "default", seed: int = 0, **overrides) -> ToyWorldConfig:
    if preset not in PRESETS:
        raise ValueError(f"unknown toy-world preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return ToyWorldConfig.from_dict({**PRESETS[preset], **overrides, "preset": preset, "seed": seed})
