"""`optima publish`: the published folder, its MANIFEST.json, the Snakemake-log parser, and that
`optima tables` / `optima figures` regenerate every published table and figure from the folder alone."""

import json
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from optima.cli import main
from optima.config import load_config
from optima.paper.figures import planned_figures
from optima.paper.logs import CompactLogs, TrainLogs
from optima.paper.publish import find_snakemake_log, parse_snakemake_log
from optima.paper.results import read_runs
from optima.paper.spec import PRIMARY_COLUMNS
from optima.paper.spread import has_teacher_seeds
from optima.paper.tables import planned_tables

sys.path.insert(0, str(Path(__file__).parent / "fixtures_paper"))
from fake_results import make_results  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# the README's claims run (claims/) and earlier ones kept for comparison (claims-COMMIT/)
PUBLISHED = REPO / "results" / "published"
# a published run, or each piece of a run published in pieces (claims-2/captions: a folder with its own MANIFEST)
PUBLISHED_RUNS = sorted({"claims"} | {p.name for p in PUBLISHED.glob("claims-*") if p.is_dir() and not
                                      any(p.glob("*/MANIFEST.json"))}
                        | {str(p.parent.relative_to(PUBLISHED)) for p in PUBLISHED.glob("claims-*/*/MANIFEST.json")}
                        | {f"pilots/{p.parent.name}" for p in (PUBLISHED / "pilots").glob("*/MANIFEST.json")})
RECIPES = REPO / "results" / "published" / "teacher-recipes"  # teacher recipes tried for the claims run
TASKS = ("vqa", "nlvr2")
METHODS = ("finetune", "layerwise", "optima", "fixed-vision", "fixed-text", "fixed-multimodal")
MANIFEST_KEYS = {"git_commit", "git_dirty", "config_file", "config_sha256", "config_hash", "date", "machine",
                 "snakemake_log", "snakemake_log_missing", "wall_time_s", "wall_time_start", "wall_time_end",
                 "jobs", "stages", "run_commit", "other_stages_s", "config_overlays"}

# a Snakemake 9 run log, cut down: two prepare jobs in parallel, a pretrain job, a distill job that failed
SNAKEMAKE_LOG = """\
Assuming unrestricted shared filesystem usage.
  Date: 2026-12-02 02:24:26
  Config file(s): ['{config}']
  Working directory: {workdir}
Select jobs to execute...
Execute 2 jobs...
[Wed Dec  2 02:24:26 2026]
localrule prepare:
    output: data/processed/snli_ve
    jobid: 28
    wildcards: task=snli_ve
[Wed Dec  2 02:24:26 2026]
localrule prepare:
    output: data/processed/captions
    jobid: 3
Select jobs to execute...
[Wed Dec  2 02:24:28 2026]
Finished jobid: 3 (Rule: prepare)
1 of 5 steps (20%) done
[Wed Dec  2 02:24:30 2026]
Finished jobid: 28 (Rule: prepare)
2 of 5 steps (40%) done
[Wed Dec  2 02:24:30 2026]
rule pretrain:
    jobid: 5
    threads: 2
[Wed Dec  2 02:26:47 2026]
Finished jobid: 5 (Rule: pretrain)
3 of 5 steps (60%) done
[Wed Dec  2 02:26:47 2026]
localrule distill:
    jobid: 7
[Wed Dec  2 02:27:00 2026]
Error in rule distill:
    jobid: 7
"""


def _write_config(path, run=METHODS):
    config = yaml.safe_load((REPO / "params.yaml").read_text())
    config["distill"]["run"] = list(run)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _write_log(path, config, workdir):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(SNAKEMAKE_LOG.format(config=config, workdir=workdir))
    return path


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    root = tmp_path_factory.mktemp("publish")
    results = root / "results"
    fake = make_results(results, tasks=TASKS, methods=METHODS, seeds=(0, 1))
    assert main(["collect", "--out-dir", str(results / "eval"), *map(str, fake["metrics"])]) == 0
    config = _write_config(root / "experiment.yaml")
    log = _write_log(root / "snakemake.log", "experiment.yaml", root)
    out = root / "published" / "claims"
    assert main(["publish", "--config", str(config), "--results", str(results), "--out", str(out),
                 "--snakemake-log", str(log)]) == 0
    return {"root": root, "results": results, "config": config, "out": out, "log": log}


