"""`optima finetune TASK`: fine-tune the pre-trained teacher on one task (task head from optima.models.heads), or,
under ``finetune.mode: load``, take a stored fine-tuned teacher (a run split into pieces: teachers once, students
later, on another machine)."""

from __future__ import annotations

from optima.args import add_run_arguments


def add_arguments(parser) -> None:
    parser.add_argument("task", help="captions | vqa | snli_ve | nlvr2")
    add_run_arguments(parser)
    parser.add_argument("--init", help="pre-trained teacher run directory (optima pretrain --out); "
                                          "not read under finetune.mode: load")
    parser.add_argument("--seed", type=int, default=None,
                        help="the teacher's seed (default: the config's `seed`); under distill.teacher_seed: per_seed "
                             "the pipeline fine-tunes one teacher per student seed")


def run(args) -> int:
    from optima.config import config_hash, finetune_section
    from optima.errors import ConfigError
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
    section, data_cfg = finetune_section(config, task), config["data"]
    seed = config["seed"]
    if section["mode"] == "load":
        load_stored_teacher(args, config, runtime, task, seed)
        shutdown(runtime)
        return 0
    if not args.init:
        raise ConfigError("optima finetune: --init (the pre-trained teacher) is required under finetune.mode: train")
    read_run_info(args.init, expect_role="pretrain")
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


def load_stored_teacher(args, config: dict, runtime, task: str, seed: int) -> None:
    """``finetune.mode: load``: copy the stored teacher of (task, seed) into ``--out`` as if fine-tuned here: its
    weights, train log and validation metrics. It must have been fine-tuned for this task and seed, from the same
    model, on data generated or prepared with the same data settings; otherwise the error names what differs."""
    import json
    import shutil

    from optima.config import config_hash
    from optima.distill.trainlog import TrainLog
    from optima.errors import CheckpointError, ConfigError
    from optima.runs import claim_run_dir, finish_run, read_run_info, stored_teacher_dir, verify_checksums
    from optima.tasks import load_task_model

    root = config["finetune"]["teachers"]
    if not root:
        raise ConfigError("finetune.mode: load needs finetune.teachers (the folder of stored fine-tuned teachers)")
    per_seed = config["distill"]["teacher_seed"] == "per_seed"
    source = stored_teacher_dir(root, task, seed, per_seed)
    info = read_run_info(source, expect_role="teacher", expect_task=task)
    verify_checksums(source)  # a damaged file is named before anything is written
    stored = info.get("fingerprint") or {}
    data_hash, model = config_hash(config["data"]), (stored.get("model") or {}).get("teacher")
    differs = [what for what, ok in (
        (f"seed {info.get('seed')} (expected {seed})", info.get("seed") == seed),
        (f"data settings (hash {stored.get('data')}, expected {data_hash})", stored.get("data") == data_hash),
        (f"model {model!r} (expected {config['model']['teacher']!r})", model == config["model"]["teacher"]),
    ) if not ok]
    if differs:
        raise CheckpointError(f"{source}: stored teacher does not match this run: {'; '.join(differs)}")
    load_task_model(source)  # the weights load (shapes, a head of this task) before anything is written
    try:
        metrics = json.loads((source / "metrics.json").read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{source / 'metrics.json'}: corrupt ({exc})") from None
    fingerprint = {"verb": "finetune", "mode": "load", "task": task, "seed": seed, "source": str(source),
                   "source_fingerprint": stored}
    run_info = {"task": task, "method": "teacher", "seed": seed, "role": "teacher"}
    with claim_run_dir(args.out, runtime, run_info, fingerprint, args.force):
        log = TrainLog()
        log.restore((source / "train_log.csv").read_text())

        def copy_model(staging):
            for name in ("model.safetensors", "model_config.json"):
                shutil.copyfile(source / name, staging / name)

        finish_run(args.out, runtime, copy_model, log, config,
                   {**run_info, "fingerprint": fingerprint, "loaded_from": str(source)}, metrics)
    print(f"optima finetune {task}: loaded the stored teacher {source} (finetune.mode: load)", flush=True)
