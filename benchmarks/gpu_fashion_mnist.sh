#!/usr/bin/env bash
# Fashion-MNIST on one GPU, ours against a diffusers baseline, at the same wall-clock budget.
#
#   (a) ours:     minidiff train --method edm --preset gpu --max-seconds $BUDGET, then
#                 minidiff eval: 10,000 samples, Heun-18 (35 NFE), FD and KID on the shipped classifier's features
#   (b) baseline: benchmarks/gpu_baseline_diffusers.py: diffusers' UNet2DModel of the same size, DDPM eps-MSE,
#                 the same batch, lr, warm-up, EMA, clipping, bf16 and budget; 10,000 DDIM-50 samples, same metrics
#   (c) a table: FD ours / FD baseline (the issue's target: <= 0.7)
#
# Sized for ONE H100 in at most 8 minutes end to end: 2 x 150 s of training, about a minute of sampling
# and scoring each, python start-ups.  Run from anywhere; it works in the repository root.
#
#   bash benchmarks/gpu_fashion_mnist.sh                  # on the GPU machine
#   SMOKE=1 bash benchmarks/gpu_fashion_mnist.sh          # everything tiny, on the CPU, ~1.5 min: proves the script
#
# Environment (all optional):
#   BUDGET      training seconds for each side (default 150; SMOKE: 15)
#   N           samples scored per side (default 10000; SMOKE: 200); NREF test images (default 10000; SMOKE: 500)
#   PRESET      gpu (default; SMOKE: tiny)
#   COMPILE=1   torch.compile both sides' training (off by default: compiling eats into the budget)
#   RUN_DIR     checkpoints and scratch (default /tmp/minidiff_gpu_fmnist)
#   RESULTS     where the <= 7 result files go (default $OUT if set -- the device tool's folder --, else
#               benchmarks/results/gpu_fashion_mnist; SMOKE: $RUN_DIR/results)
#   PYTHON      the interpreter (default python3)
#   OMP_NUM_THREADS  torch's CPU threads (SMOKE default 1; unset otherwise)
#   MINIDIFF_FASHION_MNIST  the folder of the four IDX .gz files; else shared/fashion-mnist/ or
#               data/fashion-mnist/ in the repository, else /usr/share/datasets/fashion-mnist.
# The device machine has no network: carry the dataset (data/fashion-mnist/) and, if diffusers,
# autograd or array-api-compat are missing there, their wheels in .whl/ (see benchmarks/README.md).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$PWD
PY=${PYTHON:-python3}
command -v "$PY" >/dev/null || PY=python
export PYTHONUNBUFFERED=1

SMOKE=${SMOKE:-0}
if [ "$SMOKE" = 1 ]; then
  BUDGET=${BUDGET:-15}; N=${N:-200}; NREF=${NREF:-500}; PRESET=${PRESET:-tiny}; SB=${SB:-100}
  RUN_DIR=${RUN_DIR:-/tmp/minidiff_gpu_fmnist_smoke}; RESULTS=${RESULTS:-$RUN_DIR/results}
  DEV=(--device cpu); OURS_EXTRA=(--steps 60 --warmup 5); BASE_EXTRA=(--steps 60)
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}   # torch's threads: on a busy small CPU more threads spin and crawl
else
  BUDGET=${BUDGET:-150}; N=${N:-10000}; NREF=${NREF:-10000}; PRESET=${PRESET:-gpu}; SB=${SB:-1000}
  RUN_DIR=${RUN_DIR:-/tmp/minidiff_gpu_fmnist}; RESULTS=${RESULTS:-${OUT:-$REPO/benchmarks/results/gpu_fashion_mnist}}
  DEV=(); OURS_EXTRA=(); BASE_EXTRA=()
fi
COMPILE_FLAG=()
[ "${COMPILE:-0}" = 1 ] && COMPILE_FLAG=(--compile)
mkdir -p "$RUN_DIR" "$RESULTS"
LOG=$RESULTS/log.txt
: > "$LOG"
T0=$SECONDS
stage() { echo "=== [$((SECONDS - T0)) s] $*" | tee -a "$LOG"; }

# --- the dataset ------------------------------------------------------------------------------
if [ -z "${MINIDIFF_FASHION_MNIST:-}" ]; then
  for d in shared/fashion-mnist data/fashion-mnist; do
    if [ -f "$d/train-images-idx3-ubyte.gz" ]; then export MINIDIFF_FASHION_MNIST=$REPO/$d; break; fi
  done
fi
FM=${MINIDIFF_FASHION_MNIST:-/usr/share/datasets/fashion-mnist}
for f in train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz; do
  [ -f "$FM/$f" ] || { echo "Fashion-MNIST: $FM/$f is missing: copy the four IDX .gz files into data/fashion-mnist/" \
                         "(or set MINIDIFF_FASHION_MNIST)" | tee -a "$LOG"; exit 1; }
done

