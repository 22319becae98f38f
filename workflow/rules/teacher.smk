rule pretrain:
    """The CoCa teacher before fine-tuning: pre-trained on the captions data, or loaded (pretrain.mode)."""
    input:
        data=f"{DATA}/captions",
        pretrained=pretrained_input,
    output:
        **run_outputs(pretrain_dir(), metrics=False),
    log:
        f"{LOGS}/teachers/pretrain.log",
    params:
        config=config_args,
        fingerprint=fingerprint("pretrain"),
        run_dir=run_dir_of,
        launcher=launcher,
    threads: 4  # nothing else runs while the teacher pre-trains (Snakemake caps it at --cores)
    resources:
        mem_mb=4000,
        runtime=240,
        gpu=gpus_per_job(),
    conda:
        "../../environment.yml"
    shell:
        "{params.launcher} pretrain {params.config} --data {input.data:q} --out {params.run_dir:q} "
        "--threads {threads} > {log:q} 2>&1"


rule finetune:
    """The teacher of one task, fine-tuned from the pre-trained teacher (under distill.teacher_seed:
    per_seed one per student seed, fine-tuned with that seed), or taken from finetune.teachers (finetune.mode: load)."""
    input:
        unpack(finetune_inputs),
    output:
        **run_outputs(teacher_dir()),
    log:
        f"{LOGS}/teachers/{teacher_job_name()}.log",
    params:
        config=config_args,
        fingerprint=fingerprint("finetune"),
        init=lambda wildcards, input: f" --init {shlex.quote(os.path.dirname(input.init))}" if "init" in input.keys() else "",
        seed=teacher_seed_arg,
        run_dir=run_dir_of,
        launcher=launcher,
    threads: 1
    priority: 10  # every teacher before any student: the longest fine-tuning must not start last (a serial tail)
    resources:
        mem_mb=4000,
        runtime=240,
        gpu=gpus_per_job(),
    conda:
        "../../environment.yml"
    shell:
        "{params.launcher} finetune {wildcards.task} {params.config} --data {input.data:q}{params.init}{params.seed} "
        "--out {params.run_dir:q} --threads {threads} > {log:q} 2>&1"
