"""`optima decompose`: which term of the probe objective drives each arm's reward.

The probe reward of a round is ``(L_before - L_after) / L_before`` with ``L = sum_t w_t * term_t`` (task loss,
KD, each module's layer term: ``optima.distill.rounds.TERMS``). So it splits exactly into the terms'
contributions ``(w_t * term_t before - after) / L_before``, which add up to the reward. Runs logged with this
version record every term (``term_<t>_before/after``); older logs record only the probe's task loss, so their
reward splits into ``task`` and ``distillation`` (KD and every layer term together).

For each task, arm and phase of the run (early / middle / late thirds of the rounds), the table gives each
term's mean contribution (in reward units; they add up to the mean reward) and its share of the summed
absolute contributions (how much of the reward's movement the term accounts for). Rows come from the
rounds of one method, by default ``uniform`` (which plays every arm at random and logs every reward
under ``distill.log_rewards``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from optima.distill.rounds import TERMS

PHASES = ("early", "middle", "late")
DISTILLATION = "distillation"  # KD and every layer term together (logs without per-term columns)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rounds", required=True, help="rounds.csv (optima publish) of the run")
    parser.add_argument("--method", default="uniform", help="the method whose rounds are decomposed (default: uniform)")
    parser.add_argument("--out-dir", required=True, help="where reward_decomposition.{md,csv} go")
    parser.add_argument("--figure-dir", default=None, help="where reward_decomposition.png goes (default: --out-dir)")


def contributions(rounds: pd.DataFrame) -> pd.DataFrame:
    """One row per round with ``contribution`` per term (long form: task, method, seed, round, arm, term,
    contribution, reward): each term's part of the round's probe reward; they add up to the reward."""
    rows = rounds.dropna(subset=["probe_before", "probe_loss"])
    has_terms = all(f"term_{t}_before" in rows.columns for t in TERMS) and rows[
        [f"term_{t}_before" for t in TERMS]].notna().all(axis=1).all()
    before = rows["probe_before"].astype(float)
    parts = {}
    if has_terms:
        for term in TERMS:
            parts[term] = (rows[f"term_{term}_before"] - rows[f"term_{term}_after"]) / before
    else:
        parts["task"] = (rows["probe_task_before"] - rows["probe_task_loss"]) / before
        parts[DISTILLATION] = (before - rows["probe_loss"]) / before - parts["task"]
    keys = rows[["task", "method", "seed", "round", "arm"]].assign(reward=(before - rows["probe_loss"]) / before)
    frames = [keys.assign(term=term, contribution=value.to_numpy()) for term, value in parts.items()]
    return pd.concat(frames, ignore_index=True)


def phase_of(rounds: pd.Series) -> pd.Series:
    """early / middle / late: the thirds of each run's rounds."""
    last = rounds.max()
    third = (rounds * 3 // (last + 1)).clip(0, 2).astype(int)
    return third.map(dict(enumerate(PHASES)))


def decompose(rounds: pd.DataFrame, method: str = "uniform") -> pd.DataFrame:
    """task, arm, phase, term, mean contribution, share of the absolute contributions, rounds, mean reward."""
    part = rounds[rounds["method"] == method]
    if part.empty:
        return pd.DataFrame(columns=["task", "arm", "phase", "term", "contribution", "share", "rounds", "reward"])
    long = contributions(part)
    long["phase"] = long.groupby(["task", "seed"])["round"].transform(phase_of)
    grouped = long.groupby(["task", "arm", "phase", "term"], sort=False)
    table = grouped.agg(contribution=("contribution", "mean"), rounds=("contribution", "size"),
                        reward=("reward", "mean")).reset_index()
    absolute = long.assign(abs=long["contribution"].abs()).groupby(["task", "arm", "phase", "term"])["abs"].mean()
    totals = absolute.groupby(level=["task", "arm", "phase"]).transform("sum")
    table["share"] = (absolute / totals).reindex(pd.MultiIndex.from_frame(table[["task", "arm", "phase", "term"]])).to_numpy()
    order = {"phase": {p: k for k, p in enumerate(PHASES)}, "term": {t: k for k, t in enumerate((*TERMS, DISTILLATION))}}
    table = table.sort_values(["task", "arm", "phase", "term"],
                              key=lambda c: c.map(order[c.name]) if c.name in order else c).reset_index(drop=True)
    return table[["task", "arm", "phase", "term", "contribution", "share", "rounds", "reward"]]


def drivers(table: pd.DataFrame) -> pd.DataFrame:
    """Per task and arm, over the whole run: the term with the largest share, and that share."""
    whole = table.assign(weighted=table["share"] * table["rounds"]).groupby(["task", "arm", "term"], sort=False)[
        ["weighted", "rounds"]].sum()
    whole["share"] = whole["weighted"] / whole["rounds"]
    best = whole["share"].groupby(level=["task", "arm"], sort=False).idxmax()
    return pd.DataFrame([{"task": t, "arm": a, "term": term, "share": whole.loc[(t, a, term), "share"]}
                         for (t, a), (_, _, term) in best.items()])


def render_markdown(table: pd.DataFrame, method: str) -> str:
    from optima.paper.spec import TASK_NAMES

    lines = [f"### Reward decomposition: which term of the probe objective drives each arm's reward ({method} rounds)",
             "", "| Task | Arm | Phase | Rounds | Mean reward | " + " | ".join(
                 f"{term}" for term in _terms(table)) + " |",
             "|:---|:---|:---|---:|---:|" + "---:|" * len(_terms(table))]
    for (task, arm, phase), part in table.groupby(["task", "arm", "phase"], sort=False):
        cells = {row.term: f"{row.contribution:+.4f} ({row.share:.0%})" for row in part.itertuples()}
        lines.append(f"| {TASK_NAMES.get(task, task)} | {arm} | {phase} | {int(part['rounds'].iloc[0])} | "
                     f"{part['reward'].iloc[0]:+.4f} | " + " | ".join(cells.get(t, "–") for t in _terms(table)) + " |")
    lines += ["", "Each cell: the term's mean contribution to the round's probe reward (they add up to the mean "
              "reward) and, in brackets, its share of the summed absolute contributions. Phases: the thirds of "
              "each run's rounds."]
    if DISTILLATION in set(table["term"]):
        lines.append(f"`{DISTILLATION}`: KD and every layer term together (these logs record only the probe's "
                     "task loss besides its total).")
    lines += ["", "Largest share per task and arm, over the whole run:", ""]
    lines += [f"- {TASK_NAMES.get(row.task, row.task)}, {row.arm}: {row.term} ({row.share:.0%})"
              for row in drivers(table).itertuples()]
    return "\n".join(lines) + "\n"


def _terms(table: pd.DataFrame) -> list[str]:
    present = set(table["term"])
    return [t for t in (*TERMS, DISTILLATION) if t in present]


def figure(table: pd.DataFrame, method: str):
    """Stacked bars: per task (rows of panels) and arm, the terms' shares in each phase."""
    from matplotlib.figure import Figure

    from optima.paper.spec import TASK_NAMES

    tasks = list(dict.fromkeys(table["task"]))
    arms = list(dict.fromkeys(table["arm"]))
    terms = _terms(table)
    fig = Figure(figsize=(2.4 * len(arms), 1.9 * len(tasks) + 0.4), layout="constrained")
    axes = fig.subplots(len(tasks), len(arms), squeeze=False)
    for i, task in enumerate(tasks):
        for j, arm in enumerate(arms):
            ax = axes[i][j]
            part = table[(table["task"] == task) & (table["arm"] == arm)]
            bottom = [0.0] * len(PHASES)
            for term in terms:
                values = [float(part[(part["phase"] == p) & (part["term"] == term)]["share"].sum()) for p in PHASES]
                ax.bar(PHASES, values, bottom=bottom, label=term)
                bottom = [b + v for b, v in zip(bottom, values)]
            ax.set_ylim(0, 1)
            ax.set_title(f"{TASK_NAMES.get(task, task)}: {arm}", fontsize=8)
    axes[0][-1].legend(fontsize=6, loc="upper right")
    fig.suptitle(f"Share of each term in the probe reward ({method} rounds)", fontsize=9)
    return fig


def applies(rounds: pd.DataFrame, method: str = "uniform") -> bool:
    """Whether ``rounds`` (rounds.csv) holds probe losses of ``method``'s rounds to decompose."""
    return "probe_before" in rounds.columns and bool(rounds.loc[rounds["method"] == method, "probe_before"].notna().any())


def write_decomposition(rounds_path, out_dir, method: str = "uniform", figure_dir=None) -> Path:
    """reward_decomposition.{md,csv} into ``out_dir`` and reward_decomposition.png into ``figure_dir`` (default
    ``out_dir``); DataError naming the file when it lacks rounds."""
    from optima.errors import DataError
    from optima.io import atomic_write_text
    from optima.paper.logs import read_compact
    from optima.paper.style import save_figure

    rounds = read_compact(rounds_path, "rounds")
    if "probe_before" not in rounds.columns:
        raise DataError(f"{rounds_path}: no probe losses logged (run with distill.log_rewards or a probe reward)")
    table = decompose(rounds, method)
    if table.empty:
        raise DataError(f"{rounds_path}: no rounds of method {method!r} with probe losses "
                        f"(methods: {', '.join(sorted(set(rounds['method'])))})")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "reward_decomposition.csv", table.to_csv(index=False, float_format="%.6f"))
    atomic_write_text(out / "reward_decomposition.md", render_markdown(table, method))
    figures = Path(figure_dir) if figure_dir is not None else out
    figures.mkdir(parents=True, exist_ok=True)
    save_figure(figure(table, method), figures, "reward_decomposition", formats=("png",))
    return out / "reward_decomposition.md"


def run(args) -> int:
    path = write_decomposition(args.rounds, args.out_dir, args.method, args.figure_dir)
    print(path)
    return 0
