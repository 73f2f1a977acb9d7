"""Tables of the truthfulness analysis from activations: probe sweeps, transfer, leave-one-dataset-out,
the few-shot intervention with its NIE, and the run summary."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

from posttrain_probe.probes.truth.data import unk_fraction
from posttrain_probe.probes.truth.fit import PROBE_KINDS, LinearProbe, fit_probes, nie_summary
from posttrain_probe.probes.truth.model import (
    check_prompt_lengths,
    max_token_length,
    prob_diff_under_addition,
    render_prompt,
)
from posttrain_probe.probes.truth.reach import patch_reach
from posttrain_probe.stats import cosine

ROLES = ("base", "post")


def _by_layer(acts) -> torch.Tensor:
    """Both models' activations {role: (N, L+1, D)} as one (2, L+1, N, D) view of a stacked copy."""
    return torch.stack([torch.as_tensor(acts[role]) for role in ROLES]).transpose(1, 2)


def fit_all(acts, y, train, cfg, device=None) -> dict[tuple[str, str, int], LinearProbe]:
    """Probes for every (role, kind, layer) on the train rows, all fitted in one batched solve per kind."""
    n_layers = acts["base"].shape[1]
    fits = fit_probes(_by_layer(acts), y, np.asarray(train)[None], cfg.C, cfg.max_iter, device=device)
    return {
        (role, kind, l): fits[(kind, r, l, 0)]
        for r, role in enumerate(ROLES)
        for kind in PROBE_KINDS
        for l in range(n_layers)
    }


def score_tables(acts, y, ds, test, fits) -> dict[str, pd.DataFrame]:
    """layer_accuracy, dataset_accuracy, direction_cosine and cross_model tables."""
    layer_rows, ds_rows, cos_rows, cross_rows = [], [], [], []
    train = ~test
    for (role, kind, l), probe in fits.items():
        X = acts[role][:, l]
        layer_rows.append(
            dict(
                model=role,
                probe=kind,
                layer=l,
                train_acc=probe.accuracy(X[train], y[train]),
                test_acc=probe.accuracy(X[test], y[test]),
                test_auroc=probe.auroc(X[test], y[test]),
            )
        )
        for name in sorted(set(ds)):
            m = test & (ds == name)
            if m.any():
                ds_rows.append(
                    dict(
                        model=role,
                        probe=kind,
                        layer=l,
                        dataset=name,
                        test_acc=probe.accuracy(X[m], y[m]),
                        test_auroc=probe.auroc(X[m], y[m]),
                        n_test=int(m.sum()),
                    )
                )
        other = "post" if role == "base" else "base"
        Xo = acts[other][:, l]
        cross_rows.append(
            dict(
                probe=kind,
                layer=l,
                direction_from=role,
                applied_to=other,
                test_acc=probe.accuracy(Xo[test], y[test]),
                test_auroc=probe.auroc(Xo[test], y[test]),
            )
        )
        if role == "base":
            post = fits[("post", kind, l)]
            cos_rows.append(dict(probe=kind, layer=l, cosine=cosine(probe.direction, post.direction)))
    return {
        "layer_accuracy": pd.DataFrame(layer_rows),
        "dataset_accuracy": pd.DataFrame(ds_rows),
        "direction_cosine": pd.DataFrame(cos_rows),
        "cross_model": pd.DataFrame(cross_rows),
    }


def probe_predictions(acts, y, test, fits, layer: int) -> pd.DataFrame:
    """Per held-out statement at `layer`: whether each model's probe (of each kind) judges it correctly on
    each model's activations (own and cross-model), so verdicts can bootstrap accuracies over statements."""
    rows = np.flatnonzero(test)
    out = []
    for (role, kind, l), probe in fits.items():
        if l != layer:
            continue
        for applied in ROLES:
            pred = probe.predict(acts[applied][rows, l])
            out += [
                dict(statement=int(i), probe=kind, layer=l, direction_from=role, applied_to=applied, correct=bool(c))
                for i, c in zip(rows, pred == y[rows])
            ]
    return pd.DataFrame(out)


