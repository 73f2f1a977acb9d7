"""Internal change across a checkpoint series (base → checkpoints → final), all lined up by training step
(SPEC §6).

Pure pieces: relative weight change per module read straight from safetensors (no model forward), linear CKA
between two activation matrices, cosine drift of difference-in-means directions, the change of a causal-tracing
(token class × layer) map, and the rows of an entropy-neuron ablation. `compare_checkpoints` composes them with
the probes and writes one `RunResult`.

Choices the SPEC leaves open (recorded in the result's config):
- causal tracing per checkpoint uses one fixed set of facts, those the start model answers correctly (all
  traceable facts when it knows none, with a note), the start model's embedding std for the noise, and the
  same seeded noise draws for every checkpoint, so maps differ only because the weights did;
- entropy neurons per checkpoint: mean ablation (means over the checkpoint's own reference texts) of the
  checkpoint's own Du-rule set, of the start's set, and of one random norm-matched control set, on fixed
  evaluation texts; total and direct (final norm's scale frozen) changes of entropy and loss.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open

from posttrain_probe.analysis.drift_config import TRACING_KINDS, DriftConfig  # noqa: F401  (re-exported)
from posttrain_probe.stats import cosine, diff_in_means, split_by_label


def _tensors(model_dir: str | Path) -> dict[str, torch.Tensor]:
    files = sorted(Path(model_dir).glob("model*.safetensors"))  # not trainer_state.safetensors
    if not files:
        raise FileNotFoundError(f"no model*.safetensors in {model_dir}; pass an HF checkpoint directory")
    out: dict[str, torch.Tensor] = {}
    for f in files:
        with safe_open(str(f), framework="pt") as sf:
            for k in sf.keys():
                out[k] = sf.get_tensor(k)
    return out


def module_of(param_name: str) -> str:
    """Group parameter names into modules: 'model.layers.3.mlp.down_proj.weight' -> 'layers.3.mlp'."""
    parts = param_name.split(".")
    if "layers" in parts or "h" in parts:
        i = parts.index("layers") if "layers" in parts else parts.index("h")
        sub = parts[i + 2] if len(parts) > i + 2 else ""
        kind = "attn" if "attn" in sub else "mlp" if "mlp" in sub else "norm"
        return f"layers.{parts[i + 1]}.{kind}"
    if "embed" in param_name or "wte" in param_name or "wpe" in param_name:
        return "embed"
    if "lm_head" in param_name:
        return "unembed"
    return "final_norm" if "norm" in param_name or "ln_f" in param_name else parts[0]


def relative_weight_change(start_dir: str | Path, other_dir: str | Path) -> dict[str, float]:
    """‖W_other − W_start‖_F / ‖W_start‖_F per module (parameters of a module pooled)."""
    a, b = _tensors(start_dir), _tensors(other_dir)
    if set(a) != set(b):
        missing = sorted(set(a) ^ set(b))[:3]
        raise ValueError(f"checkpoints have different parameter names (e.g. {missing}); compare checkpoints of one run")
    shapes = [k for k in a if a[k].shape != b[k].shape]
    if shapes:
        raise ValueError(
            f"{shapes[0]} has shape {tuple(a[shapes[0]].shape)} vs {tuple(b[shapes[0]].shape)}; compare checkpoints "
            "of one architecture and vocabulary"
        )
    num: dict[str, float] = {}
    den: dict[str, float] = {}
    for k in a:
        m = module_of(k)
        wa, wb = a[k].double(), b[k].double()
        num[m] = num.get(m, 0.0) + float(((wb - wa) ** 2).sum())
        den[m] = den.get(m, 0.0) + float((wa**2).sum())
    return {m: float(np.sqrt(num[m] / den[m])) if den[m] > 0 else float("nan") for m in sorted(num)}


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA (Kornblith et al. 2019) between activations x (N, D1) and y (N, D2) of the same N inputs."""
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"CKA needs the same inputs: got {x.shape[0]} and {y.shape[0]} rows")
    x = x.double() - x.double().mean(0, keepdim=True)
    y = y.double() - y.double().mean(0, keepdim=True)
    hsic = (x.T @ y).pow(2).sum()
    norm = torch.sqrt((x.T @ x).pow(2).sum() * (y.T @ y).pow(2).sum())
    return float(hsic / norm) if norm > 0 else float("nan")


