"""`optima evaluate`: score a finished run directory on one split and write metrics_<split>.json."""

from __future__ import annotations


def add_arguments(parser) -> None:
    parser.add_argument("--config", required=True, help="config file (params.yaml, config/*.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value (dotted key, YAML value); repeatable")
    parser.add_argument("--data", required=True, help="prepared data directory of the run's task")
    parser.add_argument("--run", required=True, help="run directory (a fine-tuned teacher or a student)")
    parser.add_argument("--split", default=None, help="train | val | test (default: eval.split of the config)")
    parser.add_argument("--out", default=None, help="output file (default: RUN/metrics_<split>.json)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")


def run(args) -> int:
    from pathlib import Path

    from optima.config import load_config
    from optima.data.datasets import build_dataset
    from optima.data.tokenizers import load_tokenizer
    from optima.distill.commands.common import metrics_record, read_run_info
    from optima.distill.runtime import init_runtime
    from optima.errors import CheckpointError
    from optima.eval.evaluate import evaluate
    from optima.io import atomic_write_json
    from optima.models.heads import load_task_model

    config = load_config(args.config, args.overrides)
    runtime = init_runtime(config["runtime"].get("device", "auto"), config["runtime"].get("precision", "auto"),
                           args.threads)
    info = read_run_info(args.run)
    if info.get("role") not in ("teacher", "student"):
        raise CheckpointError(f"{args.run}: a {info.get('role')} run has no task to evaluate")
    split = args.split or config["eval"]["split"]
    tokenizer = load_tokenizer(args.data)
    dataset = build_dataset(info["task"], args.data, split, tokenizer, config["data"]["image_size"], train=False,
                            cache_images=config["data"].get("cache_images", True))
    task_model = load_task_model(args.run).to(runtime.device)
    scores = evaluate(task_model, dataset, tokenizer, config["eval"], runtime.device, runtime.autocast)
    out = Path(args.out) if args.out else Path(args.run) / f"metrics_{split}.json"
    atomic_write_json(out, metrics_record(info, split, scores))
    print(f"{info['task']} {info['method']} seed {info['seed']} ({split}): "
          + ", ".join(f"{k}={v:.4g}" for k, v in scores.items()))
    return 0
