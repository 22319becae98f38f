"""`optima figures`: the paper's figures from ``runs.csv`` and the student runs' ``train_log.csv``
(or their compact form, ``--rounds rounds.csv --curves curves.csv``: see optima.paper.logs).

Every figure is written as PNG and PDF (``--formats``) under stable names (``FIGURES``). A figure
whose methods or logs are missing is skipped with a log line, never an error; a stale copy from an
earlier call is removed so the folder only holds current figures. The file list is printed on stdout.
"""

from __future__ import annotations

from optima.paper.common import add_config_arguments

FIGURES = {
    "comparison": "Every student method on every task: mean ± std over seeds (dots: seeds); dashed: the teacher.",
    "selection_frequency": "OPTIMA's module selection over training: share of bandit rounds that chose each arm, "
                           "in step bins, pooled over seeds.",
    "rewards": "OPTIMA's reward per module over training: every round (dots) and the mean per step bin (lines).",
    "single_module": "Distilling a single module (vision, text or multimodal only) against no distillation and "
                     "layerwise distillation of all modules: the paper's motivating observation.",
    "loss_curves": "Training task loss per method: mean over seeds, band from the lowest to the highest seed.",
}


def add_arguments(parser) -> None:
    parser.add_argument("--runs", default=None, help="runs.csv from `optima collect` (default: <paths.results>/eval/runs.csv)")
    parser.add_argument("--logs-root", default=None,
                        help="results folder holding students/TASK/METHOD/seedS/train_log.csv (default: <paths.results>)")
    parser.add_argument("--rounds", default=None,
                        help="rounds.csv (from `optima publish`) instead of the train logs: the selection-frequency "
                             "and reward figures")
    parser.add_argument("--curves", default=None,
                        help="curves.csv (from `optima publish`) instead of the train logs: the loss curves")
    parser.add_argument("--formats", nargs="+", choices=("png", "pdf"), default=["png", "pdf"],
                        help="file formats of every figure (default: png pdf)")
    parser.add_argument("--out-dir", default=None, help="output folder (default: <paths.results>/figures)")
    parser.add_argument("--split", default=None,
                        help="split to plot (default: eval.split of --config when present, else test > val > train)")
    parser.add_argument("--reference", default="optima",
                        help="method whose module selection and rewards are plotted (default: optima)")
    parser.add_argument("--bins", type=int, default=20,
                        help="step bins of the selection-frequency and reward figures (fewer when a bin would hold "
                             "under 6 rounds, pooled over seeds; default 20)")
    parser.add_argument("--loss-column", default="task_loss",
                        help="train_log.csv column of the loss curves (default task_loss: the one term every "
                             "method shares, so curves are comparable)")
    add_config_arguments(parser)


def planned_figures(config: dict, reference: str = "optima", formats=None) -> list[str]:
    """File names `optima figures` writes for a config's ``distill.run`` (e.g. Snakemake outputs)."""
    from optima.paper.spec import method_policies
    from optima.paper.style import FORMATS

    formats = formats or FORMATS
    methods = list(config["distill"]["run"])
    policies = method_policies(methods, config)
    names = ["comparison"]
    if reference in methods and policies[reference] not in (None, "none"):
        names += ["selection_frequency", "rewards"]
    if any(policies[m] == "fixed" for m in methods):
        names.append("single_module")
    names.append("loss_curves")
    return [f"{name}.{fmt}" for name in names for fmt in formats]


class Skip(Exception):
    """A figure that does not apply to these runs (the message says why)."""


