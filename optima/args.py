"""The command-line options every verb shares, and what a training verb does with them first.

``--config`` / ``--set`` / ``--threads`` are declared here once; a verb adds its own options beside them.
"""

from __future__ import annotations

import os


def add_config_arguments(parser, required: bool = True, config_help: str | None = None,
                         threads_help: str = "torch CPU threads (default: torch's choice)",
                         threads_default: int | None = None) -> None:
    """--config, --set KEY=VALUE (repeatable) and --threads."""
    parser.add_argument("--config", required=required,
                        help=config_help or "config file (params.yaml, config/*.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value (dotted key, YAML value); repeatable")
    parser.add_argument("--threads", type=int, default=threads_default, help=threads_help)


def add_run_arguments(parser, data_help: str = "prepared data directory of the task", out_required: bool = True) -> None:
    """The options of a training verb: the shared ones, the task's prepared data and the run directory."""
    add_config_arguments(parser)
    parser.add_argument("--data", required=True, help=data_help)
    parser.add_argument("--out", required=out_required, help="run directory to write (resumed if it holds a checkpoint)")
    parser.add_argument("--force", action="store_true",
                        help="clear the run directory first (a finished run of another config or method is refused "
                             "without it)")


def load_config_from_args(args, optional: bool = False) -> dict | None:
    """The validated config of ``--config`` with ``--set`` applied; None when optional and not given."""
    from optima.config import load_config
    from optima.errors import ConfigError

    if args.config is None:
        if not optional:
            raise ConfigError("--config: required")
        if args.overrides:
            raise ConfigError("--set: needs --config")
        return None
    return load_config(args.config, args.overrides)


def setup(args):
    """``(config, runtime)``: load the config, start the runtime (joins torch.distributed under torchrun)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from optima.runtime import runtime_from_config

    config = load_config_from_args(args)
    return config, runtime_from_config(config, args.threads)
