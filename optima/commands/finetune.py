"""`optima finetune TASK`: fine-tune the pre-trained teacher on one task (task head from optima.models.heads)."""

from __future__ import annotations

from optima.args import add_run_arguments


def add_arguments(parser) -> None:
    parser.add_argument("task", help="captions | vqa | snli_ve | nlvr2")
    add_run_arguments(parser)
    parser.add_argument("--init", required=True, help="pre-trained teacher run directory (optima pretrain --out)")
    parser.add_argument("--seed", type=int, default=None,
                        help="the teacher's seed (default: the config's `seed`); under distill.teacher_seed: per_seed "
                             "the pipeline fine-tunes one teacher per student seed")


def run(args) -> int:
    from optima.config import config_hash, finetune_section
    from optima.tasks import build_dataset
    from optima.tasks import check_task
    from optima.data.tokenizers import load_tokenizer
    from optima.args import setup
    from optima.eval.evaluate import make_validator
    from optima.runs import claim_run_dir, finish_run, metrics_record, read_run_info
    from optima.distill.loop import TrainSpec, fit
    from optima.distill.objectives import TaskObjective
    from optima.runtime import seed_everything, shutdown
    from optima.models import load_model
    from optima.models.heads import save_task_model
    from optima.tasks import create_task_model

    task = check_task(args.task)
    if args.seed is not None:  # the saved config.yaml then names the seed the teacher was trained with
        args.overrides = [*args.overrides, f"seed={args.seed}"]
    config, runtime = setup(args)
    read_run_info(args.init, expect_role="pretrain")
    section, data_cfg = finetune_section(config, task), config["data"]
    seed = config["seed"]
    fingerprint = {"verb": "finetune", "task": task, "finetune": section, "model": config["model"], "seed": seed,
                   "data": config_hash(data_cfg), "world_size": runtime.world_size}
    run_info = {"task": task, "method": "teacher", "seed": seed, "role": "teacher"}
    # the run directory: checked, locked while this runs, cleared under --force
    with claim_run_dir(args.out, runtime, run_info, fingerprint, args.force):
        seed_everything(seed)
        tokenizer = load_tokenizer(args.data)
        train_set = build_dataset(task, args.data, "train", tokenizer, data_cfg["image_size"], train=True,
                                  cache_images=data_cfg["cache_images"])
        coca = load_model(args.init)
        task_model = create_task_model(task, coca, getattr(train_set, "num_classes", None))
        if section["grad_checkpointing"]:  # block activations recomputed in backward: the teacher fits its GPU
            task_model.coca.set_grad_checkpointing(True)
        validate = make_validator(task_model, task, args.data, tokenizer, config, runtime)
        log = fit(TaskObjective(task_model), train_set, TrainSpec.from_config(section), runtime, args.out, seed,
                  fingerprint, num_workers=config["runtime"]["num_workers"], desc=f"finetune {task}",
                  evaluator=validate)
        metrics = metrics_record(run_info, "val", validate()) if validate else None
        finish_run(args.out, runtime, lambda d: save_task_model(task_model.cpu(), d), log, config,
                   {**run_info, "fingerprint": fingerprint}, metrics)
    shutdown(runtime)
    return 0
