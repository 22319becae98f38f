rule tables:
    """The paper's tables (Markdown, booktabs LaTeX, CSV) from runs.csv alone."""
    input:
        runs=rules.collect.output.runs,
    output:
        **paper_outputs("tables", planned_tables(config), report_format="csv"),
    log:
        f"{LOGS}/paper/tables.log",
    params:
        config=config_args,
        fingerprint=fingerprint("tables"),
        out_dir=out_dir_of,
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        "../../environment.yml"
    shell:
        "optima tables {params.config} --runs {input.runs:q} --out-dir {params.out_dir:q} --threads {threads} > {log:q} 2>&1"


rule figures:
    """The paper's figures (PNG and PDF) from runs.csv and the training logs."""
    input:
        runs=rules.collect.output.runs,
        train_logs=student_train_logs(),
    output:
        **paper_outputs("figures", planned_figures(config), report_format="png"),
    log:
        f"{LOGS}/paper/figures.log",
    params:
        config=config_args,
        fingerprint=fingerprint("figures"),
        logs_root=lambda wildcards, input: os.path.dirname(os.path.dirname(input.runs)),
        out_dir=out_dir_of,
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../environment.yml"
    shell:
        "optima figures {params.config} --runs {input.runs:q} --logs-root {params.logs_root:q} "
        "--out-dir {params.out_dir:q} --threads {threads} > {log:q} 2>&1"