def _files(folder):
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*") if p.is_file())


def test_publish_writes_every_file_and_the_manifest(published):
    out, config = published["out"], load_config(published["config"])
    tables = [f"tables/{n}" for n in planned_tables(config)]
    figures = [f"figures/{n}" for n in planned_figures(config, formats=["png"])]
    assert "tables/single_module.md" in tables and "figures/single_module.png" in figures
    assert _files(out) == sorted(["MANIFEST.json", "config.yaml", "curves.csv", "rounds.csv", "runs.csv",
                                  *tables, *figures])
    assert (out / "runs.csv").read_bytes() == (published["results"] / "eval" / "runs.csv").read_bytes()
    assert (out / "config.yaml").read_bytes() == published["config"].read_bytes()
    assert not list(out.parent.glob(".claims*"))  # no temporary folder left behind

    manifest = json.loads((out / "MANIFEST.json").read_text())
    assert set(manifest) == MANIFEST_KEYS
    assert manifest["config_file"] == str(published["config"]) and len(manifest["config_sha256"]) == 64
    assert set(manifest["machine"]) == {"cpu", "cores", "torch", "python"} and manifest["machine"]["cores"] >= 1
    assert manifest["snakemake_log"] == str(published["log"]) and manifest["snakemake_log_missing"] is None
    assert manifest["wall_time_s"] == 141.0 and manifest["jobs"] == 3
    assert manifest["stages"]["pretrain"] == {"jobs": 1, "job_s": 137.0, "first_start": "2026-12-02T02:24:30",
                                              "last_end": "2026-12-02T02:26:47"}
    assert manifest["run_commit"] == manifest["git_commit"] and manifest["other_stages_s"] == {}
    assert manifest["config_overlays"] == []


    rounds = pd.read_csv(out / "rounds.csv")
    assert list(rounds.columns[:7]) == ["task", "method", "seed", "round", "step", "arm", "reward"]
    assert "probe_loss" in rounds.columns and "finetune" not in set(rounds["method"])  # no rounds without a policy
    curves = pd.read_csv(out / "curves.csv")
    assert list(curves.columns[:5]) == ["task", "method", "seed", "step", "loss"] and "task_loss" in curves.columns
    assert len(curves.groupby(["task", "method", "seed"])) == len(TASKS) * len(METHODS) * 2


def test_published_folder_alone_regenerates_tables_and_figures(published, tmp_path, capsys):
    copy = shutil.copytree(published["out"], tmp_path / "claims")  # away from the results and train logs
    args = ["--config", str(copy / "config.yaml"), "--runs", str(copy / "runs.csv")]
    assert main(["tables", *args, "--out-dir", str(tmp_path / "tables")]) == 0
    assert main(["figures", *args, "--rounds", str(copy / "rounds.csv"), "--curves", str(copy / "curves.csv"),
                 "--formats", "png", "--out-dir", str(tmp_path / "figures")]) == 0
    for kind in ("tables", "figures"):
        assert _files(tmp_path / kind) == _files(copy / kind)
        for name in _files(copy / kind):
            assert (tmp_path / kind / name).read_bytes() == (copy / kind / name).read_bytes(), name


def test_compact_files_give_the_figures_the_same_rows_as_the_train_logs(published):
    logs = TrainLogs(published["results"])
    compact = CompactLogs(published["out"] / "rounds.csv", published["out"] / "curves.csv")
    checked = 0
    for task in TASKS:
        for method in METHODS:
            from_logs, from_file = logs.rounds(task, method, [0, 1]), compact.rounds(task, method, [0, 1])
            columns = ["seed", "step", "arm", "reward", "probe_loss"]
            pd.testing.assert_frame_equal(from_logs[columns], from_file[columns])
            for column in ("task_loss", "loss", "layer_loss"):
                pd.testing.assert_frame_equal(logs.curves(task, method, column, [0, 1]),
                                              compact.curves(task, method, column, [0, 1]))
            checked += len(from_logs)
    assert checked > 0


