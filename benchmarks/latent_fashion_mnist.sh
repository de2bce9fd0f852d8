#!/usr/bin/env bash
# Latent against pixel diffusion on Fashion-MNIST at equal diffusion-training time (Rombach et al. 2022's
# claim: the same quality for much less compute), in one run on one machine:
#
#   (a) the first stage:  minidiff train --model autoencoder (KL, f = 4, latent 4x8x8), its own training time
#                         reported beside; minidiff eval --ckpt AE: MSE, PSNR, SSIM, reconstruction FD
#   (b) latent EDM:       minidiff train --method edm --autoencoder AE --max-seconds $BUDGET, then eval
#   (c) pixel EDM:        minidiff train --method edm --max-seconds $BUDGET (the same preset), then eval
#   (d) the compute table: benchmarks/latent_compute.py (U-Net FLOPs and time per training image, sampling time)
#   (e) summary.json/.md: FD, KID and images/s of both; FD latent / FD pixel; U-Net time per training image
#
#   bash benchmarks/latent_fashion_mnist.sh                    # GPU (one H100/H200): under 9 minutes
#   MODE=cpu bash benchmarks/latent_fashion_mnist.sh           # a 2-core laptop: 8 min of diffusion training each
#   SMOKE=1 bash benchmarks/latent_fashion_mnist.sh            # everything tiny on the CPU (~2 min): proves the script
#
# Environment (all optional): BUDGET (diffusion training seconds per side), AE_BUDGET (autoencoder seconds),
# N / NREF (samples scored, test images), PRESET / AE_PRESET, RUN_DIR, RESULTS (default $OUT if set, else
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
         PRESET=${PRESET:-gpu}; AE_PRESET=${AE_PRESET:-gpu}; SB=${SB:-1000}; DEV=(); STEPS=1000000 ;;
  cpu)   BUDGET=${BUDGET:-480}; AE_BUDGET=${AE_BUDGET:-0}; N=${N:-2000}; NREF=${NREF:-10000}
         PRESET=${PRESET:-cpu}; AE_PRESET=${AE_PRESET:-cpu}; SB=${SB:-500}; DEV=(--device cpu); STEPS=1000000 ;;
  smoke) BUDGET=${BUDGET:-10}; AE_BUDGET=${AE_BUDGET:-10}; N=${N:-100}; NREF=${NREF:-200}
         PRESET=${PRESET:-tiny}; AE_PRESET=${AE_PRESET:-tiny}; SB=${SB:-100}; DEV=(--device cpu); STEPS=40
         export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} ;;
  *) echo "MODE must be gpu or cpu, got $MODE"; exit 1 ;;
esac
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

# --- (a) the first stage ----------------------------------------------------------------------
stage "autoencoder: train (kl, preset $AE_PRESET${AE_BUDGET:+, at most $AE_BUDGET s})"
rm -rf "$RUN_DIR/ae" "$RUN_DIR/latent" "$RUN_DIR/pixel"
AE_LIMIT=(); [ "$AE_BUDGET" != 0 ] && AE_LIMIT=(--max-seconds "$AE_BUDGET")
AE_T0=$SECONDS
"$PY" -m minidiff.cli train --backend torch --model autoencoder --reg kl --dataset fashion-mnist --preset "$AE_PRESET" \
  "${AE_LIMIT[@]}" --out "$RUN_DIR/ae" "${DEV[@]}" 2>&1 | quiet
echo "autoencoder wall seconds: $((SECONDS - AE_T0))" | tee -a "$LOG"
"$PY" -m minidiff.cli eval --ckpt "$RUN_DIR/ae" --n "$NREF" --out "$RESULTS/ae_eval.json" "${DEV[@]}" 2>&1 | quiet

# --- (b), (c) latent and pixel EDM at the same budget -----------------------------------------
for side in latent pixel; do
  extra=(); [ "$side" = latent ] && extra=(--autoencoder "$RUN_DIR/ae")
  stage "$side: train (edm, preset $PRESET, $BUDGET s)"
  "$PY" -m minidiff.cli train --backend torch --dataset fashion-mnist --method edm --preset "$PRESET" \
    --steps "$STEPS" --max-seconds "$BUDGET" --sample-every 0 --out "$RUN_DIR/$side" "${extra[@]}" "${DEV[@]}" 2>&1 | quiet
  stage "$side: eval ($N samples, heun 18)"
  "$PY" -m minidiff.cli eval --ckpt "$RUN_DIR/$side" --n "$N" --sampler heun --steps 18 --batch-size "$SB" \
    --n-reference "$NREF" --out "$RESULTS/${side}_eval.json" "${DEV[@]}" 2>&1 | quiet
  "$PY" -m minidiff.cli sample --ckpt "$RUN_DIR/$side" --n 64 --steps 18 --out "$RESULTS/${side}_grid.png" "${DEV[@]}" \
    2>&1 | quiet