def lodo_table(acts, y, ds, cfg, layers: list[int], device=None) -> pd.DataFrame:
    """Leave-one-dataset-out at `layers`: train on all other datasets (both splits), test on every row of
    the held-out one. Every fold, model, kind and layer is fitted in one batched solve per kind."""
    rows = []
    held_out = [h for h in sorted(set(ds)) if len(set(y[ds != h])) >= 2]
    if not held_out:
        return pd.DataFrame(rows)
    X = _by_layer(acts)
    X = X if list(layers) == list(range(X.shape[1])) else X[:, list(layers)]
    masks = np.stack([ds != h for h in held_out])  # (F, N) training rows of each fold
    fits = fit_probes(X, y, masks, cfg.C, cfg.max_iter, device=device)
    for f, held in enumerate(held_out):
        te = ds == held
        for r, role in enumerate(ROLES):
            for kind in PROBE_KINDS:
                for i, l in enumerate(layers):
                    Xl = acts[role][:, l]
                    probe = fits[(kind, r, i, f)]
                    rows.append(
                        dict(
                            model=role,
                            probe=kind,
                            layer=l,
                            held_out=held,
                            test_acc=probe.accuracy(Xl[te], y[te]),
                            test_auroc=probe.auroc(Xl[te], y[te]),
                            n=int(te.sum()),
                        )
                    )
    return pd.DataFrame(rows)


def choose_probe_layer(layer_accuracy: pd.DataFrame, kind: str = "mass_mean") -> int:
    """The layer in 1..L−1 with the best mean held-out accuracy of the two models; ties → the earliest.
    Layer 0 (the embeddings) and layer L are left out: the intervention writes at the statement tokens, and a
    change there after the last block can never reach the answer position."""
    top = int(layer_accuracy.layer.max())
    t = layer_accuracy[(layer_accuracy.probe == kind) & layer_accuracy.layer.between(1, top - 1)]
    if t.empty:
        t = layer_accuracy[layer_accuracy.probe == kind]
    mean = t.groupby("layer")["test_acc"].mean()
    return int(mean.index[int(np.argmax(mean.to_numpy()))])


def default_band(probe_layer: int, n_layers: int) -> list[int]:
    """resid layers [l0 .. probe_layer] with l0 = probe_layer − max(1, round(L/10)), kept ≥ 1 (≥ 0 when the
    probe layer is 0)."""
    l0 = max(min(1, probe_layer), probe_layer - max(1, round(n_layers / 10)))
    return list(range(l0, probe_layer + 1))