def tracing_map_change(start: torch.Tensor, other: torch.Tensor) -> dict[str, float | int | None]:
    """How an AIE map (token class × layer) moved from the start's: Pearson correlation over cells finite in
    both, max and mean |other − start| over those cells, and `other`'s peak cell (class index, layer, value;
    None when the map has no finite cell)."""
    if start.shape != other.shape:
        raise ValueError(f"maps of shapes {tuple(start.shape)} and {tuple(other.shape)}; trace the same facts")
    from posttrain_probe.stats import argmax_2d, pearson

    a, b = start.double(), other.double()
    ok = torch.isfinite(a) & torch.isfinite(b)
    diff = (b - a)[ok].abs()
    out: dict[str, float | int | None] = {
        "pearson_to_start": pearson(a, b),
        "max_abs_change": float(diff.max()) if diff.numel() else math.nan,
        "mean_abs_change": float(diff.mean()) if diff.numel() else math.nan,
        "peak_class": None,
        "peak_layer": None,
        "peak_aie": math.nan,
    }
    if torch.isfinite(b).any():
        c, l, v = argmax_2d(b)
        out.update(peak_class=c, peak_layer=l, peak_aie=v)
    return out


def mean_class_map(ie: torch.Tensor, n_tokens: Sequence[int], subjects: Sequence[tuple[int, int]]) -> torch.Tensor:
    """Average over facts of per-fact ROME token-class maps: ie (F, T_max, L) (NaN past each prompt's end),
    the facts' lengths and subject token spans → (C, L); a class no fact has stays NaN."""
    from posttrain_probe.pair.spans import TOKEN_CLASSES, token_class_masks
    from posttrain_probe.stats import class_means, nanmean0

    if ie.shape[0] == 0:
        return torch.full((len(TOKEN_CLASSES), ie.shape[-1]), math.nan)
    per = [class_means(ie[j, :t], token_class_masks(t, *subjects[j])) for j, t in enumerate(n_tokens)]
    return nanmean0(torch.stack(per))


def neuron_effect_rows(step: int, names: Sequence[str], neuron_sets: Sequence[Sequence[int]], stats) -> list[dict]:
    """One row per ablated set from `AblationStats` (conditions in the order of `names`): token-weighted mean
    changes of entropy and loss, total and direct, their standard errors, the part of ΔH mediated by the final
    norm (total − direct), and the clean entropy and loss of the evaluation texts."""
    from posttrain_probe.probes.neurons.ablate import COPIES, METRICS

    if len(names) != len(neuron_sets) or stats.effects.shape[0] != len(names):
        raise ValueError(
            f"{len(names)} names, {len(neuron_sets)} sets, {stats.effects.shape[0]} conditions; pass one of each"
        )
    mean, se = stats.aggregate()
    h0, l0 = stats.clean_means()
    rows = []
    for c, (name, ns) in enumerate(zip(names, neuron_sets)):
        row: dict = {"step": step, "set": name, "neurons": " ".join(map(str, ns)), "n_neurons": len(ns)}
        for ci, copy in enumerate(COPIES):
            for mi, metric in enumerate(METRICS):
                row[f"{metric}_{copy}"] = float(mean[c, ci, mi])
                row[f"{metric}_{copy}_se"] = float(se[c, ci, mi])
        row["dH_via_norm"] = row["dH_total"] - row["dH_direct"]
        row["entropy_clean"], row["loss_clean"] = h0, l0
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------ configuration


def _step_of(path: Path, index: int) -> int:
    """The step a checkpoint records (RLVR metadata.json), else its position in the series."""
    from posttrain_probe.rlvr.run import checkpoint_step

    step = checkpoint_step(path)
    return index if step is None else step


@torch.no_grad()
def _last_token_resid(model, texts: list[str], batch: int = 64) -> torch.Tensor:
    """resid_post of every layer at each text's last token: (N, L, D)."""
    from posttrain_probe.pair import encode

    out = []
    sites = [f"resid_post.{l}" for l in range(model.n_layers)]
    for i in range(0, len(texts), batch):
        ids, mask = encode(model.tokenizer, texts[i : i + batch], padding_side="left")
        cache = model.run(ids, mask, read=sites).cache
        out.append(torch.stack([cache[s][:, -1].float().cpu() for s in sites], dim=1))
    return torch.cat(out)


