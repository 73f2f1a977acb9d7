"""Acceptance measurements of a toy pair, computed on the raw HF models (they feed report.json)."""

from __future__ import annotations

import numpy as np
import torch

from .corpus import BASE_TEMPLATE, JUDGE


def _chat(tok, user: str) -> str:
    return tok.apply_chat_template([{"role": "user", "content": user}], add_generation_prompt=True, tokenize=False)


@torch.no_grad()
def generate(
    model, tok, prompts: list[str], max_new_tokens: int, sample: bool = False, seed: int = 0, batch_size: int = 64
) -> list[list[str]]:
    """Continuations as token strings (greedy, or temperature-1 sampling with a seeded generator)."""
    device = next(model.parameters()).device
    out: list[list[str]] = []
    old = tok.padding_side
    tok.padding_side = "left"
    torch.manual_seed(seed)
    try:
        for i in range(0, len(prompts), batch_size):
            enc = tok(prompts[i : i + batch_size], return_tensors="pt", padding=True).to(device)
            gen = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=sample,
                temperature=1.0 if sample else None,
                top_k=0 if sample else None,
                top_p=1.0 if sample else None,
                pad_token_id=tok.pad_token_id,
            )
            for row in gen[:, enc["input_ids"].shape[1] :]:
                out.append(tok.convert_ids_to_tokens(row.tolist()))
    finally:
        tok.padding_side = old
    return out


def fact_recall(model, tok, facts: list[dict]) -> float:
    """Share of facts whose greedy continuation of "<person> lives in" spells the whole city."""
    if not facts:
        return float("nan")
    targets = [f["attribute"].split() for f in facts]
    gens = generate(model, tok, [f["prompt"] for f in facts], max(len(t) for t in targets))
    return float(np.mean([g[: len(t)] == t for g, t in zip(gens, targets)]))


def parse_number(tokens: list[str], stop: tuple[str, ...]) -> int | None:
    digits = []
    for t in tokens:
        if t in stop:
            break
        if not t.isdigit():
            return None
        digits.append(t)
    return int("".join(digits)) if digits else None


def arithmetic_accuracy(model, tok, problems: list[dict], chat: bool, sample: bool, seed: int = 0) -> float:
    prompts, answers = [], []
    for p in problems:
        q = p["question"]
        prompts.append(_chat(tok, q) if chat else q)
        answers.append(int(p["answer"].split("####")[-1]))
    gens = generate(model, tok, prompts, 4, sample=sample, seed=seed)
    stop = ("<|end|>", ".", "</s>")
    return float(np.mean([parse_number(g, stop) == a for g, a in zip(gens, answers)]))


def refusal_rate(model, tok, instructions: list[str], chat: bool) -> float:
    prompts = [_chat(tok, i) if chat else BASE_TEMPLATE.format(instruction=i) for i in instructions]
    gens = generate(model, tok, prompts, 3)
    return float(np.mean([g[:2] == ["I", "cannot"] for g in gens]))


@torch.no_grad()
def residuals_at_last_token(model, tok, texts: list[str], batch_size: int = 128) -> torch.Tensor:
    """Residual stream at the last token for every layer boundary: (N, L+1, D)."""
    device = next(model.parameters()).device
    old = tok.padding_side
    tok.padding_side = "left"
    chunks = []
    try:
        for i in range(0, len(texts), batch_size):
            enc = tok(texts[i : i + batch_size], return_tensors="pt", padding=True).to(device)
            hs = model(**enc, output_hidden_states=True).hidden_states  # L+1 tensors (B, T, D)
            chunks.append(torch.stack([h[:, -1].float().cpu() for h in hs], dim=1))
    finally:
        tok.padding_side = old
    return torch.cat(chunks)


def truth_probe_accuracy(model, tok, statements: list[dict], family: str, seed: int = 0) -> list[float]:
    """Logistic regression on residuals at the statement's last token, trained on the 'train' split, tested on
    'heldout' statements (held-out number pairs or people); one accuracy per layer boundary."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    rows = [s for s in statements if s["family"] == family]
    tr = [s for s in rows if s["split"] == "train"]
    te = [s for s in rows if s["split"] == "heldout"]
    if not tr or not te:
        return []
    xtr = residuals_at_last_token(model, tok, [s["statement"] for s in tr])
    xte = residuals_at_last_token(model, tok, [s["statement"] for s in te])
    ytr = np.array([s["label"] for s in tr])
    yte = np.array([s["label"] for s in te])
    accs = []
    for layer in range(xtr.shape[1]):
        sc = StandardScaler().fit(xtr[:, layer].numpy())
        clf = LogisticRegression(max_iter=2000, C=1.0, random_state=seed)
        clf.fit(sc.transform(xtr[:, layer].numpy()), ytr)
        accs.append(float(clf.score(sc.transform(xte[:, layer].numpy()), yte)))
    return accs


def judgement_accuracy(model, tok, statements: list[dict], family: str, split: str) -> float:
    """Share of statements whose next token after "This statement is :" is the right TRUE/FALSE (raw prompt)."""
    rows = [s for s in statements if s["family"] == family and s["split"] == split]
    if not rows:
        return float("nan")
    gens = generate(model, tok, [s["statement"] + JUDGE for s in rows], 1)
    return float(np.mean([g[0] == ("TRUE" if s["label"] else "FALSE") for g, s in zip(gens, rows)]))
