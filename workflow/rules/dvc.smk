localrules:
    dvc_lock,


rule dvc_lock:
    """Record every output of the default pipeline in dvc.lock (`dvc commit`), so that `dvc repro` after
    `snakemake --cores all` finds the pipeline up to date: one state for both front doors. Only for the
    default scale (params.yaml, no overrides): dvc.yaml describes exactly that DAG."""
    input:
        runs=rules.collect.output.runs,
        summary=rules.collect.output.summary,
        tables=rules.tables.output,
        figures=rules.figures.output,
    output:
        lock="dvc.lock",
    log:
        f"{LOGS}/dvc_lock.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        "../../environment.yml"
    shell:
        "dvc commit --force --no-relink > {log:q} 2>&1"
