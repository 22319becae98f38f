"""`optima <verb>`: the command line every Snakemake rule calls.

Each verb lives in its own module exposing ``add_arguments(parser)`` and ``run(args) -> int``.
Modules keep heavy imports (torch, open_clip, pandas) inside ``run`` so that ``optima --help``
stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from optima import __version__
from optima.errors import OptimaError

# verb -> (module, one-line help)
VERBS: dict[str, tuple[str, str]] = {
    "fetch": ("optima.data.fetch", "download and verify the official files of a task (manifest: URLs, sizes, checksums)"),
    "prepare": ("optima.data.prepare", "write the prepared data of one task (synthetic or official source)"),
    "pretrain": ("optima.commands.pretrain", "pre-train (or load) the CoCa teacher"),
    "finetune": ("optima.commands.finetune", "fine-tune the teacher on one task"),
    "teacher-targets": ("optima.commands.targets", "compute a task's teacher targets once for all its students"),
    "distill": ("optima.commands.distill", "distil a student with one method (OPTIMA or a baseline)"),
    "evaluate": ("optima.commands.evaluate", "evaluate a run directory on a split and write metrics.json"),
    "collect": ("optima.paper.collect", "gather every run's metrics.json into runs.csv and summary.json"),
    "tables": ("optima.paper.tables", "write the paper's tables from runs.csv"),
    "figures": ("optima.paper.figures", "write the paper's figures from runs.csv and the train logs"),
    "publish": ("optima.paper.publish", "publish an experiment for git: runs.csv, compact logs, tables, PNG figures, MANIFEST.json"),
    "decompose": ("optima.paper.decomposition", "which term of the probe objective drives each arm's reward (rounds.csv)"),
    "agreement": ("optima.paper.agreement", "rank modules by each reward and by single-module gain (validation)"),
    "spread": ("optima.paper.spread", "a teacher's quality over retraining seeds, beside the students' seed spread"),
    "bench": ("optima.bench", "benchmarks that print a table (bandits, models)"),
    "gpu-check": ("optima.commands.gpu_check", "acceptance check of a GPU node: every GPU rule a few steps at the "
                                               "config's shapes, with memory, throughput and finiteness thresholds"),
    "config": ("optima.config_cli", "validate a config file and print the resolved config"),
}


def build_parser(load_verbs: bool | str = True) -> argparse.ArgumentParser:
    """``load_verbs``: True loads every verb module, a verb name only that one (fast start-up)."""
    parser = argparse.ArgumentParser(prog="optima", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"optima {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    sub.required = True
    for verb, (module_name, help_text) in VERBS.items():
        verb_parser = sub.add_parser(verb, help=help_text, description=help_text)
        if load_verbs is True or load_verbs == verb:
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError as exc:  # a verb whose module is not written yet
                if exc.name and module_name.startswith(exc.name):
                    verb_parser.set_defaults(_module=None, _missing=module_name)
                    continue
                raise
            module.add_arguments(verb_parser)
            verb_parser.set_defaults(_module=module)
    return parser


def _show_config_warnings_plainly(verb: str) -> None:
    """A config warning (``optima.config.ConfigWarning``) prints as one line naming the keys; so does a stale
    temporary file removed (``optima.io.StaleFileWarning``) and a checkpoint skipped on resume."""
    import warnings

    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if category.__name__ in ("ConfigWarning", "StaleFileWarning", "CheckpointWarning"):
            print(f"optima {verb}: warning: {message}", file=file or sys.stderr)
        else:
            default(message, category, filename, lineno, file, line)

    warnings.showwarning = show


# OpenMP threads that wait at a barrier spin only briefly before they sleep. libgomp's default (300,000 spins) keeps
# a waiting thread on its core while its partner is descheduled: beside one busy process a 2-thread job ran 10x
# slower. Sleeping at once (OMP_WAIT_POLICY=PASSIVE) fixes that but made the idle job 1.7x slower on a VM, where
# waking a sleeping thread is dear; 2000 spins keep a busy machine within a fair share (1.8x beside one busy
# process, 2.4x beside two) for 1.17x when idle (docs/benchmarks.md#a-job-on-a-busy-machine).
# libgomp reads these variables when torch loads, which every verb does later, inside run(); a user's own setting
# of either wins. Jobs of one thread (every pipeline job but pre-training) have no barriers to wait at.
WAIT_SETTINGS = {"GOMP_SPINCOUNT": "2000"}


def set_openmp_wait(environ=os.environ) -> None:
    if not any(name in environ for name in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")):
        environ.update(WAIT_SETTINGS)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    set_openmp_wait()
    argv = sys.argv[1:] if argv is None else list(argv)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    # import only the chosen verb's module: `optima --help` and `optima prepare` need no torch
    parser = build_parser(load_verbs=chosen if chosen in VERBS else False)
    args = parser.parse_args(argv)
    _show_config_warnings_plainly(args.verb)
    if getattr(args, "_module", None) is None:
        print(f"optima {args.verb}: not available ({getattr(args, '_missing', '?')} is missing)", file=sys.stderr)
        return 2
    try:
        return int(args._module.run(args) or 0)
    except OptimaError as exc:
        print(f"optima {args.verb}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"optima {args.verb}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
