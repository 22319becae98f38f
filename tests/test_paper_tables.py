"""`optima tables`: numbers equal the inputs, bolding, the paired comparison against a hand
computation, the ablation table, missing tasks and bad runs.csv files."""

import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from optima.cli import main
from optima.config import load_config
from optima.paper.tables import planned_tables

sys.path.insert(0, str(Path(__file__).parent / "fixtures_paper"))
from fake_results import make_results  # noqa: E402

METHODS = ("finetune", "kd", "layerwise", "uniform", "optima", "fixed-vision", "ts", "optima-w4")
SEEDS = (0, 1, 2)
# column key -> (task, metric, scale), as the main table shows them
COLUMNS = {"vqa": ("vqa", "overall", 1.0), "snli_ve": ("snli_ve", "accuracy", 100.0),
           "nlvr2": ("nlvr2", "accuracy", 100.0), "cider": ("captions", "CIDEr", 100.0),
           "bleu4": ("captions", "Bleu_4", 100.0)}
PRIMARY = ("vqa", "snli_ve", "nlvr2", "cider")


@pytest.fixture(scope="module")
def paper(tmp_path_factory):
    root = tmp_path_factory.mktemp("paper")
    fake = make_results(root / "results", methods=METHODS, seeds=SEEDS, logs=False)
    assert main(["collect", "--out-dir", str(root / "eval"), *map(str, fake["metrics"])]) == 0
    assert main(["tables", "--runs", str(root / "eval" / "runs.csv"), "--out-dir", str(root / "tables")]) == 0
    return {"root": root, "values": fake["values"], "tables": root / "tables", "runs": root / "eval" / "runs.csv"}


def _shown(values, method, key, seed):
    task, metric, scale = COLUMNS[key]
    return values[(task, method, seed)][metric] * scale


def _md_rows(path):
    """Markdown table rows as lists of cell strings (header and separator left out)."""
    lines = [line for line in Path(path).read_text().splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines[1:]]


def _write_runs(path, values, split="test"):
    rows = [{"task": task, "method": method, "seed": seed, "role": "teacher" if method == "teacher" else "student",
             "split": split, "metric": metric, "value": value}
            for (task, method, seed), metrics in values.items() for metric, value in metrics.items()]
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _tables(runs, out, *extra):
    return main(["tables", "--runs", str(runs), "--out-dir", str(out), *extra])


def test_writes_every_table_in_three_formats(paper):
    names = sorted(p.name for p in paper["tables"].iterdir())
    assert names == sorted(f"{t}.{f}" for t in ("main", "comparison", "ablation", "single_module")
                           for f in ("md", "tex", "csv"))  # one fixed-* method: no module_pairs table


def test_main_table_means_and_stds_equal_the_inputs(paper):
    main_csv = pd.read_csv(paper["tables"] / "main.csv").set_index("method")
    assert list(main_csv.index) == ["teacher", *METHODS]  # the paper's order, then the others
    values = paper["values"]
    for method in METHODS:
        for key in COLUMNS:
            shown = [_shown(values, method, key, s) for s in SEEDS]
            assert main_csv.loc[method, f"{key}_mean"] == pytest.approx(np.mean(shown), rel=1e-12)
            assert main_csv.loc[method, f"{key}_std"] == pytest.approx(np.std(shown, ddof=1), rel=1e-9)
            assert main_csv.loc[method, f"{key}_n"] == 3
        per_seed = [np.mean([_shown(values, method, k, s) for k in PRIMARY]) for s in SEEDS]
        assert main_csv.loc[method, "average_mean"] == pytest.approx(np.mean(per_seed), rel=1e-12)
        assert main_csv.loc[method, "average_std"] == pytest.approx(np.std(per_seed, ddof=1), rel=1e-9)
    teacher = main_csv.loc["teacher"]
    assert teacher["vqa_n"] == 1 and math.isnan(teacher["vqa_std"])
    assert teacher["cider_mean"] == pytest.approx(values[("captions", "teacher", 0)]["CIDEr"] * 100)


