"""The Snakemake workflow and its DVC twin: lint, dry runs of every scale, load-time config errors,
selective reruns, failed jobs, dvc.yaml being current, and (slow) the whole smoke pipeline for real.

Snakemake runs in a temporary copy of the workflow files (Snakefile, workflow/, config/,
params.yaml, environment.yml) so tests never touch the checkout's .snakemake/ or results/.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
WORKFLOW_FILES = ("Snakefile", "workflow", "config", "params.yaml", "environment.yml")
TRAIN_RULES = ("pretrain", "finetune", "distill", "distill_task")


def _env() -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # `optima` and `snakemake` of this venv
    env["HF_HUB_OFFLINE"] = "1"
    return env


def copy_workflow(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        src = ROOT / name
        if src.is_dir():  # symlinks (the schema) are copied as files: the copy stands alone
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, dest / name)
    return dest


def snakemake(workdir: Path, *args: str, check: bool = True, timeout: int = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(BIN / "snakemake"), *args], cwd=workdir, env=_env(), capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def job_counts(output: str) -> dict[str, int]:
    """The 'Job stats' table of a dry run."""
    block = output.split("Job stats:", 1)[1]
    counts = {}
    for line in block.splitlines()[3:]:
        match = re.match(r"^(\S+)\s+(\d+)$", line.strip())
        if not match:
            break
        if match.group(1) != "total":
            counts[match.group(1)] = int(match.group(2))
    return counts


def expected_job_counts(config: dict) -> dict[str, int]:
    """What docs/runs.md asks for, from the config alone (the test copies have no .dvc/: no dvc_lock job)."""
    tasks = config["tasks"]
    students = len(tasks) * len(config["distill"]["run"]) * len(config["distill"]["seeds"])
    # distill.teacher_seed: per_seed: a teacher (and its targets, and its students' job) per task and seed
    teachers = len(tasks) * (len(config["distill"]["seeds"]) if config["distill"].get("teacher_seed") == "per_seed" else 1)
    counts = {
        "prepare": len(set(tasks) | {"captions"}),  # pre-training reads the captions data
        "pretrain": 1,
        "finetune": teachers,
        "collect": 1,
        "tables": 1,
        "figures": 1,
        "all": 1,
    }
    if config["distill"].get("group_by", "task") == "task":
        counts["distill_task"] = teachers  # a teacher's students in turn, in one job
    else:
        counts["distill"] = students
    if (config["distill"].get("teacher_cache") or {}).get("mode", "never") != "never":
        counts["teacher_targets"] = teachers  # the teacher's outputs, once per teacher
    if config["eval"].get("group_by", "task") == "run":
        counts.update(evaluate_teacher=teachers, evaluate_student=students)
    else:
        counts["evaluate_task"] = len(tasks)  # a task's teacher and every student of it in one job
    return counts


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return copy_workflow(tmp_path_factory.mktemp("workflow"))


# ------------------------------------------------------------------------------------------- lint, DAG


def test_lint_is_clean(workdir):
    proc = snakemake(workdir, "--lint", check=False)
    assert proc.returncode == 0 and "Congratulations" in proc.stdout + proc.stderr, proc.stdout + proc.stderr


@pytest.mark.parametrize("configfile", ["params.yaml", "config/smoke.yaml", "config/synthetic-full.yaml",
                                        "config/claims.yaml"])
def test_dry_run_lists_every_job_of_the_scale(workdir, configfile):
    proc = snakemake(workdir, "-n", "--configfile", configfile)
    assert job_counts(proc.stdout) == expected_job_counts(load(workdir / configfile))


def test_an_overlay_reaches_every_verb(workdir):
    """snakemake --configfile SCALE OVERLAY (config/overlays/claims-rewards.yaml): the jobs are the merged config's,
    and each verb gets the scale file plus the overlay's keys as --set overrides."""
    from optima.config import merge_overlay

    overlay = "config/overlays/claims-rewards.yaml"
    proc = snakemake(workdir, "-n", "-p", "--configfile", "config/claims.yaml", overlay)
    merged = merge_overlay(load(workdir / "config/claims.yaml"), load(workdir / overlay))
    assert job_counts(proc.stdout) == expected_job_counts(merged)
    distills = [line for line in proc.stdout.splitlines() if "optima distill vqa " in line]
    assert len(distills) == len(merged["distill"]["seeds"])
    for command in distills:
        assert "--method optima-train --method optima-task" in command and "--config config/claims.yaml" in command
        assert "--set 'distill.methods.optima-train={policy: \"optima\", reward: \"train\"}'" in command
        assert "--out-root results/claims-rewards/students/vqa" in command


