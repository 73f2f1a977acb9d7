"""Speed of the embedded RLVR trainer against TRL's GRPOTrainer and of its sampler against HF `generate`.

Same model, prompts, G and batch for both trainers: a random-init Llama (d 128, 4 layers, d_mlp 512,
word-level vocabulary of ~580, the NOTES.md toy size), 16 prompts × G = 8 completions of at most 16 tokens
per rollout batch, 4 optimizer mini-batches of 32 completions per rollout batch (TRL:
generation_batch_size 128, per_device_train_batch_size 32 → steps_per_generation 4), AdamW, fp32, CPU.
A "step" below is one rollout batch with its 4 optimizer steps. Rollout: our KV-cached sampler vs
`model.generate(do_sample=True, top_k=0, top_p=1)` on the same 128 left-padded prompts.

    python benchmarks/bench_rlvr.py [--steps 5] [--threads 2 1] [--repeats 2] [--out bench.json]

Each thread count runs the two samplers alternately, then the two trainers alternately (`--repeats` times each,
best median kept), so a change in machine load hits both. Floor: the FLOPs of the forwards and backwards no
trainer can skip (`floor_flops`: the rollout's prefill and one forward per generated token, the old-log-prob
forward, and 4 mini-batch forward+backward passes at 3× a forward, with 2·params·tokens per forward plus the
attention terms), divided by this machine's fp32 matmul rate measured at the same thread count (the best of a
square 1024³ product and the model's own MLP shape). Ours also re-scores the batch after the update (the
realized entropy change), one forward that the floor does not count. OMP_WAIT_POLICY defaults to PASSIVE
here (set it to override): on a shared 2-core machine spinning OpenMP threads made 2-thread steps 10× slower.
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

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads its OpenMP runtime

import torch  # noqa: E402

from posttrain_probe.rlvr import RLVRConfig, read_jsonl, train  # noqa: E402
from posttrain_probe.rlvr.sampler import sample  # noqa: E402
from posttrain_probe.rlvr.tasks import arithmetic_reward  # noqa: E402
from posttrain_probe.testing import make_tiny_checkpoint  # noqa: E402

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
    cpu = [time.process_time()]
    run = train(cfg, root / "ours", callbacks=[lambda step, model, row: cpu.append(time.process_time())])
    rows = read_jsonl(run / "metrics.jsonl")[1:]  # the first step warms up
    # CPU seconds of steps 2 .. steps-1 (the last one also writes the final checkpoint)
    cpu_steps = [b - a for a, b in zip(cpu[1:-2], cpu[2:-1])]
    return {
        "step_s_median": statistics.median(r["time_step_s"] for r in rows),
        "step_cpu_s_median": statistics.median(cpu_steps) if cpu_steps else float("nan"),
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
    cpu_times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t, self.c = time.perf_counter(), time.process_time()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter() - self.t)
            cpu_times.append(time.process_time() - self.c)

    tok = AutoTokenizer.from_pretrained(model)
    tok.padding_side = "left"
    out = tempfile.mkdtemp(prefix="trl-bench-")
    args = GRPOConfig(
        output_dir=out, use_cpu=True, report_to=[], save_strategy="no", logging_steps=10**6,
        num_generations=G, generation_batch_size=PROMPTS * G, per_device_train_batch_size=PROMPTS * G // MINIBATCHES,
        max_completion_length=MAX_NEW, max_steps=steps * MINIBATCHES, learning_rate=1e-4, temperature=1.0,
        top_k=0, top_p=1.0, beta=0.0, bf16=False, disable_dropout=True, shuffle_dataset=True, seed=0,
        gradient_checkpointing=False,  # TRL >= 1.0 defaults to True: one more forward per mini-batch; we use none
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
    cpu_batch = [sum(cpu_times[i : i + MINIBATCHES]) for i in range(0, len(cpu_times), MINIBATCHES)][1:]
    return {
        "trl_version": trl.__version__,
        "step_s_median": statistics.median(per_batch),
        "step_cpu_s_median": statistics.median(cpu_batch),
        "steps_timed": len(per_batch),
    }


@torch.no_grad()
def bench_rollout(model_dir: Path, rows: list[dict], reps: int = 4) -> dict:
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


def matmul_rate(d_model: int, d_mlp: int, tokens: int, reps: int = 5) -> dict[str, float]:
    """fp32 matmul FLOP/s at the current thread count: best of `reps` timings of a 1024³ product and of the
    model's (tokens × d) @ (d × d_mlp); `best` is the larger (the stricter floor). `*_per_cpu_s`: FLOPs per
    CPU-second of this process (all threads), which other processes on a shared machine disturb far less."""
    out = {}
    for name, (m, k, n) in {"square_1024": (1024, 1024, 1024), "mlp_shape": (tokens, d_model, d_mlp)}.items():
        a, b = torch.randn(m, k), torch.randn(k, n)
        iters = max(1, int(2e9 // (2 * m * k * n)))
        a @ b
        best, best_cpu = float("inf"), float("inf")
        for _ in range(reps):
            t, c = time.perf_counter(), time.process_time()
            for _ in range(iters):
                a @ b
            best = min(best, (time.perf_counter() - t) / iters)
            best_cpu = min(best_cpu, (time.process_time() - c) / iters)
        out[name] = 2 * m * k * n / best
        out[f"{name}_per_cpu_s"] = 2 * m * k * n / best_cpu
    out["best"] = max(out["square_1024"], out["mlp_shape"])
    out["best_per_cpu_s"] = max(out["square_1024_per_cpu_s"], out["mlp_shape_per_cpu_s"])
    return out


def forward_flops(cfg: dict, body_tokens: float, head_tokens: float, mean_context: float) -> float:
    """FLOPs of one forward: 2·(decoder matmul params)·body_tokens + 2·(head params)·head_tokens, plus the
    attention products QKᵀ and AV (2·2·n_heads·head_dim·context per token and layer)."""
    d, layers, d_mlp, vocab = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["intermediate_size"], cfg["vocab_size"]
    heads, kv_heads = cfg["num_attention_heads"], cfg.get("num_key_value_heads") or cfg["num_attention_heads"]
    head_dim = cfg.get("head_dim") or d // heads
    per_layer = d * heads * head_dim * 2 + d * kv_heads * head_dim * 2 + 3 * d * d_mlp  # q, o, k, v, gate/up/down
    attn = 4 * heads * head_dim * mean_context * layers
    return 2 * per_layer * layers * body_tokens + attn * body_tokens + 2 * d * vocab * head_tokens


def floor_flops(cfg: dict, prompt_len: float, response_len: float, sequences: int) -> dict[str, float]:
    """The unavoidable FLOPs of one step (see the module docstring) for `sequences` rows of `prompt_len`
    prompt and `response_len` (mean) generated tokens, without padding."""
    body = sequences * (prompt_len + response_len - 1)  # the last generated token is never fed back
    head = sequences * response_len  # one distribution per generated token
    ctx = (prompt_len + response_len) / 2
    one = forward_flops(cfg, body, head, ctx)
    parts = {"rollout": one, "old_logprob_forward": one, "minibatch_fwd_bwd": 3 * one}
    parts["total"] = sum(parts.values())
    parts["rescore_forward_not_in_floor"] = one
    return parts


def bench_threads(threads: int, model: Path, data: Path, rows: list[dict], root: Path, args) -> dict:
    torch.set_num_threads(threads)
    result = {"torch_threads": torch.get_num_threads(), "load_average_before": os.getloadavg()}
    result["rollout"] = r = bench_rollout(model, rows, args.rollout_reps)
    # time per generated token, ours over HF (same prompts; both sample ~the same number of tokens)
    result["rollout_time_ratio_ours_over_hf"] = r["hf_generate_tokens_per_s"] / r["ours_tokens_per_s"]
    if args.rollout_only:
        return result
    cfg = json.loads((model / "config.json").read_text())
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model)
    prompt_len = statistics.mean(len(tok(r["question"])["input_ids"]) for r in rows)  # 14: all the same length
    mlp_rows = PROMPTS * G // MINIBATCHES * round(prompt_len + MAX_NEW)
    ours, trl_runs, rates = [], [], []
    for rep in range(args.repeats):  # alternate the two trainers so that a change in machine load hits both
        rates.append(matmul_rate(cfg["hidden_size"], cfg["intermediate_size"], mlp_rows))
        ours.append(bench_ours(model, data, root / f"t{threads}-rep{rep}", args.steps))
        rates.append(matmul_rate(cfg["hidden_size"], cfg["intermediate_size"], mlp_rows))
        trl_runs.append(bench_trl(model, rows, args.steps))
    result["ours"] = min(ours, key=lambda x: x["step_s_median"])
    result["ours"]["all_step_s_medians"] = [x["step_s_median"] for x in ours]
    result["trl"] = trl_runs[0]
    if "step_s_median" in trl_runs[0]:
        result["trl"] = min(trl_runs, key=lambda x: x["step_s_median"])
        result["trl"]["all_step_s_medians"] = [x["step_s_median"] for x in trl_runs]
        result["step_time_ratio_ours_over_trl"] = result["ours"]["step_s_median"] / result["trl"]["step_s_median"]
    flops = floor_flops(cfg, prompt_len, result["ours"]["response_len_mean"], PROMPTS * G)
    rate = max(rates, key=lambda r: r["best"])  # measured between the runs; the fastest gives the strictest floor
    rate_cpu = max(r["best_per_cpu_s"] for r in rates)
    floor_s, floor_cpu_s = flops["total"] / rate["best"], flops["total"] / rate_cpu
    result["floor"] = {"flops": flops, "matmul_flop_per_s": rate, "step_s": floor_s, "step_cpu_s": floor_cpu_s}
    result["ours_over_floor"] = result["ours"]["step_s_median"] / floor_s
    result["ours_over_floor_cpu"] = result["ours"]["step_cpu_s_median"] / floor_cpu_s
    if "step_s_median" in result["trl"]:
        result["trl_over_floor"] = result["trl"]["step_s_median"] / floor_s
        result["trl_over_floor_cpu"] = result["trl"]["step_cpu_s_median"] / floor_cpu_s
        cpu_ratio = result["ours"]["step_cpu_s_median"] / result["trl"]["step_cpu_s_median"]
        result["step_cpu_ratio_ours_over_trl"] = cpu_ratio
    result["load_average_after"] = os.getloadavg()
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=5, help="rollout batches per trainer (the first is warm-up)")
    ap.add_argument("--threads", type=int, nargs="+", default=[2, 1], help="torch thread counts, each run in turn")
    ap.add_argument("--repeats", type=int, default=2, help="alternating repetitions of the two trainers")
    ap.add_argument("--rollout-reps", type=int, default=4, help="alternating repetitions of the two samplers")
    ap.add_argument("--rollout-only", action="store_true", help="only the sampler vs HF generate")
    ap.add_argument("--out", type=Path, default=None, help="write the numbers as JSON here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model, data, rows = make_world(root)
        result = {
            "machine": {
                "platform": platform.platform(),
                "processor": platform.processor() or platform.machine(),
                "cpu_count": os.cpu_count(),
                "torch": torch.__version__,
                "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            },
            "setup": {"prompts": PROMPTS, "G": G, "max_new_tokens": MAX_NEW, "minibatches": MINIBATCHES},
            "by_threads": {str(t): bench_threads(t, model, data, rows, root, args) for t in args.threads},
        }
    text = json.dumps(result, indent=2)
    print(text)
    for t, r in result["by_threads"].items():
        line = f"threads {t}: sampler/HF generate time {r['rollout_time_ratio_ours_over_hf']:.2f}"
        if "ours" in r:
            line += f"; step ours {r['ours']['step_s_median']:.2f} s, floor {r['floor']['step_s']:.2f} s"
            line += f" (ours/floor {r['ours_over_floor']:.2f}"
            if "trl_over_floor" in r:
                line += f", TRL {r['trl']['step_s_median']:.2f} s, TRL/floor {r['trl_over_floor']:.2f}"
                line += f", ours/TRL {r['step_time_ratio_ours_over_trl']:.2f}"
            line += ")"
        if "step_cpu_ratio_ours_over_trl" in r:
            line += f"\n  CPU-seconds per step (less disturbed by load): ours {r['ours']['step_cpu_s_median']:.2f}, "
            line += f"TRL {r['trl']['step_cpu_s_median']:.2f}, floor {r['floor']['step_cpu_s']:.2f}; ours/TRL "
            line += f"{r['step_cpu_ratio_ours_over_trl']:.2f}, ours/floor {r['ours_over_floor_cpu']:.2f}, "
            line += f"TRL/floor {r['trl_over_floor_cpu']:.2f}"
        print(line)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