class FigureInputs:
    """runs.csv on one split as a seed table, plus the student runs' logged rows from ``logs``: a
    :class:`~optima.paper.logs.TrainLogs` or :class:`~optima.paper.logs.CompactLogs` source (a path is
    read as TrainLogs)."""

    def __init__(self, runs, config, split, logs, reference, bins, loss_column, log):
        from pathlib import Path

        from optima.paper.logs import TrainLogs
        from optima.paper.results import seed_table
        from optima.paper.spec import PRIMARY_COLUMNS, TASK_NAMES, TEACHER, choose_split, order_methods

        preferred = split
        if preferred is None and config is not None and config["eval"]["split"] in set(runs["split"]):
            preferred = config["eval"]["split"]
        self.split = choose_split(runs["split"], preferred)
        self.runs = runs[runs["split"] == self.split]
        self.config = config
        self.tasks = [t for t in TASK_NAMES if t in set(self.runs["task"])]  # the tables' column order
        self.columns = {t: PRIMARY_COLUMNS[t] for t in self.tasks}
        self.table = seed_table(self.runs, tuple(self.columns.values()))
        self.methods = order_methods(self.runs["method"].unique(), config)
        self.students = [m for m in self.methods if m != TEACHER]
        self.teacher = TEACHER
        self.source = TrainLogs(logs, log) if isinstance(logs, (str, Path)) else logs
        self.reference = reference
        self.bins = bins
        self.loss_column = loss_column
        self.log = log

    def values(self, task, method):
        import pandas as pd

        if method not in set(self.table.index.get_level_values("method")):
            return pd.Series(dtype=float)
        return self.table[self.columns[task].key].loc[method].dropna()

    def seeds(self, task, method):
        rows = self.runs[(self.runs["task"] == task) & (self.runs["method"] == method)]
        return sorted(set(rows["seed"])) if len(rows) else None

    def rounds(self, task, method):
        """Round-end rows (seed, step, arm, reward) over the seeds runs.csv reports (all seeds found when
        runs.csv lacks the method); empty when there are none."""
        return self.source.rounds(task, method, self.seeds(task, method))

    def curves(self, task, method):
        """seed, step and the loss column (mean per logged step) over the seeds runs.csv reports."""
        return self.source.curves(task, method, self.loss_column, self.seeds(task, method))


# --------------------------------------------------------------------------------------------- helpers

def _dot_panels(inputs: FigureInputs, methods: list[str], title: str):
    """Horizontal dot plot, one panel per task: mean ± std per method, every seed as a small dot,
    the teacher as a dashed vertical line."""
    import numpy as np
    from matplotlib.lines import Line2D

    from optima.paper.spec import TASK_NAMES, display_name
    from optima.paper.style import METHOD_COLORS, method_color, new_figure

    fig, axes = new_figure(len(inputs.tasks), sharey=True, height_scale=max(1.0, 0.25 + 0.16 * len(methods)))
    ys = np.arange(len(methods))
    for ax, task in zip(axes, inputs.tasks):
        for y, method in zip(ys, methods):
            values = inputs.values(task, method)
            if values.empty:
                continue
            color = method_color(method, methods)
            std = values.std(ddof=1) if len(values) > 1 else None
            ax.errorbar(values.mean(), y, xerr=std, fmt="o", color=color, markersize=5, capsize=3, zorder=3)
            jitter = np.linspace(-0.15, 0.15, len(values)) if len(values) > 1 else np.zeros(1)
            ax.scatter(values.to_numpy(), y + jitter, s=9, color=color, alpha=0.45, linewidths=0, zorder=2)
        teacher = inputs.values(task, inputs.teacher)
        if not teacher.empty:
            ax.axvline(teacher.mean(), color=METHOD_COLORS["teacher"], linestyle="--", linewidth=1.0, zorder=1)
        ax.set_title(TASK_NAMES[task])
        ax.set_xlabel(inputs.columns[task].label + (" (x100)" if inputs.columns[task].metric == "CIDEr" else ""))
        ax.grid(axis="y", visible=False)
    axes[0].set_yticks(ys, [display_name(m) for m in methods])
    axes[0].set_ylim(len(methods) - 0.5, -0.5)  # first method on top
    handles = [Line2D([], [], color="0.3", marker="o", linestyle="", label="mean ± std over seeds"),
               Line2D([], [], color="0.3", marker="o", markersize=3, alpha=0.5, linestyle="", label="each seed"),
               Line2D([], [], color=METHOD_COLORS["teacher"], linestyle="--", label="teacher")]
    fig.legend(handles=handles, loc="outside lower center", ncols=3)
    fig.suptitle(title)
    return fig


MIN_ROUNDS_PER_BIN = 6  # pooled over seeds; fewer makes the shares jump between 0 and 1


