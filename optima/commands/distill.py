"""`optima distill TASK --method M --seed S`: distil a student from the fine-tuned teacher.

Several students in one process: repeat ``--method`` and ``--seed`` and give ``--out-root``; every
method x seed is trained in turn into ``OUT_ROOT/METHOD/seedSEED``, each exactly as its own process
would train it (the data, teacher and teacher targets are loaded once: ``distill.group_by: task``).

The student is built from the teacher through the layer map (``model.student_layers``,
``model.layer_map``) and trained with ``task + kd_weight * KD + layer_weight * layer MSE`` over the
modules the method's policy selects each round (``distill.methods.M``).
"""

from __future__ import annotations

from optima.args import add_run_arguments


def add_arguments(parser) -> None:
    parser.add_argument("task", help="captions | vqa | snli_ve | nlvr2")
    parser.add_argument("--method", action="append", required=True,
                        help="a method defined in distill.methods of the config; repeatable (with --out-root)")
    parser.add_argument("--seed", type=int, action="append", required=True,
                        help="run seed (student training and policy); repeatable (with --out-root)")
    add_run_arguments(parser, out_required=False)
    parser.add_argument("--out-root", default=None,
                        help="train every --method x --seed into OUT_ROOT/METHOD/seedSEED (instead of --out)")
    parser.add_argument("--teacher", required=True, help="fine-tuned teacher run directory (optima finetune --out)")
    parser.add_argument("--targets", default=None,
                        help="the task's teacher targets (optima teacher-targets --out); default: computed on the fly")


def planned_runs(args) -> list[tuple[str, int, str]]:
    """``(method, seed, run directory)`` for every student the command trains, in order."""
    from optima.errors import ConfigError

    if (args.out is None) == (args.out_root is None):
        raise ConfigError("give exactly one of --out (one student) and --out-root (every --method x --seed)")
    if args.out is not None:
        if len(args.method) != 1 or len(args.seed) != 1:
            raise ConfigError("--out trains one student: give one --method and one --seed (or use --out-root)")
        return [(args.method[0], args.seed[0], args.out)]
    for flag, values in (("--method", args.method), ("--seed", args.seed)):
        if len(set(values)) != len(values):
            raise ConfigError(f"{flag} given twice with the same value")
    return [(method, seed, f"{args.out_root}/{method}/seed{seed}") for method in args.method for seed in args.seed]


def run(args) -> int:
    import contextlib

    from torch.utils.data import Subset

    from optima.config import method_round_problem, method_spec
    from optima.errors import ConfigError
    from optima.tasks import check_task
    from optima.args import setup
    from optima.data.tokenizers import load_tokenizer
    from optima.distill.setup import training_set
    from optima.eval.evaluate import validation_set
    from optima.runs import claim_run_dir, read_run_info
    from optima.distill.probe import split_held_out
    from optima.runtime import shutdown
    from optima.tasks import load_task_model

    task = check_task(args.task)
    runs = planned_runs(args)
    config, runtime = setup(args)
    for method_name, _, _ in runs:
        method_spec(config, method_name)  # a wrong method name fails before any training
        problem = method_round_problem(config, method_name)  # as does a method whose rounds never complete
        if problem:
            raise ConfigError(problem)
    teacher_info = read_run_info(args.teacher, expect_role="teacher", expect_task=task)
    check_teacher_seed(config, teacher_info, args.teacher, [seed for _, seed, _ in runs])
    section = config["distill"]

    with contextlib.ExitStack() as claims:  # every student's run directory: checked, locked, --force cleared
        for method_name, seed, out in runs:
            fingerprint = student_fingerprint(config, task, method_name, seed, runtime)
            claims.enter_context(claim_run_dir(out, runtime, student_identity(task, method_name, seed), fingerprint,
                                               args.force))
        # shared by every student of the task: loaded once
        tokenizer = load_tokenizer(args.data)
        full_train = training_set(task, config, args.data, tokenizer)
        # every method trains on the same examples: those that show none of the probe's images
        probe_idx, heldout_idx, train_idx = split_held_out(full_train, section["probe_size"], section["heldout_size"],
                                                           section["probe_seed"])
        shared = {"tokenizer": tokenizer, "full_train": full_train, "probe_idx": probe_idx, "heldout_idx": heldout_idx,
                  "train_set": Subset(full_train, train_idx),
                  "val_set": validation_set(task, args.data, tokenizer, config) if runtime.is_main else None,
                  "teacher": load_task_model(args.teacher).to(runtime.device), "targets": None}
        for method_name, seed, out in runs:
            train_student(task, method_name, seed, out, config, runtime, args, shared, teacher_info["seed"])
    shutdown(runtime)
    return 0


def student_identity(task: str, method_name: str, seed: int) -> dict:
    """What run_info.json says of a student (the keys optima.runs.check_finished_run compares)."""
    return {"task": task, "method": method_name, "seed": seed, "role": "student"}


