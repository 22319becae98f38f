"""`optima tables`: the paper's tables from ``runs.csv`` alone (seconds).

- ``main``: teacher, student without distillation, prediction KD, layerwise, uniform, OPTIMA, then
  every other method; VQA score, SNLI-VE acc., NLVR2 acc., COCO CIDEr, BLEU-4 and the average;
  mean ± std over seeds; best student per column in bold.
- ``comparison``: OPTIMA minus each baseline, paired by seed, with a 95 % t-interval, paired tests (t,
  sign-flip), Holm-adjusted p-values per family, the difference detectable with 80 % power and a verdict
  (docs/statistics.md).
- ``ablation``: OPTIMA against the other adaptive module-selection policies (ts, discounted_ts, ...,
  window/discount variants), written only when such methods were run.
- ``single_module``: no distillation, each module distilled alone (fixed policy), layerwise; per task
  the primary metric and its gain over no distillation, paired by seed, and the modules ranked by gain;
  written only when fixed-policy methods were run.
- ``module_pairs``: the single modules against each other per task (paired by seed, 95 % t-interval,
  paired tests, Holm-adjusted over the table, detectable difference, verdict): whether two modules' gains
  differ by more than seed noise; written only when at least two fixed-policy methods were run.

Each is written as Markdown (.md), booktabs LaTeX (.tex) and CSV (full-precision numbers).
"""

from __future__ import annotations

from optima.paper.common import add_config_arguments

TABLES = {
    "main": "Main results: every method on every task, mean ± std over seeds, best student in bold",
    "comparison": "OPTIMA minus each baseline, paired by seed: mean difference, 95% CI, paired tests, Holm, verdict",
    "ablation": "OPTIMA against other adaptive module-selection policies and their settings",
    "single_module": "One module distilled at a time: primary metric and gain over no distillation, modules ranked",
    "module_pairs": "The single modules against each other per task, paired by seed: difference, 95% CI, paired tests, "
                    "Holm, verdict",
}
FORMATS = ("md", "tex", "csv")
AVERAGE_MODES = ("displayed", "teacher_relative")


def add_arguments(parser) -> None:
    parser.add_argument("--runs", default=None, nargs="+", metavar="RUNS_CSV",
                        help="runs.csv from `optima collect`; several (an experiment run in pieces) are read as one "
                             "(default: <paths.results>/eval/runs.csv)")
    parser.add_argument("--out-dir", default=None, help="output folder (default: <paths.results>/tables)")
    parser.add_argument("--split", default=None,
                        help="split to report (default: eval.split of --config when present, else test > val > train)")
    parser.add_argument("--reference", default="optima",
                        help="method compared against every baseline and the ablations (default: optima)")
    parser.add_argument("--decimals", type=int, default=1,
                        help="decimals in the main/ablation tables (the comparison table prints one more; default 1)")
    parser.add_argument("--average", choices=AVERAGE_MODES, default="displayed",
                        help="displayed: mean of the task columns as printed (percent, CIDEr x100); "
                             "teacher_relative: mean over tasks of 100 * student / teacher (default: displayed)")
    parser.add_argument("--confidence", type=float, default=0.95, help="confidence level of the intervals (default 0.95)")
    parser.add_argument("--only", nargs="+", metavar="TABLE", default=None,
                        help="write only these tables (main, comparison, ablation, single_module, module_pairs)")
    add_config_arguments(parser)


def planned_tables(config: dict, reference: str = "optima") -> list[str]:
    """File names `optima tables` writes for a config's ``distill.run`` (plus the teacher), e.g. for
    Snakemake's output list."""
    from optima.paper.spec import is_ablation, method_policies

    methods = list(config["distill"]["run"])
    names = ["main"]
    if reference in methods and any(m != reference for m in methods):
        names.append("comparison")
    policies = method_policies(methods, config)
    if any(is_ablation(m, policies[m], reference) for m in methods):
        names.append("ablation")
    fixed = sum(policies[m] == "fixed" for m in methods)
    if fixed:
        names.append("single_module")
    if fixed >= 2:
        names.append("module_pairs")
    return [f"{name}.{fmt}" for name in names for fmt in FORMATS]


