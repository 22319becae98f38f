"""`optima agreement`: does a policy's reward rank the modules the way distilling each module alone does?

Two rankings per task, both from validation data:
- **single-module gain**: the primary validation metric of ``fixed-<module>`` minus that of ``finetune``
  (no distillation), paired by seed, averaged over seeds (runs.csv, split ``val``: every student's
  end-of-training ``metrics.json``);
- **reward**: per reward kind (``probe``, ``task``, ``train``; rounds.md), each module's offset in a least-squares
  fit ``reward = slope * round + offset[module]`` over the rounds of the uniform policy's runs (every module
  played at random, with the rewards of all kinds logged: ``distill.log_rewards``), averaged over seeds. The
  shared time trend is taken out as OPTIMA's detrended credit takes it out.

Agreement: Spearman's rank correlation of the two (1: same order, -1: reversed) and whether the top module
is the same. Also OPTIMA's share of rounds per module beside the best single module. Writes
``reward_agreement.{md,csv}`` and ``selection_shares.csv``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from optima.coca_modules import MODULES
from optima.distill.rounds import REWARDS as REWARD_KINDS

BASELINE = "finetune"
SOURCE_METHOD = "uniform"


def add_arguments(parser) -> None:
    parser.add_argument("--runs", required=True, help="runs.csv with validation rows (split val)")
    parser.add_argument("--rounds", required=True, help="rounds.csv (long form, one row per bandit round)")
    parser.add_argument("--out-dir", required=True, help="where reward_agreement.md and .csv go")
    parser.add_argument("--split", default="val", help="split of the single-module gains (default: val)")
    parser.add_argument("--source", default=SOURCE_METHOD,
                        help="method whose logged rounds give the rewards (default: uniform)")
    parser.add_argument("--method", default="optima",
                        help="method whose share of rounds per module is set against the best single module "
                             "(default: optima; e.g. an OPTIMA variant with another reward)")


def module_gains(runs: pd.DataFrame, split: str = "val") -> pd.DataFrame:
    """Per task and module: mean and std over seeds of the paired gain of ``fixed-<module>`` over ``finetune``
    on the task's primary metric, on the tables' scale (percent; CIDEr x100). Columns: task, module, gain,
    gain_std, seeds."""
    from optima.paper.spec import PRIMARY_COLUMNS

    rows = []
    for task, column in PRIMARY_COLUMNS.items():
        part = runs[runs.task.eq(task) & (runs.split == split) & (runs.metric == column.metric)]
        part = part.assign(value=part["value"] * column.scale)
        base = part[part.method == BASELINE].set_index("seed")["value"]
        for module in MODULES:
            fixed = part[part.method == f"fixed-{module}"].set_index("seed")["value"]
            paired = (fixed - base).dropna()
            if paired.empty:
                continue
            rows.append({"task": task, "module": module, "gain": float(paired.mean()),
                         "gain_std": float(paired.std(ddof=1)) if len(paired) > 1 else float("nan"),
                         "seeds": int(len(paired))})
    return pd.DataFrame(rows, columns=["task", "module", "gain", "gain_std", "seeds"])


def detrended_offsets(rounds: pd.DataFrame, kind: str, skip_rounds: int = 1) -> dict[str, float]:
    """Each module's offset in ``reward = slope * round + offset[module]`` (least squares, one run's rounds)."""
    from optima.distill.rounds import REWARD_COLUMNS, round_reward

    part = rounds[(rounds["round"] >= skip_rounds) & rounds["arm"].isin(MODULES)].dropna(subset=list(REWARD_COLUMNS[kind]))
    if part.empty:
        return {}
    reward = part.apply(lambda row: round_reward(kind, row), axis=1)  # the formula the policy was fed
    arms = [m for m in MODULES if (part["arm"] == m).any()]
    design = np.column_stack([part["round"].to_numpy(float)] + [(part["arm"] == m).to_numpy(float) for m in arms])
    coef, *_ = np.linalg.lstsq(design, reward.to_numpy(float), rcond=None)
    return dict(zip(arms, coef[1:].tolist()))


def reward_offsets(rounds: pd.DataFrame, source: str = SOURCE_METHOD) -> pd.DataFrame:
    """Per task, reward kind and module: the detrended offset averaged over the source method's seeds."""
    from optima.distill.rounds import REWARD_COLUMNS

    rows = []
    part = rounds[rounds.method == source]
    for (task, seed), run in part.groupby(["task", "seed"]):
        for kind in REWARD_KINDS:
            if not set(REWARD_COLUMNS[kind]) <= set(run.columns):
                continue
            for module, offset in detrended_offsets(run, kind).items():
                rows.append({"task": task, "seed": seed, "kind": kind, "module": module, "offset": offset})
    frame = pd.DataFrame(rows, columns=["task", "seed", "kind", "module", "offset"])
    return frame.groupby(["task", "kind", "module"], as_index=False)["offset"].mean()


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN when either side is constant."""
    ra, rb = pd.Series(a).rank().to_numpy(), pd.Series(b).rank().to_numpy()
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def agreement(gains: pd.DataFrame, offsets: pd.DataFrame) -> pd.DataFrame:
    """One row per task and reward kind: both rankings, Spearman's rho, and whether the top module agrees."""
    from optima.paper.spec import TASKS

    rows = []
    for task in [t for t in TASKS if t in set(gains.task)]:
        gain = gains[gains.task.eq(task)].set_index("module")["gain"]
        by_gain = list(gain.sort_values(ascending=False).index)
        for kind in REWARD_KINDS:
            offset = offsets[offsets.task.eq(task) & (offsets.kind == kind)].set_index("module")["offset"]
            common = [m for m in MODULES if m in gain.index and m in offset.index]
            if len(common) < 2:
                continue
            by_reward = list(offset[common].sort_values(ascending=False).index)
            rows.append({"task": task, "reward": kind, "gain_ranking": " > ".join(by_gain),
                         "reward_ranking": " > ".join(by_reward),
                         "spearman": spearman([gain[m] for m in common], [offset[m] for m in common]),
                         "top_agrees": by_gain[0] == by_reward[0]})
    return pd.DataFrame(rows, columns=["task", "reward", "gain_ranking", "reward_ranking", "spearman", "top_agrees"])