def test_dry_run_commands_follow_the_verb_contract(workdir):
    """The shell commands are docs/runs.md's verb calls, with the config file, paths and --threads."""
    proc = snakemake(workdir, "-n", "-p", "--configfile", "config/smoke.yaml")
    out = proc.stdout
    expected = [
        "optima prepare vqa --config config/smoke.yaml --out data/smoke/vqa --threads 1",
        "optima pretrain --config config/smoke.yaml --data data/smoke/captions --out results/smoke/teachers/pretrain"
        " --threads 1",
        "optima finetune vqa --config config/smoke.yaml --data data/smoke/vqa --init results/smoke/teachers/pretrain"
        " --out results/smoke/teachers/vqa --threads 1",
        "optima teacher-targets vqa --config config/smoke.yaml --data data/smoke/vqa --teacher results/smoke/teachers/vqa"
        " --out results/smoke/teachers/vqa/targets --threads 1",
        "optima distill vqa --method optima --seed 1 --config config/smoke.yaml --data data/smoke/vqa"
        " --teacher results/smoke/teachers/vqa --targets results/smoke/teachers/vqa/targets"
        " --out results/smoke/students/vqa/optima/seed1 --threads 1",
        "optima evaluate --config config/smoke.yaml --data data/smoke/vqa --run results/smoke/teachers/vqa"
        " --run results/smoke/students/vqa/finetune/seed0",
        "--run results/smoke/students/vqa/optima/seed1 --split test --threads 1",
        "optima collect --config config/smoke.yaml --out-dir results/smoke/eval --threads 1",
        "optima tables --config config/smoke.yaml --runs results/smoke/eval/runs.csv --out-dir results/smoke/tables",
        "optima figures --config config/smoke.yaml --runs results/smoke/eval/runs.csv --logs-root results/smoke"
        " --out-dir results/smoke/figures",
    ]
    for command in expected:
        assert command in out, f"missing command: {command}"
    # training outputs are the run files, never the resume checkpoints
    assert "checkpoints" not in out
    for line in out.splitlines():
        if line.strip().startswith("output:") and "seed1/model.safetensors" in line:
            assert "metrics.json" in line and "train_log.csv" in line
    # distill.group_by: task: one job per task trains every method x seed into the same run directories
    grouped = snakemake(workdir, "-n", "-p", "--configfile", "config/smoke.yaml", "--config", "distill={group_by: task}")
    assert ("optima distill vqa --method finetune --method layerwise --method optima --seed 0 --seed 1"
            " --config config/smoke.yaml --set distill.group_by=task --data data/smoke/vqa"
            " --teacher results/smoke/teachers/vqa --targets results/smoke/teachers/vqa/targets"
            " --out-root results/smoke/students/vqa --threads 1") in grouped.stdout
    assert job_counts(grouped.stdout)["distill_task"] == len(load(workdir / "config/smoke.yaml")["tasks"])