def test_main_markdown_cells_and_bold_best_student(paper):
    rows = _md_rows(paper["tables"] / "main.md")
    assert [r[0] for r in rows] == ["Teacher", "Student (no distillation)", "Prediction KD", "Layerwise", "Uniform",
                                    "OPTIMA", "Vision only", "Thompson sampling", "optima-w4"]
    main_csv = pd.read_csv(paper["tables"] / "main.csv").set_index("method")
    keys = [*COLUMNS, "average"]
    for i, key in enumerate(keys, start=1):
        printed = {m: round(main_csv.loc[m, f"{key}_mean"], 1) for m in METHODS}
        best = {m for m, v in printed.items() if v == max(printed.values())}
        for row, method in zip(rows[1:], METHODS):
            mean, std = main_csv.loc[method, f"{key}_mean"], main_csv.loc[method, f"{key}_std"]
            text = f"{mean:.1f} ± {std:.1f}"
            assert row[i] == (f"**{text}**" if method in best else text), (method, key)
        assert "**" not in rows[0][i]  # the teacher is never bolded
        assert rows[0][i] == f"{main_csv.loc['teacher', f'{key}_mean']:.1f}"  # one seed: no ± part
    assert rows[1][-1] == "3" and rows[0][-1] == "1"  # seeds column


def test_main_latex_is_booktabs_with_the_same_bold_cells(paper):
    tex = (paper["tables"] / "main.tex").read_text()
    md = (paper["tables"] / "main.md").read_text()
    for marker in (r"\begin{tabular}{lrrrrrrr}", r"\toprule", r"\midrule", r"\bottomrule", r"\end{tabular}"):
        assert marker in tex
    assert tex.count(r"\textbf{") == md.count("**") // 2 > 0
    assert r"$\pm$" in tex and "±" not in tex.split(r"\begin{tabular}")[1]
    assert "optima-w4" in tex and r"\\" in tex


def test_comparison_matches_a_hand_computed_paired_t_interval(paper):
    comp = pd.read_csv(paper["tables"] / "comparison.csv")
    assert set(comp["baseline"]) == set(METHODS) - {"optima"}
    row = comp[(comp.baseline == "layerwise") & (comp.column == "vqa")].iloc[0]
    d = np.array([_shown(paper["values"], "optima", "vqa", s) - _shown(paper["values"], "layerwise", "vqa", s)
                  for s in SEEDS])
    n, mean, sd = len(d), d.mean(), math.sqrt(((d - d.mean()) ** 2).sum() / (len(d) - 1))
    half = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
    t = mean / (sd / math.sqrt(n))
    assert row["n"] == 3 and row["seeds"] == "0 1 2"
    assert row["mean_diff"] == pytest.approx(mean, rel=1e-12)
    assert row["ci_low"] == pytest.approx(mean - half, rel=1e-9)
    assert row["ci_high"] == pytest.approx(mean + half, rel=1e-9)
    assert row["t"] == pytest.approx(t, rel=1e-9)
    assert row["p_ttest"] == pytest.approx(2 * stats.t.sf(abs(t), n - 1), rel=1e-9)
    assert math.isnan(row["p_wilcoxon"]) and "no Wilcoxon" in row["note"]  # n = 3 < 6
    md = (paper["tables"] / "comparison.md").read_text()
    sign = lambda x: f"{x:+.2f}".replace("-", "−")  # noqa: E731
    assert f"| {sign(mean)} | [{sign(mean - half)}, {sign(mean + half)}] |" in md


def test_ablation_lists_adaptive_policies_only(paper):
    abl = pd.read_csv(paper["tables"] / "ablation.csv", keep_default_na=False)
    assert list(abl["method"]) == ["optima", "ts", "optima-w4"]
    assert list(abl["policy"]) == ["optima", "ts", "optima"]  # inferred from the names without --config
    assert "pass --config" in (paper["tables"] / "ablation.md").read_text()


def test_ablation_settings_come_from_the_config(paper, tmp_path, repo_root):
    out = tmp_path / "tables"
    assert _tables(paper["runs"], out, "--config", str(repo_root / "params.yaml"),
                   "--set", "distill.optima={window: 8, gamma: null, scale: 1.0, prior_scale: 1.0}",
                   "--set", "distill.methods.optima-w4={policy: optima, options: {window: 4}, round_steps: 5}") == 0
    abl = pd.read_csv(out / "ablation.csv", keep_default_na=False).set_index("method")
    assert abl.loc["optima-w4", "setting"] == "prior_scale=1.0, scale=1.0, window=4, round_steps=5"
    assert abl.loc["optima", "setting"] == "prior_scale=1.0, scale=1.0, window=8"
    assert abl.loc["ts", "setting"] == ""


