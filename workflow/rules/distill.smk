rule teacher_targets:
    """The task teacher's outputs for every training example, computed once for all its students
    (distill.teacher_cache; `auto` records 'on the fly' when the estimate exceeds max_gb). Per teacher:
    one per student seed under distill.teacher_seed: per_seed."""
    input:
        data=f"{DATA}/{{task}}",
        teacher=f"{teacher_dir()}/model.safetensors",
        teacher_config=f"{teacher_dir()}/model_config.json",
    output:
        targets=directory(targets_dir()),
    log:
        f"{LOGS}/teachers/{teacher_job_name()}_targets.log",
    params:
        config=config_args,
        fingerprint=fingerprint("teacher_targets"),
        teacher=lambda wildcards, input: os.path.dirname(input.teacher),
    threads: 1
    resources:
        mem_mb=8000,
        runtime=120,
        gpu=gpus_per_job(),
    conda:
        "../../environment.yml"
    shell:
        "optima teacher-targets {wildcards.task} {params.config} --data {input.data:q} --teacher {params.teacher:q} "
        "--out {output.targets:q} --threads {threads} > {log:q} 2>&1"


if DISTILL_GROUP == "task":

    rule distill_task:
        """Every student of a task (distill.run x distill.seeds), trained in turn by one process: the data,
        the teacher and its targets are loaded once, and each student trains exactly as in its own job
        (distill.group_by: task; a job's start-up costs more than training a tiny student). Under
        distill.teacher_seed: per_seed one job per task and seed: the students of that seed's teacher."""
        input:
            data=f"{DATA}/{{task}}",
            teacher=f"{teacher_dir()}/model.safetensors",
            teacher_config=f"{teacher_dir()}/model_config.json",
            targets=targets_input,
        output:
            task_student_outputs(),
        log:
            f"{LOGS}/students/{teacher_job_name()}.log",
        params:
            config=config_args,
            fingerprint=fingerprint("distill_task"),
            teacher=lambda wildcards, input: os.path.dirname(input.teacher),
            targets=lambda wildcards, input: f"--targets {shlex.quote(str(input.targets))}" if input.targets else "",
            runs=task_student_runs,
            out_root=lambda wildcards: students_root(wildcards.task),
            launcher=launcher,
        threads: 1
        resources:
            mem_mb=4000,
            runtime=480,
            gpu=gpus_per_job(),
        conda:
            "../../environment.yml"
        shell:
            "{params.launcher} distill {wildcards.task} {params.runs} {params.config} --data {input.data:q} "
            "--teacher {params.teacher:q} {params.targets} --out-root {params.out_root:q} --threads {threads} > {log:q} 2>&1"

else:

    rule distill:
        """One student: task x method (distill.run) x seed (distill.seeds), distilled from the task's teacher."""
        input:
            data=f"{DATA}/{{task}}",
            teacher=f"{teacher_dir()}/model.safetensors",
            teacher_config=f"{teacher_dir()}/model_config.json",
            targets=targets_input,
        output:
            **run_outputs(student_dir()),
        log:
            f"{LOGS}/students/{{task}}/{{method}}/seed{{seed}}.log",
        params:
            config=config_args,
            fingerprint=fingerprint("distill"),
            teacher=lambda wildcards, input: os.path.dirname(input.teacher),
            targets=lambda wildcards, input: f"--targets {shlex.quote(str(input.targets))}" if input.targets else "",
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
            "{params.config} --data {input.data:q} --teacher {params.teacher:q} {params.targets} --out {params.run_dir:q} "
            "--threads {threads} > {log:q} 2>&1"
