rule prepare:
    """One task's prepared data: the synthetic benchmark, or the official files converted."""
    input:
        official=official_inputs,
    output:
        data=directory(f"{DATA}/{{task}}"),
    log:
        f"{LOGS}/prepare/{{task}}.log",
    params:
        config=config_args,
        fingerprint=fingerprint("prepare"),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
    conda:
        "../../environment.yml"
    shell:
        "optima prepare {wildcards.task} {params.config} --out {output.data:q} --threads {threads} > {log:q} 2>&1"