def test_snakemake_log_parser(tmp_path):
    parsed = parse_snakemake_log(_write_log(tmp_path / "run.log", "config/claims.yaml", "/work"))
    assert parsed["config_files"] == ["config/claims.yaml"] and parsed["workdir"] == "/work"
    assert parsed["rules"]["prepare"] == {"jobs": 2, "job_s": 6.0, "first_start": "2026-12-02T02:24:26",
                                          "last_end": "2026-12-02T02:24:30"}
    assert parsed["rules"]["pretrain"]["job_s"] == 137.0 and "distill" not in parsed["rules"]
    assert parsed["jobs"] == 3 and parsed["unfinished_jobs"] == 1
    assert parsed["wall_s"] == 141.0 and parsed["start"] == "2026-12-02T02:24:26"
    # Snakemake < 8 wrote "Finished job N."
    old = (tmp_path / "run.log").read_text().replace("Finished jobid: 5 (Rule: pretrain)", "Finished job 5.")
    (tmp_path / "old.log").write_text(old)
    assert parse_snakemake_log(tmp_path / "old.log")["rules"]["pretrain"]["jobs"] == 1


def test_default_log_is_the_newest_run_of_the_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = _write_config(tmp_path / "claims.yaml")
    logs = tmp_path / ".snakemake" / "log"
    assert find_snakemake_log(config) == (None, None)
    _write_log(logs / "2026-12-01T100000.000000.snakemake.log", "claims.yaml", tmp_path)
    wanted = _write_log(logs / "2026-12-02T100000.000000.snakemake.log", "claims.yaml", tmp_path)
    _write_log(logs / "2026-12-03T100000.000000.snakemake.log", "config/smoke.yaml", tmp_path)  # another config
    (logs / "2026-12-04T100000.000000.snakemake.log").write_text(  # a no-op rerun
        f"  Config file(s): ['claims.yaml']\n  Working directory: {tmp_path}\nNothing to be done.\n")
    path, parsed = find_snakemake_log(config)
    assert path == Path(".snakemake/log") / wanted.name and parsed["jobs"] == 3


def test_missing_snakemake_log_is_null_in_the_manifest(published, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no .snakemake/log here
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "stale.md").write_text("from an earlier publication")  # OUT is replaced as a whole
    assert main(["publish", "--config", str(published["config"]), "--results", str(published["results"]),
                 "--out", str(tmp_path / "out")]) == 0
    manifest = json.loads((tmp_path / "out" / "MANIFEST.json").read_text())
    assert manifest["snakemake_log"] is None and manifest["wall_time_s"] is None and manifest["stages"] is None
    assert "no log of a run of" in manifest["snakemake_log_missing"]
    assert not (tmp_path / "out" / "stale.md").exists()


def _valid_log(root):
    return _write_log(root / "snakemake.log", "experiment.yaml", root)


def _runs_csv_missing(results, root):
    (results / "eval" / "runs.csv").unlink()
    return _valid_log(root)


def _train_log_broken(results, root):
    (results / "students/vqa/optima/seed0/train_log.csv").write_text("step,arm\nx,text\n")
    return _valid_log(root)


def _snakemake_log_missing(results, root):
    return root / "nope.log"