def test_no_ablation_methods_skips_the_table_and_removes_a_stale_one(paper, tmp_path, caplog):
    out = tmp_path / "tables"
    out.mkdir()
    (out / "ablation.md").write_text("stale")
    values = {k: v for k, v in paper["values"].items() if k[1] in ("teacher", "finetune", "layerwise", "optima")}
    runs = _write_runs(tmp_path / "runs.csv", values)
    assert _tables(runs, out) == 0
    assert not (out / "ablation.md").exists()
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{t}.{f}" for t in ("main", "comparison")
                                                           for f in ("md", "tex", "csv"))
    assert "skipped ablation table" in caplog.text


def test_missing_task_is_left_out_with_a_note(paper, tmp_path):
    values = {k: v for k, v in paper["values"].items() if k[0] != "captions"}
    assert _tables(_write_runs(tmp_path / "runs.csv", values), tmp_path / "t") == 0
    md = (tmp_path / "t" / "main.md").read_text()
    assert "CIDEr" not in md.split("\n- ")[0] and "BLEU-4" not in md.split("\n- ")[0]
    assert "Not in runs.csv (left out): COCO captioning." in md
    main_csv = pd.read_csv(tmp_path / "t" / "main.csv").set_index("method")
    assert "cider_mean" not in main_csv.columns
    per_seed = [np.mean([_shown(paper["values"], "optima", k, s) for k in ("vqa", "snli_ve", "nlvr2")]) for s in SEEDS]
    assert main_csv.loc["optima", "average_mean"] == pytest.approx(np.mean(per_seed), rel=1e-12)


def test_single_task_has_no_average_column(paper, tmp_path):
    values = {k: v for k, v in paper["values"].items() if k[0] == "vqa"}
    assert _tables(_write_runs(tmp_path / "runs.csv", values), tmp_path / "t") == 0
    assert "Average" not in _md_rows(tmp_path / "t" / "main.md")[0] and "average_mean" not in (
        tmp_path / "t" / "main.csv").read_text()


def test_teacher_relative_average(paper, tmp_path):
    assert _tables(paper["runs"], tmp_path / "t", "--average", "teacher_relative") == 0
    main_csv = pd.read_csv(tmp_path / "t" / "main.csv").set_index("method")
    v = paper["values"]
    per_seed = [np.mean([100 * _shown(v, "uniform", k, s) / _shown(v, "teacher", k, 0) for k in PRIMARY]) for s in SEEDS]
    assert main_csv.loc["uniform", "average_mean"] == pytest.approx(np.mean(per_seed), rel=1e-12)
    assert main_csv.loc["teacher", "average_mean"] == pytest.approx(100.0)


# ---------------------------------------------------------------- small hand-made runs.csv files

def _vqa(values_by_method):
    """{method: [score per seed]} -> values dict for the vqa task (seed = list position; None = not run)."""
    return {("vqa", m, s): {"overall": x} for m, xs in values_by_method.items() for s, x in enumerate(xs)
            if x is not None}


def test_ties_at_printed_precision_are_all_bold(tmp_path):
    runs = _write_runs(tmp_path / "runs.csv", _vqa({"teacher": [80.0], "layerwise": [70.02, 70.04],
                                                    "optima": [70.01, 70.07], "uniform": [60.0, 61.0]}))
    assert _tables(runs, tmp_path / "t") == 0
    cells = {r[0]: r[1] for r in _md_rows(tmp_path / "t" / "main.md")}
    assert cells["Layerwise"] == "**70.0 ± 0.0**" and cells["OPTIMA"] == "**70.0 ± 0.0**"
    assert cells["Uniform"] == "60.5 ± 0.7" and cells["Teacher"] == "80.0"


