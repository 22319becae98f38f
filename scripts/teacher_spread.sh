#!/usr/bin/env bash
# Teacher spread: retrain a config's teachers (pre-training and every task's fine-tuning) with other global
# seeds, score them on the config's evaluation split, and tabulate all seeds' teachers beside the students'
# seed spread. Seed 0 is the config's own run (run it first: snakemake --cores all --configfile CONFIG).
#   bash scripts/teacher_spread.sh config/claims.yaml 1 2
# Writes RESULTS/teacher-seeds/teacher_spread.{md,csv} (RESULTS: the config's paths.results).
set -euo pipefail
config=$1; shift
[[ $# -gt 0 ]] || { echo "usage: $0 CONFIG SEED [SEED ...]" >&2; exit 2; }
read -r results split tasks < <(python - "$config" <<'PY'
import sys, yaml
c = yaml.safe_load(open(sys.argv[1]))
print(c["paths"]["results"].rstrip("/"), c["eval"]["split"], ",".join(c["tasks"]))
PY
)
IFS=, read -r -a task_list <<< "$tasks"
metrics=()
for task in "${task_list[@]}"; do  # the config's own teachers (seed 0): already scored by its run
  metrics+=("$results/teachers/$task/metrics.json" "$results/teachers/$task/metrics_$split.json")
done
for seed in "$@"; do
  root="$results/teacher-seeds/seed$seed"
  targets=()
  for task in "${task_list[@]}"; do targets+=("$root/teachers/$task/metrics_$split.json"); done
  # only the teachers: one evaluation job per run gives the teacher-only targets
  snakemake --cores all --configfile "$config" --config "seed=$seed" "paths={results: $root}" "eval={group_by: run}" \
    -- "${targets[@]}"
  for task in "${task_list[@]}"; do metrics+=("$root/teachers/$task/metrics.json" "$root/teachers/$task/metrics_$split.json"); done
done
optima collect --out-dir "$results/teacher-seeds" "${metrics[@]}"
optima spread --runs "$results/teacher-seeds/runs.csv" --students "$results/eval/runs.csv" --out-dir "$results/teacher-seeds"