@pytest.mark.parametrize("breakage, message", [  # each breaks one input and returns the --snakemake-log to pass
    (_runs_csv_missing, "runs.csv: runs file not found"),
    (_train_log_broken, "train_log.csv: line 2: step must be a number"),
    (_snakemake_log_missing, "nope.log: Snakemake log not found"),
])
def test_a_failure_names_the_file_and_keeps_the_old_folder(tmp_path, capsys, breakage, message):
    results = tmp_path / "results"
    fake = make_results(results, tasks=("vqa",), methods=("finetune", "optima"), seeds=(0,))
    assert main(["collect", "--out-dir", str(results / "eval"), *map(str, fake["metrics"])]) == 0
    config = _write_config(tmp_path / "experiment.yaml", run=("finetune", "optima"))
    out = tmp_path / "published" / "claims"
    out.mkdir(parents=True)
    (out / "runs.csv").write_text("the previous publication")
    log = breakage(results, tmp_path)
    assert main(["publish", "--config", str(config), "--results", str(results), "--out", str(out),
                 "--snakemake-log", str(log)]) == 2
    assert message in capsys.readouterr().err
    assert _files(tmp_path / "published") == ["claims/runs.csv"]  # untouched, no temporary folder left
    assert (out / "runs.csv").read_text() == "the previous publication"