def _bin_edges(steps, bins: int):
    """At most ``bins`` equal step bins, fewer when there are not MIN_ROUNDS_PER_BIN rounds per bin."""
    import numpy as np

    n = max(1, min(bins, len(steps) // MIN_ROUNDS_PER_BIN))
    return np.linspace(0.0, max(1.0, float(steps.max())), n + 1)


def _binned(rounds, bins: int):
    import pandas as pd

    edges = _bin_edges(rounds["step"], bins)
    centers = (edges[:-1] + edges[1:]) / 2
    index = pd.cut(rounds["step"], edges, include_lowest=True, labels=False)
    return edges, pd.Series(centers[index.to_numpy(dtype=int)], index=rounds.index, name="step")


def selection_shares(rounds, bins: int):
    """Share of the rounds in each step bin (pooled over seeds) that chose each arm.

    ``rounds``: round-end rows (step, arm). Returns (bin edges, DataFrame indexed by bin centre with
    one column per arm in :func:`~optima.paper.style.arm_order`; rows sum to 1; empty bins left out).
    """
    from optima.paper.style import arm_order

    edges, centre = _binned(rounds, bins)
    counts = rounds.groupby([centre, rounds["arm"]]).size().unstack(fill_value=0)
    counts = counts[arm_order(counts.columns)]
    return edges, counts.div(counts.sum(axis=1), axis=0)


def binned_rewards(rounds, bins: int):
    """Mean reward per step bin and arm (pooled over seeds); NaN where an arm has no round in a bin."""
    from optima.paper.style import arm_order

    edges, centre = _binned(rounds, bins)
    means = rounds.groupby([centre, rounds["arm"]])["reward"].mean().unstack()
    return edges, means[arm_order(means.columns)]


def _round_rows(inputs: FigureInputs, task: str):
    """Round-end rows of the reference method on a task (None when there are none)."""
    rounds = inputs.rounds(task, inputs.reference)
    return None if rounds.empty else rounds


def _arm_legend(fig, arms):
    from matplotlib.patches import Patch

    from optima.paper.style import arm_color, arm_order

    handles = [Patch(color=arm_color(a), label=a) for a in arm_order(arms)]
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), title="arm (module)")


# --------------------------------------------------------------------------------------------- figures

def comparison(inputs: FigureInputs):
    if not inputs.students:
        raise Skip("no student runs in runs.csv")
    return _dot_panels(inputs, inputs.students, "Students on every task")


def single_module(inputs: FigureInputs):
    from optima.paper.spec import single_module_methods

    methods = single_module_methods(inputs.students, inputs.config)
    if not methods:
        raise Skip("no single-module runs (fixed-vision, fixed-text, fixed-multimodal) in runs.csv")
    return _dot_panels(inputs, methods, "Distilling one module at a time")


def selection_frequency(inputs: FigureInputs):
    import numpy as np

    from optima.paper.spec import TASK_NAMES, display_name
    from optima.paper.style import arm_color, new_figure

    per_task = {t: r for t in inputs.tasks if (r := _round_rows(inputs, t)) is not None}
    if not per_task:
        raise Skip(f"no bandit rounds for {inputs.reference!r} {inputs.source.where}")
    fig, axes = new_figure(len(per_task), sharey=True)
    all_arms = set()
    for ax, (task, rounds) in zip(axes, per_task.items()):
        edges, share = selection_shares(rounds, inputs.bins)
        arms = list(share.columns)
        x, y = share.index.to_numpy(), share.to_numpy().T
        if len(x) == 1:  # one bin: draw it across its whole width
            x, y = edges[:2], np.repeat(y, 2, axis=1)
        ax.stackplot(x, y, colors=[arm_color(a) for a in arms], alpha=0.85, linewidth=0)
        ax.set_xlim(x[0], x[-1])
        ax.set_ylim(0, 1)
        ax.set_title(f"{TASK_NAMES[task]} ({rounds['seed'].nunique()} seed(s))")
        ax.set_xlabel("training step")
        all_arms.update(arms)
    axes[0].set_ylabel("share of rounds")
    _arm_legend(fig, all_arms)
    fig.suptitle(f"{display_name(inputs.reference)}: module selected per round")
    return fig


def rewards(inputs: FigureInputs):
    from optima.paper.spec import TASK_NAMES, display_name
    from optima.paper.style import arm_color, new_figure

    per_task = {t: r for t in inputs.tasks if (r := _round_rows(inputs, t)) is not None}
    if not per_task:
        raise Skip(f"no rewards for {inputs.reference!r} {inputs.source.where}")
    fig, axes = new_figure(len(per_task))
    all_arms = set()
    for ax, (task, rounds) in zip(axes, per_task.items()):
        _, means = binned_rewards(rounds, inputs.bins)
        for arm in means.columns:
            rows = rounds[rounds["arm"] == arm]
            color = arm_color(arm)
            ax.scatter(rows["step"], rows["reward"], s=7, color=color, alpha=0.3, linewidths=0)
            line = means[arm].dropna()
            ax.plot(line.index.to_numpy(), line.to_numpy(), color=color, marker="o", markersize=3)
            all_arms.add(arm)
        ax.axhline(0.0, color="0.4", linewidth=0.8)
        ax.set_title(TASK_NAMES[task])
        ax.set_xlabel("training step")
    axes[0].set_ylabel("reward (rel. loss decrement)")
    _arm_legend(fig, all_arms)
    fig.suptitle(f"{display_name(inputs.reference)}: reward per module")
    return fig