@pytest.mark.parametrize("group_by", ["task", "run"])
def test_per_seed_teachers_pair_each_student_seed_with_its_own_teacher(workdir, group_by):
    """distill.teacher_seed: per_seed: seed S's teacher is fine-tuned with --seed S into its own directory, every
    student of seed S (and no other) distils from it and its targets, and evaluation scores every teacher."""
    overrides = f"distill={{teacher_seed: per_seed, group_by: {group_by}}}"
    proc = snakemake(workdir, "-n", "-p", "--configfile", "config/smoke.yaml", "--config", overrides,
                     "eval={group_by: run}")
    config = load(workdir / "config/smoke.yaml")
    seeds, methods = config["distill"]["seeds"], config["distill"]["run"]
    commands = [line.strip().removeprefix("Shell command:").strip() for line in proc.stdout.splitlines()]
    commands = [command for command in commands if command.startswith("optima ")]
    finetunes = [c for c in commands if c.startswith("optima finetune vqa ")]
    assert sorted(re.search(r"--seed (\d+) --out \S+/teachers/vqa/seed(\d+) ", c).groups() for c in finetunes) == \
        [(str(s), str(s)) for s in seeds]
    trained = []
    for command in (c for c in commands if c.startswith("optima distill vqa ")):
        teacher = re.search(r"--teacher (\S+)", command).group(1)
        student_seeds = [int(s) for s in re.findall(r"--seed (\d+)", command)]
        assert teacher.endswith(f"/teachers/vqa/seed{student_seeds[0]}") and len(set(student_seeds)) == 1, command
        assert f"--targets {teacher}/targets" in command
        trained += [(m, s) for m in re.findall(r"--method (\S+)", command) for s in student_seeds]
    assert sorted(trained) == sorted((m, s) for m in methods for s in seeds)
    evaluated = [re.search(r"--run (\S+)", c).group(1) for c in commands if c.startswith("optima evaluate --config")
                 and "/teachers/vqa/" in c]
    assert sorted(evaluated) == [f"results/smoke/teachers/vqa/seed{s}" for s in seeds]
    assert job_counts(proc.stdout) == expected_job_counts(
        {**config, "distill": {**config["distill"], "teacher_seed": "per_seed", "group_by": group_by},
         "eval": {**config["eval"], "group_by": "run"}})