def test_fewer_than_two_shared_seeds_gives_no_interval(tmp_path):
    runs = _write_runs(tmp_path / "runs.csv", _vqa({"optima": [70.0, 71.0, None], "layerwise": [69.0, None, None],
                                                    "uniform": [None, None, 68.0]}))
    assert _tables(runs, tmp_path / "t") == 0
    comp = pd.read_csv(tmp_path / "t" / "comparison.csv").set_index("baseline")
    assert comp.loc["layerwise", "n"] == 1 and comp.loc["layerwise", "mean_diff"] == pytest.approx(1.0)
    assert math.isnan(comp.loc["layerwise", "ci_low"]) and math.isnan(comp.loc["layerwise", "p_ttest"])
    assert comp.loc["uniform", "n"] == 0 and math.isnan(comp.loc["uniform", "mean_diff"])
    rows = {r[0]: r for r in _md_rows(tmp_path / "t" / "comparison.md")}
    assert rows["Layerwise"][4] == "– (n < 2)" and rows["Layerwise"][5] == "–"
    assert rows["Uniform"][4] == "– (no shared seed)"


def test_identical_differences_and_wilcoxon_from_six_seeds(tmp_path):
    optima = [70.0, 71.5, 69.0, 72.0, 70.5, 71.0]
    layerwise = [x - d for x, d in zip(optima, [0.5, 1.2, -0.3, 0.9, 0.4, 1.1])]
    runs = _write_runs(tmp_path / "runs.csv", _vqa({"optima": optima, "layerwise": layerwise,
                                                    "uniform": [x - 0.25 for x in optima]}))
    assert _tables(runs, tmp_path / "t") == 0
    comp = pd.read_csv(tmp_path / "t" / "comparison.csv").set_index("baseline")
    d = np.array(optima) - np.array(layerwise)
    assert comp.loc["layerwise", "n"] == 6
    assert comp.loc["layerwise", "p_wilcoxon"] == pytest.approx(stats.wilcoxon(d).pvalue)
    assert comp.loc["layerwise", "p_ttest"] == pytest.approx(stats.ttest_rel(optima, layerwise).pvalue)
    assert comp.loc["uniform", "ci_low"] == pytest.approx(0.25) == comp.loc["uniform", "ci_high"]
    assert "identical difference" in comp.loc["uniform", "note"]
    rows = {r[0]: r for r in _md_rows(tmp_path / "t" / "comparison.md")}
    assert rows["Uniform"][5] == "– (no variance)"


def test_split_choice(tmp_path):
    values = _vqa({"optima": [70.0, 71.0], "layerwise": [69.0, 69.5]})
    test = pd.read_csv(_write_runs(tmp_path / "a.csv", values))
    val = pd.read_csv(_write_runs(tmp_path / "b.csv", {k: {"overall": 10.0} for k in values}, split="val"))
    runs = tmp_path / "runs.csv"
    pd.concat([val, test]).to_csv(runs, index=False)
    assert _tables(runs, tmp_path / "t") == 0
    assert "70.5 ± 0.7" in (tmp_path / "t" / "main.md").read_text()  # test preferred over val
    assert _tables(runs, tmp_path / "v", "--split", "val") == 0
    assert "10.0 ± 0.0" in (tmp_path / "v" / "main.md").read_text()
    assert _tables(runs, tmp_path / "x", "--split", "train") == 2


@pytest.mark.parametrize("edit, message", [
    (lambda df: df.drop(columns=["metric"]), "missing column(s) metric"),
    (lambda df: df.assign(value=df["value"].astype(object).where(df.index != 2, "n/a")), "line 4: value must be a finite number"),
    (lambda df: df.assign(seed=df["seed"].astype(object).where(df.index != 0, "x")), "line 2: seed must be"),
    (lambda df: df.assign(task=df["task"].where(df.index != 1, "gqa")), "line 3: task must be one of"),
    (lambda df: pd.concat([df, df.iloc[[0]]]), "duplicate row"),
    (lambda df: df.iloc[0:0], "holds no rows"),
])
def test_bad_runs_csv_names_file_and_line(tmp_path, capsys, edit, message):
    runs = _write_runs(tmp_path / "runs.csv", _vqa({"optima": [70.0, 71.0], "layerwise": [69.0, 69.5]}))
    edit(pd.read_csv(runs)).to_csv(runs, index=False)
    assert _tables(runs, tmp_path / "t") == 2
    err = capsys.readouterr().err
    assert str(runs) in err and message in err, err
    assert not (tmp_path / "t").exists()


