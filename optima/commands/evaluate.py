"""`optima evaluate`: score finished run directories of one task on one split and write each run's
metrics_<split>.json. Several ``--run`` share one process and one loaded split (the workflow scores a
task's teacher and students in one job: a job's start-up costs more than a tiny model's evaluation)."""

from __future__ import annotations


def add_arguments(parser) -> None:
    from optima.args import add_config_arguments

    add_config_arguments(parser)
    parser.add_argument("--data", required=True, help="prepared data directory of the run's task")
    parser.add_argument("--run", required=True, action="append", dest="runs",
                        help="run directory (a fine-tuned teacher or a student); repeatable, all of one task")
    parser.add_argument("--split", default=None, help="train | val | test (default: eval.split of the config)")
    parser.add_argument("--out", default=None, help="output file, with a single --run (default: RUN/metrics_<split>.json)")


def run(args) -> int:
    from pathlib import Path

    from optima.args import setup
    from optima.tasks import build_dataset
    from optima.data.tokenizers import load_tokenizer
    from optima.runs import metrics_record, read_run_info
    from optima.errors import CheckpointError, ConfigError, TrainingError
    from optima.eval.captions import reuse_meteor
    from optima.eval.evaluate import check_finite_model, evaluate
    from optima.io import atomic_write_json, check_writable
    from optima.tasks import load_task_model

    if args.out and len(args.runs) > 1:
        raise ConfigError("--out names one file: give it with a single --run (several runs write RUN/metrics_<split>.json)")
    config, runtime = setup(args)
    infos = []
    for run_dir in args.runs:  # check every run before scoring any: a bad one fails the job at once
        info = read_run_info(run_dir)
        if info.get("role") not in ("teacher", "student"):
            raise CheckpointError(f"{run_dir}: a {info.get('role')} run has no task to evaluate")
        if infos and info.get("task") != infos[0].get("task"):
            raise CheckpointError(f"{run_dir}: task {info.get('task')!r}, but {args.runs[0]} is {infos[0].get('task')!r}: "
                                  "one evaluate call scores runs of one task")
        infos.append(info)
    split = args.split or config["eval"]["split"]
    outs = [Path(args.out) if args.out else Path(run_dir) / f"metrics_{split}.json" for run_dir in args.runs]
    for out in outs:  # a full disk or a read-only folder fails now, not after the scoring
        check_writable(out)
    tokenizer = load_tokenizer(args.data)
    dataset = build_dataset(infos[0]["task"], args.data, split, tokenizer, config["data"]["image_size"], train=False,
                            cache_images=config["data"]["cache_images"])
    for run_dir in args.runs:  # a diverged model (non-finite weights or logits) fails the job before any is scored
        try:
            check_finite_model(load_task_model(run_dir).to(runtime.device), dataset, tokenizer, runtime.device,
                               runtime.autocast)
        except TrainingError as exc:
            raise CheckpointError(f"{run_dir}: {exc}; retrain it (e.g. with a lower learning rate), "
                                  "nothing was written") from None
    with reuse_meteor():  # one METEOR JVM for every captioning run of the job
        for run_dir, info, out in zip(args.runs, infos, outs):
            task_model = load_task_model(run_dir).to(runtime.device)
            scores = evaluate(task_model, dataset, tokenizer, config["eval"], runtime.device, runtime.autocast)
            atomic_write_json(out, metrics_record(info, split, scores))
            print(f"{info['task']} {info['method']} seed {info['seed']} ({split}): "
                  + ", ".join(f"{k}={v:.4g}" for k, v in scores.items()), flush=True)
    return 0