# --------------------------------------------------------------------------------------------- helpers

def _fmt(value: float, decimals: int, sign: bool = False) -> str:
    import math

    if value is None or not math.isfinite(value):
        return "–"
    text = f"{value:+.{decimals}f}" if sign else f"{value:.{decimals}f}"
    return text.replace("-", "−") if text.startswith("-") else text


def _fmt_p(p: float, decimals: int = 3) -> str:
    import math

    if not math.isfinite(p):
        return "–"
    return "<0.001" if p < 0.001 else f"{p:.{decimals}f}"


def _mean_std_cell(stats: dict, decimals: int, bold: bool = False):
    from optima.paper.render import Cell

    if stats["n"] == 0:
        return Cell("–")
    if stats["n"] == 1:
        return Cell(_fmt(stats["mean"], decimals), bold)
    return Cell(f"{_fmt(stats['mean'], decimals)} ± {_fmt(stats['std'], decimals)}", bold)


def _column_stats(values) -> dict:
    values = values.dropna()
    n = int(len(values))
    return {"mean": float(values.mean()) if n else float("nan"),
            "std": float(values.std(ddof=1)) if n >= 2 else float("nan"), "n": n}


def _seeds_text(counts) -> str:
    counts = sorted({c for c in counts if c > 0})
    if not counts:
        return "0"
    return str(counts[0]) if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"


class TableInputs:
    """The selected split as a seed table plus the columns, methods and notes every table shares."""

    def __init__(self, runs, config, split, reference, average, log):
        from optima.errors import DataError
        from optima.paper.results import seed_table
        from optima.paper.spec import MAIN_COLUMNS, TASK_NAMES, TEACHER, choose_split, order_methods

        preferred = split
        if preferred is None and config is not None and config["eval"]["split"] in set(runs["split"]):
            preferred = config["eval"]["split"]
        self.split = choose_split(runs["split"], preferred)
        runs = runs[runs["split"] == self.split]
        table = seed_table(runs, MAIN_COLUMNS)
        self.notes: list[str] = []
        absent_tasks = [t for t in TASK_NAMES if t not in set(runs["task"])]
        if absent_tasks:
            names = ", ".join(TASK_NAMES[t] for t in absent_tasks)
            self.notes.append(f"Not in runs.csv (left out): {names}.")
            log.info("tasks not in runs.csv, left out of the tables: %s", ", ".join(absent_tasks))
        self.columns = [c for c in MAIN_COLUMNS if c.key in table.columns and table[c.key].notna().any()]
        for c in MAIN_COLUMNS:
            if c.task not in absent_tasks and c not in self.columns:
                self.notes.append(f"{c.label}: no {c.metric} values in runs.csv (column left out).")
        if not self.columns:
            raise DataError(f"runs.csv: split {self.split!r} holds none of the table's metrics "
                            f"({', '.join(sorted({f'{c.task}/{c.metric}' for c in MAIN_COLUMNS}))})")
        self.table = table[[c.key for c in self.columns]]
        self.methods = order_methods(self.table.index.get_level_values("method").unique(), config)
        self.teacher = TEACHER
        self.students = [m for m in self.methods if m != TEACHER]
        self.reference = reference
        self.average = self._average(average)

    def _average(self, mode):
        """Per-seed average over the primary columns (one per task); None when fewer than two tasks."""
        primary = [c for c in self.columns if c.primary]
        if len(primary) < 2:
            return None
        values = self.table[[c.key for c in primary]]
        labels = ", ".join(c.label for c in primary)
        if mode == "teacher_relative":
            if self.teacher not in self.methods:
                self.notes.append("Average: no teacher rows, so the teacher-relative average is left out.")
                return None
            teacher = values.loc[self.teacher].mean()
            if teacher.isna().any() or (teacher == 0).any():
                self.notes.append("Average: the teacher lacks a task (or scores 0), so the teacher-relative average is left out.")
                return None
            values = values / teacher * 100.0
            self.notes.append(f"Average: mean over {labels} of 100 × method / teacher mean, computed per seed; "
                              "only for methods that ran every task.")
        else:
            self.notes.append(f"Average: mean of {labels} as printed (BLEU-4 not counted: one column per task), "
                              "computed per seed; only for methods that ran every task.")
        return values.mean(axis=1, skipna=False)

    def values(self, method, key):
        """Per-seed values of one method in one column (``key`` "average" for the average)."""
        import pandas as pd

        if method not in self.methods:
            return pd.Series(dtype=float)
        series = self.average if key == "average" else self.table[key]
        return series.loc[method].dropna()

    def keys(self):
        return [c.key for c in self.columns] + (["average"] if self.average is not None else [])

    def labels(self):
        return [c.label for c in self.columns] + (["Average"] if self.average is not None else [])


