"""Arguments and defaults shared by `optima collect`, `optima tables` and `optima figures`."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

LOG = logging.getLogger("optima.paper")


def add_config_arguments(parser) -> None:
    """The options every verb accepts (runs.md): --config, --set, --threads."""
    parser.add_argument("--config", help="config file; gives default paths (paths.results), the method -> "
                        "policy map and the method order")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value (dotted key, YAML value); repeatable")
    parser.add_argument("--threads", type=int, default=None,
                        help="accepted for uniformity with the other verbs (this verb does not use torch)")


def load_optional_config(args) -> dict | None:
    from optima.config import load_config
    from optima.errors import ConfigError

    if args.config is None:
        if args.overrides:
            raise ConfigError("--set: needs --config")
        return None
    return load_config(args.config, args.overrides)


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
