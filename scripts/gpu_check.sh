#!/usr/bin/env bash
# The GPU acceptance check (`optima gpu-check`, docs/paper-scale.md "The GPU acceptance check"): every GPU rule
# of config/paper.yaml (the teacher's fine-tuning per task, each distillation method one student at a time,
# evaluation) a few steps at the paper's shapes, on JPEG files decoded by the training loader, under torchrun
# over every visible GPU when there are several. A job fails when its peak memory exceeds the card (the
# smaller of this GPU and the one the slurm profile assumes), when a training job reaches less than 20 % of the
# card's bf16 peak, or when a loss is not finite. Prints a line per job and one PASS/FAIL summary line; writes
# $OUT/gpu_check.csv. Exit status: 0 pass, 1 fail, 2 no GPU (one line, nothing run).
#
#   scripts/gpu_check.sh                                   # every task and rule (about 10 minutes on one H100)
#   scripts/gpu_check.sh --tasks captions nlvr2            # the largest logits and two images per example
#   scripts/gpu_check.sh --rules distill --methods optima  # one rule, one method
#   scripts/gpu_check.sh --steps 20 --min-mfu 0.3          # longer timing, a stricter throughput threshold
#
# Environment: CONFIG (config/paper.yaml), OUT (results/gpu_check), THREADS (the CPUs this check may use:
# SLURM_CPUS_PER_TASK, else every CPU; torch threads and data workers of all ranks share them). Other options
# go to `optima gpu-check` (`optima gpu-check --help`).
set -uo pipefail
cd "$(dirname "$0")/.."
CONFIG=${CONFIG:-config/paper.yaml}
OUT=${OUT:-results/gpu_check}
THREADS=${THREADS:-${SLURM_CPUS_PER_TASK:-$(nproc)}}
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}
PYTHON=${PYTHON:-python}
if [ -z "${VIRTUAL_ENV:-}" ] && [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; fi

gpus=$("$PYTHON" -c "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)" 2>/dev/null)
gpus=${gpus:-0}
if [ "$gpus" -gt 1 ]; then
  exec "$PYTHON" -m torch.distributed.run --standalone --nproc-per-node "$gpus" -m optima gpu-check \
    --config "$CONFIG" --out "$OUT" --threads "$THREADS" "$@"
fi
exec "$PYTHON" -m optima gpu-check --config "$CONFIG" --out "$OUT" --threads "$THREADS" "$@"