def selection_shares(rounds: pd.DataFrame, gains: pd.DataFrame, method: str = "optima") -> pd.DataFrame:
    """Per task: the share of the method's rounds (all seeds) spent on each module, its most chosen module,
    and the module with the largest single-module gain; columns task, <module>..., most_chosen, best_single."""
    from optima.paper.spec import TASKS

    part = rounds[(rounds.method == method) & rounds["arm"].isin(MODULES)]
    rows = []
    for task in [t for t in TASKS if t in set(part.task)]:
        counts = part[part.task.eq(task)]["arm"].value_counts()
        shares = {m: float(counts.get(m, 0)) / float(counts.sum()) for m in MODULES}
        gain = gains[gains.task.eq(task)].set_index("module")["gain"]
        rows.append({"task": task, **shares, "most_chosen": max(shares, key=shares.get),
                     "best_single": gain.idxmax() if not gain.empty else None})
    return pd.DataFrame(rows, columns=["task", *MODULES, "most_chosen", "best_single"])


def summary_by_reward(table: pd.DataFrame) -> pd.DataFrame:
    """Per reward kind: mean Spearman's rho over tasks and the number of tasks whose top module agrees."""
    return (table.groupby("reward", sort=False)
            .agg(mean_spearman=("spearman", "mean"), top_agrees=("top_agrees", "sum"), tasks=("task", "count"))
            .reset_index())