_UNITS_NOTE = ("Units: VQA score, SNLI-VE and NLVR2 accuracy in percent; COCO CIDEr and BLEU-4 ×100 "
               "(as papers print them).")


def _mean_std_table(data: TableInputs, methods, decimals, title, lead_header, lead_cells, extra_notes):
    """Rows of mean ± std cells with the best *student* per column in bold (ties at the printed
    precision all bold); returns (Table, csv frame)."""
    import pandas as pd

    from optima.paper.render import Cell, Table
    from optima.paper.spec import display_name

    keys, labels = data.keys(), data.labels()
    stats = {m: {k: _column_stats(data.values(m, k)) for k in keys} for m in methods}
    best = {}
    for key in keys:
        printed = {m: round(stats[m][key]["mean"], decimals) for m in methods
                   if m != data.teacher and stats[m][key]["n"] > 0}
        best[key] = {m for m, v in printed.items() if v == max(printed.values())} if printed else set()
    rows, records = [], []
    for method in methods:
        lead = lead_cells(method)
        cells = [Cell(t or "–") for t in lead]
        cells += [_mean_std_cell(stats[method][k], decimals, method in best[k]) for k in keys]
        cells.append(Cell(_seeds_text(stats[method][k]["n"] for k in keys)))
        rows.append(cells)
        record = {"method": method, "name": display_name(method)}
        record.update({h.lower(): t for h, t in zip(lead_header[1:], lead[1:])})
        for key in keys:
            s = stats[method][key]
            record.update({f"{key}_mean": s["mean"], f"{key}_std": s["std"], f"{key}_n": s["n"],
                           f"{key}_best": method in best[key]})
        records.append(record)
    header = list(lead_header) + labels + ["Seeds"]
    notes = [f"Split: {data.split}. Cells: mean ± sample std (ddof=1) over seeds; a single seed shows its value alone.",
             _UNITS_NOTE, *extra_notes, *data.notes]
    rules = (0,) if methods and methods[0] == data.teacher else ()
    table = Table(title, header, rows, "l" * len(lead_header) + "r" * (len(keys) + 1), rules, notes)
    return table, pd.DataFrame.from_records(records)


# --------------------------------------------------------------------------------------------- tables

def main_table(data: TableInputs, decimals: int = 1):
    from optima.paper.spec import display_name

    return _mean_std_table(data, data.methods, decimals, "Main results", ["Method"],
                           lambda m: [display_name(m)],
                           ["Bold: best student (teacher excluded) per column; ties at the printed precision all bold."])


def _difference_cells(d: dict, decimals: int, adjusted: dict) -> list:
    """n, mean difference, CI, paired-t, Wilcoxon, sign-flip and Holm p, detectable difference and verdict of a
    `paired_difference` result and its `_adjust` entry, as table cells."""
    from optima.paper.render import Cell

    if d["n"] == 0:
        ci = "– (no shared seed)"
    elif d["n"] == 1:
        ci = "– (n < 2)"
    else:
        ci = f"[{_fmt(d['ci_low'], decimals, True)}, {_fmt(d['ci_high'], decimals, True)}]"
    p_t = _fmt_p(d["p_ttest"])
    if d["n"] >= 2 and d["note"].startswith("identical"):
        p_t = "– (no variance)"
    return [Cell(str(d["n"])), Cell(_fmt(d["mean"], decimals, True)), Cell(ci), Cell(p_t),
            Cell(_fmt_p(d["p_wilcoxon"])), Cell(_fmt_p(d["p_signflip"], 4)), Cell(_fmt_p(adjusted["p_holm"])),
            Cell(_fmt(d["mde"], decimals)), Cell(adjusted["verdict"])]


