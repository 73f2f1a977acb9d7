"""Speed of the embedded RLVR trainer against TRL's GRPOTrainer and of its sampler against HF `generate`.

Same model, prompts, G and batch for both trainers. `--shape toy` (default): a random-init Llama (d 128, 4 layers,
d_mlp 512, word-level vocabulary of ~580, the NOTES.md toy size), 16 prompts × G = 8 completions of at most 16
tokens per rollout batch, 4 optimizer mini-batches of 32 completions per rollout batch (TRL:
generation_batch_size 128, per_device_train_batch_size 32 → steps_per_generation 4), AdamW, fp32, CPU.
`--shape gpt2-small` (GPT-2 small: d 768, 12 layers, vocabulary 50,257; 8 prompts × G = 4, 8 new tokens) and
`--shape large-vocab` (Qwen2-0.5B's shape: d 896, 24 layers, vocabulary 151,936; 4 prompts × G = 4, 8 new tokens)
are random-init checkpoints of real shapes (`posttrain_probe.testing.make_shaped_checkpoint`), smaller batches so
that a run stays within minutes; `--prompts/--group/--max-new/--minibatches/--layers` override a shape's settings.
A "step" below is one rollout batch with its optimizer steps. Rollout: our KV-cached sampler vs
`model.generate(do_sample=True, top_k=0, top_p=1)` on the same left-padded prompts, twice: the trainer's batch
(each prompt repeated G times; our sampler prefills each distinct prompt once) and as many distinct prompts.

    python benchmarks/bench_rlvr.py [--shape toy] [--steps 5] [--threads 2 1] [--repeats 2] [--out bench.json]
        [--minibatch-split rows|groups] [--sample-ahead] [--micro N]

`--sample-ahead` runs ours at 2 threads as two threads of work with one torch thread each (`RLVRConfig.sample_ahead`:
the next step's sampling beside this step's re-scoring, and micro-batches two at a time, so give `--micro` half a
mini-batch) instead of 2 intra-op threads; TRL keeps its 2 threads.

Each thread count runs the two samplers alternately, then the two trainers alternately (`--repeats` times each,
best median kept), so a change in machine load hits both. Floor: the FLOPs of the forwards and backwards no
trainer can skip (`floor_flops`: the rollout's prefill of each distinct prompt once and one forward per generated
token, and the mini-batch forward+backward passes at 3× a forward over each distinct prompt once plus every response
token, with 2·params·tokens per forward (params: every matrix of the decoder blocks, and the output head at the
positions that predict a generated token) plus the attention terms), divided by this machine's fp32 matmul rate
measured at the same thread count (the best of a square 1024³ product and the model's own MLP shape). Not in the
floor, because a trainer can skip them: the old-log-prob forward (ours takes the sampler's own log-probs on the CPU
at float32) and a prompt's repeats in the training forwards (ours runs each distinct prompt of a micro-batch once;
with `--minibatch-split groups` every mini-batch holds whole groups, so each prompt runs once per step, the floor's
count). Ours also re-scores the batch after the update (the realized entropy change), one forward that the floor
does not count. OMP_WAIT_POLICY defaults to PASSIVE here (set it to override): on a shared 2-core
machine spinning OpenMP threads made 2-thread steps 10× slower.
Both trainers run with glibc's malloc keeping freed memory for reuse (`posttrain_probe.utils.memory`; ours sets it
when a run starts, so it is set here before either runs: TRL, in the same process, gets the same allocator);
`--release-freed-memory` runs both under the default allocator instead.
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
from dataclasses import asdict, dataclass, replace
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads its OpenMP runtime

import torch  # noqa: E402

from posttrain_probe.rlvr import RLVRConfig, read_jsonl, train  # noqa: E402
from posttrain_probe.rlvr.sampler import sample  # noqa: E402
from posttrain_probe.rlvr.tasks import arithmetic_reward  # noqa: E402
from posttrain_probe.testing import SHAPES, make_shaped_checkpoint, make_tiny_checkpoint  # noqa: E402
from posttrain_probe.utils.memory import keep_freed_memory  # noqa: E402


@dataclass(frozen=True)
class Setup:
    """One rollout batch: `prompts` × `group` completions of at most `max_new` tokens, `minibatches` updates."""

    prompts: int
    group: int
    max_new: int
    minibatches: int

    @property
    def sequences(self) -> int:
        return self.prompts * self.group


SETUPS = {
    "toy": Setup(prompts=16, group=8, max_new=16, minibatches=4),
    "gpt2-small": Setup(prompts=8, group=4, max_new=8, minibatches=4),
    "large-vocab": Setup(prompts=4, group=4, max_new=8, minibatches=4),
}


def make_world(root: Path, shape: str = "toy", layers: int | None = None) -> tuple[Path, Path, list[dict]]:
    if shape == "toy":
        model = make_tiny_checkpoint("llama", root / "model", d_model=128, n_layers=layers or 4, d_mlp=512,
                                     vocab_extra=500)  # fmt: skip
    else:
        model = make_shaped_checkpoint(shape, root / "model", n_layers=layers)
    rng = random.Random(0)
    rows = []
    for _ in range(400):
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        q = "User : how do I make " + " ".join(str(a)) + " and " + " ".join(str(b)) + " ? Assistant :"
        rows.append({"question": q, "answer": str(a + b)})
    data = root / "arith.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return model, data, rows


def bench_ours(
    model: Path,
    data: Path,
    root: Path,
    steps: int,
    setup: Setup,
    split: str = "rows",
    ahead: bool = False,
    micro: int | None = None,
    keep: bool = True,
    pack: bool = True,
) -> dict:
    cfg = RLVRConfig(
        model=str(model), data=str(data), task="arithmetic", steps=steps, eval_every=0, checkpoint_every=0,
        prompts_per_step=setup.prompts, group_size=setup.group, max_new_tokens=setup.max_new,
        minibatches=setup.minibatches, n_eval=16, progress=False, prompt_format="raw", minibatch_split=split,
        sample_ahead=ahead, micro_batch_size=micro, keep_freed_memory=keep, pack_rows=pack,
    )  # fmt: skip
    cpu = [time.process_time()]
    threads = torch.get_num_threads()
    try:
        run = train(cfg, root / "ours", callbacks=[lambda step, model, row: cpu.append(time.process_time())])
    finally:
        torch.set_num_threads(threads)  # sample_ahead set one torch thread
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


def bench_trl(model: Path, rows: list[dict], steps: int, setup: Setup) -> dict:
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
        num_generations=setup.group, generation_batch_size=setup.sequences,
        per_device_train_batch_size=setup.sequences // setup.minibatches, max_completion_length=setup.max_new,
        max_steps=steps * setup.minibatches, learning_rate=1e-4, temperature=1.0,
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
    # one rollout batch = `minibatches` optimizer steps; the first generates (and warms up)
    mb = setup.minibatches
    per_batch = [sum(times[i : i + mb]) for i in range(0, len(times), mb)][1:]
    cpu_batch = [sum(cpu_times[i : i + mb]) for i in range(0, len(cpu_times), mb)][1:]
    return {
        "trl_version": trl.__version__,
        "step_s_median": statistics.median(per_batch),
        "step_cpu_s_median": statistics.median(cpu_batch),
        "steps_timed": len(per_batch),
    }


@torch.no_grad()
def bench_rollout(model_dir: Path, rows: list[dict], setup: Setup, reps: int = 4) -> dict:
    """Alternate the two samplers `reps` times on the trainer's batch (`setup.prompts` prompts, each repeated
    `setup.group` times) and on as many distinct prompts; report each one's best and median tokens/s (the best is
    the statistic least disturbed by other processes on a shared machine)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.padding_side = "left"
    batches = {
        "grouped": [r["question"] for r in rows[: setup.prompts] for _ in range(setup.group)],
        "distinct": [r["question"] for r in rows[: setup.sequences]],
    }
    eos, pad = tok.eos_token_id, tok.pad_token_id
    out: dict = {"batch": setup.sequences}
    for name, texts in batches.items():
        enc = tok(texts, return_tensors="pt", padding=True)
        ids, mask = enc["input_ids"], enc["attention_mask"]
        ours, hf, lengths = [], [], []
        for rep in range(reps + 1):
            t = time.perf_counter()
            r = sample(model, ids, mask, setup.max_new, [eos], pad, 1.0, torch.Generator().manual_seed(rep))
            n_ours = int(r.response_mask.sum())
            dt_ours = time.perf_counter() - t
            t = time.perf_counter()
            gen = model.generate(
                input_ids=ids, attention_mask=mask, max_new_tokens=setup.max_new, do_sample=True, top_k=0,
                top_p=1.0, temperature=1.0, eos_token_id=eos, pad_token_id=pad,
            )[:, ids.shape[1] :]  # fmt: skip
            dt_hf = time.perf_counter() - t
            n_hf = int(((gen != pad) | (gen == eos)).sum())
            if rep:  # the first repetition warms up
                ours.append(n_ours / dt_ours)
                hf.append(n_hf / dt_hf)
                lengths.append(n_ours / len(texts))
        out[name] = {
            "ours_tokens_per_s": max(ours),
            "hf_generate_tokens_per_s": max(hf),
            "ours_tokens_per_s_median": statistics.median(ours),
            "hf_generate_tokens_per_s_median": statistics.median(hf),
            "ours_s_per_batch": statistics.mean(lengths) * len(texts) / max(ours),
            "response_len_mean": statistics.mean(lengths),
            # time per generated token, ours over HF (same prompts; both sample ~the same number of tokens)
            "time_ratio_ours_over_hf": max(hf) / max(ours),
        }
    return out