class _Tracer:
    """Causal tracing of every checkpoint on the start model's facts, noise scale and seeded draws."""

    def __init__(self, start_model, facts: Sequence, cfg: DriftConfig) -> None:
        from posttrain_probe.pair.restore import resolve_kv_reuse
        from posttrain_probe.probes.tracing import clean_answer_probs, embedding_std, prepare_facts, tracing_window

        facts = list(facts)[: cfg.max_facts] if cfg.max_facts else list(facts)
        prepared, skipped = prepare_facts(start_model.tokenizer, facts, max_tokens=start_model.max_context)
        if not prepared:
            reason = skipped[0]["reason"] if skipped else "no facts"
            raise ValueError(f"none of the {len(facts)} facts can be traced ({reason}); pass other facts")
        self.cfg = cfg
        self.window = cfg.tracing_window or tracing_window(start_model.n_layers)
        self.sigma = cfg.noise_scale * embedding_std(start_model, [f.fact.subject for f in prepared])
        _, known = clean_answer_probs(start_model, prepared)
        self.facts = [f for f, k in zip(prepared, known.tolist()) if k] or prepared
        self.info = {
            "n_facts_loaded": len(facts),
            "n_skipped": len(skipped),
            "n_known_by_start": int(known.sum()),
            "n_traced": len(self.facts),
            "facts_used": "known by the start model" if known.any() else "all (the start model knows none)",
            "noise_std": self.sigma,
            "window": self.window,
        }
        self.kv = resolve_kv_reuse(start_model, "auto")
        self.ref: dict[str, torch.Tensor] = {}
        self.map_rows: list[dict] = []
        self.change_rows: list[dict] = []

    def add(self, step: int, model) -> None:
        from posttrain_probe.pair.spans import TOKEN_CLASSES
        from posttrain_probe.probes.tracing import clean_answer_probs, trace_model

        c = self.cfg
        trace = trace_model(
            model,
            self.facts,
            self.sigma,
            c.tracing_samples,
            c.tracing_kinds,
            self.window,
            c.seed,
            self.kv,
            progress=False,
        )
        p, top = clean_answer_probs(model, self.facts)
        for kind in c.tracing_kinds:
            m = mean_class_map(trace.ie[kind], trace.n_tokens, [f.subject for f in self.facts])
            ref = self.ref.setdefault(kind, m)
            for ci, name in enumerate(TOKEN_CLASSES):
                for l in range(m.shape[1]):
                    row = {"step": step, "kind": kind, "token_class": name, "layer": l, "aie": float(m[ci, l])}
                    self.map_rows.append(row)
            change = tracing_map_change(ref, m)
            peak = change.pop("peak_class")
            self.change_rows.append(
                {
                    "step": step,
                    "kind": kind,
                    **change,
                    "peak_token_class": None if peak is None else TOKEN_CLASSES[peak],
                    "p_clean_mean": float(p.mean()),
                    "p_corrupted_mean": float(trace.p_corrupted.mean()),
                    "frac_facts_known": float(top.float().mean()),
                }
            )