def test_each_optima_variant_gets_its_comparison_against_every_method(tmp_path):
    """A run with a variant of OPTIMA (another reward) publishes the variant against every method as OPTIMA's own
    comparison.* is, in the variant's folder beside its reward agreement: its verdicts against layerwise, uniform and
    ts are then tables, not arithmetic in a write-up."""
    results = tmp_path / "results"
    methods = ("finetune", "layerwise", "optima", "optima-balanced")
    fake = make_results(results, tasks=("vqa",), methods=methods, seeds=(0, 1))
    assert main(["collect", "--out-dir", str(results / "eval"), *map(str, fake["metrics"])]) == 0
    config = yaml.safe_load((REPO / "params.yaml").read_text())
    config["distill"]["methods"]["optima-balanced"] = {"policy": "optima", "reward": "balanced"}
    config["distill"]["run"] = list(methods)
    (tmp_path / "experiment.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    out = tmp_path / "published"
    assert main(["publish", "--config", str(tmp_path / "experiment.yaml"), "--results", str(results), "--out",
                 str(out), "--snakemake-log", str(_write_log(tmp_path / "s.log", "experiment.yaml", tmp_path))]) == 0
    variant = out / "tables" / "optima-balanced"
    assert {"comparison.md", "comparison.csv", "comparison.tex"} <= {p.name for p in variant.iterdir()}
    compared = pd.read_csv(variant / "comparison.csv")
    assert set(compared["reference"]) == {"optima-balanced"}, compared.columns.tolist()
    assert {"finetune", "layerwise", "optima"} <= set(compared["baseline"])


def test_an_overlay_is_merged_into_the_published_config(published, tmp_path, capsys):
    """snakemake --configfile CONFIG OVERLAY: the published config.yaml is the two merged (the overlay's paths.results
    also finds the results), the MANIFEST names the overlay; an overlay with an unknown key is an error naming it."""
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(yaml.safe_dump({"paths": {"results": str(published["results"])},
                                       "distill": {"methods": {"optima-train": {"policy": "optima", "reward": "train"}}}}))
    out = tmp_path / "published" / "claims-overlay"
    assert main(["publish", "--config", str(published["config"]), "--overlay", str(overlay), "--out", str(out),
                 "--snakemake-log", str(published["log"])]) == 0
    merged = load_config(out / "config.yaml")
    base = load_config(published["config"])
    assert merged["paths"]["results"] == str(published["results"]) and merged["paths"]["data"] == base["paths"]["data"]
    assert merged["distill"]["methods"]["optima-train"] == {"policy": "optima", "reward": "train"}
    assert set(merged["distill"]["methods"]) == set(base["distill"]["methods"]) | {"optima-train"}
    assert merged["distill"]["run"] == base["distill"]["run"]
    assert (out / "runs.csv").read_bytes() == (published["results"] / "eval" / "runs.csv").read_bytes()
    overlays = json.loads((out / "MANIFEST.json").read_text())["config_overlays"]
    assert [o["file"] for o in overlays] == [str(overlay)] and len(overlays[0]["sha256"]) == 64

    overlay.write_text(yaml.safe_dump({"distill": {"windw": 4}}))
    assert main(["publish", "--config", str(published["config"]), "--overlay", str(overlay),
                 "--results", str(published["results"]), "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert "overlay.yaml" in err and "distill.windw: unknown key" in err
    assert not (tmp_path / "bad").exists()


def test_figures_take_the_train_logs_or_the_compact_files_not_both(published, tmp_path, capsys):
    out = published["out"]
    assert main(["figures", "--runs", str(out / "runs.csv"), "--logs-root", str(published["results"]),
                 "--rounds", str(out / "rounds.csv"), "--out-dir", str(tmp_path)]) == 2
    assert "--logs-root: give either" in capsys.readouterr().err
    assert main(["figures", "--runs", str(out / "runs.csv"), "--rounds", str(tmp_path / "none.csv"),
                 "--out-dir", str(tmp_path)]) == 2
    assert "none.csv: rounds file not found" in capsys.readouterr().err


@pytest.mark.parametrize("run", PUBLISHED_RUNS)
def test_published_claims_regenerate(run, tmp_path):
    """The committed tables of each published claims run (results/published/claims: the README's; claims-COMMIT:
    earlier ones) are what `optima tables`, `agreement` and `spread` make of its runs.csv."""
    folder = REPO / "results" / "published" / run
    if not (folder / "runs.csv").is_file():
        pytest.skip(f"{folder.relative_to(REPO)}/runs.csv not published yet (optima publish ... --out {folder.relative_to(REPO)})")
    assert main(["tables", "--config", str(folder / "config.yaml"), "--runs", str(folder / "runs.csv"),
                 "--out-dir", str(tmp_path)]) == 0
    # the reward study and the teacher spread, from the published compact files alone
    assert main(["agreement", "--runs", str(folder / "runs.csv"), "--rounds", str(folder / "rounds.csv"),
                 "--out-dir", str(tmp_path)]) == 0
    teacher_runs = folder / "teacher_runs.csv"  # teachers retrained apart, else the run's own (per_seed)
    if teacher_runs.is_file() or has_teacher_seeds(read_runs(folder / "runs.csv")):
        teacher_runs = teacher_runs if teacher_runs.is_file() else folder / "runs.csv"
        assert main(["spread", "--runs", str(teacher_runs), "--students", str(folder / "runs.csv"),
                     "--out-dir", str(tmp_path)]) == 0
    for kernel_runs in folder.glob("teacher_runs_*.csv"):  # seed 0's teachers retrained with other CPU kernels
        assert main(["spread", "--runs", str(kernel_runs), "--against", str(folder / "runs.csv"),
                     "--students", str(folder / "runs.csv"), "--out-dir", str(tmp_path),
                     "--name", kernel_runs.stem.replace("teacher_runs_", "teacher_shift_")]) == 0
    if (folder / "tables" / "reward_decomposition.md").is_file():  # which term drives each arm's reward
        assert main(["decompose", "--rounds", str(folder / "rounds.csv"), "--out-dir", str(tmp_path),
                     "--figure-dir", str(tmp_path / "figures")]) == 0
        shutil.rmtree(tmp_path / "figures")
    if (folder / "tables" / "vs-layerwise").is_dir():  # the controls against layerwise
        assert main(["tables", "--config", str(folder / "config.yaml"), "--runs", str(folder / "runs.csv"),
                     "--reference", "layerwise", "--only", "comparison",
                     "--out-dir", str(tmp_path / "vs-layerwise")]) == 0
    for variant in sorted(p for p in (folder / "tables").iterdir() if p.is_dir() and p.name != "vs-layerwise"):
        assert main(["agreement", "--runs", str(folder / "runs.csv"), "--rounds", str(folder / "rounds.csv"),
                     "--method", variant.name, "--out-dir", str(tmp_path / variant.name)]) == 0
        if (variant / "comparison.md").is_file():  # the variant against every method (runs published since it exists)
            assert main(["tables", "--config", str(folder / "config.yaml"), "--runs", str(folder / "runs.csv"),
                         "--reference", variant.name, "--only", "comparison",
                         "--out-dir", str(tmp_path / variant.name)]) == 0
    assert _files(tmp_path) == _files(folder / "tables")
    for name in _files(tmp_path):
        assert (tmp_path / name).read_bytes() == (folder / "tables" / name).read_bytes(), name


@pytest.mark.parametrize("recipe", sorted(p.name for p in RECIPES.iterdir() if p.is_dir()))
def test_published_teacher_recipes_regenerate(recipe, tmp_path):
    """Each published teacher-recipe table is what `optima spread --draw` makes of its draws' runs.csv."""
    folder = RECIPES / recipe
    draws = yaml.safe_load((folder / "recipe.yaml").read_text())["draws"]
    args = [arg for label in draws for arg in ("--draw", f"{label}={folder / label / 'runs.csv'}")]
    if (folder / "students.csv").is_file():
        args += ["--students", str(folder / "students.csv")]
    assert main(["spread", *args, "--out-dir", str(tmp_path)]) == 0
    for name in ("teacher_draws.md", "teacher_draws.csv"):
        assert (tmp_path / name).read_bytes() == (folder / name).read_bytes(), name
    assert set(pd.read_csv(folder / "teacher_draws.csv")["split"]) == {"val"}  # recipes are chosen on validation


def test_publish_tabulates_a_per_seed_runs_own_teachers(published, tmp_path):
    """distill.teacher_seed: per_seed: the run's runs.csv holds a teacher per seed, and its spread is
    published from that runs.csv alone (no teacher_runs.csv)."""
    results = tmp_path / "results"
    shutil.copytree(published["results"], results)
    runs = pd.read_csv(results / "eval" / "runs.csv")
    assert not has_teacher_seeds(runs)  # one teacher per task
    teachers = runs[runs.method == "teacher"]
    runs = pd.concat([runs, teachers.assign(seed=1, value=teachers["value"] + 0.02)], ignore_index=True)
    runs.to_csv(results / "eval" / "runs.csv", index=False)
    assert has_teacher_seeds(runs)
    out = tmp_path / "claims"
    assert main(["publish", "--config", str(published["config"]), "--results", str(results), "--out", str(out),
                 "--snakemake-log", str(published["log"])]) == 0
    assert "teacher_runs.csv" not in _files(out)
    spread = pd.read_csv(out / "tables" / "teacher_spread.csv")
    assert set(spread["seeds"]) == {"0 1"} and len(spread) == len(TASKS) * spread["split"].nunique()
    for row in spread.itertuples():
        assert row.std == pytest.approx(0.02 * PRIMARY_COLUMNS[row.task].scale / 2 ** 0.5, abs=1e-4), row.task


def test_publish_tabulates_retrained_teachers(published, tmp_path):
    """Teachers of other seeds (teacher-seeds/) and seed 0's retrained with other kernels (teacher-kernels/ISA/)
    are published with their tables: the spread over seeds and the shift against the run's own teachers."""
    results = tmp_path / "results"
    shutil.copytree(published["results"], results)
    runs = pd.read_csv(results / "eval" / "runs.csv")
    teachers = runs[runs.method == "teacher"]
    seeds = pd.concat([teachers, teachers.assign(seed=1, value=teachers["value"] + 0.02)])
    (results / "teacher-seeds").mkdir()
    seeds.to_csv(results / "teacher-seeds" / "runs.csv", index=False)
    (results / "teacher-kernels" / "avx2").mkdir(parents=True)
    teachers.assign(value=teachers["value"] - 0.01).to_csv(results / "teacher-kernels" / "avx2" / "runs.csv", index=False)
    out = tmp_path / "claims"
    assert main(["publish", "--config", str(published["config"]), "--results", str(results), "--out", str(out),
                 "--snakemake-log", str(published["log"])]) == 0
    assert {"teacher_runs.csv", "teacher_runs_avx2.csv", "tables/teacher_spread.md",
            "tables/teacher_shift_avx2.md", "tables/teacher_shift_avx2.csv"} <= set(_files(out))
    shift = pd.read_csv(out / "tables" / "teacher_shift_avx2.csv")
    splits = shift["split"].nunique()
    assert len(shift) == len(TASKS) * splits and (shift["seed"] == 0).all()
    for row in shift.itertuples():  # the tables' scale: VQA in percent already, accuracies x100
        assert row.shift == pytest.approx(-0.01 * PRIMARY_COLUMNS[row.task].scale, abs=1e-4), row.task  # csv: 4 decimals
    spread = pd.read_csv(out / "tables" / "teacher_spread.csv")
    assert len(spread) == len(TASKS) * splits
    for row in spread.itertuples():
        assert row.std == pytest.approx(0.02 * PRIMARY_COLUMNS[row.task].scale / 2 ** 0.5, abs=1e-4), row.task


def test_stage_times_are_parsed_and_checked():
    from optima.errors import ConfigError
    from optima.paper.publish import parse_stage_times

    assert parse_stage_times(["teacher_spread=912", "x = 1.5"]) == {"teacher_spread": 912.0, "x": 1.5}
    for bad in ("teacher_spread", "=3", "a=b"):
        with pytest.raises(ConfigError, match="NAME=SECONDS"):
            parse_stage_times([bad])


def test_optima_variants_get_their_own_selection_tables():
    """publish writes tables/VARIANT/ for each method with OPTIMA's policy besides `optima` (regenerated by
    test_published_claims_regenerate): the reward study's variants, the ablation's windows and arms."""
    from optima.config import merge_overlay, read_overlay, validate
    from optima.paper.publish import optima_variants

    claims = load_config(REPO / "config" / "claims.yaml")
    assert optima_variants(claims) == []
    rewards = validate(merge_overlay(claims, read_overlay(REPO / "config" / "overlays" / "claims-rewards.yaml")))
    assert optima_variants(rewards) == ["optima-train", "optima-task"]
    full = load_config(REPO / "config" / "synthetic-full.yaml")
    assert optima_variants(full) == ["optima-w4", "optima-w16", "optima-gamma90", "optima-raw-credit", "optima-subsets"]


IN_PIECES = sorted({p.parent.parent for p in PUBLISHED.glob("claims-*/*/MANIFEST.json")})


@pytest.mark.parametrize("folder", IN_PIECES, ids=lambda p: p.name)
def test_a_run_published_in_pieces_regenerates_its_combined_tables(folder, tmp_path):
    """A run published in pieces (claims-2: one folder per task, each with its own MANIFEST): its combined tables
    are what `optima tables` makes of the pieces' runs.csv together, with the run's config; each piece regenerates
    its own tables in test_published_claims_regenerate."""
    pieces = sorted(p.parent / "runs.csv" for p in folder.glob("*/MANIFEST.json"))
    if not (folder / "tables").is_dir():  # not every piece is in yet: the write-up must say so
        assert "**Status:" in (folder / "README.md").read_text() and not (folder / "config.yaml").exists()
        return
    config = folder / "config.yaml"
    assert main(["tables", "--config", str(config), "--runs", *map(str, pieces), "--out-dir", str(tmp_path)]) == 0
    if (folder / "tables" / "vs-layerwise").is_dir():
        assert main(["tables", "--config", str(config), "--runs", *map(str, pieces), "--reference", "layerwise",
                     "--only", "comparison", "--out-dir", str(tmp_path / "vs-layerwise")]) == 0
    for variant in sorted(p for p in (folder / "tables").iterdir() if p.is_dir() and p.name != "vs-layerwise"):
        assert main(["tables", "--config", str(config), "--runs", *map(str, pieces), "--reference", variant.name,
                     "--only", "comparison", "--out-dir", str(tmp_path / variant.name)]) == 0
    assert _files(tmp_path) == _files(folder / "tables")
    for name in _files(tmp_path):
        assert (tmp_path / name).read_bytes() == (folder / "tables" / name).read_bytes(), name