def matmul_params(model_dir: Path) -> dict[str, int]:
    """Weights that multiply every token: the 2-D matrices of the decoder blocks (embedding tables excluded, they
    are lookups) and the output head; for the floor's 2·params·tokens."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tables = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    body = sum(p.numel() for p in model.get_decoder().parameters() if p.ndim == 2 and id(p) not in tables)
    return {"body": body, "head": model.get_output_embeddings().weight.numel()}


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


def forward_flops(arch: dict, body_tokens: float, head_tokens: float, mean_context: float) -> float:
    """FLOPs of one forward: 2·(decoder matmul params)·body_tokens + 2·(head params)·head_tokens, plus the
    attention products QKᵀ and AV (2·2·n_heads·head_dim·context per token and layer)."""
    attn = 4 * arch["heads"] * arch["head_dim"] * mean_context * arch["layers"]
    return 2 * arch["body"] * body_tokens + attn * body_tokens + 2 * arch["head"] * head_tokens


def floor_flops(arch: dict, prompt_len: float, response_len: float, sequences: int, prompts: int) -> dict[str, float]:
    """The unavoidable FLOPs of one step (see the module docstring) for `sequences` rows of `prompt_len`
    prompt and `response_len` (mean) generated tokens, without padding, `prompts` distinct prompts: the rollout
    (prefill of each distinct prompt once, then one forward per generated token) and the mini-batch forward+backward
    passes (3× a forward) over each distinct prompt once and every response token. The old-log-prob forward is not
    in the floor (the sampler's own log-probs serve), nor are a prompt's repeats in the training forwards; both are
    reported (`*_not_in_floor`), as is the re-scoring forward that only ours runs (the realized entropy change)."""
    body = prompts * prompt_len + sequences * (response_len - 1)  # the last generated token is never fed back
    head = sequences * response_len  # one distribution per generated token
    ctx = (prompt_len + response_len) / 2
    shared = forward_flops(arch, body, head, ctx)
    repeated = forward_flops(arch, sequences * (prompt_len + response_len - 1), head, ctx)
    prefill = forward_flops(arch, prompts * prompt_len, 0, prompt_len / 2)
    decode = forward_flops(arch, sequences * (response_len - 1), head, prompt_len + response_len / 2)
    parts = {"rollout": prefill + decode, "minibatch_fwd_bwd": 3 * shared}
    parts["total"] = sum(parts.values())
    parts["old_logprob_forward_not_in_floor"] = repeated
    parts["prompt_repeats_in_fwd_bwd_not_in_floor"] = 3 * (repeated - shared)
    parts["rescore_forward_not_in_floor"] = shared
    return parts


def architecture(model_dir: Path) -> dict:
    """What the floor needs of the model: matmul params, layers, heads and head size, width and MLP width."""
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(model_dir)
    heads = cfg.num_attention_heads
    d_mlp = getattr(cfg, "intermediate_size", None) or getattr(cfg, "n_inner", None) or 4 * cfg.hidden_size
    return {
        **matmul_params(model_dir),
        "layers": cfg.num_hidden_layers,
        "heads": heads,
        "head_dim": getattr(cfg, "head_dim", None) or cfg.hidden_size // heads,
        "d_model": cfg.hidden_size,
        "d_mlp": d_mlp,
        "vocab": cfg.vocab_size,
    }


def bench_threads(threads: int, model: Path, data: Path, rows: list[dict], root: Path, setup: Setup, args) -> dict:
    torch.set_num_threads(threads)
    result = {"torch_threads": torch.get_num_threads(), "load_average_before": os.getloadavg()}
    result["rollout"] = r = bench_rollout(model, rows, setup, args.rollout_reps)
    result["rollout_time_ratio_ours_over_hf"] = r["grouped"]["time_ratio_ours_over_hf"]
    result["rollout_time_ratio_ours_over_hf_distinct"] = r["distinct"]["time_ratio_ours_over_hf"]
    arch = architecture(model)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model)
    prompt_len = statistics.mean(len(tok(r["question"])["input_ids"]) for r in rows)  # 14: all the same length
    mlp_rows = setup.sequences // setup.minibatches * round(prompt_len + setup.max_new)
    rates = [matmul_rate(arch["d_model"], arch["d_mlp"], mlp_rows)]
    roll = floor_flops(arch, prompt_len, r["grouped"]["response_len_mean"], setup.sequences, setup.prompts)
    result["rollout_floor_s"] = roll["rollout"] / rates[0]["best"]
    result["rollout_ours_over_floor"] = r["grouped"]["ours_s_per_batch"] / result["rollout_floor_s"]
    if args.rollout_only:
        return result
    ours, trl_runs = [], []
    for rep in range(args.repeats):  # alternate the two trainers so that a change in machine load hits both
        ahead = args.sample_ahead and threads >= 2
        ours.append(bench_ours(model, data, root / f"t{threads}-rep{rep}", args.steps, setup, args.minibatch_split,
                               ahead, args.micro, not args.release_freed_memory))  # fmt: skip
        rates.append(matmul_rate(arch["d_model"], arch["d_mlp"], mlp_rows))
        trl_runs.append(bench_trl(model, rows, args.steps, setup))
        rates.append(matmul_rate(arch["d_model"], arch["d_mlp"], mlp_rows))
    result["ours"] = min(ours, key=lambda x: x["step_s_median"])
    result["ours"]["all_step_s_medians"] = [x["step_s_median"] for x in ours]
    result["trl"] = trl_runs[0]
    if "step_s_median" in trl_runs[0]:
        result["trl"] = min(trl_runs, key=lambda x: x["step_s_median"])
        result["trl"]["all_step_s_medians"] = [x["step_s_median"] for x in trl_runs]
        result["step_time_ratio_ours_over_trl"] = result["ours"]["step_s_median"] / result["trl"]["step_s_median"]
    flops = floor_flops(arch, prompt_len, result["ours"]["response_len_mean"], setup.sequences, setup.prompts)
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


def summary(t: str, r: dict) -> str:
    """The human-readable lines of one thread count: floor, ours, TRL / HF generate and the ratios."""
    g = r["rollout"]["grouped"]
    line = (
        f"threads {t}: rollout ours {g['ours_s_per_batch']:.3f} s, floor {r['rollout_floor_s']:.3f} s "
        f"(ours/floor {r['rollout_ours_over_floor']:.2f}); sampler/HF generate time "
        f"{r['rollout_time_ratio_ours_over_hf']:.2f} (trainer's batch, G repeats), "
        f"{r['rollout_time_ratio_ours_over_hf_distinct']:.2f} (distinct prompts)"
    )
    if "ours" in r:
        line += f"\n  step ours {r['ours']['step_s_median']:.2f} s, floor {r['floor']['step_s']:.2f} s"
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
    return line


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="toy", choices=["toy", *SHAPES], help="model shape and its batch settings")
    ap.add_argument("--layers", type=int, default=None, help="override the shape's depth")
    ap.add_argument("--prompts", type=int, default=None, help="distinct prompts per rollout batch")
    ap.add_argument("--group", type=int, default=None, help="completions per prompt (G)")
    ap.add_argument("--max-new", type=int, default=None, help="new tokens at most per completion")
    ap.add_argument("--minibatches", type=int, default=None, help="optimizer steps per rollout batch")
    ap.add_argument(
        "--minibatch-split", default="rows", choices=["rows", "groups"],
        help="our mini-batches: shuffled completions (the trainer's default, as TRL) or whole prompt groups (verl)",
    )  # fmt: skip
    ap.add_argument(
        "--sample-ahead", action="store_true",
        help="ours at 2 threads: sampling beside re-scoring on two threads of one torch thread each (not 2 threads)",
    )  # fmt: skip
    ap.add_argument("--micro", type=int, default=None, help="our micro_batch_size (default: whole mini-batches)")
    ap.add_argument("--steps", type=int, default=5, help="rollout batches per trainer (the first is warm-up)")
    ap.add_argument("--threads", type=int, nargs="+", default=[2, 1], help="torch thread counts, each run in turn")
    ap.add_argument("--repeats", type=int, default=2, help="alternating repetitions of the two trainers")
    ap.add_argument("--rollout-reps", type=int, default=4, help="alternating repetitions of the two samplers")
    ap.add_argument("--rollout-only", action="store_true", help="only the sampler vs HF generate")
    ap.add_argument("--out", type=Path, default=None, help="write the numbers as JSON here")
    ap.add_argument(
        "--release-freed-memory", action="store_true",
        help="leave glibc's malloc as it is (by default both trainers run with freed memory kept, as ours sets it)",
    )  # fmt: skip
    args = ap.parse_args()
    # our trainer keeps freed memory for reuse (RLVRConfig.keep_freed_memory); set it before either trainer runs so
    # that TRL, in this same process, runs under the same allocator
    kept = False if args.release_freed_memory else keep_freed_memory()
    overrides = {"prompts": args.prompts, "group": args.group, "max_new": args.max_new, "minibatches": args.minibatches}
    setup = replace(SETUPS[args.shape], **{k: v for k, v in overrides.items() if v is not None})
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model, data, rows = make_world(root, args.shape, args.layers)
        result = {
            "machine": {
                "platform": platform.platform(),
                "processor": platform.processor() or platform.machine(),
                "cpu_count": os.cpu_count(),
                "affinity": sorted(os.sched_getaffinity(0)),
                "torch": torch.__version__,
                "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
                "malloc_keeps_freed_memory": kept,
            },
            "shape": args.shape,
            "architecture": architecture(model),
            "setup": asdict(setup),
            "minibatch_split": args.minibatch_split,
            "sample_ahead": args.sample_ahead,
            "micro_batch_size": args.micro,
            "by_threads": {str(t): bench_threads(t, model, data, rows, root, setup, args) for t in args.threads},
        }
    text = json.dumps(result, indent=2)
    print(text)
    print(
        f"shape {args.shape}: {result['setup']}, our mini-batches split by {args.minibatch_split}, "
        f"sample ahead at 2 threads: {args.sample_ahead}, our micro-batches: {args.micro or 'whole mini-batches'}"
    )
    for t, r in result["by_threads"].items():
        print(summary(t, r))
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
