"""What `optima collect`, `optima tables` and `optima figures` share: the options, the results root, logging."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

LOG = logging.getLogger("optima.paper")


def add_config_arguments(parser) -> None:
    """The shared --config/--set/--threads (``optima.args``); the config here is optional."""
    from optima.args import add_config_arguments as add_shared

    add_shared(parser, required=False,
               config_help="config file; gives default paths (paths.results), the method -> policy map and the "
                           "method order",
               threads_help="accepted for uniformity with the other verbs (this verb does not use torch)")


def load_optional_config(args) -> dict | None:
    from optima.args import load_config_from_args

    return load_config_from_args(args, optional=True)


def results_root(config: dict | None) -> Path:
    return Path(config["paths"]["results"]) if config is not None else Path("results")


def setup_logging(verb: str) -> None:
    """Progress lines to stderr as ``optima VERB: ...`` (once; pytest's caplog still sees them)."""
    if not any(getattr(h, "_optima_paper", False) for h in LOG.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler._optima_paper = True
        LOG.addHandler(handler)
    for handler in LOG.handlers:
        if getattr(handler, "_optima_paper", False):
            handler.setFormatter(logging.Formatter(f"optima {verb}: %(message)s"))
    LOG.setLevel(logging.INFO)
