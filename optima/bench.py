"""`optima bench <name>`: benchmarks that print a table (timing goals live here, not in tests)."""

from __future__ import annotations

import importlib

# name -> (module exposing add_arguments(parser) and run(args), help)
BENCHMARKS = {
    "bandits": ("optima.bandits.bench", "module-selection policies on simulated bandits with known means"),
    "models": ("optima.models.bench", "parameters, training-step time and caption decoding throughput"),
    "step": ("optima.distill.bench_step", "time a distillation step per method (teacher, probe, ratios), interleaved"),
}


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK")
    sub.required = True
    for name, (module_name, help_text) in BENCHMARKS.items():
        bench_parser = sub.add_parser(name, help=help_text, description=help_text)
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                bench_parser.set_defaults(_bench=None)
                continue
            raise
        module.add_arguments(bench_parser)
        bench_parser.set_defaults(_bench=module)


def run(args) -> int:
    if args._bench is None:
        raise SystemExit(f"optima bench {args.benchmark}: not available yet")
    return int(args._bench.run(args) or 0)
