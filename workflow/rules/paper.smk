rule tables:
    """The paper's tables (Markdown, LaTeX, CSV) from runs.csv alone."""
    input:
        runs=rules.collect.output.runs,
    output:
        tables=report(
            directory(f"{RESULTS}/tables"),
            patterns=["{name}.csv"],
            caption="../report/tables.rst",
            category="Tables",
        ),
    log:
        f"{LOGS}/paper/tables.log",
    params:
        config=config_args,
        fingerprint=fingerprint("tables"),
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        "../../environment.yml"
    shell:
        "optima tables {params.config} --runs {input.runs} --out-dir {output.tables} --threads {threads} > {log} 2>&1"


rule figures:
    """The paper's figures (PNG and PDF) from runs.csv and the training logs."""
    input:
        runs=rules.collect.output.runs,
        train_logs=train_logs(),
    output:
        figures=report(
            directory(f"{RESULTS}/figures"),
            patterns=["{name}.png"],
            caption="../report/figures.rst",
            category="Figures",
        ),
    log:
        f"{LOGS}/paper/figures.log",
    params:
        config=config_args,
        fingerprint=fingerprint("figures"),
        logs_root=lambda wildcards, input: os.path.dirname(os.path.dirname(input.runs)),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../environment.yml"
    shell:
        "optima figures {params.config} --runs {input.runs} --logs-root {params.logs_root} "
        "--out-dir {output.figures} --threads {threads} > {log} 2>&1"
