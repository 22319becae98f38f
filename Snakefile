# OPTIMA pipeline: [fetch ->] prepare -> pretrain -> fine-tune teachers -> distil students -> evaluate ->
# collect -> tables, figures (-> `snakemake --report report.html`). Every rule calls an `optima` verb.
#
#   snakemake --cores all                                  # default scale (params.yaml)
#   snakemake --cores all --configfile config/smoke.yaml   # another scale: one complete file
#   snakemake --cores all --config distill="{seeds: [0, 1, 2]}"   # passed to the verbs as --set
#   snakemake --profile workflow/profiles/slurm --configfile config/paper.yaml   # cluster
#   snakemake --configfile config/smoke.yaml --report report.html
#
# The config is validated here, at load time, so a bad key fails before any job starts. A job reruns
# when the config keys it reads change (workflow/rules/common.smk: config_keys). `dvc repro` runs
# the same jobs: dvc.yaml is generated from this workflow (workflow/scripts/dvc_yaml.py).
# Targets after --configfile need `--` (it takes several files): ... --configfile F -- TARGET

from snakemake.utils import min_version

min_version("8.0")


configfile: "params.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/fetch.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/teacher.smk"
include: "workflow/rules/distill.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/paper.smk"


if DVC_TRACKED:

    include: "workflow/rules/dvc.smk"


localrules:
    all,
    collect,
    tables,
    figures,


rule all:
    """Every table and figure of the paper, and the collected metrics behind them."""
    input:
        runs=rules.collect.output.runs,
        summary=rules.collect.output.summary,
        tables=rules.tables.output,
        figures=rules.figures.output,
        dvc_lock=["dvc.lock"] if DVC_TRACKED else [],
    default_target: True
