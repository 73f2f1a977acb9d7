#!/usr/bin/env bash
# GPU check (issue #9): on one CUDA GPU, build the toy world's `large` pair, run the whole demo on it, print the
# time of every step and the total, and fail loudly when the check takes longer than its budget (8 minutes).
#
#   scripts/gpu_check.sh             on a CUDA machine: device cuda, preset large, the build redone (--force)
#   scripts/gpu_check.sh --dry-run   the same code path on the CPU in seconds: device cpu, preset quick,
#                                    3 RLVR steps of one loss, a cached build reused
#
# Environment (each overrides the mode's default):
#   GPU_CHECK_DEVICE      cuda | cuda:N | cpu                (cuda; dry-run: cpu)
#   GPU_CHECK_PRESET      quick | default | large            (large; dry-run: quick)
#   GPU_CHECK_RLVR_STEPS  steps per RLVR run                 (24; dry-run: 3, the fewest the analysis takes)
#   GPU_CHECK_LOSSES      comma-separated RLVR losses        (all six; dry-run: grpo)
#   GPU_CHECK_FORCE       1 = build the toy pair afresh, in GPU_CHECK_OUT/cache (1; dry-run: 0, reuse the cache)
#   GPU_CHECK_BUDGET_S    the budget in seconds              (480)
#   GPU_CHECK_LIMIT_S     the demo is stopped when the check has run this long (570: under the 600 s a command
#                         may run on the lent GPU machine), and the timings so far are printed
#   GPU_CHECK_OUT         run folder                         (runs/gpu_check)
#   PYTHON                the interpreter                    (.venv/bin/python if present, else python3)
# If $OUT is set (the lent GPU machine), timings.txt, toyworld_report.json and report.html are copied there.
#
# On the lent GPU machine (no network; see ../shared/DEVICE.md and docs/gpu.md): its python3 has CUDA torch,
# transformers, numpy, pandas, scikit-learn, matplotlib, pyyaml; nnsight (and its few missing dependencies) travel
# as wheels in .whl/ (device tool: carry [".whl"]). Do not carry .venv: its torch is the CPU build and it is far
# over the 64 MiB the device tool carries. This script installs .whl/*.whl into .site/ when nnsight is missing and
# runs the package from the working tree (PYTHONPATH), so it needs nothing else.
set -euo pipefail

mode=gpu
for arg in "$@"; do
  case "$arg" in
    --dry-run) mode=dry ;;
    -h | --help) sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_check: unknown argument $arg; use --dry-run or nothing" >&2; exit 2 ;;
  esac
done

cd "$(dirname "$0")/.."
if [ "$mode" = dry ]; then
  device=${GPU_CHECK_DEVICE:-cpu}; preset=${GPU_CHECK_PRESET:-quick}; steps=${GPU_CHECK_RLVR_STEPS:-3}
  losses=${GPU_CHECK_LOSSES:-grpo}; force=${GPU_CHECK_FORCE:-0}
else
  device=${GPU_CHECK_DEVICE:-cuda}; preset=${GPU_CHECK_PRESET:-large}; steps=${GPU_CHECK_RLVR_STEPS:-24}
  losses=${GPU_CHECK_LOSSES:-}; force=${GPU_CHECK_FORCE:-1}
