"""`optima config`: validate a config file and print it resolved (with --set overrides applied)."""

from __future__ import annotations


def add_arguments(parser) -> None:
    from optima.args import add_config_arguments

    add_config_arguments(parser, threads_help="accepted like every verb's (unused)")
    parser.add_argument("--get", metavar="KEY", help="print only this dotted key (as JSON)")


def run(args) -> int:
    import json

    import yaml

    from optima.config import load_config

    config = load_config(args.config, args.overrides)
    if args.get:
        node = config
        for part in args.get.split("."):
            node = node[part]
        print(json.dumps(node))
    else:
        print(yaml.safe_dump(config, sort_keys=False), end="")
    return 0
