"""`optima bench bandits`: the module-selection policies on simulated bandits with known means.

Prints, per policy, environment and horizon (``--rounds`` takes several), the share of rounds played
on the round's best arm (mean ± standard error over seeds) and the final cumulative pseudo-regret
(mean ± std); writes both as CSV and Markdown next to the figure of the mean regret curves (of the
longest horizon).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

DEFAULT_POLICIES = (
    "oracle=oracle", "best_fixed=best_fixed", "uniform=uniform", "ts=ts", "discounted_ts=discounted_ts",
    "sliding_window_ts=sliding_window_ts", "ucb=ucb", "exp3=exp3", "optima=optima",
)
DEFAULT_ENVS = ("stationary", "piecewise", "drifting", "distillation", "trend_switch")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rounds", type=_positive, nargs="+", default=[1000],
                        help="rounds per run; several values run every horizon (default: %(default)s)")
    parser.add_argument("--seeds", type=_positive, default=30, help="environment instances (and policy seeds) per environment (default: %(default)s)")
    parser.add_argument("--arms", type=_positive, default=3, help="number of arms (default: %(default)s, the three CoCa modules)")
    parser.add_argument("--timescale", type=_positive_float, default=1.0,
                        help="multiply every environment's change period and decay time (default: %(default)s)")
    parser.add_argument("--envs", nargs="+", default=list(DEFAULT_ENVS), metavar="ENV",
                        help=f"environments (default: all: {' '.join(DEFAULT_ENVS)})")
    parser.add_argument("--policy", action="append", metavar="LABEL=NAME[:KEY=VALUE,...]", dest="policies",
                        help="a policy to run, repeatable, replacing the default set; e.g. "
                             "'optima-w16=optima:window=16,scale=0.5'. NAME may also be 'oracle' (best arm "
                             "each round) or 'best_fixed' (best single arm in hindsight). Default: "
                             + " ".join(p.split("=")[0] for p in DEFAULT_POLICIES) + " with default options")
    parser.add_argument("--workers", type=_positive, default=min(2, os.cpu_count() or 1),
                        help="worker processes (default: %(default)s); results do not depend on it")
    parser.add_argument("--out", type=Path, default=Path("results/bench/bandits.png"),
                        help="figure path; the table goes next to it as .csv and .md (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from optima.bandits.sim import ENVIRONMENTS, run_benchmark
    from optima.errors import ConfigError

    unknown = [env for env in args.envs if env not in ENVIRONMENTS]
    if unknown:
        raise ConfigError(f"--envs: unknown environment {unknown[0]!r} (allowed: {', '.join(ENVIRONMENTS)})")
    specs = parse_policies(args.policies or list(DEFAULT_POLICIES), args.arms)
    horizons = sorted(set(args.rounds))
    start = time.perf_counter()
    rows, curves = [], None
    for rounds in horizons:
        regret, best = run_benchmark(specs, list(args.envs), args.arms, rounds, list(range(args.seeds)),
                                     workers=args.workers, progress=not args.no_progress,
                                     timescale=args.timescale, with_best=True)
        curves = regret  # the figure shows the longest horizon
        for env, by_label in regret.items():
            for label, runs in by_label.items():
                final = runs[:, -1]
                share = 100.0 * best[env][label][:, -1] / rounds
                name, options = specs[label]
                rows.append({
                    "env": env, "policy": label, "spec": format_spec(name, options), "arms": args.arms,
                    "rounds": rounds, "seeds": args.seeds, "timescale": args.timescale,
                    "regret_mean": float(final.mean()), "regret_std": _std(final),
                    "regret_sem": _std(final) / np.sqrt(len(final)),
                    "best_share_mean": float(share.mean()), "best_share_sem": _std(share) / np.sqrt(len(share)),
                })
    elapsed = time.perf_counter() - start
    rounds_text = ", ".join(map(str, horizons))
    header = (f"{args.seeds} seeds, {rounds_text} rounds, {args.arms} arms, timescale {args.timescale:g} "
              f"({elapsed:.1f} s, {args.workers} worker(s))")
    markdown = (f"Share of rounds on the round's best arm (%), mean ± standard error over seeds; {header}\n\n"
                + markdown_table(rows, list(args.envs), horizons, list(specs), "best_share") + "\n\n"
                + f"Final cumulative pseudo-regret, mean ± std over seeds; {header}\n\n"
                + markdown_table(rows, list(args.envs), horizons, list(specs), "regret") + "\n")
    print(markdown, end="")
    write_outputs(args.out, rows, markdown, curves,
                  title=f"Final cumulative pseudo-regret, mean ± std over {args.seeds} seeds, {horizons[-1]} rounds")
    print(f"wrote {args.out}, {args.out.with_suffix('.csv')}, {args.out.with_suffix('.md')}")
    return 0


def _std(values) -> float:
    return float(values.std(ddof=1)) if len(values) > 1 else 0.0


# ---------------------------------------------------------------------- policy specs
def parse_policies(texts: list[str], n_arms: int = 3) -> dict[str, tuple[str, dict[str, Any]]]:
    """'LABEL=NAME[:KEY=VALUE,...]' -> {label: (name, options)}; values are YAML scalars."""
    import yaml

    from optima.bandits.registry import make_policy
    from optima.bandits.sim import ORACLES
    from optima.errors import ConfigError

    specs: dict[str, tuple[str, dict[str, Any]]] = {}
    for text in texts:
        label, sep, rest = text.partition("=")
        if not sep or not label or not rest:
            raise ConfigError(f"--policy {text!r}: expected LABEL=NAME[:KEY=VALUE,...]")
        if label in specs:
            raise ConfigError(f"--policy {text!r}: label {label!r} is given twice")
        name, _, option_text = rest.partition(":")
        options: dict[str, Any] = {}
        for item in filter(None, option_text.split(",")):
            key, sep, value = item.partition("=")
            if not sep:
                raise ConfigError(f"--policy {text!r}: option {item!r} is not KEY=VALUE")
            parsed = yaml.safe_load(value)
            if isinstance(parsed, str):  # YAML reads 1e-3 as a string
                try:
                    parsed = float(parsed)
                except ValueError:
                    pass
            options[key] = parsed
        if name in ORACLES:
            if options:
                raise ConfigError(f"--policy {text!r}: {name} takes no options")
        elif make_policy(name, n_arms, 0, **options).plays_all:  # also: unknown name or bad option, named
            raise ConfigError(f"--policy {text!r}: {name} plays every arm each round, so it has no pseudo-regret")
        specs[label] = (name, options)
    return specs


def format_spec(name: str, options: dict[str, Any]) -> str:
    return name + (":" + ",".join(f"{k}={v}" for k, v in options.items()) if options else "")


# ---------------------------------------------------------------------- outputs
def markdown_table(rows: list[dict[str, Any]], envs: list[str], horizons: list[int], labels: list[str],
                   metric: str = "regret") -> str:
    """Policies as rows; one column per environment (and horizon, when there are several)."""
    spread = "regret_std" if metric == "regret" else "best_share_sem"
    cell = {(r["env"], r["rounds"], r["policy"]): _mean_std(r[f"{metric}_mean"], r[spread]) for r in rows}
    columns = [(env, rounds) for env in envs for rounds in horizons]
    names = [env if len(horizons) == 1 else f"{env} ({rounds})" for env, rounds in columns]
    lines = ["| policy | " + " | ".join(names) + " |", "|---" * (len(columns) + 1) + "|"]
    lines += ["| " + label + " | " + " | ".join(cell[(env, rounds, label)] for env, rounds in columns) + " |"
              for label in labels]
    return "\n".join(lines)


def _mean_std(mean: float, std: float) -> str:
    """Both to the decimals that three significant digits of the mean need (no exponents)."""
    magnitude = max(abs(mean), abs(std))
    decimals = 0 if magnitude >= 100 else 1 if magnitude >= 10 else 2 if magnitude >= 1 else 3
    return f"{mean:.{decimals}f} ± {std:.{decimals}f}"


def write_outputs(out: Path, rows: list[dict[str, Any]], markdown: str, curves, title: str) -> None:
    import csv
    import io

    from optima.io import atomic_write_bytes, atomic_write_text

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out.with_suffix(".csv"), buffer.getvalue())
    atomic_write_text(out.with_suffix(".md"), markdown)
    atomic_write_bytes(out, regret_figure(curves, out.suffix.lstrip(".") or "png", title=title))


def regret_figure(curves, fmt: str = "png", title: str | None = None) -> bytes:
    """Mean cumulative regret per round (band: ± one standard error), one panel per environment."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    envs = list(curves)
    cols = min(2, len(envs))
    rows = (len(envs) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5.5 * cols, 3.8 * rows), squeeze=False)
    for ax, env in zip(axes.flat, envs):
        for label, runs in curves[env].items():
            mean = runs.mean(axis=0)
            sem = runs.std(axis=0, ddof=1) / np.sqrt(len(runs)) if len(runs) > 1 else np.zeros_like(mean)
            x = np.arange(1, len(mean) + 1)
            style = {"linewidth": 2.4, "color": "black"} if label == "optima" else {"linewidth": 1.2}
            if label in ("oracle", "best_fixed"):
                style["linestyle"] = "--"
            (line,) = ax.plot(x, mean, label=label, **style)
            ax.fill_between(x, mean - sem, mean + sem, color=line.get_color(), alpha=0.15, linewidth=0)
        ax.set_title(env)
        ax.set_xlabel("round")
        ax.set_ylabel("cumulative pseudo-regret")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(envs):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 5), frameon=False)
    if title:
        fig.suptitle(title.split(" (")[0] + "; bands: ± one standard error", fontsize=10)
    fig.tight_layout(rect=(0, 0.06 + 0.02 * (len(labels) > 5), 1, 1))
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt, dpi=120)
    plt.close(fig)
    return buffer.getvalue()


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value