fi
budget=${GPU_CHECK_BUDGET_S:-480}
limit=${GPU_CHECK_LIMIT_S:-570}
out=${GPU_CHECK_OUT:-runs/gpu_check}
if [ -n "${PYTHON:-}" ]; then py=$PYTHON; elif [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; fi
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1 HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

preflight() {  # one interpreter start: versions, and whether the packages and the device are there
  "$py" - "$device" <<'PY'
import importlib.util, sys
from importlib.metadata import version
missing = [m for m in ("torch", "transformers", "nnsight") if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(4)
import torch
if sys.argv[1].startswith("cuda") and not torch.cuda.is_available():
    print(f"torch {torch.__version__}")
    sys.exit(3)
name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
print(f"torch {torch.__version__} (CUDA {torch.version.cuda or 'none'}, {name}), transformers {version('transformers')}, "
      f"nnsight {version('nnsight')}, {torch.get_num_threads()} threads")
PY
}
rc=0; versions=$(preflight) || rc=$?
if [ "$rc" = 4 ] && compgen -G ".whl/*.whl" >/dev/null; then
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target .site .whl/*.whl
  export PYTHONPATH="$PWD/.site:$PYTHONPATH"
  rc=0; versions=$(preflight) || rc=$?
fi
if [ "$rc" = 4 ]; then
  echo "gpu_check: $py cannot import torch, transformers and nnsight; install them, or carry their wheels in .whl/ (docs/gpu.md)" >&2
  exit 2
elif [ "$rc" = 3 ]; then
  echo "gpu_check: no CUDA GPU visible to $versions; run it on a CUDA machine, or pass --dry-run for the CPU path" >&2
  exit 2
elif [ "$rc" != 0 ]; then
  echo "gpu_check: $py failed to start (status $rc)" >&2
  exit 2
fi

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
t0=$(now)
echo "== gpu_check ($mode): preset $preset on $device, $steps RLVR steps, losses ${losses:-all}, budget ${budget} s"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | sed 's/^/gpu: /'
else
  echo "gpu: nvidia-smi not found"
fi
echo "$versions"

mkdir -p "$out"
if [ "$force" = 1 ]; then  # a fresh cache: the toy pair is built, and timed, by the demo's first step
  export POSTTRAIN_PROBE_CACHE="$out/cache"
  rm -rf "$POSTTRAIN_PROBE_CACHE"
fi
demo_args=(demo --preset "$preset" --device "$device" --rlvr-steps "$steps" --out "$out" --force)
if [ -n "$losses" ]; then demo_args+=(--arms "$losses"); fi
left=$(awk -v l="$limit" -v e="$(since "$t0")" 'BEGIN { x = int(l - e); print (x > 1 ? x : 1) }')
demo_rc=0
timeout "$left" "$py" -m posttrain_probe.cli "${demo_args[@]}" || demo_rc=$?
total_s=$(since "$t0")

echo "== timings (s)"
if [ -f "$out/timings.txt" ]; then sed -e 's/^toyworld\t/toyworld (build)\t/' -e 's/^total\t/demo total\t/' "$out/timings.txt"; fi
"$py" - "$preset" "$device" "${OUT:-}" <<'PY' || true
import json, shutil, sys
from posttrain_probe.paths import cache_dir
from posttrain_probe.toyworld import preset_config

cfg = preset_config(sys.argv[1], device=sys.argv[2])
path = cache_dir() / "toyworld" / f"{cfg.preset}-seed{cfg.seed}-{cfg.key()}" / "report.json"
if path.exists():
    r = json.loads(path.read_text())
    stages = ", ".join(f"{k[:-2]} {v:.1f}" for k, v in r["times_s"].items() if k != "total_s")
    print(f"  build stages: {stages} (on {r.get('compute', r['device'])}, {r['n_pretrain_blocks']} pretraining blocks)")
    if sys.argv[3]:
        shutil.copy(path, f"{sys.argv[3]}/toyworld_report.json")
PY
echo "total	$total_s	(the whole check)"

if [ -n "${OUT:-}" ] && [ -d "${OUT:-}" ]; then
  cp -f "$out/timings.txt" "$out/report.html" "$OUT/" 2>/dev/null || true
fi
if [ "$demo_rc" = 124 ]; then
  echo "FAIL: the demo was stopped at ${limit} s of the check (GPU_CHECK_LIMIT_S); see the timings above" >&2
  exit 1
elif [ "$demo_rc" != 0 ]; then
  echo "FAIL: the demo exited with status $demo_rc" >&2
  exit 1
fi
if awk -v t="$total_s" -v b="$budget" 'BEGIN { exit !(t > b) }'; then
  echo "FAIL: total ${total_s} s is over the ${budget} s budget" >&2
  exit 1
fi
echo "PASS: total ${total_s} s within the ${budget} s budget"