# --- packages: only what is missing, only from carried wheels -------------------------------------
if ! "$PY" -c "import diffusers, autograd, array_api_compat" 2>/dev/null; then
  if compgen -G ".whl/*.whl" >/dev/null; then
    stage "installing carried wheels: $(ls .whl | tr '\n' ' ')"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/minidiff_site .whl/*.whl
    export PYTHONPATH=/tmp/minidiff_site${PYTHONPATH:+:$PYTHONPATH}
  else
    echo "diffusers, autograd or array-api-compat is missing and no .whl/ folder was carried" | tee -a "$LOG"; exit 1
  fi
fi
export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}   # minidiff from this checkout, no install needed
"$PY" - <<'EOF' 2>&1 | tee -a "$LOG"
import torch, diffusers
dev = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device (CPU)"
print(f"torch {torch.__version__}, diffusers {diffusers.__version__}, {dev}")
EOF
if [ "$SMOKE" != 1 ] && ! "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
  echo "no CUDA device: this is the GPU benchmark (SMOKE=1 runs it tiny on the CPU)" | tee -a "$LOG"; exit 1
fi

# --- (a) ours ---------------------------------------------------------------------------------
stage "ours: train (edm, preset $PRESET, ${BUDGET} s)"
rm -rf "$RUN_DIR/ours"
"$PY" -m minidiff.cli train --backend torch --dataset fashion-mnist --method edm --preset "$PRESET" \
  --max-seconds "$BUDGET" --out "$RUN_DIR/ours" "${DEV[@]}" "${OURS_EXTRA[@]}" "${COMPILE_FLAG[@]}" 2>&1 \
  | tr '\r' '\n' | grep -v '^\s*$' | awk 'NR % 10 == 1 || !/it\/s\]$/' | tee -a "$LOG"
stage "ours: eval ($N samples, heun 18)"
"$PY" -m minidiff.cli eval --ckpt "$RUN_DIR/ours" --n "$N" --sampler heun --steps 18 --batch-size "$SB" \
  --n-reference "$NREF" --out "$RESULTS/ours_eval.json" "${DEV[@]}" 2>&1 \
  | tr '\r' '\n' | grep -v '^\s*$' | awk 'NR % 10 == 1 || !/it\/s\]$/' | tee -a "$LOG"
grid=$(ls "$RUN_DIR"/ours/samples/step_*.png 2>/dev/null | tail -n 1 || true)
[ -n "$grid" ] && cp "$grid" "$RESULTS/ours_grid.png"

# --- (b) the diffusers baseline ----------------------------------------------------------------
stage "baseline: train (diffusers UNet2DModel, DDPM, ${BUDGET} s), sample ($N, DDIM 50), eval"
"$PY" benchmarks/gpu_baseline_diffusers.py --preset "$PRESET" --max-seconds "$BUDGET" --n "$N" --sample-batch "$SB" \
  --n-reference "$NREF" --out "$RESULTS" "${DEV[@]}" "${BASE_EXTRA[@]}" "${COMPILE_FLAG[@]}" 2>&1 | tee -a "$LOG"

# --- (c) the table -----------------------------------------------------------------------------
stage "summary"
"$PY" - "$RESULTS" "$RUN_DIR/ours" "$BUDGET" "$SMOKE" "$((SECONDS - T0))" <<'EOF' 2>&1 | tee -a "$LOG"
import datetime, json, re, sys
from pathlib import Path
import torch
res, ours_dir, budget, smoke, elapsed = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3]), sys.argv[4] == "1", sys.argv[5]
ours, base = json.loads((res / "ours_eval.json").read_text()), json.loads((res / "baseline.json").read_text())
state = json.loads((ours_dir / "state.json").read_text())
m = re.findall(r"trained to step (\d+) \((\d+) images/s", (res / "log.txt").read_text())
ours_ips = float(m[-1][1]) if m else None
device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU (smoke run)"
ratio = ours["fd"] / base["fd"]
rows = [("ours: EDM, minidiff U-Net, Heun-18 (35 NFE)", state["config"]["unet"], state["step"], ours_ips,
         ours["fd"], ours["kid_mean"], ours["kid_std"], ours["sampling_seconds"]),
        ("baseline: diffusers UNet2DModel, DDPM eps, DDIM-50", None, base["train"]["steps"],
         base["train"]["images_per_second"], base["fd"], base["kid_mean"], base["kid_std"], base["sampling_seconds"])]
summary = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "device": device, "smoke": smoke,
           "budget_seconds": budget, "script_seconds_before_summary": int(elapsed),
           "batch_size": state["config"]["batch_size"], "n_samples": ours["n_samples"], "n_reference": ours["n_reference"],
           "feature": ours["feature"], "parameters_baseline": base["parameters"],
           "ours": {"steps": state["step"], "images_per_second": ours_ips, "recent_loss": state.get("recent_loss"),
                    "fd": ours["fd"], "kid_mean": ours["kid_mean"], "kid_std": ours["kid_std"],
                    "sampling_seconds": ours["sampling_seconds"]},
           "baseline": {"steps": base["train"]["steps"], "images_per_second": base["train"]["images_per_second"],
                        "fd": base["fd"], "kid_mean": base["kid_mean"], "kid_std": base["kid_std"],
                        "sampling_seconds": base["sampling_seconds"]},
           "fd_ratio_ours_over_baseline": ratio, "target": "<= 0.7", "met": ratio <= 0.7}
(res / "summary.json").write_text(json.dumps(summary, indent=1))
lines = [f"# Fashion-MNIST, ours vs diffusers at {budget:.0f} s of training each" + (" (SMOKE run: tiny, CPU)" if smoke else ""),
         "", f"{summary['date']}, {device}; batch {summary['batch_size']}; {summary['n_samples']} samples vs "
         f"{summary['n_reference']} test images; FD and KID on {ours['feature']}", "",
         "| run | train steps | images/s | FD | KID | sampling s |", "|---|---:|---:|---:|---:|---:|"]
for name, _, steps, ips, fd, km, ks, ss in rows:
    lines.append(f"| {name} | {steps} | {ips:.0f} | {fd:.3f} | {km:.5f} +- {ks:.5f} | {ss:.1f} |" if ips is not None else
                 f"| {name} | {steps} | ? | {fd:.3f} | {km:.5f} +- {ks:.5f} | {ss:.1f} |")
lines += ["", f"**FD ours / FD baseline = {ratio:.3f}** (target <= 0.7: {'met' if ratio <= 0.7 else 'not met'})", ""]
(res / "summary.md").write_text("\n".join(lines))
print("\n".join(lines))
EOF
stage "done; results in $RESULTS"