def test_missing_runs_csv(tmp_path, capsys):
    assert _tables(tmp_path / "nope.csv", tmp_path / "t") == 2
    assert "runs file not found" in capsys.readouterr().err


def test_planned_tables_for_the_shipped_configs(repo_root):
    config = load_config(repo_root / "params.yaml")
    assert planned_tables(config) == [f"{t}.{f}" for t in ("main", "comparison") for f in ("md", "tex", "csv")]
    config["distill"]["run"] = ["finetune", "optima", "ts"]
    assert planned_tables(config)[-3:] == ["ablation.md", "ablation.tex", "ablation.csv"]
    config["distill"]["run"] = ["finetune", "layerwise", "fixed-text"]
    assert planned_tables(config)[-3:] == ["single_module.md", "single_module.tex", "single_module.csv"]
    config["distill"]["run"] = ["finetune", "fixed-text", "fixed-vision"]
    assert planned_tables(config)[-3:] == ["module_pairs.md", "module_pairs.tex", "module_pairs.csv"]


# ---------------------------------------------------------------- the single-module table

def test_single_module_gains_are_paired_by_seed_and_ranked(tmp_path):
    vqa = {"teacher": [80.0], "finetune": [60.0, 61.0, 62.0], "fixed-vision": [61.0, 61.5, None],
           "fixed-text": [60.5, 61.5, 62.5], "fixed-multimodal": [62.0, 63.5, 63.0], "layerwise": [63.0, 64.0, 66.0],
           "optima": [64.0, 64.0, 64.0]}
    runs = _write_runs(tmp_path / "runs.csv", _vqa(vqa))
    assert _tables(runs, tmp_path / "t") == 0
    csv = pd.read_csv(tmp_path / "t" / "single_module.csv", dtype={"gain_seeds": str}).set_index("method")
    assert list(csv.index) == ["finetune", "fixed-vision", "fixed-text", "fixed-multimodal", "layerwise"]
    vision = np.array([61.0, 61.5]) - np.array([60.0, 61.0])  # seed 2 not run: paired on seeds 0, 1
    assert csv.loc["fixed-vision", "gain_mean"] == pytest.approx(vision.mean())
    assert csv.loc["fixed-vision", "gain_std"] == pytest.approx(vision.std(ddof=1))
    assert csv.loc["fixed-vision", "gain_seeds"] == "0 1" and csv.loc["fixed-vision", "mean"] == pytest.approx(61.25)
    assert csv.loc["fixed-multimodal", "gain_mean"] == pytest.approx(5.5 / 3)
    assert csv.loc["layerwise", "gain_mean"] == pytest.approx(10 / 3) and math.isnan(csv.loc["layerwise", "rank"])
    assert [csv.loc[f"fixed-{m}", "rank"] for m in ("vision", "text", "multimodal")] == [2, 3, 1]
    assert list(csv["best"]) == [False, False, False, True, False]
    rows = {r[0]: r for r in _md_rows(tmp_path / "t" / "single_module.md")}
    assert rows["Student (no distillation)"][1:3] == ["61.0 ± 1.0", "–"]
    assert rows["Vision only"][2] == "+0.8 ± 0.4" and rows["Multimodal only"][2] == "**+1.8 ± 0.8**"
    assert rows["Modules ranked by Δ"][1:] == ["", "multimodal > vision > text", ""]
    assert r"multimodal \textgreater{} vision" in (tmp_path / "t" / "single_module.tex").read_text()


def test_single_module_ties_and_missing_baseline(tmp_path):
    runs = _write_runs(tmp_path / "runs.csv", _vqa({"finetune": [60.0, 61.0], "fixed-vision": [61.02, 62.0],
                                                    "fixed-text": [61.0, 62.04], "fixed-multimodal": [60.0, 60.0]}))
    assert _tables(runs, tmp_path / "t") == 0
    rows = {r[0]: r for r in _md_rows(tmp_path / "t" / "single_module.md")}
    assert rows["Vision only"][2] == "**+1.0 ± 0.0**" and rows["Text only"][2] == "**+1.0 ± 0.0**"
    assert rows["Modules ranked by Δ"][2] == "vision = text > multimodal"
    runs = _write_runs(tmp_path / "runs.csv", _vqa({"fixed-text": [61.0, 62.0], "optima": [62.0, 63.0]}))
    assert _tables(runs, tmp_path / "u") == 0
    md = (tmp_path / "u" / "single_module.md").read_text()
    assert "No 'finetune' runs in runs.csv: no gains." in md
    assert {r[0]: r for r in _md_rows(tmp_path / "u" / "single_module.md")}["Text only"][1:3] == ["61.5 ± 0.7", "–"]


