#!/usr/bin/env bash
# The schedule pilot (validation only): layerwise and uniform students under learning-rate schedules and
# horizons that keep late bandit rounds meaningful, distilled from the rewards pilot's teachers
# (config/overlays/pilot-rewards.yaml, same data, seeds, probe and held-out split), scored on validation at the
# end of training. The choice for the next claims run is made on these two methods only, never on OPTIMA.
#   bash scripts/pilot_schedule.sh RESULTS_OF_THE_REWARDS_PILOT OUT [THREADS]
# OUT/VARIANT/students/TASK/METHOD/seedS/metrics.json; then `optima collect` over them (README in the
# published folder).
set -euo pipefail
pilot=${1:?the results folder of the rewards pilot (paths.results of config/overlays/pilot-rewards.yaml)}
out=${2:?output folder}
threads=${3:-1}
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
config=config/claims.yaml
overlay=(--set distill.heldout_size=256 --set distill.log_rewards=false)
# variant -> settings: rounds of 4 steps; the last third of the rounds' share of the learning-rate mass in brackets
# (cosine over 40 rounds, 5.7 %, is the rewards pilot's own layerwise and uniform students)
declare -A variants=(
  [constant-80]="--set distill.steps=320 --set distill.checkpoint_every=160 --set distill.lr_schedule=constant"  # 33 %
  [linear50-80]="--set distill.steps=320 --set distill.checkpoint_every=160 --set distill.lr_schedule=linear --set distill.lr_floor=0.5"  # 26 %
)
for variant in ${VARIANTS:-constant-80 linear50-80}; do
  for task in captions nlvr2; do
    for seed in 0 1 2; do
      teacher=$pilot/teachers/$task/seed$seed
      targets=()
      [[ -d $teacher/targets ]] && targets=(--targets "$teacher/targets")
      # shellcheck disable=SC2086
      optima distill "$task" --config "$config" "${overlay[@]}" ${variants[$variant]} \
        --set "distill.seeds=[$seed]" --set distill.teacher_seed=per_seed \
        --data "data/processed/claims/$task" --teacher "$teacher" "${targets[@]}" \
        --method layerwise --method uniform --seed "$seed" --out-root "$out/$variant/students/$task" \
        --threads "$threads"
    done
  done
done
