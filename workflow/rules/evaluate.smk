if EVAL_GROUP == "run":

    rule evaluate_teacher:
        """A task's teacher scored on a split (eval.split for the tables)."""
        input:
            data=f"{DATA}/{{task}}",
            model=f"{teacher_dir()}/model.safetensors",
            model_config=f"{teacher_dir()}/model_config.json",
        output:
            metrics=f"{teacher_dir()}/metrics_{{split}}.json",
        log:
            f"{LOGS}/eval/teachers/{teacher_job_name()}_{{split}}.log",
        params:
            config=config_args,
            fingerprint=fingerprint("evaluate_teacher"),
            run_dir=lambda wildcards, input: os.path.dirname(input.model),
            launcher=single_process_launcher,
        threads: 1
        resources:
            mem_mb=4000,
            runtime=60,
            gpu=gpus_per_job(),
        conda:
            "../../environment.yml"
        shell:
            "{params.launcher} evaluate {params.config} --data {input.data:q} --run {params.run_dir:q} --split {wildcards.split} "
            "--out {output.metrics:q} --threads {threads} > {log:q} 2>&1"


    rule evaluate_student:
        """A student scored on a split (eval.split for the tables)."""
        input:
            data=f"{DATA}/{{task}}",
            model=f"{student_dir()}/model.safetensors",
            model_config=f"{student_dir()}/model_config.json",
        output:
            metrics=f"{student_dir()}/metrics_{{split}}.json",
        log:
            f"{LOGS}/eval/students/{{task}}/{{method}}/seed{{seed}}_{{split}}.log",
        params:
            config=config_args,
            fingerprint=fingerprint("evaluate_student"),
            run_dir=lambda wildcards, input: os.path.dirname(input.model),
            launcher=single_process_launcher,
        threads: 1
        resources:
            mem_mb=4000,
            runtime=60,
            gpu=gpus_per_job(),
        conda:
            "../../environment.yml"
        shell:
            "{params.launcher} evaluate {params.config} --data {input.data:q} --run {params.run_dir:q} --split {wildcards.split} "
            "--out {output.metrics:q} --threads {threads} > {log:q} 2>&1"

else:

    rule evaluate_task:
        """A task's teacher and every student of it scored on a split in one process: the split is loaded
        once, and a job's start-up costs more than scoring a tiny model (eval.group_by: task)."""
        input:
            data=f"{DATA}/{{task}}",
            models=task_models(),
        output:
            metrics=task_metrics_outputs(),
        log:
            f"{LOGS}/eval/{{task}}_{{split}}.log",
        params:
            config=config_args,
            fingerprint=fingerprint("evaluate_task"),
            runs=lambda wildcards, input: " ".join(f"--run {shlex.quote(os.path.dirname(m))}" for m in input.models),
            launcher=single_process_launcher,
        threads: 1
        resources:
            mem_mb=4000,
            runtime=120,
            gpu=gpus_per_job(),
        conda:
            "../../environment.yml"
        shell:
            "{params.launcher} evaluate {params.config} --data {input.data:q} {params.runs} "
            "--split {wildcards.split} --threads {threads} > {log:q} 2>&1"


rule collect:
    """Every run's metrics in long form (runs.csv: the evaluation split, and the validation split every
    run scored at the end of its training) and the primary metrics for `dvc metrics show`."""
    input:
        metrics=eval_metrics_files(),
        val_metrics=validation_metrics_files(),
    output:
        runs=f"{RESULTS}/eval/runs.csv",
        summary=f"{RESULTS}/eval/summary.json",
    log:
        f"{LOGS}/eval/collect.log",
    params:
        config=config_args,
        out_dir=lambda wildcards, output: os.path.dirname(output.runs),
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        "../../environment.yml"
    shell:
        "optima collect {params.config} --out-dir {params.out_dir:q} --threads {threads} {input.metrics:q} {input.val_metrics:q} > {log:q} 2>&1"
