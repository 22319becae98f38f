"""`optima collect`: gather metrics JSON files into ``runs.csv`` (long form) and ``summary.json``.

``summary.json`` is what ``dvc metrics show`` prints: {task: {method: {metric: mean over seeds}}} for
the metrics the main table shows, on the split the tables report (test, else val, else train).
"""

from __future__ import annotations

from optima.paper.common import add_config_arguments


def add_arguments(parser) -> None:
    parser.add_argument("metrics", nargs="+", metavar="METRICS_JSON",
                        help="metrics files written by `optima evaluate` (metrics_<split>.json) or training (metrics.json)")
    parser.add_argument("--out-dir", default=None,
                        help="where runs.csv and summary.json go (default: <paths.results>/eval, or results/eval)")
    parser.add_argument("--split", default=None,
                        help="split summarised in summary.json (default: eval.split of --config, else test > val > train)")
    add_config_arguments(parser)


def run(args) -> int:
    from pathlib import Path

    from optima.io import atomic_write_json, atomic_write_text
    from optima.paper.common import LOG, load_optional_config, results_root, setup_logging
    from optima.paper.results import collect_runs, summary, write_runs_csv_text
    from optima.paper.spec import choose_split

    setup_logging("collect")
    config = load_optional_config(args)
    out_dir = Path(args.out_dir) if args.out_dir else results_root(config) / "eval"
    runs = collect_runs(args.metrics)
    if config is not None and config["eval"]["val_best"]:
        from optima.paper.results import add_val_best

        runs, chosen = add_val_best(runs)
        LOG.info("val-best (the fixed module best on validation): %s",
                 ", ".join(f"{task} {method}" for task, method in chosen.items()) or "no fixed-<module> runs")
    preferred = args.split
    if preferred is None and config is not None and config["eval"]["split"] in set(runs["split"]):
        # the config's split when present; validation metrics collected alone are summarised as they are
        preferred = config["eval"]["split"]
    split = choose_split(runs["split"], preferred, source="collected metrics")

    runs_path, summary_path = out_dir / "runs.csv", out_dir / "summary.json"
    atomic_write_text(runs_path, write_runs_csv_text(runs))
    atomic_write_json(summary_path, summary(runs, split))
    n_runs = runs.groupby(["task", "method", "seed", "split"]).ngroups
    LOG.info("%d run(s), %d metric value(s) from %d file(s); summary over split %s",
             n_runs, len(runs), len(args.metrics), split)
    print(runs_path)
    print(summary_path)
    return 0
