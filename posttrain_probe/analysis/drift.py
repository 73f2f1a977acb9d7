"""Internal change across a checkpoint series (base → checkpoints → final), all lined up by training step.

Pure pieces: relative weight change per module read straight from safetensors (no model forward), linear CKA
between two activation matrices, cosine drift of difference-in-means directions. `compare_checkpoints` composes
them with the probes and writes one `RunResult`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open


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


def diff_in_means(acts: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """mean(acts | label 1) − mean(acts | label 0); acts (N, D), labels (N,)."""
    labels = labels.bool()
    if labels.all() or (~labels).all():
        raise ValueError("difference in means needs both classes; pass labelled examples of each")
    return acts[labels].double().mean(0) - acts[~labels].double().mean(0)


def cosine(u: torch.Tensor, v: torch.Tensor) -> float:
    u, v = u.double().flatten(), v.double().flatten()
    return float(u @ v / (u.norm() * v.norm()).clamp_min(1e-30))


# ------------------------------------------------------------------------------------------ orchestration


def _step_of(path: Path, index: int) -> int:
    import json

    meta = Path(path) / "metadata.json"
    if meta.exists():
        return int(json.loads(meta.read_text()).get("step", index))
    return index


@torch.no_grad()
def _last_token_resid(model, texts: list[str], batch: int = 64) -> torch.Tensor:
    """resid_post of every layer at each text's last token: (N, L, D)."""
    from ..pair import encode

    out = []
    sites = [f"resid_post.{l}" for l in range(model.n_layers)]
    for i in range(0, len(texts), batch):
        ids, mask = encode(model.tokenizer, texts[i : i + batch], padding_side="left")
        cache = model.run(ids, mask, read=sites).cache
        out.append(torch.stack([cache[s][:, -1].float().cpu() for s in sites], dim=1))
    return torch.cat(out)


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
):
    """Internal change along a checkpoint series, per checkpoint (step 0 = `start`).

    Directions are differences of class means of last-token residuals (truth: true − false statements; refusal:
    harmful − harmless instructions, each formatted with the start model's chat template when it has one);
    their drift is the cosine to the start model's direction per layer. CKA compares last-token residuals on
    `cka_texts` with the start model's, per layer.
    """
    import pandas as pd

    from ..pair import format_instruction, load_model, resolve_format
    from ..results import RunResult

    if not checkpoints:
        raise ValueError("no checkpoints given; pass the step_* folders of an RLVR run (or any HF dirs)")
    series = [(0, start)] + [(_step_of(Path(c), i + 1), c) for i, c in enumerate(checkpoints)]
    weight_rows, cka_rows, dir_rows = [], [], []
    ref: dict[str, torch.Tensor] = {}
    for step, path in series:
        model = load_model(path, backend=backend)
        if step > 0 or path != start:
            for module, change in relative_weight_change(series[0][1], path).items():
                weight_rows.append({"step": step, "module": module, "relative_change": change})
        feats: dict[str, torch.Tensor] = {}
        if cka_texts:
            feats["cka"] = _last_token_resid(model, cka_texts)
        if statements:
            acts = _last_token_resid(model, [s.text for s in statements])
            labels = torch.tensor([s.label for s in statements])
            feats["truth"] = torch.stack([diff_in_means(acts[:, l], labels) for l in range(acts.shape[1])])
        if harmful and harmless:
            fmt = resolve_format("auto", model.tokenizer, "post")
            texts = [format_instruction(t, fmt, model.tokenizer) for t in harmful + harmless]
            acts = _last_token_resid(model, texts)
            labels = torch.tensor([1] * len(harmful) + [0] * len(harmless))
            feats["refusal"] = torch.stack([diff_in_means(acts[:, l], labels) for l in range(acts.shape[1])])
        if not ref:
            ref = feats
        if "cka" in feats:
            for l in range(feats["cka"].shape[1]):
                cka_rows.append(
                    {"step": step, "layer": l, "cka_to_start": linear_cka(ref["cka"][:, l], feats["cka"][:, l])}
                )
        for name in ("truth", "refusal"):
            if name in feats:
                for l in range(feats[name].shape[0]):
                    dir_rows.append(
                        {
                            "step": step,
                            "direction": name,
                            "layer": l,
                            "cosine_to_start": cosine(ref[name][l], feats[name][l]),
                            "norm": float(feats[name][l].norm()),
                        }
                    )
        del model
    tables = {"weight_change": pd.DataFrame(weight_rows)}
    if cka_rows:
        tables["cka"] = pd.DataFrame(cka_rows)
    if dir_rows:
        tables["direction_drift"] = pd.DataFrame(dir_rows)
    if screen_neurons:
        from ..probes.neurons import screen_checkpoints, selection_overlap

        screens = screen_checkpoints([p for _, p in series])
        overlap = selection_overlap(screens)
        steps = [s for s, _ in series]
        overlap.insert(0, "step", [steps[int(i)] for i in overlap["checkpoint"]])
        tables["neuron_selection_overlap"] = overlap
    if metrics_jsonl is not None and Path(metrics_jsonl).exists():
        import json

        rows = [json.loads(x) for x in Path(metrics_jsonl).read_text().splitlines() if x.strip()]
        tables["entropy_curve"] = pd.DataFrame(
            [{"step": r["step"], "entropy_mean": r.get("entropy_mean"), "accuracy": r.get("accuracy")} for r in rows]
        )
    wc = tables["weight_change"]
    last = series[-1][0]
    summary = {
        "n_checkpoints": len(checkpoints),
        "steps": [s for s, _ in series],
        "max_relative_weight_change_last": float(wc[wc.step == last]["relative_change"].max()) if len(wc) else 0.0,
        "module_most_changed_last": str(wc[wc.step == last].sort_values("relative_change").iloc[-1]["module"])
        if len(wc)
        else None,
    }
    if cka_rows:
        c = tables["cka"]
        summary["min_cka_last"] = float(c[c.step == last]["cka_to_start"].min())
    if dir_rows:
        d = tables["direction_drift"]
        for name in d["direction"].unique():
            summary[f"{name}_direction_min_cosine_last"] = float(
                d[(d.step == last) & (d.direction == name)]["cosine_to_start"].min()
            )
    return RunResult(
        analysis="checkpoint_drift",
        config={
            "start": str(start),
            "checkpoints": [str(c) for c in checkpoints],
            "backend": backend,
            "n_statements": len(statements or []),
            "n_harmful": len(harmful or []),
            "n_harmless": len(harmless or []),
            "n_cka_texts": len(cka_texts or []),
        },
        summary=summary,
        tables=tables,
    )
