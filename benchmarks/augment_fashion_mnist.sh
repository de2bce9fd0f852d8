#!/usr/bin/env bash
# EDM's non-leaking augmentation on Fashion-MNIST (Karras et al. 2022, section 5), both measurements of
# benchmarks/augment_leak.py in one run on one machine:
#
#   (1) the leak:          class-conditional EDM runs of equal steps, none / --flip / --augment P for each P,
#                          sampled for Sandal, Sneaker and Ankle boot with augment labels zero (and, the probe,
#                          with the flip label 1); the left/right mass ratio of the samples against the data's
#   (2) what it buys:      unconditional runs on 2,000 training images (limit=2000) with and without
#                          --augment P_FD at equal steps; FD (and KID) of N_FD samples against 10,000 test images
#
#   bash benchmarks/augment_fashion_mnist.sh                   # GPU (one H100/H200): under 9 minutes
#   MODE=cpu bash benchmarks/augment_fashion_mnist.sh          # a 2-core CPU, one thread: ~1 h (the recorded CPU runs
#                                                              # were these commands, split, see benchmarks/RESULTS.md)
#   SMOKE=1 bash benchmarks/augment_fashion_mnist.sh           # everything tiny on the CPU (~1 min of CPU time): proves the script
#
# Environment (all optional): SECONDS_LEAK (the first leak run's training seconds; the others make as many steps),
# SECONDS_FD (the same for part 2), STEPS / FD_STEPS (fixed steps instead), P (list, default "0.12 0.5"), P_FD,
# N (samples per footwear class), N_FD, PRESET, RESULTS (default $OUT if set, else benchmarks/results), TAG, PYTHON,
# MINIDIFF_FASHION_MNIST (the four IDX .gz files; else shared/ or data/fashion-mnist/ in the repository, else
# /usr/share/datasets/fashion-mnist).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$PWD
PY=${PYTHON:-python3}
command -v "$PY" >/dev/null || PY=python
export PYTHONUNBUFFERED=1
SMOKE=${SMOKE:-0}
MODE=${MODE:-gpu}
[ "$SMOKE" = 1 ] && MODE=smoke
case "$MODE" in
  gpu)   SECONDS_LEAK=${SECONDS_LEAK:-60}; SECONDS_FD=${SECONDS_FD:-60}; STEPS=${STEPS:-0}; FD_STEPS=${FD_STEPS:-0}
         N=${N:-500}; N_FD=${N_FD:-5000}; PRESET=${PRESET:-gpu}; DEV=(--device cuda) ;;
  cpu)   SECONDS_LEAK=${SECONDS_LEAK:-0}; SECONDS_FD=${SECONDS_FD:-0}; STEPS=${STEPS:-1000}; FD_STEPS=${FD_STEPS:-400}
         N=${N:-200}; N_FD=${N_FD:-500}; PRESET=${PRESET:-cpu}; DEV=(--device cpu)
         export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} ;;
  smoke) SECONDS_LEAK=0; SECONDS_FD=0; STEPS=${STEPS:-8}; FD_STEPS=${FD_STEPS:-8}
         N=${N:-8}; N_FD=${N_FD:-40}; PRESET=${PRESET:-tiny}; DEV=(--device cpu)
         export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} ;;
  *) echo "MODE must be gpu or cpu, got $MODE"; exit 1 ;;
esac
P=${P:-0.12 0.5}
P_FD=${P_FD:-0.12}
TAG=${TAG:-$MODE}
RESULTS=${RESULTS:-${OUT:-$REPO/benchmarks/results}}
[ "$MODE" = smoke ] && RESULTS=${RESULTS_SMOKE:-/tmp/minidiff_augment_smoke}
mkdir -p "$RESULTS"
LOG=$RESULTS/augment_$TAG.log
: > "$LOG"
T0=$SECONDS
stage() { echo "=== [$((SECONDS - T0)) s] $*" | tee -a "$LOG"; }

if [ -z "${MINIDIFF_FASHION_MNIST:-}" ]; then
  for d in shared/fashion-mnist data/fashion-mnist; do
    if [ -f "$d/train-images-idx3-ubyte.gz" ]; then export MINIDIFF_FASHION_MNIST=$REPO/$d; break; fi
  done
fi
export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}
if [ "$MODE" = gpu ] && ! "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
  echo "no CUDA device: MODE=cpu or SMOKE=1 run it on the CPU" | tee -a "$LOG"; exit 1
fi
"$PY" -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU')" | tee -a "$LOG"

# shellcheck disable=SC2086  # P is a list
stage "(1) the leak: none / flip / augment p = $P (preset $PRESET), $N samples per footwear class"
"$PY" benchmarks/augment_leak.py --preset "$PRESET" --seconds "$SECONDS_LEAK" --steps "$STEPS" --p $P \
  --variants none flip augment --probe --n "$N" --tag "${TAG}_leak" --results "$RESULTS" "${DEV[@]}" 2>&1 | tee -a "$LOG"
stage "(2) FD on 2,000 training images: none / augment p = $P_FD, $N_FD samples"
"$PY" benchmarks/augment_leak.py --preset "$PRESET" --no-leak --seconds "$SECONDS_FD" --fd-steps "$FD_STEPS" \
  --p-fd "$P_FD" --n-fd "$N_FD" --tag "${TAG}_fd" --results "$RESULTS" "${DEV[@]}" 2>&1 | tee -a "$LOG"
stage "done; results in $RESULTS/augment_leak_${TAG}_leak.json and augment_leak_${TAG}_fd.json"
