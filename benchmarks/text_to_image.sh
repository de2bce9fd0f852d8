#!/usr/bin/env bash
# Text-to-image on Fashion-MNIST captions (issue 13), in one run on one machine:
#
#   (a) train:  minidiff train --condition text (EDM, a text encoder trained jointly, captions dropped to "" 10 %)
#   (b) eval:   minidiff eval --prompts <the captions of N test images> at guidance w = 0, 1, 3, 5:
#               FD, class accuracy (shipped classifier), attribute accuracy (the caption attribute functions),
#               the CLIP-style score (minidiff caption model) when the shipped caption model is there
#   (c) held-out combinations: prompts the model never read (dark sandal, small ankle boot, patterned bag)
#   (d) summary.json / summary.md: the table, with the commands
#
#   bash benchmarks/text_to_image.sh                   # GPU (one H100/H200): under 9 minutes
#   MODE=cpu bash benchmarks/text_to_image.sh          # a 2-core laptop: 10 minutes of training, ~15 in all
#   SMOKE=1 bash benchmarks/text_to_image.sh           # everything tiny on the CPU (~1 min): proves the script
#
# Environment (all optional): BUDGET (training seconds), N (samples per guidance), NREF (test images for FD),
# WS (guidance strengths), PRESET, RUN_DIR, RESULTS, PYTHON, MINIDIFF_FASHION_MNIST, TRAIN_ARGS (extra options
# of the training, e.g. "--ema-std 0.1" or "--autoencoder runs/ae" for a latent text-to-image model).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$PWD
PY=${PYTHON:-python3}
command -v "$PY" >/dev/null || PY=python
export PYTHONUNBUFFERED=1 PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}
SMOKE=${SMOKE:-0}
MODE=${MODE:-gpu}
[ "$SMOKE" = 1 ] && MODE=smoke
case "$MODE" in
  gpu)   BUDGET=${BUDGET:-300}; N=${N:-5000}; NREF=${NREF:-10000}; PRESET=${PRESET:-gpu}; SB=${SB:-1000}; DEV=() ;;
  cpu)   BUDGET=${BUDGET:-600}; N=${N:-500}; NREF=${NREF:-10000}; PRESET=${PRESET:-cpu}; SB=${SB:-250}; DEV=(--device cpu) ;;
  smoke) BUDGET=${BUDGET:-10}; N=${N:-20}; NREF=${NREF:-200}; PRESET=${PRESET:-tiny}; SB=${SB:-20}; DEV=(--device cpu)
         export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} ;;
  *) echo "MODE must be gpu or cpu, got $MODE"; exit 1 ;;
esac
WS=${WS:-0 1 3 5}
RUN_DIR=${RUN_DIR:-/tmp/minidiff_text_$MODE}
RESULTS=${RESULTS:-${OUT:-$REPO/benchmarks/results/text_to_image_$MODE}}
[ "$MODE" = smoke ] && RESULTS=${RESULTS_SMOKE:-$RUN_DIR/results}
mkdir -p "$RUN_DIR" "$RESULTS"
LOG=$RESULTS/log.txt
: > "$LOG"
T0=$SECONDS
stage() { echo "=== [$((SECONDS - T0)) s] $*" | tee -a "$LOG"; }
quiet() { tr '\r' '\n' | grep -v '^\s*$' | awk 'NR % 10 == 1 || !/it\/s\]$/' | tee -a "$LOG"; }
if [ "$MODE" = gpu ] && ! "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
  echo "no CUDA device: MODE=cpu or SMOKE=1 run it on the CPU" | tee -a "$LOG"; exit 1
fi
"$PY" -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU')" | tee -a "$LOG"

# the prompts: the captions of the first N test images (their distribution is the test set's), and held-out ones
"$PY" - "$RUN_DIR" "$N" <<'PYEOF'
import sys
from pathlib import Path
from minidiff.data.captions import caption_dataset, held_out_prompts
run, n = Path(sys.argv[1]), int(sys.argv[2])
_, _, text = caption_dataset("test", limit=n)
(run / "test_prompts.txt").write_text("\n".join(text) + "\n")
(run / "held_out_prompts.txt").write_text("\n".join(held_out_prompts(max(30, n // 5))) + "\n")
PYEOF

rm -rf "$RUN_DIR/text"
read -r -a TRAIN_EXTRA <<< "${TRAIN_ARGS:-}"
stage "train (edm, --condition text, preset $PRESET, $BUDGET s)"
"$PY" -m minidiff.cli train --backend torch --dataset fashion-mnist --method edm --condition text --preset "$PRESET" \
  --steps 1000000 --max-seconds "$BUDGET" --sample-every 0 --out "$RUN_DIR/text" "${TRAIN_EXTRA[@]}" "${DEV[@]}" 2>&1 \
  | quiet
for w in $WS; do
  stage "eval: $N test captions, guidance $w"
  "$PY" -m minidiff.cli eval --ckpt "$RUN_DIR/text" --n "$N" --sampler heun --steps 18 --batch-size "$SB" \
    --n-reference "$NREF" --prompts "$RUN_DIR/test_prompts.txt" --guidance "$w" --out "$RESULTS/eval_w$w.json" \
    "${DEV[@]}" 2>&1 | quiet
done
W_HELD=${W_HELD:-3}
stage "eval: held-out combinations, guidance $W_HELD"
"$PY" -m minidiff.cli eval --ckpt "$RUN_DIR/text" --n "$(wc -l < "$RUN_DIR/held_out_prompts.txt")" --sampler heun \
  --steps 18 --batch-size "$SB" --n-reference "$NREF" --prompts "$RUN_DIR/held_out_prompts.txt" --guidance "$W_HELD" \
  --out "$RESULTS/held_out_w$W_HELD.json" "${DEV[@]}" 2>&1 | quiet
"$PY" -m minidiff.cli sample --ckpt "$RUN_DIR/text" --n 40 --steps 18 --guidance "$W_HELD" \
  --prompt-file "$RUN_DIR/test_prompts.txt" --out "$RESULTS/grid_w$W_HELD.png" "${DEV[@]}" 2>&1 | quiet
stage "summary"
"$PY" benchmarks/text_to_image_summary.py "$RESULTS" "$RUN_DIR" "$BUDGET" "$MODE" "$WS" "$W_HELD" 2>&1 | tee -a "$LOG"
stage "done; results in $RESULTS"