def _difference_record(d: dict, confidence: float, adjusted: dict) -> dict:
    """The CSV columns of a `paired_difference` result and its `_adjust` entry (full precision)."""
    return {"n": d["n"], "seeds": " ".join(map(str, d["seeds"])),
            "reference_mean": d["reference_mean"], "baseline_mean": d["baseline_mean"],
            "mean_diff": d["mean"], "std_diff": d["std"], "ci_low": d["ci_low"],
            "ci_high": d["ci_high"], "confidence": confidence, "t": d["t"],
            "p_ttest": d["p_ttest"], "p_wilcoxon": d["p_wilcoxon"], "p_signflip": d["p_signflip"],
            "p_holm": adjusted["p_holm"], "family": adjusted["family"], "family_size": adjusted["family_size"],
            "mde": d["mde"], "verdict": adjusted["verdict"], "note": d["note"]}


def _alpha(confidence: float) -> float:
    """The tests' level: 1 − the intervals' confidence (0.05 at the default 95 %)."""
    return round(1 - confidence, 12)


def _adjust(results: list[dict], families: list[str], decimals: int, confidence: float) -> list[dict]:
    """Holm-adjust the paired-t p-values of ``results`` within each family (``families[i]`` names the family
    of ``results[i]``) and word each comparison: [{p_holm, family, family_size, verdict}] in input order.
    The verdict's bound is the detectable difference as printed (``decimals``)."""
    import math

    from optima.paper.stats import holm, verdict

    alpha = _alpha(confidence)
    out: list[dict] = [{} for _ in results]
    for family in dict.fromkeys(families):
        members = [i for i, f in enumerate(families) if f == family]
        adjusted = holm([results[i]["p_ttest"] for i in members])
        size = sum(math.isfinite(results[i]["p_ttest"]) for i in members)
        for i, p_holm in zip(members, adjusted):
            d = results[i]
            bound = float(f"{d['mde']:.{decimals}f}") if math.isfinite(d["mde"]) else float("nan")
            word = verdict(d["mean"], d["ci_low"], d["ci_high"], float(p_holm), bound, alpha)
            if word == "no difference":
                word = f"no difference > {_fmt(bound, decimals)}"
            out[i] = {"p_holm": float(p_holm), "family": family, "family_size": size, "verdict": word}
    return out


def _difference_notes(split: str, what: str, confidence: float, meaning: str) -> list[str]:
    from optima.paper.stats import WILCOXON_MIN_N

    level = f"{confidence * 100:g}%"
    return [f"Split: {split}. Δ: per-seed difference {what} on the seeds both ran (n), averaged; {meaning}.",
            f"{level} CI: t-interval of the mean difference (n − 1 degrees of freedom); p (paired t): two-sided "
            f"scipy.stats.ttest_rel; p (Wilcoxon): two-sided signed-rank test, only when n ≥ {WILCOXON_MIN_N}. "
            "With n < 2 no interval or test exists (–)."]


