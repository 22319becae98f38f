"""A run split into pieces: fine-tuned teachers stored once (scripts/store_teachers.py) and taken back under
`finetune.mode: load`, by the verb and by the workflow, unchanged and only when they match the run."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import optima_verb
from test_workflow import job_counts, snakemake

REPO = Path(__file__).resolve().parents[1]
STORE = [sys.executable, str(REPO / "scripts" / "store_teachers.py")]
STORED = ("model.safetensors", "model_config.json", "run_info.json", "config.yaml", "train_log.csv", "metrics.json")
LISTED = (*STORED, "SHA256SUMS")


@pytest.fixture
def stored(smoke_teacher, tmp_path) -> Path:
    """The smoke VQA teacher as a run's teachers/ folder under per-seed teachers (seed 0), then stored."""
    teachers = tmp_path / "results" / "teachers"
    shutil.copytree(smoke_teacher["root"] / "teacher_vqa", teachers / "vqa" / "seed0")
    (teachers / "vqa" / "seed0" / "targets").mkdir()  # cached targets and checkpoints are not stored
    proc = subprocess.run([*STORE, str(teachers), str(tmp_path / "store")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "vqa/seed0: " in proc.stdout and "1 teacher(s)" in proc.stdout
    return tmp_path / "store"


def load_args(smoke_teacher, store: Path, out: Path, *extra: str) -> list:
    return ["finetune", "vqa", "--config", smoke_teacher["config"], "--set", "finetune.mode=load",
            "--set", f"finetune.teachers={store}", "--set", "distill.teacher_seed=per_seed",
            "--data", smoke_teacher["root"] / "data/vqa", "--out", out, "--threads", 1, *extra]


def test_store_keeps_the_run_files_only_and_refuses_to_replace_a_different_teacher(stored, smoke_teacher, tmp_path):
    source = smoke_teacher["root"] / "teacher_vqa"
    assert sorted(p.name for p in (stored / "vqa" / "seed0").iterdir()) == sorted(LISTED)
    for name in STORED:
        assert (stored / "vqa/seed0" / name).read_bytes() == (source / name).read_bytes()
    # the checksums are sha256sum's format
    check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=stored / "vqa/seed0", capture_output=True, text=True)
    assert check.returncode == 0 and check.stdout.count(": OK") == len(STORED), check.stdout
    again = subprocess.run([*STORE, str(tmp_path / "results/teachers"), str(stored)], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr  # the same teacher: kept
    (stored / "vqa/seed0/train_log.csv").write_text("step\n")
    again = subprocess.run([*STORE, str(tmp_path / "results/teachers"), str(stored)], capture_output=True, text=True)
    assert again.returncode == 1 and "a different file is stored there already" in again.stderr
    empty = subprocess.run([*STORE, str(tmp_path / "nothing"), str(stored)], capture_output=True, text=True)
    assert empty.returncode == 1 and "no finished teacher run" in empty.stderr


def test_load_mode_gives_the_stored_teacher_unchanged(stored, smoke_teacher, tmp_path):
    out = tmp_path / "teacher"
    proc = optima_verb(*load_args(smoke_teacher, stored, out))
    assert "loaded the stored teacher" in proc.stdout
    source = stored / "vqa" / "seed0"
    for name in ("model.safetensors", "model_config.json", "train_log.csv"):
        assert (out / name).read_bytes() == (source / name).read_bytes(), name
    assert json.loads((out / "metrics.json").read_text()) == json.loads((source / "metrics.json").read_text())
    info = json.loads((out / "run_info.json").read_text())
    assert (info["role"], info["task"], info["seed"], info["loaded_from"]) == ("teacher", "vqa", 0, str(source))
    # the loaded teacher is a teacher like any other: it distils (one step, to show it is read as one)
    optima_verb("distill", "vqa", "--config", smoke_teacher["config"], "--set", "distill.teacher_seed=per_seed",
                "--set", "distill.steps=1", "--set", "distill.round_steps=1", "--set", "distill.warmup_steps=0",
                "--data", smoke_teacher["root"] / "data/vqa", "--teacher", out, "--method", "kd", "--seed", 0,
                "--out", tmp_path / "student", "--threads", 1)
    assert (tmp_path / "student" / "metrics.json").is_file()


@pytest.mark.parametrize("case", ["seed", "data", "missing", "corrupt"])
def test_load_mode_refuses_a_teacher_that_does_not_match_and_writes_nothing(stored, smoke_teacher, tmp_path, case):
    extra, expected = [], None
    if case == "seed":  # seed 0's teacher under seed 1's name
        shutil.copytree(stored / "vqa/seed0", stored / "vqa/seed1")
        extra, expected = ["--seed", 1], "stored teacher does not match this run: seed 0 (expected 1)"
    elif case == "data":
        extra, expected = ["--set", "data.synthetic.seed=99"], "stored teacher does not match this run: data settings"
    elif case == "missing":
        extra, expected = ["--seed", 2], f"{stored / 'vqa' / 'seed2'}: run directory does not exist"
    else:
        weights = stored / "vqa/seed0/model.safetensors"
        data = bytearray(weights.read_bytes())
        data[len(data) // 2] ^= 0xFF
        weights.write_bytes(bytes(data))
        expected = f"{weights}: checksum mismatch"
    out = tmp_path / "teacher"
    proc = optima_verb(*load_args(smoke_teacher, stored, out, *extra), check=False)
    assert proc.returncode != 0 and expected in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not (out / "model.safetensors").exists() and not (out / "metrics.json").exists()


def test_load_mode_needs_the_folder():
    proc = optima_verb("finetune", "vqa", "--config", REPO / "config/smoke.yaml", "--set", "finetune.mode=load",
                       "--data", "nowhere", "--out", "nowhere", check=False)
    assert proc.returncode != 0 and "finetune.mode: load needs finetune.teachers" in proc.stderr


def test_the_workflow_takes_stored_teachers_instead_of_fine_tuning(tmp_path):
    """Under finetune.mode: load the plan has no pre-training, and each teacher job reads its stored run files."""
    from test_workflow import copy_workflow

    work = copy_workflow(tmp_path / "work")
    store = work / "stored"
    for seed in (0, 1):
        (store / "nlvr2" / f"seed{seed}").mkdir(parents=True)
        for name in LISTED:
            (store / "nlvr2" / f"seed{seed}" / name).write_text("")
    overrides = ["--config", "tasks=[nlvr2]", f"finetune={{mode: load, teachers: {store}}}",
                 "distill={teacher_seed: per_seed, seeds: [0, 1]}"]
    proc = snakemake(work, "-n", "-p", "--configfile", "config/smoke.yaml", *overrides)
    counts = job_counts(proc.stdout)
    assert counts["finetune"] == 2 and "pretrain" not in counts
    commands = [line.strip() for line in proc.stdout.splitlines() if "optima finetune nlvr2" in line]
    assert len(commands) == 2 and not any("--init" in c for c in commands), commands
    # a stored teacher that is missing stops the plan, naming the file
    shutil.rmtree(store / "nlvr2" / "seed1")
    proc = snakemake(work, "-n", "--configfile", "config/smoke.yaml", *overrides, check=False)
    assert proc.returncode != 0 and "stored/nlvr2/seed1/model.safetensors" in proc.stdout + proc.stderr