def loss_curves(inputs: FigureInputs):
    from matplotlib.lines import Line2D

    from optima.paper.spec import TASK_NAMES, display_name
    from optima.paper.style import method_color, new_figure

    column = inputs.loss_column
    curves: dict[str, dict] = {}
    for task in inputs.tasks:
        for method in inputs.students:
            rows = inputs.curves(task, method)
            if rows.empty:
                continue
            per_seed = rows.pivot(index="step", columns="seed", values=column)  # step x seed
            curves.setdefault(task, {})[method] = per_seed
    if not curves:
        raise Skip(f"no {column!r} values for any student {inputs.source.where}")
    fig, axes = new_figure(len(curves))
    shown = []
    for ax, (task, methods) in zip(axes, curves.items()):
        for method, per_seed in methods.items():
            color = method_color(method, inputs.students)
            steps = per_seed.index.to_numpy()
            ax.plot(steps, per_seed.mean(axis=1).to_numpy(), color=color)
            if per_seed.shape[1] > 1:
                ax.fill_between(steps, per_seed.min(axis=1).to_numpy(), per_seed.max(axis=1).to_numpy(),
                                color=color, alpha=0.15, linewidth=0)
            if method not in shown:
                shown.append(method)
        ax.set_title(TASK_NAMES[task])
        ax.set_xlabel("training step")
    axes[0].set_ylabel(column.replace("_", " "))
    handles = [Line2D([], [], color=method_color(m, inputs.students), label=display_name(m)) for m in shown]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 6))
    fig.suptitle(f"Training curves ({column.replace('_', ' ')})")
    return fig


_BUILDERS = {"comparison": comparison, "selection_frequency": selection_frequency, "rewards": rewards,
             "single_module": single_module, "loss_curves": loss_curves}


def build_figures(inputs: FigureInputs, out_dir, formats=None) -> list:
    """Write every figure that applies; return the written paths (``formats``, default PNG and PDF,
    per figure)."""
    from pathlib import Path

    from optima.paper.style import FORMATS, save_figure, style

    written = []
    with style():
        for name, builder in _BUILDERS.items():
            try:
                fig = builder(inputs)
            except Skip as skip:
                inputs.log.info("skipped %s: %s", name, skip)
                for fmt in FORMATS:  # a figure from an earlier run must not pass for a current one
                    stale = Path(out_dir) / f"{name}.{fmt}"
                    if stale.exists():
                        stale.unlink()
                        inputs.log.info("removed stale %s", stale)
                continue
            written += save_figure(fig, out_dir, name, formats or FORMATS)
    return written


def write_figures(runs_path, out_dir, config: dict | None = None, logs=None, split: str | None = None,
                  reference: str = "optima", bins: int = 20, loss_column: str = "task_loss", formats=None) -> list:
    """Write every figure that applies into ``out_dir``; ``logs``: a results folder with the train logs
    (default: the config's paths.results) or a :class:`~optima.paper.logs.CompactLogs`. Returns the
    written paths."""
    from optima.errors import ConfigError
    from optima.paper.common import LOG, results_root
    from optima.paper.results import read_runs

    if bins < 1:
        raise ConfigError(f"--bins: must be >= 1, got {bins}")
    inputs = FigureInputs(read_runs(runs_path), config, split, logs if logs is not None else results_root(config),
                          reference, bins, loss_column, LOG)
    return build_figures(inputs, out_dir, formats)


def run(args) -> int:
    from pathlib import Path

    from optima.errors import ConfigError
    from optima.paper.common import LOG, load_optional_config, results_root, setup_logging
    from optima.paper.logs import CompactLogs

    setup_logging("figures")
    if args.logs_root and (args.rounds or args.curves):
        raise ConfigError("--logs-root: give either the train logs or --rounds/--curves, not both")
    config = load_optional_config(args)
    runs_path = Path(args.runs) if args.runs else results_root(config) / "eval" / "runs.csv"
    out_dir = Path(args.out_dir) if args.out_dir else results_root(config) / "figures"
    # the compact files replace the train logs (published results)
    logs = CompactLogs(args.rounds, args.curves, LOG) if args.rounds or args.curves else args.logs_root
    for path in write_figures(runs_path, out_dir, config, logs, args.split, args.reference, args.bins,
                              args.loss_column, list(dict.fromkeys(args.formats))):
        print(path)
    return 0