def _multiplicity_notes(results: list[dict], confidence: float, families: str, better: str) -> list[str]:
    """The notes on p (sign-flip), p (Holm) with its ``families``, the detectable Δ and the verdict."""
    from optima.paper.stats import POWER, SIGN_FLIP_DRAWS, SIGN_FLIP_EXACT_MAX_N

    alpha, level = _alpha(confidence), f"{confidence * 100:g}%"
    ns = sorted({d["n"] for d in results if d["n"] >= 2})
    floor = ", ".join(f"{2 / 2 ** n:.4g} at n = {n}" for n in ns if n <= SIGN_FLIP_EXACT_MAX_N)
    return [f"p (sign-flip): exact two-sided paired permutation test, the share of all 2^n sign assignments of the "
            f"per-seed differences whose mean is at least as far from 0 as the observed one (no normality assumed; "
            f"for n > {SIGN_FLIP_EXACT_MAX_N} a seeded Monte Carlo of {SIGN_FLIP_DRAWS} assignments); it cannot go "
            f"below 2/2^n" + (f" ({floor})." if floor else "."),
            f"p (Holm): p (paired t) adjusted by Holm–Bonferroni (step-down) within its family: {families}.",
            f"detectable Δ ({POWER * 100:g}% power): the smallest true mean difference a two-sided paired t-test at "
            f"α = {alpha:g} detects with {POWER * 100:g}% power, from n and the std of the per-seed differences "
            "(noncentral t).",
            f"verdict, the wording rule: {better} only where p (Holm) < {alpha:g}; \"no difference > X\" only where "
            f"the whole {level} CI lies within ±X, X the detectable Δ as printed; otherwise inconclusive."]


def comparison_table(data: TableInputs, decimals: int = 2, confidence: float = 0.95):
    """Reference minus each baseline per column, paired by seed; None when the reference or every
    baseline is missing."""
    import pandas as pd

    from optima.paper.render import Cell, Table
    from optima.paper.spec import display_name
    from optima.paper.stats import paired_difference

    ref = data.reference
    baselines = [m for m in data.students if m != ref]
    if ref not in data.methods or not baselines:
        return None
    level = f"{confidence * 100:g}%"
    # Holm families: per baseline its metric rows (BLEU-4 included), and the Average rows over the baselines
    items = [(baseline, key, label) for baseline in baselines for key, label in zip(data.keys(), data.labels())]
    results = [paired_difference(data.values(ref, key), data.values(baseline, key), confidence)
               for baseline, key, _ in items]
    families = ["average" if key == "average" else baseline for baseline, key, _ in items]
    adjusted = _adjust(results, families, decimals, confidence)
    rows, records, rules = [], [], []
    for (baseline, key, label), d, adj in zip(items, results, adjusted):
        first = not records or records[-1]["baseline"] != baseline
        if first and rows:
            rules.append(len(rows) - 1)
        rows.append([Cell(display_name(baseline) if first else ""), Cell(label), *_difference_cells(d, decimals, adj)])
        records.append({"reference": ref, "baseline": baseline, "column": key, "label": label,
                        **_difference_record(d, confidence, adj)})
    rules.append(len(rows) - 1)
    header = ["Baseline", "Metric", "n", f"Δ ({display_name(ref)} − baseline)", f"{level} CI",
              "p (paired t)", "p (Wilcoxon)", "p (sign-flip)", "p (Holm)", "detectable Δ (80% power)", "verdict"]
    metrics = [c.label for c in data.columns]
    secondary = [c.label for c in data.columns if not c.primary]
    family_text = f"one per baseline, its {len(metrics)} metric rows ({', '.join(metrics)})"
    for label in secondary:
        family_text += f"; {label} is not a primary metric but is tested and printed, so it joins its baseline's family"
    if data.average is not None:
        family_text += f"; and one of the Average rows over the {len(baselines)} baselines"
    notes = [*_difference_notes(data.split, f"{display_name(ref)} − baseline", confidence,
                                f"positive means {display_name(ref)} is better"),
             *_multiplicity_notes(results, confidence, family_text,
                                  "\"better\" / \"worse\" (than the baseline)"),
             _UNITS_NOTE, *data.notes]
    table = Table(f"{display_name(ref)} against each baseline (paired by seed)", header, rows, "llrrrrrrrrl",
                  tuple(rules), notes)
    return table, pd.DataFrame.from_records(records)