def student_fingerprint(config: dict, task: str, method_name: str, seed: int, runtime) -> dict:
    """What a student's checkpoints and finished run must have been made with to be resumed or kept."""
    from optima.config import config_hash, method_spec

    section = config["distill"]
    return {"verb": "distill", "task": task, "method": method_spec(config, method_name), "seed": seed, "distill": {
        k: v for k, v in section.items() if k not in ("methods", "run", "seeds", "optima", "group_by")},
        "model": config["model"], "data": config_hash(config["data"]), "world_size": runtime.world_size}


def check_teacher_seed(config: dict, teacher_info: dict, teacher_dir: str, seeds: list[int]) -> None:
    """Under distill.teacher_seed: per_seed, student seed s distils only from the teacher fine-tuned with seed s
    (the teacher is part of the replicate that seed s stands for; paired tests pair within it)."""
    from optima.errors import ConfigError

    if config["distill"]["teacher_seed"] != "per_seed":
        return
    wrong = sorted({seed for seed in seeds if seed != teacher_info.get("seed")})
    if wrong:
        raise ConfigError(f"{teacher_dir}: distill.teacher_seed is per_seed, but this teacher was fine-tuned with seed "
                          f"{teacher_info.get('seed')!r} and the students' seed(s) are {wrong}: give each seed its own "
                          "teacher (optima finetune --seed S)")


def train_student(task: str, method_name: str, seed: int, out: str, config: dict, runtime, args, shared: dict,
                  teacher_seed: int | None = None) -> None:
    """One student, from its seed on: nothing a previous student of the same process did reaches it."""
    from pathlib import Path

    from optima.config import method_spec
    from optima.distill.loop import TrainSpec, fit
    from optima.distill.setup import build_student
    from optima.distill.targets import TeacherTargets, expected_meta
    from optima.eval.evaluate import make_validator
    from optima.models.checkpoint import WEIGHTS_FILE
    from optima.models.heads import save_task_model
    from optima.runs import finish_run, metrics_record
    from optima.runtime import seed_everything

    method = method_spec(config, method_name)
    section = config["distill"]
    full_train, teacher = shared["full_train"], shared["teacher"]

    def attach_targets(objective):
        if not args.targets:  # the teacher's outputs computed once for the task (optima teacher-targets)
            return
        if shared["targets"] is None:
            expected = expected_meta(objective, full_train, Path(args.teacher) / WEIGHTS_FILE)
            shared["targets"] = TeacherTargets.load(args.targets, expected, runtime.device)
            if runtime.is_main:
                print(f"teacher targets: {'cached in ' + args.targets if shared['targets'] else 'on the fly'}",
                      flush=True)
        objective.targets = shared["targets"] or None
        if objective.targets is not None:
            objective.targets.misses = 0

    seed_everything(seed)
    def replay_counts(source: str) -> list[int]:
        return recorded_arm_counts(Path(out).parent.parent / source / f"seed{seed}" / "train_log.csv", method_name)

    built = build_student(task, method, config, teacher, full_train, shared["probe_idx"], runtime, seed,
                          attach_targets, heldout_idx=shared["heldout_idx"], replay_counts=replay_counts)
    objective, student, layer_map = built.objective, built.student, built.layer_map

    fingerprint = student_fingerprint(config, task, method_name, seed, runtime)
    validate = make_validator(student, task, args.data, shared["tokenizer"], config, runtime, shared["val_set"])
    log = fit(objective, shared["train_set"], TrainSpec.from_config(section), runtime, out, seed, fingerprint,
              callbacks=built.rounds, num_workers=config["runtime"]["num_workers"],
              desc=f"distill {task} {method_name} seed{seed}", evaluator=validate)
    if objective.targets is not None and runtime.is_main:
        print(f"teacher targets: {objective.targets.misses} batch(es) outside the cache, computed on the fly",
              flush=True)
    run_info = {**student_identity(task, method_name, seed),
                "policy": method["policy"], "layer_map": layer_map, "teacher_seed": teacher_seed,
                "fingerprint": fingerprint}
    metrics = metrics_record(run_info, "val", validate()) if validate else None
    finish_run(out, runtime, lambda d: save_task_model(student.cpu(), d), log, config, run_info, metrics)


def recorded_arm_counts(train_log, method_name: str) -> list[int]:
    """Rounds per module arm (in ``optima.coca_modules.MODULES`` order) that the student whose train log this is
    played: what a ``replay`` method replays. CheckpointError naming the log when it is missing or has no rounds."""
    import csv
    from pathlib import Path

    from optima.coca_modules import MODULES
    from optima.errors import CheckpointError

    path = Path(train_log)
    if not path.is_file():
        raise CheckpointError(f"{path}: method {method_name!r} replays this run's arm counts, but its train log is "
                              "missing: train the source method first (distill.run lists it before the replay)")
    with open(path, newline="") as handle:
        arms = [row["arm"] for row in csv.DictReader(handle) if row.get("arm")]
    unknown = sorted(set(arms) - set(MODULES))
    if not arms or unknown:
        raise CheckpointError(f"{path}: {'no rounds logged' if not arms else f'arms {unknown} are not single modules'}"
                              f" to replay for method {method_name!r}")
    return [arms.count(module) for module in MODULES]
