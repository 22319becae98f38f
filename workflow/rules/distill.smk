rule distill:
    """One student: task x method (distill.run) x seed (distill.seeds), distilled from the task's teacher."""
    input:
        data=f"{DATA}/{{task}}",
        teacher=f"{teacher_dir()}/model.safetensors",
        teacher_config=f"{teacher_dir()}/model_config.json",
    output:
        **run_outputs(student_dir()),
    log:
        f"{LOGS}/students/{{task}}/{{method}}/seed{{seed}}.log",
    params:
        config=config_args,
        fingerprint=fingerprint("distill"),
        teacher=lambda wildcards, input: os.path.dirname(input.teacher),
        run_dir=run_dir_of,
        launcher=launcher,
    threads: 1
    resources:
        mem_mb=4000,
        runtime=240,
        gpu=gpus_per_job(),
    conda:
        "../../environment.yml"
    shell:
        "{params.launcher} distill {wildcards.task} --method {wildcards.method} --seed {wildcards.seed} "
        "{params.config} --data {input.data} --teacher {params.teacher} --out {params.run_dir} "
        "--threads {threads} > {log} 2>&1"
