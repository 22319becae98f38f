#!/usr/bin/env bash
# Teacher spread: retrain a config's teachers (pre-training, unless the config loads it, and every task's
# fine-tuning) with other global seeds, score them on the config's evaluation split, and tabulate all seeds'
# teachers beside the students' seed spread. Seed 0 is the config's own run (run it first: snakemake --cores all --configfile CONFIG).
#   bash scripts/teacher_spread.sh config/claims.yaml 1 2
# Writes RESULTS/teacher-seeds/teacher_spread.{md,csv} (RESULTS: the config's paths.results).
#
# Another machine, emulated: retrain the config's own seed with ATen's CPU kernels capped at another
# instruction set (ATEN_CPU_CAPABILITY: default | avx2 | avx512), as on a CPU without AVX-512, and compare
# those teachers with the config's run:
#   bash scripts/teacher_spread.sh config/claims.yaml --kernels avx2
# Writes RESULTS/teacher-kernels/ISA/teacher_shift.{md,csv}.
#
# Choosing a recipe: train the teachers of some tasks under a candidate recipe (Snakemake --config overrides)
# as four draws, global seeds 0, 1 and 2 on this machine's kernels and seed 0 on another instruction set
# (RECIPE_KERNELS, default avx2), two draws at a time, and tabulate their validation scores (what fine-tuning
# writes; the test split is never scored), beside the students' validation seed spread where the config's run exists:
#   bash scripts/teacher_spread.sh config/claims.yaml --recipe vqa12k vqa "finetune={overrides: {vqa: {steps: 12000}}}"
# Writes RESULTS/teacher-recipes/NAME/teacher_draws.{md,csv}.
set -euo pipefail
usage="usage: $0 CONFIG SEED [SEED ...]  |  $0 CONFIG --kernels ISA  |  $0 CONFIG --recipe NAME TASK[,TASK] [OVERRIDE ...]"
config=${1:?$usage}; shift
[[ $# -gt 0 ]] || { echo "$usage" >&2; exit 2; }
read -r results data split tasks seed0 < <(python - "$config" <<'PY'
import sys, yaml
c = yaml.safe_load(open(sys.argv[1]))
print(c["paths"]["results"].rstrip("/"), c["paths"]["data"].rstrip("/"), c["eval"]["split"], ",".join(c["tasks"]), c.get("seed", 0))
PY
)
IFS=, read -r -a task_list <<< "$tasks"

# retrain and score only the teachers (one evaluation job per run gives the teacher-only targets)
retrain_teachers() {  # ROOT SEED METRICS [OVERRIDE ...]: the teachers retrained with global seed SEED under ROOT,
  local root=$1 seed=$2 metrics=$3 targets=() task  # up to each task's METRICS file (metrics.json: validation only)
  shift 3
  for task in "${task_list[@]}"; do targets+=("$root/teachers/$task/$metrics"); done
  # one teacher per task whatever the config's distill.teacher_seed (a per_seed run's spread is in its own runs.csv)
  snakemake --cores "${cores:-all}" --configfile "$config" --config "seed=$seed" "paths={results: $root}" "eval={group_by: run}" \
    "distill={teacher_seed: shared}" "$@" -- "${targets[@]}"
}
check_kernels() {  # ISA: exit 2 unless torch runs ISA's kernels here and they are not this machine's own
  local active native
  active=$(ATEN_CPU_CAPABILITY=$1 python -c "import torch; print(torch.backends.cpu.get_cpu_capability().lower())")
  native=$(env -u ATEN_CPU_CAPABILITY python -c "import torch; print(torch.backends.cpu.get_cpu_capability().lower())")
  [[ $active == "${1,,}" ]] || { echo "ATEN_CPU_CAPABILITY=$1: torch runs $active kernels here (unknown or above this CPU)" >&2; exit 2; }
  [[ $active != "$native" ]] || { echo "kernels $1: this machine already runs $native kernels; nothing would differ" >&2; exit 2; }
}
teacher_metrics() {  # ROOT: the metrics files of the teachers under ROOT
  local task
  for task in "${task_list[@]}"; do echo "$1/teachers/$task/metrics.json" "$1/teachers/$task/metrics_$split.json"; done
}

if [[ $1 == --recipe ]]; then
  [[ $# -ge 3 && -n $2 && -n $3 ]] || { echo "$usage" >&2; exit 2; }
  name=$2; IFS=, read -r -a task_list <<< "$3"; shift 3
  isa=${RECIPE_KERNELS:-avx2}
  check_kernels "$isa"
  root="$results/teacher-recipes/$name"
  mkdir -p "$root"
  # shellcheck disable=SC2046
  snakemake --cores all --configfile "$config" -- $(printf "$data/%s " "${task_list[@]}")  # before the draws share it
  overrides=("$@")
  draw() {  # LABEL SEED [ISA]: one draw of the recipe, on one core, logged to ROOT/LABEL.log
    if ! (if [[ -n ${3:-} ]]; then export ATEN_CPU_CAPABILITY=$3; fi
          cores=1 retrain_teachers "$root/$1" "$2" metrics.json "${overrides[@]}") > "$root/$1.log" 2>&1; then
      echo "draw $1 failed; the end of $root/$1.log:" >&2; tail -n 30 "$root/$1.log" >&2; return 1
    fi
  }
  draw_two() {  # LABEL SEED ISA LABEL SEED ISA: two draws side by side (ISA empty: this machine's kernels)
    local first second failed=0
    draw "$1" "$2" "$3" & first=$!
    draw "$4" "$5" "$6" & second=$!
    wait $first || failed=1
    wait $second || failed=1
    return $failed
  }
  labels=("seed$seed0" "seed$((seed0 + 1))" "seed$((seed0 + 2))" "seed$seed0-$isa")
  draw_two "${labels[0]}" "$seed0" "" "${labels[3]}" "$seed0" "$isa" || exit 1
  draw_two "${labels[1]}" $((seed0 + 1)) "" "${labels[2]}" $((seed0 + 2)) "" || exit 1
  draws=()
  for label in "${labels[@]}"; do
    # shellcheck disable=SC2046
    optima collect --out-dir "$root/$label" $(printf "$root/$label/teachers/%s/metrics.json " "${task_list[@]}")
    draws+=(--draw "$label=$root/$label/runs.csv")
  done
  students=()  # the yardstick: the config's students on validation, kept beside the draws
  if [[ -f $results/eval/runs.csv ]]; then
    python -c "import sys, pandas as pd; r = pd.read_csv(sys.argv[1]); \
r[(r.role == 'student') & (r.split == 'val')].to_csv(sys.argv[2], index=False)" "$results/eval/runs.csv" "$root/students.csv"
    students=(--students "$root/students.csv")
  fi
  optima spread "${draws[@]}" "${students[@]}" --out-dir "$root"
  yardstick=${students[1]:+"validation students of $results/eval/runs.csv"}
  python - "$config" "$isa" "${task_list[*]}" "${labels[*]}" "${yardstick:-none}" "${overrides[@]}" > "$root/recipe.yaml" <<'PY'
import sys, yaml  # what the draws ran (enough to train them again) and where the yardstick came from
config, isa, tasks, labels, students, *overrides = sys.argv[1:]
print(yaml.safe_dump({"config": config, "tasks": tasks.split(), "overrides": overrides, "other_kernels": isa,
                      "draws": labels.split(), "students": students}, sort_keys=False), end="")
PY
  exit 0
fi

if [[ $1 == --kernels ]]; then
  isa=${2:?$usage}
  check_kernels "$isa"
  root="$results/teacher-kernels/$isa"
  ATEN_CPU_CAPABILITY=$isa retrain_teachers "$root" "$seed0" "metrics_$split.json"
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
  retrain_teachers "$root" "$seed" "metrics_$split.json"
  # shellcheck disable=SC2046
  metrics+=($(teacher_metrics "$root"))
done
optima collect --out-dir "$results/teacher-seeds" "${metrics[@]}"
optima spread --runs "$results/teacher-seeds/runs.csv" --students "$results/eval/runs.csv" --out-dir "$results/teacher-seeds"