def render_markdown(table: pd.DataFrame, gains: pd.DataFrame, shares: pd.DataFrame, method: str = "optima") -> str:
    lines = ["| task | reward | ranking by single-module gain (val) | ranking by reward | Spearman ρ | same top module |",
             "|---|---|---|---|---|---|"]
    for row in table.itertuples():
        rho = "–" if not np.isfinite(row.spearman) else f"{row.spearman:+.2f}"
        lines.append(f"| {row.task} | {row.reward} | {row.gain_ranking} | {row.reward_ranking} | {rho} | "
                     f"{'yes' if row.top_agrees else 'no'} |")
    lines += ["", "| reward | mean ρ over tasks | tasks with the same top module |", "|---|---|---|"]
    for row in summary_by_reward(table).itertuples():
        lines.append(f"| {row.reward} | {row.mean_spearman:+.2f} | {int(row.top_agrees)} / {int(row.tasks)} |")
    lines += ["", "Single-module gains over `finetune` (validation, mean ± std over seeds):", "",
              "| task | " + " | ".join(MODULES) + " |", "|---|" + "---|" * len(MODULES)]
    for task, part in gains.groupby("task", sort=False):
        cells = {r.module: f"{r.gain:+.2f} ± {r.gain_std:.2f}" for r in part.itertuples()}
        lines.append(f"| {task} | " + " | ".join(cells.get(m, "–") for m in MODULES) + " |")
    if not shares.empty:
        who = "OPTIMA's" if method == "optima" else f"`{method}`'s"
        lines += ["", f"{who} rounds per module (all seeds, rounds with a recorded reward) against the best single module:", "",
                  "| task | " + " | ".join(MODULES) + " | most chosen | best single module (val) | match |",
                  "|---|" + "---|" * (len(MODULES) + 3)]
        for row in shares.itertuples(index=False):
            cells = " | ".join(f"{getattr(row, m):.0%}" for m in MODULES)
            lines.append(f"| {row.task} | {cells} | {row.most_chosen} | {row.best_single} | "
                         f"{'yes' if row.most_chosen == row.best_single else 'no'} |")
    return "\n".join(lines) + "\n"


def write_agreement(runs_path, rounds_path, out_dir, split: str = "val", source: str = SOURCE_METHOD,
                    method: str = "optima"):
    """Write ``reward_agreement.{md,csv}`` into ``out_dir``; errors name the file that lacks what is needed."""
    from pathlib import Path

    from optima.errors import DataError
    from optima.io import atomic_write_text
    from optima.paper.results import read_runs

    runs = read_runs(runs_path)
    try:
        rounds = pd.read_csv(rounds_path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{rounds_path}: cannot read rounds file: {exc}") from None
    missing = {"task", "method", "seed", "round", "arm"} - set(rounds.columns)
    if missing:
        raise DataError(f"{rounds_path}: missing column(s) {', '.join(sorted(missing))}")
    gains = module_gains(runs, split)
    if gains.empty:
        raise DataError(f"{runs_path}: no {split} rows of {BASELINE} and fixed-<module> runs to compare")
    offsets = reward_offsets(rounds, source)
    if offsets.empty:
        raise DataError(f"{rounds_path}: no logged rewards of method {source!r} (run it with distill.log_rewards)")
    table = agreement(gains, offsets)
    if method != "optima" and method not in set(rounds.method):  # asked for by name (optima: when it ran)
        raise DataError(f"{rounds_path}: no rounds of method {method!r} (methods: {', '.join(sorted(set(rounds.method)))})")
    shares = selection_shares(rounds, gains, method)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "reward_agreement.csv", table.to_csv(index=False, float_format="%.4f"))
    atomic_write_text(out / "selection_shares.csv", shares.to_csv(index=False, float_format="%.4f"))
    atomic_write_text(out / "reward_agreement.md", render_markdown(table, gains, shares, method))
    return out / "reward_agreement.md"


def applies(config: dict, source: str = SOURCE_METHOD) -> bool:
    """Whether a config's runs can be studied: the baseline, a fixed-<module> method, and the source
    method logging rewards."""
    run = set(config["distill"]["run"])
    return ({BASELINE, source} <= run and any(f"fixed-{m}" in run for m in MODULES)
            and bool(config["distill"]["log_rewards"]))


def run(args) -> int:
    print(write_agreement(args.runs, args.rounds, args.out_dir, args.split, args.source, args.method))
    return 0