def _encode_right(tokenizer, texts: Sequence[str], max_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    from posttrain_probe.pair import encode

    ids, am = encode(tokenizer, list(texts), padding_side="right")
    ids, am = ids[:, :max_tokens], am[:, :max_tokens]
    keep = am.sum(1) >= 2
    if not keep.any():
        raise ValueError("no neuron text has two tokens or more; pass longer texts")
    return ids[keep], am[keep]


class _NeuronAblator:
    """Per checkpoint: its Du-rule entropy neurons, and mean ablation of its set, the start's set and a
    norm-matched random set on fixed evaluation texts (total and direct effects)."""

    def __init__(self, start_model, texts: Sequence[str], cfg: DriftConfig) -> None:
        from posttrain_probe.probes.neurons import split_texts

        ref, evl = split_texts(list(texts), cfg.n_ref, cfg.n_eval, cfg.seed)
        self.cfg = cfg
        self.ref = _encode_right(start_model.tokenizer, ref, cfg.max_tokens)
        self.eval = _encode_right(start_model.tokenizer, evl, cfg.max_tokens)
        self.start_sel: list[int] | None = None
        self.rows: list[dict] = []

    def add(self, step: int, model) -> None:
        from posttrain_probe.probes.neurons.ablate import ablation_effects, reference_means
        from posttrain_probe.probes.neurons.screen import control_sets, iou, screen_arch, select_du

        c, L = self.cfg, model.n_layers
        if not -L <= c.neuron_layer < L:
            raise ValueError(f"neuron_layer {c.neuron_layer} out of range for {L} layers; use 0..{L - 1} or -1")
        layer = c.neuron_layer % L
        screen, _ = screen_arch(model.arch, [layer])
        own = select_du(screen, c.top_frac, c.n_select)
        start = self.start_sel = self.start_sel if self.start_sel is not None else own
        controls = control_sets(screen, own, 1, list(dict.fromkeys(own + start)), c.seed + 2)
        names = ["own_du", "start_du"] + ["control"] * len(controls)
        sets = [own, start] + controls
        means = reference_means(model, *self.ref, [layer], c.batch_size)[layer]
        stats = ablation_effects(model, *self.eval, layer, sets, means, c.batch_rows)
        for row in neuron_effect_rows(step, names, sets, stats):
            row["layer"] = layer
            row["iou_with_start_set"] = iou([int(x) for x in row["neurons"].split()], start)
            self.rows.append(row)


def compare_checkpoints(
    start: str,
    checkpoints: list[str],
    statements: list | None = None,
    harmful: list[str] | None = None,
    harmless: list[str] | None = None,
    cka_texts: list[str] | None = None,
    metrics_jsonl: str | Path | None = None,
    backend: str = "nnsight",
    screen_neurons: bool = True,
    facts: list | None = None,
    neuron_texts: list[str] | None = None,
    config: DriftConfig | None = None,
    device: str | None = None,
    dtype: str | None = None,
):
    """Internal change along a checkpoint series, per checkpoint (step 0 = `start`).

    Directions are differences of class means of last-token residuals (truth: true − false statements; refusal:
    harmful − harmless instructions, each formatted with the start model's chat template when it has one);
    their drift is the cosine to the start model's direction per layer. CKA compares last-token residuals on
    `cka_texts` with the start model's, per layer. With `facts`, every checkpoint is causally traced (tables
    tracing_maps, tracing_change); with `neuron_texts`, entropy-neuron sets are mean-ablated per checkpoint
    (table neuron_effects); `screen_neurons` adds the weight screens' selection overlap. See the module
    docstring for the choices; `config` sets the probe sizes. Every checkpoint must share the start's tokenizer.
    """
    from posttrain_probe.results import RunResult, RunTimer, provenance

    cfg = config or DriftConfig()
    if not checkpoints:
        raise ValueError("no checkpoints given; pass the step_* folders of an RLVR run (or any HF dirs)")
    series = [(0, str(start))] + [(_step_of(Path(c), i + 1), str(c)) for i, c in enumerate(checkpoints)]
    with RunTimer() as timer:
        probes = _Probes(statements, harmful, harmless, cka_texts, facts, neuron_texts, cfg)
        for step, path in series:
            model = load_series_model(path, backend, device, dtype, probes)
            probes.add(step, path, model)
            del model
        tables = probes.tables()
        if screen_neurons:
            tables["neuron_selection_overlap"] = _selection_overlap(series, cfg)
        if metrics_jsonl is not None and Path(metrics_jsonl).exists():
            tables["entropy_curve"] = entropy_curve(metrics_jsonl)
    summary = _summary(series, tables, probes.tracer)
    result = RunResult(
        analysis="checkpoint_drift",
        config={
            "start": str(start),
            "checkpoints": [str(c) for c in checkpoints],
            "backend": backend,
            "device": device,
            "dtype": dtype,
            "n_statements": len(statements or []),
            "n_harmful": len(harmful or []),
            "n_harmless": len(harmless or []),
            "n_cka_texts": len(cka_texts or []),
            "n_facts": len(facts or []),
            "n_neuron_texts": len(neuron_texts or []),
            "screen_neurons": screen_neurons,
            "metrics_jsonl": None if metrics_jsonl is None else str(metrics_jsonl),
            "probes": asdict(cfg),
        },
        summary=summary,
        tables=tables,
        provenance=provenance(
            models=probes.models,
            data=_inputs_provenance(statements, harmful, harmless, cka_texts, facts, neuron_texts),
        ),
        seeds={"tracing_noise": cfg.seed, "neuron_texts_split": cfg.seed, "neuron_control_set": cfg.seed + 2},
        notes=_notes(summary),
    )
    return timer.record_into(result)


def _inputs_provenance(statements, harmful, harmless, cka_texts, facts, neuron_texts) -> dict:
    """sha256 of every probe input (texts joined by newlines; statements with their labels, facts with subject
    and answer); None for an input not given."""
    from posttrain_probe.utils.io import sha256_text

    def h(lines) -> str | None:
        return None if not lines else sha256_text("\n".join(lines))

    return {
        "statements_sha256": h([f"{s.label}\t{s.text}" for s in statements or []]),
        "harmful_sha256": h(harmful),
        "harmless_sha256": h(harmless),
        "cka_texts_sha256": h(cka_texts),
        "facts_sha256": h([f"{f.prompt}\t{f.subject}\t{f.answer}" for f in facts or []]),
        "neuron_texts_sha256": h(neuron_texts),
    }


def load_series_model(path: str, backend: str, device: str | None, dtype: str | None, probes: _Probes):
    """Load one checkpoint of the series; refuse one whose vocabulary does not contain the start's with the same
    ids (a post-trained tokenizer that only adds tokens is accepted, as in `load_pair`)."""
    from posttrain_probe.pair import load_model

    model = load_model(path, backend=backend, device=device, dtype=dtype)
    vocab = model.tokenizer.get_vocab()
    if probes.vocab is None:
        probes.vocab = vocab
    elif any(vocab.get(t) != i for t, i in probes.vocab.items()):
        raise ValueError(f"{path} tokenizes differently from the start model; compare checkpoints of one model")
    return model


class _Probes:
    """Everything measured per checkpoint with the model loaded, relative to the first one added."""

    def __init__(self, statements, harmful, harmless, cka_texts, facts, neuron_texts, cfg: DriftConfig) -> None:
        self.statements, self.harmful, self.harmless = statements, harmful, harmless
        self.cka_texts, self.facts, self.neuron_texts, self.cfg = cka_texts, facts, neuron_texts, cfg
        self.vocab: dict[str, int] | None = None
        self.start_dir: str | None = None
        self.ref: dict[str, torch.Tensor] = {}
        self.weight_rows: list[dict] = []
        self.cka_rows: list[dict] = []
        self.dir_rows: list[dict] = []
        self.tracer: _Tracer | None = None
        self.ablator: _NeuronAblator | None = None
        self.models: dict[str, dict] = {}  # provenance of each checkpoint, by "step_<n>"

    def _features(self, model) -> dict[str, torch.Tensor]:
        from posttrain_probe.pair import format_instruction, resolve_format

        feats: dict[str, torch.Tensor] = {}
        bs = self.cfg.batch_size
        if self.cka_texts:
            feats["cka"] = _last_token_resid(model, list(self.cka_texts), bs)
        if self.statements:
            acts = _last_token_resid(model, [s.text for s in self.statements], bs)
            labels = torch.tensor([s.label for s in self.statements])
            feats["truth"] = torch.stack(
                [diff_in_means(*split_by_label(acts[:, l], labels)) for l in range(acts.shape[1])]
            )
        if self.harmful and self.harmless:
            fmt = resolve_format("auto", model.tokenizer, "post")
            texts = [format_instruction(t, fmt, model.tokenizer) for t in list(self.harmful) + list(self.harmless)]
            acts = _last_token_resid(model, texts, bs)
            labels = torch.tensor([1] * len(self.harmful) + [0] * len(self.harmless))
            feats["refusal"] = torch.stack(
                [diff_in_means(*split_by_label(acts[:, l], labels)) for l in range(acts.shape[1])]
            )
        return feats

    def add(self, step: int, path: str, model) -> None:
        self.models[f"step_{step}"] = dict(model.provenance)
        resolved = model.provenance["resolved"]
        if self.start_dir is None:
            self.start_dir = resolved
        else:
            for module, change in relative_weight_change(self.start_dir, resolved).items():
                self.weight_rows.append({"step": step, "module": module, "relative_change": change})
        feats = self._features(model)
        self.ref = self.ref or feats
        if "cka" in feats:
            for l in range(feats["cka"].shape[1]):
                cka = linear_cka(self.ref["cka"][:, l], feats["cka"][:, l])
                self.cka_rows.append({"step": step, "layer": l, "cka_to_start": cka})
        for name in ("truth", "refusal"):
            for l in range(feats[name].shape[0]) if name in feats else ():
                self.dir_rows.append(
                    {
                        "step": step,
                        "direction": name,
                        "layer": l,
                        "cosine_to_start": cosine(self.ref[name][l], feats[name][l]),
                        "norm": float(feats[name][l].norm()),
                    }
                )
        if self.facts:
            self.tracer = self.tracer or _Tracer(model, self.facts, self.cfg)
            self.tracer.add(step, model)
        if self.neuron_texts:
            self.ablator = self.ablator or _NeuronAblator(model, self.neuron_texts, self.cfg)
            self.ablator.add(step, model)

    def tables(self) -> dict:
        import pandas as pd

        tables = {"weight_change": pd.DataFrame(self.weight_rows, columns=["step", "module", "relative_change"])}
        if self.cka_rows:
            tables["cka"] = pd.DataFrame(self.cka_rows)
        if self.dir_rows:
            tables["direction_drift"] = pd.DataFrame(self.dir_rows)
        if self.tracer is not None:
            tables["tracing_maps"] = pd.DataFrame(self.tracer.map_rows)
            tables["tracing_change"] = pd.DataFrame(self.tracer.change_rows)
        if self.ablator is not None:
            tables["neuron_effects"] = pd.DataFrame(self.ablator.rows)
        return tables


def _selection_overlap(series: list[tuple[int, str]], cfg: DriftConfig):
    from posttrain_probe.probes.neurons import screen_checkpoints, selection_overlap

    screens = screen_checkpoints(
        [p for _, p in series], layer=cfg.neuron_layer, top_frac=cfg.top_frac, n_select=cfg.n_select
    )
    overlap = selection_overlap(screens)
    steps = [s for s, _ in series]
    overlap.insert(0, "step", [steps[int(i)] for i in overlap["checkpoint"]])
    return overlap


def entropy_curve(metrics_jsonl: str | Path):
    """(step, entropy_mean, accuracy) per step of an RLVR run's metrics.jsonl (a torn last line is no row)."""
    import pandas as pd

    from posttrain_probe.rlvr.trainer import read_jsonl

    rows = read_jsonl(metrics_jsonl)
    return pd.DataFrame(
        [{"step": r["step"], "entropy_mean": r.get("entropy_mean"), "accuracy": r.get("accuracy")} for r in rows],
        columns=["step", "entropy_mean", "accuracy"],
    )


def _summary(series: list[tuple[int, str]], tables: dict, tracer: _Tracer | None) -> dict:
    wc = tables["weight_change"]
    last = series[-1][0]
    summary: dict = {
        "n_checkpoints": len(series) - 1,
        "steps": [s for s, _ in series],
        "max_relative_weight_change_last": float(wc[wc.step == last]["relative_change"].max()) if len(wc) else 0.0,
        "module_most_changed_last": str(wc[wc.step == last].sort_values("relative_change").iloc[-1]["module"])
        if len(wc)
        else None,
    }
    if "cka" in tables:
        c = tables["cka"]
        summary["min_cka_last"] = float(c[c.step == last]["cka_to_start"].min())
    if "direction_drift" in tables:
        d = tables["direction_drift"]
        for name in d["direction"].unique():
            summary[f"{name}_direction_min_cosine_last"] = float(
                d[(d.step == last) & (d.direction == name)]["cosine_to_start"].min()
            )
    if tracer is not None:
        t = tables["tracing_change"]
        summary["tracing"] = {
            **tracer.info,
            **{
                f"{r.kind}_last": {
                    "pearson_to_start": r.pearson_to_start,
                    "max_abs_change": r.max_abs_change,
                    "peak": [r.peak_token_class, r.peak_layer],
                }
                for r in t[t.step == last].itertuples()
            },
        }
    if "neuron_effects" in tables:
        n = tables["neuron_effects"]
        own = n[n.set == "own_du"].set_index("step")
        summary["entropy_neurons"] = {
            "entropy_clean_first": float(own["entropy_clean"].iloc[0]),
            "entropy_clean_last": float(own.loc[last, "entropy_clean"]),
            "dH_total_own_set_first": float(own["dH_total"].iloc[0]),
            "dH_total_own_set_last": float(own.loc[last, "dH_total"]),
            "dH_direct_own_set_last": float(own.loc[last, "dH_direct"]),
            "iou_own_set_with_start_last": float(own.loc[last, "iou_with_start_set"]),
        }
    return summary


def _notes(summary: dict) -> list[str]:
    notes = []
    tr = summary.get("tracing")
    if tr and tr["n_known_by_start"] == 0:
        notes.append("the start model answers none of the facts; tracing maps use every traceable fact")
    return notes