def _setting_text(config: dict | None, method: str, reference: str) -> str:
    """A method's policy options and the training options where it differs from the reference."""
    from optima.config import method_spec

    if config is None or method not in config["distill"]["methods"]:
        return ""
    spec = method_spec(config, method)
    parts = [f"{k}={v}" for k, v in sorted(spec["options"].items()) if v is not None]
    if reference in config["distill"]["methods"] and method != reference:
        ref_spec = method_spec(config, reference)
        parts += [f"{k}={spec[k]}" for k in ("round_steps", "reward", "arms", "kd_weight", "layer_weight", "temperature")
                  if spec[k] != ref_spec[k]]
    return ", ".join(parts)


def ablation_table(data: TableInputs, config: dict | None, decimals: int = 1):
    """The reference and every other adaptive-policy method; None when there is no such method."""
    from optima.paper.spec import display_name, is_ablation, method_policies

    policies = method_policies(data.methods, config)
    variants = [m for m in data.students if is_ablation(m, policies[m], data.reference)]
    if not variants:
        return None
    methods = ([data.reference] if data.reference in data.methods else []) + variants
    settings = {m: _setting_text(config, m, data.reference) for m in methods}
    notes = ["Bold: best per column among these methods; ties at the printed precision all bold."]
    if config is None:
        notes.append("Policies inferred from the method names; pass --config to show each method's settings.")
    table, frame = _mean_std_table(data, methods, decimals, "Ablation: module-selection policies",
                                   ["Method", "Policy", "Setting"],
                                   lambda m: [display_name(m), policies[m] or "", settings[m]], notes)
    table.rules_after = (0,) if methods[0] == data.reference else ()
    return table, frame


SINGLE_MODULE_BASELINE = "finetune"  # the student without distillation: every gain is measured against it


def _rank_text(gains: dict, decimals: int) -> tuple[dict, str]:
    """Modules ranked by their printed gain (ties share a rank): ({module: rank}, "multimodal > vision = text")."""
    printed = {m: round(g, decimals) for m, g in gains.items()}
    order = sorted(printed, key=lambda m: -printed[m])  # stable: module order among ties
    ranks = {m: 1 + sum(v > printed[m] for v in printed.values()) for m in order}
    text = ""
    for i, module in enumerate(order):
        if i:
            text += " = " if printed[module] == printed[order[i - 1]] else " > "
        text += module
    return ranks, text


def single_module_table(data: TableInputs, config: dict | None, decimals: int = 1):
    """Per task (primary metric): no distillation, each single-module method, layerwise, as mean ± std
    and as gain over no distillation (mean ± std of the per-seed differences on shared seeds); the
    module with the largest gain in bold and a last row ranking the modules. None without a
    single-module method."""
    import pandas as pd

    from optima.paper.render import Cell, Table
    from optima.paper.spec import display_name, fixed_arm, single_module_methods
    from optima.paper.stats import paired_difference

    methods = single_module_methods(data.students, config)
    columns = [c for c in data.columns if c.primary]
    if not methods or not columns:
        return None
    base = SINGLE_MODULE_BASELINE
    arms = {m: fixed_arm(m, config) for m in methods}
    rows, records = [[Cell(display_name(m))] for m in methods], []
    ranking = [Cell("Modules ranked by Δ")]
    for column in columns:
        stats = {m: _column_stats(data.values(m, column.key)) for m in methods}
        gains = {m: paired_difference(data.values(m, column.key), data.values(base, column.key))
                 for m in methods if m != base and base in data.methods}
        module_gains = {arms[m]: gains[m]["mean"] for m in methods if arms[m] and m in gains and gains[m]["n"]}
        ranks, ranked = _rank_text(module_gains, decimals) if module_gains else ({}, "–")
        for row, method in zip(rows, methods):
            gain, best = gains.get(method), ranks.get(arms[method]) == 1
            if gain is None or gain["n"] == 0:
                gain_cell = Cell("–")
            elif gain["n"] == 1:
                gain_cell = Cell(_fmt(gain["mean"], decimals, True), best)
            else:
                gain_cell = Cell(f"{_fmt(gain['mean'], decimals, True)} ± {_fmt(gain['std'], decimals)}", best)
            row += [_mean_std_cell(stats[method], decimals), gain_cell]
            records.append({"task": column.task, "column": column.key, "label": column.label, "method": method,
                            "name": display_name(method), "module": arms[method] or "",
                            "mean": stats[method]["mean"], "std": stats[method]["std"], "n": stats[method]["n"],
                            "gain_mean": gain["mean"] if gain else float("nan"),
                            "gain_std": gain["std"] if gain else float("nan"), "gain_n": gain["n"] if gain else 0,
                            "gain_seeds": " ".join(map(str, gain["seeds"])) if gain else "",
                            "rank": ranks.get(arms[method]), "best": best})
        ranking += [Cell(""), Cell(ranked)]
    for row, method in zip(rows, methods):
        row.append(Cell(_seeds_text(r["n"] for r in records if r["method"] == method)))
    ranking.append(Cell(""))
    header = ["Method"] + [h for c in columns for h in (c.label, "Δ")] + ["Seeds"]
    notes = [f"Split: {data.split}. Metric cells: mean ± sample std (ddof=1) over seeds.",
             f"Δ: gain over {display_name(base)}, per-seed difference on the seeds both ran, mean ± std; "
             "bold: the module with the largest gain per task (ties at the printed precision all bold).",
             "Last row: the single modules ranked by Δ per task (= where equal at the printed precision).",
             _UNITS_NOTE, *(n for n in data.notes if not n.startswith("Average:"))]  # this table has no average
    if base not in data.methods:
        notes.insert(1, f"No {base!r} runs in runs.csv: no gains.")
    table = Table("Single-module analysis: one module distilled at a time", header, rows + [ranking],
                  "l" + "r" * (2 * len(columns) + 1), (len(rows) - 1,), notes)
    frame = pd.DataFrame.from_records(records)
    return table, frame.astype({"rank": "Int64"})  # whole ranks, empty for the methods that are no module