def test_module_pairs_are_paired_t_tests_between_single_modules(tmp_path):
    """Every pair of single modules in module order, first − second, against scipy on the shared seeds."""
    vqa = {"finetune": [60.0, 61.0, 62.0], "fixed-vision": [61.0, 62.5, 64.0, 63.0],
           "fixed-text": [60.5, 61.5, 62.0], "fixed-multimodal": [62.0, 63.5, None], "layerwise": [63.0, 64.0, 66.0]}
    runs = _write_runs(tmp_path / "runs.csv", _vqa(vqa))
    assert _tables(runs, tmp_path / "t") == 0
    csv = pd.read_csv(tmp_path / "t" / "module_pairs.csv", dtype={"seeds": str})
    assert list(csv["modules"]) == ["vision − text", "vision − multimodal", "text − multimodal"]
    pair = csv.set_index("modules").loc["vision − text"]
    expected = stats.ttest_rel([61.0, 62.5, 64.0], [60.5, 61.5, 62.0])  # seed 3: vision only, unpaired
    assert pair["n"] == 3 and pair["seeds"] == "0 1 2"
    assert pair["mean_diff"] == pytest.approx(np.mean([0.5, 1.0, 2.0]))
    assert pair["p_ttest"] == pytest.approx(expected.pvalue)
    assert pair["ci_low"] == pytest.approx(expected.confidence_interval().low)
    assert csv.set_index("modules").loc["text − multimodal", "seeds"] == "0 1"  # multimodal lacks seed 2
    rows = _md_rows(tmp_path / "t" / "module_pairs.md")
    assert rows[0][:4] == ["VQA score", "vision − text", "3", "+1.17"]
    assert "positive means distilling only the first module beats" in (tmp_path / "t" / "module_pairs.md").read_text()
    runs = _write_runs(tmp_path / "runs.csv", _vqa({k: vqa[k] for k in ("finetune", "fixed-text", "layerwise")}))
    (tmp_path / "t" / "module_pairs.md").write_text("stale")
    assert _tables(runs, tmp_path / "t") == 0
    assert not (tmp_path / "t" / "module_pairs.md").exists()  # one module: no pairs, and no stale table


def test_several_runs_files_are_one_experiment(paper, tmp_path, capsys):
    """An experiment run in pieces (one runs.csv per task): the tables of the pieces together are the tables of
    the whole, byte for byte; a run found in two pieces is an error naming both files."""
    whole = pd.read_csv(paper["runs"])
    pieces = []
    for task, part in whole.groupby("task"):
        pieces.append(tmp_path / f"{task}.csv")
        part.to_csv(pieces[-1], index=False)
    assert main(["tables", "--runs", *map(str, pieces), "--out-dir", str(tmp_path / "t")]) == 0
    for table in sorted(paper["tables"].iterdir()):
        assert (tmp_path / "t" / table.name).read_bytes() == table.read_bytes(), table.name
    assert main(["tables", "--runs", *map(str, pieces), str(pieces[0]), "--out-dir", str(tmp_path / "u")]) == 2
    err = capsys.readouterr().err
    assert f"{pieces[0]}: run task=" in err and f"is also in {pieces[0]}" in err
    assert not (tmp_path / "u").exists()


def test_only_writes_the_named_tables_and_another_reference(paper, tmp_path, capsys):
    out = tmp_path / "vs-layerwise"
    assert main(["tables", "--runs", str(paper["runs"]), "--reference", "layerwise", "--only", "comparison",
                 "--out-dir", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["comparison.csv", "comparison.md", "comparison.tex"]
    text = (out / "comparison.md").read_text()
    assert text.startswith("### Layerwise against each baseline (paired by seed)"), text[:300]
    assert main(["tables", "--runs", str(paper["runs"]), "--only", "mian", "--out-dir", str(tmp_path / "x")]) == 2
    assert "--only: unknown table(s) mian" in capsys.readouterr().err
