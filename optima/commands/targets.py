"""`optima teacher-targets TASK`: the teacher's outputs for every training example of a task, computed
once and shared by every student of the task (``optima.distill.targets``; ``distill.teacher_cache``)."""

from __future__ import annotations

from optima.args import add_run_arguments


def add_arguments(parser) -> None:
    parser.add_argument("task", help="captions | vqa | snli_ve | nlvr2")
    add_run_arguments(parser)
    parser.add_argument("--teacher", required=True, help="fine-tuned teacher run directory (optima finetune --out)")


def run(args) -> int:
    from pathlib import Path

    import torch

    from optima.tasks import check_task
    from optima.data.tokenizers import load_tokenizer
    from optima.args import setup
    from optima.distill.setup import build_objective, training_set
    from optima.runs import claim_run_dir, read_run_info
    from optima.runtime import shutdown
    from optima.distill.probe import split_held_out
    from optima.distill.targets import build_and_write, cache_options, used_examples
    from optima.models.checkpoint import WEIGHTS_FILE
    from optima.tasks import load_task_model

    task = check_task(args.task)
    config, runtime = setup(args)
    read_run_info(args.teacher, expect_role="teacher", expect_task=task)
    dataset = training_set(task, config, args.data, load_tokenizer(args.data))
    teacher = load_task_model(args.teacher).to(runtime.device)
    # the targets every method may need: all modules' mapped layers and the KD logits
    objective, _, _ = build_objective(task, config, teacher, getattr(dataset, "num_classes", None),
                                      kd_weight=1.0, temperature=1.0, layer_weight=1.0)
    objective.to(runtime.device).eval()
    section = config["distill"]
    # the examples the students of distill.seeds will see in distill.steps steps, and the probe
    probe_idx, _, train_idx = split_held_out(dataset, section["probe_size"], section["heldout_size"],
                                             section["probe_seed"])
    examples = used_examples(dataset, section, train_idx, probe_idx)
    # the output folder: locked while this runs, cleared under --force, never a run directory
    with claim_run_dir(args.out, runtime, {"role": "teacher-targets"}, None, args.force):
        if runtime.is_main:
            with torch.no_grad(), runtime.autocast():
                build_and_write(objective, dataset, cache_options(section), Path(args.teacher) / WEIGHTS_FILE,
                                args.out, log=lambda m: print(m, flush=True), examples=examples)
    shutdown(runtime)
    return 0