def module_pairs_table(data: TableInputs, config: dict | None, decimals: int = 2, confidence: float = 0.95):
    """Per task (primary metric), every pair of single-module methods in module order (vision, text,
    multimodal), first − second, paired by seed: does one module's distillation beat another's by more than
    seed noise? None with fewer than two single-module methods."""
    import pandas as pd

    from optima.paper.render import Cell, Table
    from optima.paper.spec import fixed_arm, single_module_methods
    from optima.paper.stats import paired_difference

    fixed = [m for m in single_module_methods(data.students, config) if fixed_arm(m, config)]
    columns = [c for c in data.columns if c.primary]
    if len(fixed) < 2 or not columns:
        return None
    pairs = [(a, b) for i, a in enumerate(fixed) for b in fixed[i + 1:]]
    items = [(column, a, b) for column in columns for a, b in pairs]
    results = [paired_difference(data.values(a, column.key), data.values(b, column.key), confidence)
               for column, a, b in items]
    adjusted = _adjust(results, ["all pairs"] * len(items), decimals, confidence)  # one family: the whole table
    rows, records, rules = [], [], []
    for j, ((column, a, b), d, adj) in enumerate(zip(items, results, adjusted)):
        first = j % len(pairs) == 0
        if first and rows:
            rules.append(len(rows) - 1)
        names = f"{fixed_arm(a, config)} − {fixed_arm(b, config)}"
        rows.append([Cell(column.label if first else ""), Cell(names), *_difference_cells(d, decimals, adj)])
        records.append({"task": column.task, "column": column.key, "label": column.label, "first": a,
                        "second": b, "modules": names, **_difference_record(d, confidence, adj)})
    rules.append(len(rows) - 1)
    header = ["Metric", "Modules", "n", "Δ (first − second)", f"{confidence * 100:g}% CI", "p (paired t)",
              "p (Wilcoxon)", "p (sign-flip)", "p (Holm)", "detectable Δ (80% power)", "verdict"]
    notes = [*_difference_notes(data.split, "first − second", confidence,
                                "positive means distilling only the first module beats distilling only the second"),
             *_multiplicity_notes(results, confidence,
                                  "one family, every pair of modules on every task in this table "
                                  f"({adjusted[0]['family_size']} tests)",
                                  "\"better\" / \"worse\" (the first module than the second)"),
             _UNITS_NOTE, *(n for n in data.notes if not n.startswith("Average:"))]  # this table has no average
    table = Table("Single-module analysis: the modules against each other (paired by seed)", header, rows,
                  "llrrrrrrrrl", tuple(rules), notes)
    return table, pd.DataFrame.from_records(records)


