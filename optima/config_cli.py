"""`optima config`: validate a config file and print it resolved (with --set overrides applied)."""

from __future__ import annotations


def add_arguments(parser) -> None:
    parser.add_argument("--config", required=True, help="config file (params.yaml, config/*.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value (dotted key, YAML value); repeatable")
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
