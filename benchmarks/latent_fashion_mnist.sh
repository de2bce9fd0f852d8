#!/usr/bin/env bash
# Latent against pixel diffusion on Fashion-MNIST at equal diffusion-training time (Rombach et al. 2022's
# claim: the same quality for much less compute), in one run on one machine:
#
#   (a) the first stages: minidiff train --model autoencoder --factor F (KL; f = 4: latent 4x8x8, f = 2: 4x14x14),
#                         their own training time reported beside; minidiff eval --ckpt AE: MSE, PSNR, SSIM, recon. FD
#   (b) latent EDM:       minidiff train --method edm --autoencoder AE --max-seconds $BUDGET for each, then eval
#   (c) pixel EDM:        minidiff train --method edm --max-seconds $BUDGET (the same preset), then eval
#   (d) the compute table: benchmarks/latent_compute.py (U-Net FLOPs and time per training image, sampling time)
#   (e) summary.json/.md: FD (Heun 18 and EDM's stochastic sampler), KID and images/s of both; FD latent / FD pixel;
#       U-Net time per training image
#
#   bash benchmarks/latent_fashion_mnist.sh                    # GPU (one H100/H200): under 9 minutes
#   MODE=cpu bash benchmarks/latent_fashion_mnist.sh           # a 2-core laptop: 10 min of diffusion training each
#   SMOKE=1 bash benchmarks/latent_fashion_mnist.sh            # everything tiny on the CPU (~2 min): proves the script
#
# Environment (all optional): BUDGET (diffusion training seconds per side), AE_BUDGET (autoencoder seconds),
# AE4_ARGS (extra options of the f = 4 autoencoder; cpu and gpu: --latent-channels 8, and on the cpu 8,000 steps),
# TRAIN_ARGS (extra options of both diffusion trainings, e.g. "--ema-std 0.1 --lr-decay 500"), REUSE_AE=1 (keep the
# first stages an earlier run of this script left in RUN_DIR: their training is deterministic on the CPU),
# N / NREF (samples scored, test images), PRESET / AE_PRESET, FACTORS (default "4 2"), RUN_DIR, RESULTS (default $OUT if set, else
# benchmarks/results/latent_fashion_mnist_<mode>), PYTHON, MINIDIFF_FASHION_MNIST (the four IDX .gz files;
# else shared/ or data/fashion-mnist/ in the repository, else /usr/share/datasets/fashion-mnist).
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
  gpu)   BUDGET=${BUDGET:-120}; AE_BUDGET=${AE_BUDGET:-90}; N=${N:-10000}; NREF=${NREF:-10000}
         AE4_ARGS=${AE4_ARGS:---latent-channels 8}
         PRESET=${PRESET:-gpu}; AE_PRESET=${AE_PRESET:-gpu}; SB=${SB:-1000}; DEV=(); STEPS=1000000 ;;
  cpu)   BUDGET=${BUDGET:-600}; AE_BUDGET=${AE_BUDGET:-0}; N=${N:-2000}; NREF=${NREF:-10000}
         AE4_ARGS=${AE4_ARGS:---latent-channels 8 --steps 8000}
         PRESET=${PRESET:-cpu}; AE_PRESET=${AE_PRESET:-cpu}; SB=${SB:-500}; DEV=(--device cpu); STEPS=1000000 ;;
  smoke) BUDGET=${BUDGET:-10}; AE_BUDGET=${AE_BUDGET:-10}; N=${N:-100}; NREF=${NREF:-200}
         PRESET=${PRESET:-tiny}; AE_PRESET=${AE_PRESET:-tiny}; SB=${SB:-100}; DEV=(--device cpu); STEPS=40
         export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} ;;
  *) echo "MODE must be gpu or cpu, got $MODE"; exit 1 ;;
esac
FACTORS=${FACTORS:-$([ "$MODE" = gpu ] && echo 4 || echo 4 2)}   # the first stages' factors, one latent model each (gpu: 9 min)
RUN_DIR=${RUN_DIR:-/tmp/minidiff_latent_$MODE}
RESULTS=${RESULTS:-${OUT:-$REPO/benchmarks/results/latent_fashion_mnist_$MODE}}
[ "$MODE" = smoke ] && RESULTS=${RESULTS_SMOKE:-$RUN_DIR/results}
mkdir -p "$RUN_DIR" "$RESULTS"
LOG=$RESULTS/log.txt
: > "$LOG"
T0=$SECONDS
stage() { echo "=== [$((SECONDS - T0)) s] $*" | tee -a "$LOG"; }
quiet() { tr '\r' '\n' | grep -v '^\s*$' | awk 'NR % 10 == 1 || !/it\/s\]$/' | tee -a "$LOG"; }

if [ -z "${MINIDIFF_FASHION_MNIST:-}" ]; then
  for d in shared/fashion-mnist data/fashion-mnist; do
    if [ -f "$d/train-images-idx3-ubyte.gz" ]; then export MINIDIFF_FASHION_MNIST=$REPO/$d; break; fi
  done
