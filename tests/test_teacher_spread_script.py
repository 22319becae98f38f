"""scripts/teacher_spread.sh: the teachers of a config retrained with other seeds (the spread) or, with
--kernels ISA, with the same seed on other CPU kernels (the shift), tabulated against the config's run."""

import json
import subprocess

import pandas as pd
import pytest
import yaml

from optima.machine import cpu_identity
from optima.paper.spec import PRIMARY_COLUMNS
from tests.test_workflow import ROOT, _env, copy_workflow, snakemake

SCRIPT = "scripts/teacher_spread.sh"


def _native_capability() -> str:
    import torch

    return torch.backends.cpu.get_cpu_capability().lower()


def _script(work, *args, check=True, env=None):
    proc = subprocess.run(["bash", SCRIPT, *args], cwd=work, env={**_env(), **(env or {})}, capture_output=True,
                          text=True, timeout=1800)
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.mark.parametrize("args, env, message", [
    ([], {}, "usage:"),
    (["--kernels", "no-such-isa"], {}, "ATEN_CPU_CAPABILITY=no-such-isa: torch runs"),
    (["--kernels", _native_capability()], {}, "this machine already runs"),
    (["--recipe", "longer"], {}, "usage:"),
    (["--recipe", "longer", "vqa"], {"RECIPE_KERNELS": _native_capability()}, "this machine already runs"),
])
def test_bad_arguments_fail_before_training(args, env, message):
    proc = _script(ROOT, "config/smoke.yaml", *args, check=False, env=env)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr


@pytest.mark.very_slow  # a one-task smoke run, its teachers twice more (another seed, other kernels), then 4 draws
def test_spread_over_seeds_shift_on_other_kernels_and_recipe_draws(tmp_path):
    work = copy_workflow(tmp_path / "wf")
    (work / "scripts").mkdir(exist_ok=True)
    (work / SCRIPT).write_text((ROOT / SCRIPT).read_text())
    config = yaml.safe_load((work / "config/smoke.yaml").read_text())
    config["tasks"] = ["vqa"]
    config["distill"]["run"] = ["finetune", "layerwise"]
    config["distill"]["seeds"] = [0, 1]
    (work / "config/one-task.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    results = work / config["paths"]["results"]
    snakemake(work, "--cores", "2", "--configfile", "config/one-task.yaml", timeout=1800)

    _script(work, "config/one-task.yaml", "1")
    spread = pd.read_csv(results / "teacher-seeds" / "teacher_spread.csv")
    test = spread[spread.split == config["eval"]["split"]].iloc[0]
    assert (test["task"], test["seeds"]) == ("vqa", "0 1") and test["student_seed_std"] >= 0
    scale = PRIMARY_COLUMNS["vqa"].scale
    teacher = pd.read_csv(results / "eval" / "runs.csv").query("method == 'teacher' and metric == 'overall'")
    seed0 = teacher[teacher.split == config["eval"]["split"]]["value"].iloc[0] * scale
    assert float(test["values"].split()[0]) == pytest.approx(seed0, abs=0.01)

    isa = "default" if _native_capability() != "default" else pytest.skip("no kernels below this CPU's")
    _script(work, "config/one-task.yaml", "--kernels", isa)
    root = results / "teacher-kernels" / isa
    shift = pd.read_csv(root / "teacher_shift.csv").set_index("split")
    retrained = pd.read_csv(root / "runs.csv").query("method == 'teacher' and metric == 'overall'").set_index("split")
    for split, row in shift.iterrows():
        assert row["seed"] == 0 and row["value"] == pytest.approx(retrained.loc[split, "value"] * scale, abs=1e-4)
        assert row["shift"] == pytest.approx(row["value"] - row["reference"], abs=2e-4)
    assert shift.loc[config["eval"]["split"], "reference"] == pytest.approx(seed0, abs=1e-4)
    # the retrain really ran on the other kernels: run_info.json records the capability each run trained with
    for run, expected in ((results / "teachers", _native_capability()), (root / "teachers", isa)):
        for stage in ("pretrain", "vqa"):
            environment = json.loads((run / stage / "run_info.json").read_text())["environment"]
            assert environment["cpu_capability"].lower() == expected, (run, stage)
            assert environment["cpu"] == cpu_identity()  # the CPU model, which may decide the matrix kernels

    # a candidate recipe's draws: an override that changes no weight (log every step) must reproduce the
    # teachers above on validation, seed for seed and kernels for kernels, and must reach the training
    _script(work, "config/one-task.yaml", "--recipe", "logged", "vqa", "finetune={log_every: 1}",
            env={"RECIPE_KERNELS": isa})
    recipe = results / "teacher-recipes" / "logged"
    draws = pd.read_csv(recipe / "teacher_draws.csv").iloc[0]
    assert (draws["task"], draws["split"], draws["draws"]) == ("vqa", "val", f"seed0 seed1 seed2 seed0-{isa}")
    assert draws["student_seed_std"] >= 0  # the config's run is there: its students' validation spread beside it
    values = [float(v) for v in draws["values"].split()]

    def val_teacher(runs_csv, seed=0):
        runs = pd.read_csv(runs_csv).query("method == 'teacher' and metric == 'overall' and split == 'val'")
        return runs[runs.seed == seed]["value"].iloc[0] * scale

    expected = [val_teacher(results / "eval" / "runs.csv"), val_teacher(results / "teacher-seeds" / "runs.csv", 1),
                None, val_teacher(root / "runs.csv")]
    for value, reference in zip(values, expected):
        assert reference is None or value == pytest.approx(reference, abs=0.01)
    steps = config["finetune"]["overrides"]["vqa"]["steps"]
    log = pd.read_csv(recipe / "seed1" / "teachers" / "vqa" / "train_log.csv")
    assert log["step"].tolist() == list(range(1, steps + 1))
    environment = json.loads((recipe / f"seed0-{isa}" / "teachers" / "vqa" / "run_info.json").read_text())["environment"]
    assert environment["cpu_capability"].lower() == isa