def build_tables(runs, config: dict | None = None, split: str | None = None, reference: str = "optima",
                 decimals: int = 1, average: str = "displayed", confidence: float = 0.95, log=None) -> dict:
    """name -> (Table, csv DataFrame) or None when the table does not apply to these runs."""
    from optima.errors import ConfigError
    from optima.paper.common import LOG

    if decimals < 0:
        raise ConfigError(f"--decimals: must be >= 0, got {decimals}")
    if not 0 < confidence < 1:
        raise ConfigError(f"--confidence: must be in (0, 1), got {confidence}")
    if average not in AVERAGE_MODES:
        raise ConfigError(f"--average: must be one of {', '.join(AVERAGE_MODES)}, got {average!r}")
    data = TableInputs(runs, config, split, reference, average, log or LOG)
    return {
        "main": main_table(data, decimals),
        "comparison": comparison_table(data, decimals + 1, confidence),
        "ablation": ablation_table(data, config, decimals),
        "single_module": single_module_table(data, config, decimals),
        "module_pairs": module_pairs_table(data, config, decimals + 1, confidence),
    }


def write_tables(runs_path, out_dir, config: dict | None = None, split: str | None = None,
                 reference: str = "optima", decimals: int = 1, average: str = "displayed",
                 confidence: float = 0.95, only: tuple[str, ...] | None = None) -> list:
    """Write every table that applies to ``runs_path`` (or those named in ``only``) into ``out_dir``; remove stale
    ones of tables that do not apply; return the written paths."""
    from pathlib import Path

    from optima.io import atomic_write_text
    from optima.paper.common import LOG
    from optima.paper.render import render_latex, render_markdown
    from optima.paper.results import read_runs_many

    out_dir = Path(out_dir)
    tables = build_tables(read_runs_many(runs_path), config, split, reference, decimals, average, confidence)
    if only:
        unknown = sorted(set(only) - set(tables))
        if unknown:
            from optima.errors import ConfigError

            raise ConfigError(f"--only: unknown table(s) {', '.join(unknown)} (one of {', '.join(tables)})")
        tables = {name: built for name, built in tables.items() if name in only}
    written = []
    for name, built in tables.items():
        paths = [out_dir / f"{name}.{fmt}" for fmt in FORMATS]
        if built is None:
            why = {"comparison": f"no {reference!r} and baseline runs",
                   "ablation": f"no adaptive-policy methods other than {reference!r}",
                   "single_module": "no single-module (fixed-policy) methods",
                   "module_pairs": "fewer than two single-module (fixed-policy) methods"}[name]
            LOG.info("skipped %s table: %s in %s", name, why, runs_path)
            for stale in paths:  # a table from an earlier run must not pass for a current one
                if stale.exists():
                    stale.unlink()
                    LOG.info("removed stale %s", stale)
            continue
        table, frame = built
        atomic_write_text(paths[0], render_markdown(table))
        atomic_write_text(paths[1], render_latex(table))
        atomic_write_text(paths[2], frame.to_csv(index=False, lineterminator="\n"))
        written += paths
    return written


def run(args) -> int:
    from pathlib import Path

    from optima.paper.common import load_optional_config, results_root, setup_logging

    setup_logging("tables")
    config = load_optional_config(args)
    runs_path = [Path(p) for p in args.runs] if args.runs else results_root(config) / "eval" / "runs.csv"
    out_dir = Path(args.out_dir) if args.out_dir else results_root(config) / "tables"
    for path in write_tables(runs_path, out_dir, config, args.split, args.reference, args.decimals,
                             args.average, args.confidence, only=args.only):
        print(path)
    return 0