def fewshot_shots(statements, train, cfg) -> dict[str, list[tuple[str, int]]]:
    """Per dataset: n_shots train statements (⌈n/2⌉ true, ⌊n/2⌋ false), seeded order; datasets that cannot
    supply them are left out."""
    shots: dict[str, list[tuple[str, int]]] = {}
    for k, name in enumerate(sorted({s.dataset for s in statements})):
        rng = np.random.default_rng([cfg.seed, k])
        pick = []
        for label, n in ((1, (cfg.n_shots + 1) // 2), (0, cfg.n_shots // 2)):
            cell = [i for i, s in enumerate(statements) if train[i] and s.dataset == name and s.label == label]
            if len(cell) < n:
                break
            pick += rng.permutation(cell)[:n].tolist()
        else:
            shots[name] = [(statements[i].text, statements[i].label) for i in rng.permutation(pick).tolist()]
    return shots


def intervention_rows(statements, test, shots, cfg) -> list[int]:
    """About n_intervene held-out statements, split equally over the datasets that have few-shot examples
    (so a small dataset gets as many as a large one), half true and half false within each."""
    rng = np.random.default_rng(cfg.seed + 1)
    names = sorted(n for n in shots if any(test[i] and s.dataset == n for i, s in enumerate(statements)))
    if not names:
        return []
    quota = max(2, cfg.n_intervene // len(names))
    out: list[int] = []
    for name in names:
        for label, n in ((1, quota // 2), (0, quota - quota // 2)):
            cell = [i for i, s in enumerate(statements) if test[i] and s.dataset == name and s.label == label]
            out += rng.permutation(cell)[:n].tolist()
    return sorted(out)


def render_fewshot(pair, role, statements, rows, shots, cfg):
    """The few-shot prompts of `rows` as `role` sees them, and the tokenizer that encodes them (raw text: the
    pair's, so both models get identical ids; chat: the model's own, for its template tokens)."""
    model = pair.models()[role]
    fmt = cfg.base_format if role == "base" else cfg.post_format
    tok = model.tokenizer if fmt == "chat" else pair.tokenizer
    rendered = [
        render_prompt(*cfg.fewshot.build(statements[i].text, shots[statements[i].dataset]), fmt, tok) for i in rows
    ]
    return rendered, tok


def check_fewshot_lengths(pair, statements, rows, shots, cfg) -> int:
    """The longest few-shot prompt in tokens over both models; raises before any model runs if one does not
    fit the model's positions."""
    longest = 0
    for role in ROLES:
        rendered, tok = render_fewshot(pair, role, statements, rows, shots, cfg)
        if rendered:
            n = max_token_length(tok, [r[0] for r in rendered], rendered[0][2])
            check_prompt_lengths(pair.models()[role], n, f"the longest {cfg.n_shots}-shot prompt for {role}")
            longest = max(longest, n)
    return longest


def run_interventions(pair, statements, rows, shots, deltas, band, answers, cfg):
    """Baseline and δ-added P(TRUE) − P(FALSE) for every applied model × direction source (+ random)."""
    labels = np.array([statements[i].label for i in rows])
    signs = np.where(labels == 1, -1.0, 1.0)  # subtract δ on true statements, add on false
    per_stmt, summary_rows, cells = [], [], {}
    for applied in ROLES:
        model = pair.models()[applied]
        rendered, tok = render_fewshot(pair, applied, statements, rows, shots, cfg)
        texts, spans = [r[0] for r in rendered], [r[1] for r in rendered]
        kw = dict(
            true_id=answers["true"]["id"],
            false_id=answers["false"]["id"],
            scale=cfg.scale,
            add_special_tokens=rendered[0][2],
            batch_size=cfg.batch_size,
            progress=cfg.progress,
            tokenizer=tok,
        )
        base_pd, _ = prob_diff_under_addition(model, texts, spans, signs, None, band, desc=f"{applied} clean", **kw)
        sources = dict(deltas)
        if cfg.random_control:
            g = torch.Generator().manual_seed(cfg.seed + 2)
            r = torch.randn(deltas[applied].shape[0], generator=g)
            sources["random"] = r / r.norm() * deltas[applied].norm()
        for src, delta in sources.items():
            pd_int, n_cells = prob_diff_under_addition(
                model, texts, spans, signs, delta, band, desc=f"{src}→{applied}", **kw
            )
            cells[f"{src}->{applied}"] = n_cells
            for j, i in enumerate(rows):
                per_stmt.append(
                    dict(
                        statement=i,
                        dataset=statements[i].dataset,
                        label=int(labels[j]),
                        direction_from=src,
                        applied_to=applied,
                        pd=float(base_pd[j]),
                        pd_int=float(pd_int[j]),
                    )
                )
    frame = pd.DataFrame(per_stmt)
    for keys, g in frame.groupby(["direction_from", "applied_to"], sort=False):
        summary_rows.append(dict(zip(("direction_from", "applied_to"), keys)) | _nie_of(g))
    by_ds = [
        dict(zip(("direction_from", "applied_to", "dataset"), keys)) | _nie_of(g)
        for keys, g in frame.groupby(["direction_from", "applied_to", "dataset"], sort=True)
    ]
    return frame, pd.DataFrame(summary_rows), pd.DataFrame(by_ds), cells


def intervention_reach(pair, statements, rows, shots, band, answers, cfg, per_stmt: pd.DataFrame):
    """`patch_reach` for each model on the intervention prompts (clean pd from `per_stmt`): does the answer
    read the cells the intervention writes? Returns ({role: reach dict}, long table)."""
    reach, table = {}, []
    for role in ROLES:
        rendered, tok = render_fewshot(pair, role, statements, rows, shots, cfg)
        clean = per_stmt[per_stmt.applied_to == role].drop_duplicates("statement").set_index("statement").pd
        reach[role] = patch_reach(
            pair.models()[role],
            tok,
            [r[0] for r in rendered],
            [r[1] for r in rendered],
            [statements[i].label for i in rows],
            [statements[i].dataset for i in rows],
            [float(clean[i]) for i in rows],
            band,
            answers["true"]["id"],
            answers["false"]["id"],
            add_special_tokens=rendered[0][2],
            max_pairs=cfg.reach_pairs,
        )
        r = reach[role]
        n = r["n_pairs"]
        table.append(dict(model=role, cells="band_statement_tokens", layer=-1, share=r["band_cells_share"], n_pairs=n))
        table += [
            dict(model=role, cells="last_position", layer=l, share=v, n_pairs=n)
            for l, v in enumerate(r["last_position_share"])
        ]
    return reach, pd.DataFrame(table)


def _nie_of(g: pd.DataFrame) -> dict[str, float]:
    t, f = g[g.label == 1], g[g.label == 0]
    return nie_summary(t.pd.to_numpy(), t.pd_int.to_numpy(), f.pd.to_numpy(), f.pd_int.to_numpy())


def build_summary(
    statements, y, ds, test, split_source, tables, lp, band, deltas, acts, answers, cells
) -> dict[str, Any]:
    la = tables["layer_accuracy"]
    best = {}
    for (role, kind), g in la.groupby(["model", "probe"]):
        i = int(np.argmax(g.test_acc.to_numpy()))
        best[f"{role}.{kind}"] = {"layer": int(g.layer.iloc[i]), "test_acc": float(g.test_acc.iloc[i])}
    at_lp = la[la.layer == lp]
    cos = tables["direction_cosine"]
    datasets = {
        name: {
            "n": int((ds == name).sum()),
            "n_true": int(y[ds == name].sum()),
            "n_test": int((test & (ds == name)).sum()),
            "split": split_source[name],
        }
        for name in sorted(set(ds))
    }
    out: dict[str, Any] = {
        "n_statements": len(statements),
        "n_train": int((~test).sum()),
        "n_test": int(test.sum()),
        "datasets": datasets,
        "n_layers": int(acts["base"].shape[1]),
        "probe_layer": lp,
        "band": band,
        "answer_tokens": answers,
        "best_layer": best,
        "test_acc_at_probe_layer": {f"{r.model}.{r.probe}": float(r.test_acc) for r in at_lp.itertuples()},
        "cosine_at_probe_layer": {r.probe: float(r.cosine) for r in cos[cos.layer == lp].itertuples()},
        "delta_norm": {r: float(d.norm()) for r, d in deltas.items()},
        "resid_norm_at_probe_layer": {r: float(np.linalg.norm(a[:, lp], axis=1).mean()) for r, a in acts.items()},
        "intervention_cells": cells,
    }
    if "nie" in tables:
        nie = tables["nie"]
        out["nie"] = {f"{r.direction_from}->{r.applied_to}": float(r.nie_mean) for r in nie.itertuples()}
        clean = tables["intervention_pd"].drop_duplicates(["statement", "applied_to"])
        out["fewshot_accuracy"] = {
            role: float(((g.pd > 0).astype(int) == g.label).mean()) for role, g in clean.groupby("applied_to")
        }
    return out


def build_notes(pair, summary, statements) -> list[str]:
    notes = []
    ans = summary["answer_tokens"]
    notes.append(
        f"metric: P(TRUE) − P(FALSE) over next-token ids {ans['true']['id']} ({ans['true']['token']!r}) and "
        f"{ans['false']['id']} ({ans['false']['token']!r}), the first tokens of "
        f"{ans['true']['text']!r} / {ans['false']['text']!r}"
    )
    for name in summary["datasets"]:
        unk = unk_fraction(pair.tokenizer, [s.text for s in statements if s.dataset == name])
        summary["datasets"][name]["unk_fraction"] = unk
        if unk > 0.2:
            notes.append(f"dataset {name}: {unk:.0%} of tokens are unknown to this tokenizer: its probes mean little")
    acc = summary.get("fewshot_accuracy", {})
    for role, a in acc.items():
        if a < 0.6:
            notes.append(
                f"{role} answers the few-shot TRUE/FALSE prompt at {a:.2f} accuracy (sign of P(TRUE) − "
                "P(FALSE)): it barely does the task, so its NIE is weak evidence"
            )
    return notes