done

# --- (d) the compute table ---------------------------------------------------------------------
stage "compute table"
CDEV=cpu; [ "$MODE" = gpu ] && CDEV=cuda
"$PY" benchmarks/latent_compute.py --preset "$PRESET" --device "$CDEV" --rounds 3 \
  --out "$RESULTS/compute" 2>&1 | tee -a "$LOG"

# --- (e) the summary ---------------------------------------------------------------------------
stage "summary"
"$PY" - "$RESULTS" "$RUN_DIR" "$BUDGET" "$MODE" <<'EOF' 2>&1 | tee -a "$LOG"
import datetime, json, re, sys
from pathlib import Path
res, run, budget, mode = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
log = (res / "log.txt").read_text()
ips = [float(x) for x in re.findall(r"trained to step \d+ \((\d+) images/s", log)]   # ae, latent, pixel
ae_secs = int(re.findall(r"autoencoder wall seconds: (\d+)", log)[-1])
ae = json.loads((res / "ae_eval.json").read_text())
ev = {s: json.loads((res / f"{s}_eval.json").read_text()) for s in ("latent", "pixel")}
st = {s: json.loads((run / s / "state.json").read_text()) for s in ("latent", "pixel")}
compute = json.loads((res / "compute.json").read_text())
summary = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "mode": mode, "budget_seconds": budget,
           "autoencoder": {"wall_seconds": ae_secs, "images_per_second": ips[0] if ips else None,
                           **{k: ae.get(k) for k in ("mse", "psnr", "ssim", "fd", "n_images")}},
           "scale_factor": st["latent"]["config"]["scale_factor"],
           "n_samples": ev["pixel"]["n_samples"], "n_reference": ev["pixel"]["n_reference"],
           "feature": ev["pixel"]["feature"], "compute": compute["rows"]}
for i, s in enumerate(("latent", "pixel")):
    summary[s] = {"steps": st[s]["step"], "images_per_second": ips[i + 1] if len(ips) > i + 1 else None,
                  "fd": ev[s]["fd"], "kid_mean": ev[s]["kid_mean"], "kid_std": ev[s]["kid_std"],
                  "sampling_seconds": ev[s]["sampling_seconds"], "unet": st[s]["config"]["unet"]}
summary["fd_ratio_latent_over_pixel"] = ev["latent"]["fd"] / ev["pixel"]["fd"]
if summary["latent"]["images_per_second"] and summary["pixel"]["images_per_second"]:
    summary["training_images_per_second_ratio"] = summary["latent"]["images_per_second"] / summary["pixel"]["images_per_second"]
(res / "summary.json").write_text(json.dumps(summary, indent=1))
L = [f"# Latent vs pixel EDM on Fashion-MNIST, {budget:.0f} s of diffusion training each ({mode}, {summary['date']})", "",
     f"First stage: KL autoencoder, {ae_secs} s of training; reconstruction of {ae.get('n_images')} test images: "
     f"MSE {ae.get('mse', float('nan')):.4f}, PSNR {ae.get('psnr', float('nan')):.2f} dB, SSIM {ae.get('ssim', float('nan')):.3f}, "
     f"reconstruction FD {ae.get('fd', float('nan')):.2f}; scale factor {summary['scale_factor']:.4f}", "",
     f"{summary['n_samples']} samples (Heun 18, 35 NFE) vs {summary['n_reference']} test images, {summary['feature']}", "",
     "| model | steps | training images/s | FD | KID | sampling s |", "|---|---:|---:|---:|---:|---:|"]
for s in ("latent", "pixel"):
    r = summary[s]
    L.append(f"| {s} | {r['steps']} | {r['images_per_second'] or float('nan'):.0f} | {r['fd']:.2f} | "
             f"{r['kid_mean']:.4f} +- {r['kid_std']:.4f} | {r['sampling_seconds']:.1f} |")
L += ["", f"FD latent / FD pixel = {summary['fd_ratio_latent_over_pixel']:.3f}; training images/s latent / pixel = "
      f"{summary.get('training_images_per_second_ratio', float('nan')):.2f}", "", (res / "compute.md").read_text()]
(res / "summary.md").write_text("\n".join(L) + "\n")
print("\n".join(L))
EOF
stage "done; results in $RESULTS"