fi
export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}
export MINIDIFF_DATA=${MINIDIFF_DATA:-$RUN_DIR/cache}      # the latent cache of this run
if [ "$MODE" = gpu ] && ! "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
  echo "no CUDA device: MODE=cpu or SMOKE=1 run it on the CPU" | tee -a "$LOG"; exit 1
fi
"$PY" -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU')" | tee -a "$LOG"

# --- (a) the first stages, (b) latent EDM on each, (c) pixel EDM: every diffusion run at the same budget ----
[ "${REUSE_AE:-0}" = 1 ] || rm -rf "$RUN_DIR"/ae*
rm -rf "$RUN_DIR"/latent* "$RUN_DIR/pixel"
AE_LIMIT=(); [ "$AE_BUDGET" != 0 ] && AE_LIMIT=(--max-seconds "$AE_BUDGET")
read -r -a TRAIN_EXTRA <<< "${TRAIN_ARGS:-}"
for f in $FACTORS; do
  if [ "${REUSE_AE:-0}" = 1 ] && [ -f "$RUN_DIR/ae$f/checkpoint.safetensors" ] && [ -f "$RUN_DIR/ae$f.record" ]; then
    stage "autoencoder f=$f: reused from $RUN_DIR/ae$f (REUSE_AE=1)"
    tee -a "$LOG" < "$RUN_DIR/ae$f.record"
  else
    stage "autoencoder f=$f: train (kl, preset $AE_PRESET)"
    AE_T0=$SECONDS
    extra=(); [ "$f" = 4 ] && read -r -a extra <<< "${AE4_ARGS:-}"
    "$PY" -m minidiff.cli train --backend torch --model autoencoder --reg kl --factor "$f" --dataset fashion-mnist \
      --preset "$AE_PRESET" "${AE_LIMIT[@]}" "${extra[@]}" --out "$RUN_DIR/ae$f" "${DEV[@]}" 2>&1 | quiet
    grep "^trained to step" "$LOG" | tail -n 1 > "$RUN_DIR/ae$f.record"
    echo "autoencoder f=$f wall seconds: $((SECONDS - AE_T0))" | tee -a "$LOG" "$RUN_DIR/ae$f.record"
  fi
  "$PY" -m minidiff.cli eval --ckpt "$RUN_DIR/ae$f" --n "$NREF" --out "$RESULTS/ae${f}_eval.json" "${DEV[@]}" 2>&1 | quiet
done
SIDES=""
for f in $FACTORS; do SIDES="$SIDES latent$f"; done
for side in $SIDES pixel; do
  extra=(); [ "$side" != pixel ] && extra=(--autoencoder "$RUN_DIR/ae${side#latent}")
  stage "$side: train (edm, preset $PRESET, $BUDGET s)"
  "$PY" -m minidiff.cli train --backend torch --dataset fashion-mnist --method edm --preset "$PRESET" \
    --steps "$STEPS" --max-seconds "$BUDGET" --sample-every 0 --out "$RUN_DIR/$side" "${extra[@]}" "${TRAIN_EXTRA[@]}" \
    "${DEV[@]}" 2>&1 | quiet
  stage "$side: eval ($N samples, heun 18)"
  "$PY" -m minidiff.cli eval --ckpt "$RUN_DIR/$side" --n "$N" --sampler heun --steps 18 --batch-size "$SB" \
    --n-reference "$NREF" --out "$RESULTS/${side}_eval.json" "${DEV[@]}" 2>&1 | quiet
  stage "$side: eval ($N samples, EDM stochastic, 40 steps, S_churn 40: gamma at its cap sqrt 2 - 1)"
  "$PY" -m minidiff.cli eval --ckpt "$RUN_DIR/$side" --n "$N" --sampler stochastic --steps 40 --churn 40 \
    --batch-size "$SB" --n-reference "$NREF" --out "$RESULTS/${side}_eval_stochastic.json" "${DEV[@]}" 2>&1 | quiet
  "$PY" -m minidiff.cli sample --ckpt "$RUN_DIR/$side" --n 64 --steps 18 --out "$RESULTS/${side}_grid.png" "${DEV[@]}" \
    2>&1 | quiet
  if [ "$side" != pixel ]; then     # the std of s z on the test set (target 1 +- 0.05)
    "$PY" benchmarks/latent_std.py "$RUN_DIR/$side" --out "$RESULTS/${side}_std.json" 2>&1 | tee -a "$LOG"
  fi
done

# --- (d) the compute table ---------------------------------------------------------------------
stage "compute table"
CDEV=cpu; [ "$MODE" = gpu ] && CDEV=cuda
AES=(); for f in $FACTORS; do AES+=("$RUN_DIR/ae$f"); done
"$PY" benchmarks/latent_compute.py --preset "$PRESET" --device "$CDEV" --rounds 3 --autoencoders "${AES[@]}" \
  --out "$RESULTS/compute" 2>&1 | tee -a "$LOG"

# --- (e) the summary ---------------------------------------------------------------------------
stage "summary"
"$PY" benchmarks/latent_summary.py "$RESULTS" "$RUN_DIR" "$BUDGET" "$MODE" "$FACTORS" 2>&1 | tee -a "$LOG"
stage "done; results in $RESULTS"
