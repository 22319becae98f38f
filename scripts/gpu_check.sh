#!/usr/bin/env bash
# The prepared GPU check (issue 11, README "Memory on one GPU"): builds the paper's teacher (open_clip
# coca_ViT-L-14, randomly initialised: time and memory do not depend on the weights) and its half-depth
# student, trains a few steps of every method of config/paper.yaml (finetune, kd, layerwise, uniform,
# optima; probe included) at the paper's batch size in bf16 (runtime.precision) on random inputs of the
# paper's shapes (224 px, 76 tokens, 49,408-token vocabulary, 3,129 VQA answers), so no data is needed,
# and prints per method samples/s, peak memory (of a job training that method alone) and MFU.
#
#   scripts/gpu_check.sh                                  # paper scale: captions and nlvr2, ~10 steps each
#   TASKS=vqa STEPS=20 REPEATS=5 scripts/gpu_check.sh     # other tasks / more steps
#   ROUND_STEPS=100 STEPS=100 scripts/gpu_check.sh        # the paper's round length (probe share as in training)
#   CONFIG=config/smoke.yaml TASKS=vqa scripts/gpu_check.sh --set model.teacher=optima-nano-teacher  # CPU stand-in
#
# Environment: CONFIG (config/paper.yaml), TASKS ("captions nlvr2": the largest logits and the most images
# per example), STEPS (timed steps per method and repeat, 10), ROUND_STEPS (bandit round length, default
# STEPS so a block is one whole round with its probe measurement; the paper's is 100), REPEATS (3),
# WARMUP (1), OUT (results/bench/gpu_check). Extra arguments go to `optima bench step` (e.g. --set KEY=VALUE,
# --peak-tflops, --threads). Writes OUT/<task>.csv and .md. Exits non-zero on any failure (out of memory too).
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG=${CONFIG:-config/paper.yaml}
TASKS=${TASKS:-captions nlvr2}
STEPS=${STEPS:-10}
ROUND_STEPS=${ROUND_STEPS:-$STEPS}
REPEATS=${REPEATS:-3}
WARMUP=${WARMUP:-1}
OUT=${OUT:-results/bench/gpu_check}
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}
PYTHON=${PYTHON:-python}
if [ -z "${VIRTUAL_ENV:-}" ] && [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; fi

"$PYTHON" - <<'PY' || true
import torch
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"gpu_check: {p.name}, {p.total_memory / 2**30:.1f} GiB, torch {torch.__version__}, CUDA {torch.version.cuda}")
else:
    print("gpu_check: no CUDA device; running on the CPU (peak memory and MFU are reported on GPUs only)")
PY
for task in $TASKS; do
  echo "gpu_check: optima bench step --config $CONFIG --task $task --steps $STEPS (round_steps $ROUND_STEPS)"
  "$PYTHON" -m optima bench step --config "$CONFIG" --task "$task" --steps "$STEPS" \
    --repeats "$REPEATS" --warmup "$WARMUP" --out "$OUT/$task.csv" \
    --set "distill.round_steps=$ROUND_STEPS" "$@"
done
echo "gpu_check: done; tables in $OUT/"
