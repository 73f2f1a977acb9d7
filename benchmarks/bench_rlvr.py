"""Speed of the embedded RLVR trainer against TRL's GRPOTrainer and of its sampler against HF `generate`.

Same model, prompts, G and batch for both trainers: a random-init Llama (d 128, 4 layers, d_mlp 512,
word-level vocabulary of ~580, the NOTES.md toy size), 16 prompts × G = 8 completions of at most 16 tokens
per rollout batch, 4 optimizer mini-batches of 32 completions per rollout batch (TRL:
generation_batch_size 128, per_device_train_batch_size 32 → steps_per_generation 4), AdamW, fp32, CPU.
A "step" below is one rollout batch with its 4 optimizer steps. Rollout: our KV-cached sampler vs
`model.generate(do_sample=True, top_k=0, top_p=1)` on the same 128 left-padded prompts.

    python benchmarks/bench_rlvr.py [--steps 8] [--threads 2] [--repeats 2] [--out bench.json]

TRL is needed only here (`pip install trl`); without it the TRL row is skipped with a note.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch

from posttrain_probe.rlvr import RLVRConfig, read_jsonl, train
from posttrain_probe.rlvr.sampler import sample
from posttrain_probe.rlvr.tasks import arithmetic_reward
from posttrain_probe.testing import make_tiny_checkpoint

PROMPTS, G, MAX_NEW, MINIBATCHES = 16, 8, 16, 4


def make_world(root: Path) -> tuple[Path, Path, list[dict]]:
    model = make_tiny_checkpoint("llama", root / "model", d_model=128, n_layers=4, d_mlp=512, vocab_extra=500)
    rng = random.Random(0)
    rows = []
    for _ in range(400):
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        q = "User : how do I make " + " ".join(str(a)) + " and " + " ".join(str(b)) + " ? Assistant :"
        rows.append({"question": q, "answer": str(a + b)})
    data = root / "arith.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return model, data, rows


def bench_ours(model: Path, data: Path, root: Path, steps: int) -> dict:
    cfg = RLVRConfig(
        model=str(model), data=str(data), task="arithmetic", steps=steps, eval_every=0, checkpoint_every=0,
        prompts_per_step=PROMPTS, group_size=G, max_new_tokens=MAX_NEW, minibatches=MINIBATCHES, n_eval=16,
        progress=False, prompt_format="raw",
    )  # fmt: skip
    run = train(cfg, root / "ours")
    rows = read_jsonl(run / "metrics.jsonl")[1:]  # the first step warms up
    return {
        "step_s_median": statistics.median(r["time_step_s"] for r in rows),
        "rollout_s_median": statistics.median(r["time_rollout_s"] for r in rows),
        "response_len_mean": statistics.mean(r["response_len_mean"] for r in rows),
        "steps_timed": len(rows),
    }


def bench_trl(model: Path, rows: list[dict], steps: int) -> dict:
    try:
        import trl
        from datasets import Dataset
        from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
        from trl import GRPOConfig, GRPOTrainer
    except ImportError as e:
        return {"skipped": f"TRL is not installed ({e}); pip install trl"}

    answers = {r["question"]: r["answer"] for r in rows}

    def reward(prompts, completions, **kw):
        return [arithmetic_reward(c, answers[p]) for p, c in zip(prompts, completions)]

    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter() - self.t)

    tok = AutoTokenizer.from_pretrained(model)
    tok.padding_side = "left"
    out = tempfile.mkdtemp(prefix="trl-bench-")
    args = GRPOConfig(
        output_dir=out, use_cpu=True, report_to=[], save_strategy="no", logging_steps=10**6,
        num_generations=G, generation_batch_size=PROMPTS * G, per_device_train_batch_size=PROMPTS * G // MINIBATCHES,
        max_completion_length=MAX_NEW, max_steps=steps * MINIBATCHES, learning_rate=1e-4, temperature=1.0,
        top_k=0, top_p=1.0, beta=0.0, bf16=False, disable_dropout=True, shuffle_dataset=True, seed=0,
    )  # fmt: skip
    trainer = GRPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(model),
        reward_funcs=reward,
        args=args,
        train_dataset=Dataset.from_list([{"prompt": r["question"]} for r in rows]),
        processing_class=tok,
        callbacks=[Clock()],
    )
    trainer.train()
    # one rollout batch = MINIBATCHES optimizer steps; the first generates (and warms up)
    per_batch = [sum(times[i : i + MINIBATCHES]) for i in range(0, len(times), MINIBATCHES)][1:]
    median = statistics.median(per_batch)
    return {"trl_version": trl.__version__, "step_s_median": median, "steps_timed": len(per_batch)}


@torch.no_grad()
def bench_rollout(model_dir: Path, rows: list[dict], reps: int = 8) -> dict:
    """Alternate the two samplers `reps` times; report each one's best and median tokens/s (the best is the
    statistic least disturbed by other processes on a shared machine)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.padding_side = "left"
    texts = [r["question"] for r in rows[: PROMPTS * G]]
    enc = tok(texts, return_tensors="pt", padding=True)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    eos, pad = tok.eos_token_id, tok.pad_token_id
    ours, hf = [], []
    for rep in range(reps + 1):
        t = time.perf_counter()
        r = sample(model, ids, mask, MAX_NEW, [eos], pad, 1.0, torch.Generator().manual_seed(rep))
        n_ours = int(r.response_mask.sum())
        dt_ours = time.perf_counter() - t
        t = time.perf_counter()
        out = model.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=MAX_NEW, do_sample=True, top_k=0, top_p=1.0,
            temperature=1.0, eos_token_id=eos, pad_token_id=pad,
        )  # fmt: skip
        dt_hf = time.perf_counter() - t
        gen = out[:, ids.shape[1] :]
        n_hf = int(((gen != pad) | (gen == eos)).sum())
        if rep:  # the first repetition warms up
            ours.append(n_ours / dt_ours)
            hf.append(n_hf / dt_hf)
    return {
        "batch": len(texts),
        "ours_tokens_per_s": max(ours),
        "hf_generate_tokens_per_s": max(hf),
        "ours_tokens_per_s_median": statistics.median(ours),
        "hf_generate_tokens_per_s_median": statistics.median(hf),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=8, help="rollout batches per trainer (the first is warm-up)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2, help="alternating repetitions of the two trainers")
    ap.add_argument("--rollout-only", action="store_true", help="only the sampler vs HF generate")
    ap.add_argument("--out", type=Path, default=None, help="write the numbers as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model, data, rows = make_world(root)
        result = {
            "machine": {
                "platform": platform.platform(),
                "processor": platform.processor() or platform.machine(),
                "cpu_count": os.cpu_count(),
                "torch_threads": torch.get_num_threads(),
                "torch": torch.__version__,
            },
            "setup": {"prompts": PROMPTS, "G": G, "max_new_tokens": MAX_NEW, "minibatches": MINIBATCHES},
            "load_average_before": os.getloadavg(),
            "rollout": bench_rollout(model, rows),
        }
        # alternate the two trainers so that a change in machine load hits both; keep each one's best
        ours, trl_runs = [], []
        for rep in range(args.repeats if not args.rollout_only else 0):
            ours.append(bench_ours(model, data, root / f"rep{rep}", args.steps))
            trl_runs.append(bench_trl(model, rows, args.steps))
        if ours:
            result["ours"] = min(ours, key=lambda r: r["step_s_median"])
            result["ours"]["all_step_s_medians"] = [r["step_s_median"] for r in ours]
            result["trl"] = trl_runs[0]
        if trl_runs and "step_s_median" in trl_runs[0]:
            result["trl"] = min(trl_runs, key=lambda r: r["step_s_median"])
            result["trl"]["all_step_s_medians"] = [r["step_s_median"] for r in trl_runs]
            result["step_time_ratio_ours_over_trl"] = result["ours"]["step_s_median"] / result["trl"]["step_s_median"]
        result["load_average_after"] = os.getloadavg()
    r = result["rollout"]
    result["rollout_ratio_ours_over_hf"] = r["ours_tokens_per_s"] / r["hf_generate_tokens_per_s"]
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