@pytest.mark.very_slow  # a paper-scale plan over every official file
def test_paper_scale_dry_run_reads_the_official_files(tmp_path):
    """config/paper.yaml: one job list like every scale, plus one fetch job per manifest resource
    (tests/test_cluster_profiles.py checks the order); official files a lab supplies from elsewhere
    (paths no manifest resource makes) are the prepare jobs' inputs themselves."""
    from optima.data.fetch import load_manifest

    work = copy_workflow(tmp_path / "wf")
    config = load(work / "config/paper.yaml")
    proc = snakemake(work, "-n", "-p", "--configfile", "config/paper.yaml")
    fetch_jobs = {f"fetch_{name}": 1 for name in load_manifest()["resources"]}
    assert job_counts(proc.stdout) == {**expected_job_counts(config), **fetch_jobs}
    assert "gpu=1" in proc.stdout  # runtime.device: cuda -> one GPU per training/evaluation job
    for spec in config["data"]["official"].values():  # a lab's own copies, outside data/raw
        for group in ("questions", "annotations"):
            for split, path in (spec.get(group) or {}).items():  # null: a split made otherwise (VQA's val_from_train)
                spec[group][split] = path.replace("data/raw/", "data/own/") if path else path
        spec["images"] = spec["images"].replace("data/raw/", "data/own/")
    (work / "config/own.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    proc = snakemake(work, "-n", "--configfile", "config/own.yaml", check=False)
    assert proc.returncode != 0 and "Missing input files for rule prepare" in proc.stdout + proc.stderr
    for spec in config["data"]["official"].values():  # stand-ins for the lab's files
        paths = [spec["images"]] + [p for group in ("questions", "annotations") for p in (spec.get(group) or {}).values()]
        for path in filter(None, paths):
            (work / path).parent.mkdir(parents=True, exist_ok=True)
            (work / path).touch()
    proc = snakemake(work, "-n", "-p", "--configfile", "config/own.yaml")
    assert job_counts(proc.stdout) == expected_job_counts(config)


def test_config_overrides_reach_the_verbs(workdir):
    """--config values and further --configfile overlays become the verbs' --set arguments."""
    overlay = workdir / "overlay.yaml"
    overlay.write_text("eval: {batch_size: 4}\n")
    proc = snakemake(workdir, "-n", "-p", "--configfile", "config/smoke.yaml", str(overlay),
                     "--config", "distill={seeds: [0, 2], optima: {window: 4}}", "tasks=[vqa]")
    counts = job_counts(proc.stdout)
    assert counts["distill"] == 1 * 3 * 2 and counts["finetune"] == 1
    assert "--set eval.batch_size=4" in proc.stdout
    assert "--set 'distill.seeds=[0, 2]' --set distill.optima.window=4 --set 'tasks=[vqa]'" in proc.stdout
    assert "results/smoke/students/vqa/optima/seed2" in proc.stdout


def test_paths_with_a_space_are_quoted_in_every_command(workdir, tmp_path):
    """paths.data / paths.results holding a space: every planned shell command passes each path as one argument
    (`{output:q}`, `{log:q}`, ...), so no stray `logs/my` is written and the named log is the one filled."""
    import shlex

    config = load(ROOT / "config/smoke.yaml")
    config["paths"] = {"data": "data/my data", "results": "results/my results"}
    config["distill"]["group_by"] = "task"  # --out-root, and evaluate --run lists
    configfile = tmp_path / "spaced.yaml"
    configfile.write_text(yaml.safe_dump(config, sort_keys=False))
    proc = snakemake(workdir, "-n", "-p", "--configfile", str(configfile))
    commands = [line.strip().removeprefix("Shell command:").strip() for line in proc.stdout.splitlines()]
    commands = [command for command in commands if command.startswith(("optima ", "python -m optima"))]
    verbs = {shlex.split(command)[1] for command in commands}
    assert {"prepare", "pretrain", "finetune", "teacher-targets", "distill", "evaluate", "collect", "tables",
            "figures"} <= verbs, verbs
    for command in commands:
        words = shlex.split(command)
        assert words[-3] == ">" and words[-1] == "2>&1", command
        log = words[-2]
        assert log.startswith("logs/my results/") and log.endswith(".log"), (log, command)
        for flag in ("--data", "--out", "--init", "--teacher", "--targets", "--out-root", "--out-dir", "--runs",
                     "--run", "--logs-root"):
            for i, word in enumerate(words[:-1]):
                if word == flag:
                    value = words[i + 1]
                    assert value.startswith(("data/my data/", "results/my results")), (flag, value, command)
        if words[1] == "collect":  # the metrics files are positional: each one word
            files = [w for w in words if w.endswith(".json")]
            assert files and all(f.startswith("results/my results/") for f in files), command
        assert not {"data/my", "results/my", "logs/my"} & set(words), command  # nothing split at the space


def _key_paths(node: dict, prefix: str = "") -> set[str]:
    paths = set()
    for key, value in node.items():
        path = f"{prefix}{key}"
        paths.add(path)
        # method names and per-task overrides are the user's choice
        if isinstance(value, dict) and path not in ("distill.methods", "finetune.overrides"):
            paths |= _key_paths(value, f"{path}.")
    return paths


@pytest.mark.parametrize("configfile", ["config/smoke.yaml", "config/paper.yaml", "config/synthetic-full.yaml"])
def test_every_scale_file_is_complete(configfile):
    """Verbs get one file per scale, so each must set every key the default sets (and be valid)."""
    from optima.config import load_config

    config = load_config(ROOT / configfile)
    missing = _key_paths(load(ROOT / "params.yaml")) - _key_paths(config)
    assert not missing, f"{configfile} lacks {sorted(missing)}"


def test_paper_and_full_scales_are_what_they_claim():
    paper = load(ROOT / "config/paper.yaml")
    assert paper["data"]["source"] == "official" and paper["data"]["tokenizer"] == "open_clip"
    assert (paper["data"]["image_size"], paper["data"]["context_length"]) == (224, 76)
    assert paper["model"]["teacher"] == "coca_ViT-L-14" and "laion2b" in paper["model"]["pretrained"]
    assert len(paper["distill"]["seeds"]) == 3
    assert {"teacher"} | set(paper["distill"]["run"]) >= {"teacher", "finetune", "kd", "layerwise", "uniform", "optima"}
    full = load(ROOT / "config/synthetic-full.yaml")
    assert len(full["distill"]["seeds"]) == 5
    assert set(full["distill"]["run"]) >= {"finetune", "kd", "layerwise", "uniform", "optima", "fixed-vision",
                                            "fixed-text", "fixed-multimodal", "ts", "discounted_ts"}
    ablation = [m for m in full["distill"]["run"] if full["distill"]["methods"][m]["policy"] == "optima" and m != "optima"]
    options = [full["distill"]["methods"][m].get("options", {}) for m in ablation]
    assert any("window" in o and o["window"] for o in options) and any(o.get("gamma") for o in options)


@pytest.mark.very_slow  # a dry run per profile
def test_profiles_name_existing_rules(workdir):
    """The profiles' per-rule threads/resources must follow rule renames; the local one must load."""
    rules = set(snakemake(workdir, "--list-rules").stdout.split())  # eval.group_by: task ...
    rules |= set(snakemake(workdir, "--list-rules", "--config", "eval={group_by: run}",
                           "distill={group_by: run}").stdout.split())  # ... and run
    for profile in ("default", "slurm", "local-gpu"):
        settings = load(workdir / f"workflow/profiles/{profile}/config.yaml")
        named = set(settings.get("set-threads", {})) | set(settings.get("set-resources", {}))
        assert named <= rules, f"{profile}: unknown rules {sorted(named - rules)}"
        if profile != "default":  # every training job (either grouping) gets a GPU and matching threads
            for rule in TRAIN_RULES + ("teacher_targets",):
                assert settings["set-resources"][rule].get("gpu", 0) >= 1, f"{profile}: {rule} has no GPU"
                assert rule in settings["set-threads"], f"{profile}: {rule} has no threads"
    proc = snakemake(workdir, "-n", "--workflow-profile", "workflow/profiles/default")
    assert job_counts(proc.stdout) == expected_job_counts(load(workdir / "params.yaml"))


# ------------------------------------------------------------------------------------------- bad input


def _bad_config(tmp_path: Path, edit) -> Path:
    config = load(ROOT / "config/smoke.yaml")
    edit(config)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _set(path: str, value):
    def edit(config):
        *parents, last = path.split(".")
        node = config
        for part in parents:
            node = node[part]
        node[last] = value

    return edit


@pytest.mark.parametrize("edit, key", [
    (_set("tasks", []), "tasks"),
    (_set("tasks", ["vqa", "gqa"]), "tasks"),
    (_set("distill.run", []), "distill.run"),
    (_set("distill.run", ["optima", "optimus"]), "distill.run"),
    (_set("distill.seeds", []), "distill.seeds"),
    (_set("distill.seeds", [0, "one"]), "distill.seeds"),
    (_set("distill.methods.teacher", {"policy": "none"}) , None),  # defined but reserved: see below
    (_set("distill.optima.windw", 3), "windw"),
])
def test_bad_config_fails_at_load_naming_the_key(workdir, tmp_path, edit, key):
    if key is None:  # a method called "teacher" would be mistaken for the teachers' rows
        config_edit = edit

        def edit(config):
            config_edit(config)
            config["distill"]["run"] = ["optima", "teacher"]

        key = "distill.methods: method name 'teacher' is reserved"  # optima.config.check_method_name
    bad = _bad_config(tmp_path, edit)
    proc = snakemake(workdir, "-n", "--configfile", str(bad), check=False)
    message = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "invalid config" in message and key in message, message
    assert "Building DAG of jobs" not in message  # failed while loading, before any job was planned


# ------------------------------------------------------------------------------------------- reruns, failures


def _touch_all_outputs(work: Path, configfile: str) -> None:
    """Mark every output as made (without running the verbs), so dry runs show what a change reruns."""
    proc = snakemake(work, "--summary", "--configfile", configfile)
    for line in proc.stdout.splitlines()[1:]:
        path, _, rule = line.split("\t")[:3]
        target = work / path
        if rule in ("prepare", "teacher_targets"):  # directory outputs
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.touch()
    snakemake(work, "--touch", "--forceall", "--cores", "1", "--configfile", configfile)  # metadata for every job


@pytest.mark.very_slow  # Snakemake plans after each of several config edits
def test_a_config_change_reruns_only_the_jobs_that_read_it(tmp_path):
    work = copy_workflow(tmp_path / "wf")
    _touch_all_outputs(work, "config/smoke.yaml")
    proc = snakemake(work, "-n", "--configfile", "config/smoke.yaml")
    assert "Nothing to be done" in proc.stdout + proc.stderr

    # OPTIMA's window: only the optima students (and what summarises them) rerun
    proc = snakemake(work, "-n", "--configfile", "config/smoke.yaml", "--config", "distill={optima: {window: 4}}")
    config = load(work / "config/smoke.yaml")
    students = len(config["tasks"]) * len(config["distill"]["seeds"])
    assert job_counts(proc.stdout) == {"distill": students, "evaluate_task": len(config["tasks"]), "collect": 1,
                                       "tables": 1, "figures": 1, "all": 1}
    assert re.findall(r"wildcards: task=\w+, method=(\S+?),", proc.stdout) == ["optima"] * students  # the trainings

    # the evaluation split: every evaluation reruns, no training does
    proc = snakemake(work, "-n", "--configfile", "config/smoke.yaml", "--config", "eval={split: val}")
    counts = job_counts(proc.stdout)
    assert not set(counts) & set(TRAIN_RULES) and counts["evaluate_task"] == len(config["tasks"])
    # one evaluation job per run instead (eval.group_by: run, as at paper scale)
    proc = snakemake(work, "-n", "--configfile", "config/smoke.yaml", "--config", "eval={group_by: run}")
    counts = job_counts(proc.stdout)
    assert counts["evaluate_student"] == len(config["tasks"]) * 3 * 2 and counts["evaluate_teacher"] == len(config["tasks"])


FAILING_VERB = """#!/bin/sh
# stands in for `optima`: writes part of a run's outputs, then fails like a crashed training job
for last; do :; done
out=""; prev=""
for arg in "$@"; do [ "$prev" = "--out" ] && out="$arg"; prev="$arg"; done
mkdir -p "$out" && echo partial > "$out/model.safetensors" && echo partial > "$out/train_log.csv"
exit 3
"""


def test_a_failed_job_leaves_no_output_that_looks_complete(tmp_path):
    work = copy_workflow(tmp_path / "wf")
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "optima").write_text(FAILING_VERB)
    (fake_bin / "optima").chmod(0o755)
    (work / "data/smoke/captions").mkdir(parents=True)  # pretrain's input, "prepared"
    snakemake(work, "--touch", "--cores", "1", "--configfile", "config/smoke.yaml", "--", "data/smoke/captions")
    env = _env()
    env["PATH"] = f"{fake_bin}{os.pathsep}{env['PATH']}"
    proc = subprocess.run([str(BIN / "snakemake"), "--cores", "1", "--configfile", "config/smoke.yaml", "--",
                           "results/smoke/teachers/pretrain/model.safetensors"],
                          cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    run_dir = work / "results/smoke/teachers/pretrain"
    assert not (run_dir / "model.safetensors").exists() and not (run_dir / "train_log.csv").exists()
    assert (work / "logs/smoke/teachers/pretrain.log").exists()  # the log stays for the user to read


# ------------------------------------------------------------------------------------------- DVC


def test_dvc_yaml_is_current():
    proc = subprocess.run([sys.executable, "workflow/scripts/dvc_yaml.py", "--check"], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr


def test_dvc_yaml_tracks_checkpoints_metrics_params_and_plots():
    dvc = load(ROOT / "dvc.yaml")
    config = load(ROOT / "params.yaml")
    stages = dvc["stages"]
    assert len(stages) == sum(expected_job_counts(config).values()) - 1  # every job but `all`
    results = config["paths"]["results"]
    students = stages["distill-vqa"] if "distill-vqa" in stages else stages["distill_task-vqa"]  # group_by: task
    for method in config["distill"]["run"]:
        for seed in config["distill"]["seeds"]:
            for name in ("model.safetensors", "metrics.json", "train_log.csv"):
                assert f"{results}/students/vqa/{method}/seed{seed}/{name}" in students["outs"]
    for name in ("model.safetensors", "metrics.json", "train_log.csv"):
        assert f"{results}/teachers/vqa/{name}" in stages["finetune-vqa"]["outs"]
    assert not any("checkpoints" in out for stage in stages.values() for out in stage.get("outs", []))
    # params: every method's own keys, OPTIMA's block once (per-student stages: tests/test_workflow.py's dvc exp run)
    assert students["params"].count("distill.optima") == 1
    assert all(f"distill.methods.{m}" in students["params"] for m in config["distill"]["run"])
    assert stages["collect"]["metrics"] == [f"{results}/eval/summary.json"]
    # each command is the Snakemake job's, after creating its log folder
    assert students["cmd"][-1].startswith("optima distill vqa --method finetune --method layerwise")
    plotted = [next(iter(p)) if isinstance(p, dict) else p for p in dvc["plots"]]
    assert "vqa task loss" in plotted
    assert any(p.endswith("selection_frequency.png") for p in plotted)


# ------------------------------------------------------------------------------------------- end to end


def _read_metrics(path: Path) -> dict:
    record = json.loads(path.read_text())
    return record["metrics"]


GROUPED = ("--config", "distill={group_by: task}")


@pytest.mark.slow
def test_smoke_pipeline_end_to_end(tmp_path):
    """The whole workflow on config/smoke.yaml: every table and figure, tables equal to the runs'
    metrics, a no-op rerun, and the report."""
    import pandas as pd

    from optima.paper.figures import planned_figures
    from optima.paper.tables import planned_tables

    work = copy_workflow(tmp_path / "wf")
    config = load(work / "config/smoke.yaml")
    results = work / config["paths"]["results"]
    # the students one job per task (distill.group_by: task, as in params.yaml): the grouped rule end to end
    snakemake(work, "--cores", "2", "--configfile", "config/smoke.yaml", *GROUPED, timeout=1800)

    for name in planned_tables(config):
        assert (results / "tables" / name).stat().st_size > 0, name
    for name in planned_figures(config):
        assert (results / "figures" / name).stat().st_size > 0, name

    # runs.csv holds exactly the evaluated runs' metrics
    runs = pd.read_csv(results / "eval/runs.csv")
    split = config["eval"]["split"]
    expected = {}
    for task in config["tasks"]:
        for metric, value in _read_metrics(results / f"teachers/{task}/metrics_{split}.json").items():
            expected[(task, "teacher", 0, metric)] = value
        for method in config["distill"]["run"]:
            for seed in config["distill"]["seeds"]:
                path = results / f"students/{task}/{method}/seed{seed}/metrics_{split}.json"
                for metric, value in _read_metrics(path).items():
                    expected[(task, method, seed, metric)] = value
    got = {(r.task, r.method, int(r.seed), r.metric): r.value for r in runs.itertuples() if r.split == split}
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key

    # the main table's numbers are the seed means of those metrics
    main = pd.read_csv(results / "tables/main.csv")
    _check_main_table(main, expected, config)

    # nothing left to do; the report builds with the tables and figures in it
    proc = snakemake(work, "-n", "--configfile", "config/smoke.yaml", *GROUPED)
    assert "Nothing to be done" in proc.stdout + proc.stderr
    snakemake(work, "--configfile", "config/smoke.yaml", *GROUPED, "--report", "report.html", timeout=600)
    report = (work / "report.html").read_text(errors="replace")
    assert "main.csv" in report and "comparison.png" in report


# main.csv columns -> (task, metric, factor to the printed unit), from docs/runs.md: VQA score is already
# in percent, accuracies are fractions, COCO CIDEr and BLEU-4 are printed x100 as papers do
MAIN_COLUMNS = {
    "vqa": ("vqa", "overall", 1.0),
    "snli_ve": ("snli_ve", "accuracy", 100.0),
    "nlvr2": ("nlvr2", "accuracy", 100.0),
    "cider": ("captions", "CIDEr", 100.0),
    "bleu4": ("captions", "Bleu_4", 100.0),
}
AVERAGED = ("vqa", "snli_ve", "nlvr2", "cider")


def _check_main_table(main, expected: dict, config: dict) -> None:
    """Every mean and std of the main table's CSV is the seeds' mean and sample std of the metrics
    JSON files; the average is the per-seed mean of the four task columns, averaged over seeds."""
    import statistics

    def seed_values(method, column):
        task, metric, factor = MAIN_COLUMNS[column]
        return {seed: value * factor for (t, m, seed, name), value in expected.items()
                if t == task and m == method and name == metric}

    methods = ["teacher"] + list(config["distill"]["run"])
    assert sorted(main["method"]) == sorted(methods)
    for row in main.to_dict("records"):
        method = row["method"]
        for column in MAIN_COLUMNS:
            values = seed_values(method, column)
            assert row[f"{column}_n"] == len(values) == (1 if method == "teacher" else len(config["distill"]["seeds"]))
            assert row[f"{column}_mean"] == pytest.approx(statistics.mean(values.values()), rel=1e-9, abs=1e-9)
            if len(values) > 1:
                assert row[f"{column}_std"] == pytest.approx(statistics.stdev(values.values()), rel=1e-9, abs=1e-9)
        per_seed = [statistics.mean(seed_values(method, c)[seed] for c in AVERAGED)
                    for seed in seed_values(method, "vqa")]
        assert row["average_mean"] == pytest.approx(statistics.mean(per_seed), rel=1e-9, abs=1e-9)


def _run(args: list[str], cwd: Path, timeout: int = 3600) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.mark.slow
@pytest.mark.very_slow  # the whole smoke pipeline again, one stage after another, and an experiment
def test_dvc_repro_runs_the_same_pipeline(tmp_path):
    """dvc.yaml (generated for config/smoke.yaml) runs the pipeline, locks every checkpoint and metric,
    reruns nothing the second time, and `dvc exp run -S` retrains only the students that read the key."""
    work = copy_workflow(tmp_path / "wf")
    for name in (".dvcignore", ".gitignore"):
        shutil.copy(ROOT / name, work / name)
    dvc = str(BIN / "dvc")
    _run(["git", "init", "-q"], work)
    _run(["git", "config", "user.email", "test@example.com"], work)
    _run(["git", "config", "user.name", "test"], work)
    _run([dvc, "init", "-q"], work)
    _run([dvc, "config", "core.analytics", "false"], work)
    # the smoke scale's stages go to their own file (dvc/smoke/dvc.yaml); the default's dvc.yaml is left out here
    (work / "dvc.yaml").unlink(missing_ok=True)
    _run([sys.executable, "workflow/scripts/dvc_yaml.py", "--configfile", "config/smoke.yaml"], work)
    _run(["git", "add", "-A"], work)
    _run(["git", "commit", "-qm", "pipeline"], work)

    stages = "dvc/smoke/dvc.yaml"
    _run([dvc, "repro", stages], work)
    lock = load(work / "dvc/smoke/dvc.lock")["stages"]
    config = load(work / "config/smoke.yaml")
    results = config["paths"]["results"]
    hashed = {out["path"] for stage in lock.values() for out in stage.get("outs", []) if out.get("md5")}
    for run_dir in [f"{results}/teachers/vqa", f"{results}/students/vqa/optima/seed0"]:
        for name in ("model.safetensors", "metrics.json", "train_log.csv"):
            assert f"{run_dir}/{name}" in hashed
    assert f"{results}/eval/summary.json" in hashed

    proc = _run([dvc, "repro", stages], work)
    assert "Data and pipelines are up to date" in proc.stdout, proc.stdout
    metrics = json.loads(_run([dvc, "metrics", "show", "--json"], work).stdout)
    assert f"{results}/eval/summary.json" in json.dumps(metrics)
    _run(["git", "add", "-A"], work)
    _run(["git", "commit", "-qm", "results"], work)

    proc = _run([dvc, "exp", "run", stages, "-S", "config/smoke.yaml:distill.optima.window=10"], work)
    # a stage of dvc/smoke/dvc.yaml is addressed as 'dvc/smoke/dvc.yaml:NAME'
    reran = {name.rpartition(":")[2] for name in re.findall(r"Running stage '([^']+)'", proc.stdout)}
    students = {f"distill-{t}-optima-seed{s}" for t in config["tasks"] for s in config["distill"]["seeds"]}
    assert {s for s in reran if s.startswith(("prepare", "pretrain", "finetune", "distill"))} == students
    diff = _run([dvc, "params", "diff"], work).stdout
    assert "distill.optima.window" in diff
