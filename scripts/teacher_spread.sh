#!/usr/bin/env bash
# Teacher spread: retrain a config's teachers (pre-training and every task's fine-tuning) with other global
# seeds, score them on the config's evaluation split, and tabulate all seeds' teachers beside the students'
# seed spread. Seed 0 is the config's own run (run it first: snakemake --cores all --configfile CONFIG).
#   bash scripts/teacher_spread.sh config/claims.yaml 1 2
# Writes RESULTS/teacher-seeds/teacher_spread.{md,csv} (RESULTS: the config's paths.results).
#
# Another machine, emulated: retrain the config's own seed with ATen's CPU kernels capped at another
# instruction set (ATEN_CPU_CAPABILITY: default | avx2 | avx512), as on a CPU without AVX-512, and compare
# those teachers with the config's run:
#   bash scripts/teacher_spread.sh config/claims.yaml --kernels avx2
# Writes RESULTS/teacher-kernels/ISA/teacher_shift.{md,csv}.
set -euo pipefail
usage="usage: $0 CONFIG SEED [SEED ...]  |  $0 CONFIG --kernels ISA"
config=${1:?$usage}; shift
[[ $# -gt 0 ]] || { echo "$usage" >&2; exit 2; }
read -r results split tasks seed0 < <(python - "$config" <<'PY'
import sys, yaml
c = yaml.safe_load(open(sys.argv[1]))
print(c["paths"]["results"].rstrip("/"), c["eval"]["split"], ",".join(c["tasks"]), c.get("seed", 0))
PY
)
IFS=, read -r -a task_list <<< "$tasks"

# retrain and score only the teachers (one evaluation job per run gives the teacher-only targets)
retrain_teachers() {  # ROOT SEED: the config's teachers retrained with global seed SEED under ROOT
  local root=$1 seed=$2 targets=() task
  for task in "${task_list[@]}"; do targets+=("$root/teachers/$task/metrics_$split.json"); done
  snakemake --cores all --configfile "$config" --config "seed=$seed" "paths={results: $root}" "eval={group_by: run}" \
    -- "${targets[@]}"
}
teacher_metrics() {  # ROOT: the metrics files of the teachers under ROOT
  local task
  for task in "${task_list[@]}"; do echo "$1/teachers/$task/metrics.json" "$1/teachers/$task/metrics_$split.json"; done
}

if [[ $1 == --kernels ]]; then
  isa=${2:?$usage}
  active=$(ATEN_CPU_CAPABILITY=$isa python -c "import torch; print(torch.backends.cpu.get_cpu_capability().lower())")
  native=$(env -u ATEN_CPU_CAPABILITY python -c "import torch; print(torch.backends.cpu.get_cpu_capability().lower())")
  [[ $active == "${isa,,}" ]] || { echo "ATEN_CPU_CAPABILITY=$isa: torch runs $active kernels here (unknown or above this CPU)" >&2; exit 2; }
  [[ $active != "$native" ]] || { echo "--kernels $isa: this machine already runs $native kernels; nothing would differ" >&2; exit 2; }
  root="$results/teacher-kernels/$isa"
  ATEN_CPU_CAPABILITY=$isa retrain_teachers "$root" "$seed0"
  # shellcheck disable=SC2046
  optima collect --out-dir "$root" $(teacher_metrics "$root")
  optima spread --runs "$root/runs.csv" --against "$results/eval/runs.csv" --students "$results/eval/runs.csv" \
    --out-dir "$root" --name teacher_shift
  exit 0
fi

# shellcheck disable=SC2046
metrics=($(teacher_metrics "$results"))  # the config's own teachers (seed 0): already scored by its run
for seed in "$@"; do
  root="$results/teacher-seeds/seed$seed"
  retrain_teachers "$root" "$seed"
  # shellcheck disable=SC2046
  metrics+=($(teacher_metrics "$root"))
done
optima collect --out-dir "$results/teacher-seeds" "${metrics[@]}"
optima spread --runs "$results/teacher-seeds/runs.csv" --students "$results/eval/runs.csv" --out-dir "$results/teacher-seeds"
