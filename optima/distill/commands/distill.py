"""`optima distill TASK --method M --seed S`: distil a student from the fine-tuned teacher.

The student is built from the teacher through the layer map (``model.student_layers``,
``model.layer_map``) and trained with ``task + kd_weight * KD + layer_weight * layer MSE`` over the
modules the method's policy selects each round (``distill.methods.M``).
"""

from __future__ import annotations

from optima.distill.commands.common import add_common_arguments


def add_arguments(parser) -> None:
    parser.add_argument("task", help="captions | vqa | snli_ve | nlvr2")
    parser.add_argument("--method", required=True, help="a method defined in distill.methods of the config")
    parser.add_argument("--seed", type=int, required=True, help="run seed (student training and policy)")
    add_common_arguments(parser)
    parser.add_argument("--teacher", required=True, help="fine-tuned teacher run directory (optima finetune --out)")
    parser.add_argument("--targets", default=None,
                        help="the task's teacher targets (optima teacher-targets --out); default: computed on the fly")


def build_objective(task: str, config: dict, teacher, num_classes, kd_weight: float, temperature: float,
                    layer_weight: float):
    """``(objective, student, layer_map)``: the student made from the teacher through the layer map, its
    head copied from the teacher's, and the distillation objective with the config's loss settings."""
    from optima.distill.objectives import DistillationObjective
    from optima.models.heads import create_task_model
    from optima.models.student import make_student

    section, model_cfg = config["distill"], config["model"]
    student_coca, layer_map = make_student(teacher.coca, model_cfg.get("student_layers", 0.5),
                                           model_cfg.get("layer_map"))
    student = create_task_model(task, student_coca, num_classes)
    student.head.load_state_dict(teacher.head.state_dict())  # same widths: start from the teacher's head
    if section.get("grad_checkpointing", False):
        # activation checkpointing: each transformer block's activations are recomputed in backward instead
        # of kept (open_clip's non-reentrant checkpoint; the feature taps ignore the recomputation)
        student.coca.set_grad_checkpointing(True)
    kd_kind = "sigmoid" if task == "vqa" and section.get("vqa_kd", "sigmoid") == "sigmoid" else "softmax"
    objective = DistillationObjective(
        student, teacher, layer_map, kd_weight, temperature, layer_weight,
        layer_reduction=section.get("layer_reduction", "module_sum"),
        vision_pooler=section.get("vision_pooler", True), kd_kind=kd_kind)
    return objective, student, layer_map


def training_set(task: str, config: dict, data_dir, tokenizer):
    """The task's full training set, its items carrying their index (for cached teacher targets)."""
    from optima.data.datasets import build_dataset
    from optima.distill.targets import IndexedDataset

    data_cfg = config["data"]
    return IndexedDataset(build_dataset(task, data_dir, "train", tokenizer, data_cfg["image_size"], train=True,
                                        cache_images=data_cfg.get("cache_images", True)))


def run(args) -> int:
    from pathlib import Path

    from torch.utils.data import Subset

    from optima.bandits.registry import build_method_policy
    from optima.config import MODULES, config_hash, method_spec
    from optima.data.formats import check_task
    from optima.data.tokenizers import load_tokenizer
    from optima.distill.commands.common import finish_run, make_validator, metrics_record, read_run_info, setup
    from optima.distill.loop import TrainSpec, fit
    from optima.distill.probe import Probe, split_probe
    from optima.distill.rounds import RoundController
    from optima.distill.runtime import seed_everything, shutdown
    from optima.distill.sampling import fixed_batch, to_device
    from optima.distill.targets import TeacherTargets, expected_meta
    from optima.models.checkpoint import WEIGHTS_FILE
    from optima.models.heads import load_task_model, save_task_model

    task = check_task(args.task)
    config, runtime = setup(args)
    method = method_spec(config, args.method)
    read_run_info(args.teacher, expect_role="teacher", expect_task=task)
    section, data_cfg, model_cfg = config["distill"], config["data"], config["model"]
    seed_everything(args.seed)

    tokenizer = load_tokenizer(args.data)
    full_train = training_set(task, config, args.data, tokenizer)
    # every method trains on the same examples: those that show none of the probe's images
    probe_idx, train_idx = split_probe(full_train, section.get("probe_size", 64), section.get("probe_seed", 0))
    train_set = Subset(full_train, train_idx)

    teacher = load_task_model(args.teacher).to(runtime.device)
    objective, student, layer_map = build_objective(
        task, config, teacher, getattr(full_train, "num_classes", None), method["kd_weight"],
        method["temperature"], method["layer_weight"])
    objective.to(runtime.device)
    if args.targets:  # the teacher's outputs computed once for the task (optima teacher-targets)
        expected = expected_meta(objective, full_train, Path(args.teacher) / WEIGHTS_FILE)
        objective.targets = TeacherTargets.load(args.targets, expected, runtime.device)
        if runtime.is_main:
            print(f"teacher targets: {'cached in ' + args.targets if objective.targets else 'on the fly'}",
                  flush=True)

    callbacks = None
    if method["policy"] != "none":
        policy, arms = build_method_policy(method, MODULES, args.seed)
        # the probe costs time: only a policy that learns from rewards (or a request to log them) pays for it
        measure = policy.uses_rewards or bool(section.get("log_rewards", False))
        probe = None
        if measure and method["reward"] in ("probe", "task"):
            probe = Probe.from_config(objective, to_device(fixed_batch(full_train, probe_idx), runtime.device),
                                      runtime, section)

        def set_active(modules):
            objective.active = tuple(modules)

        callbacks = RoundController(policy, arms, method["round_steps"], method["reward"],
                                    probe.losses if probe else None, set_active, runtime, measure=measure)
    else:
        objective.active = tuple(MODULES)

    fingerprint = {"verb": "distill", "task": task, "method": method, "seed": args.seed, "distill": {
        k: v for k, v in section.items() if k not in ("methods", "run", "seeds", "optima")},
        "model": model_cfg, "data": config_hash(data_cfg), "world_size": runtime.world_size}
    validate = make_validator(student, task, args.data, tokenizer, config, runtime)
    log = fit(objective, train_set, TrainSpec.from_config(section), runtime, args.out, args.seed, fingerprint,
              callbacks=callbacks, num_workers=config["runtime"].get("num_workers", 0),
              desc=f"distill {task} {args.method} seed{args.seed}", evaluator=validate)
    if objective.targets is not None and runtime.is_main:
        print(f"teacher targets: {objective.targets.misses} batch(es) outside the cache, computed on the fly",
              flush=True)
    run_info = {"task": task, "method": args.method, "seed": args.seed, "role": "student",
                "policy": method["policy"], "layer_map": layer_map}
    metrics = metrics_record(run_info, "val", validate()) if validate else None
    finish_run(args.out, runtime, lambda d: save_task_model(student.cpu(), d), log, config, run_info, metrics)
    shutdown(runtime)
    return 0
