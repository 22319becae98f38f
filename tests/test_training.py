"""The training verbs end to end on config/smoke.yaml: outputs, determinism, crash-resume, DDP, bad input."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from optima.distill.trainlog import TIMING_COLUMNS

pytestmark = pytest.mark.slow

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def optima(*args, check=True, **kwargs):
    proc = subprocess.run([sys.executable, "-m", "optima", *map(str, args)], capture_output=True, text=True,
                          env=ENV, **kwargs)
    if check and proc.returncode != 0:
        raise AssertionError(f"optima {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture
def world(smoke_teacher):
    """Prepared smoke data, a pre-trained teacher and a VQA teacher: built once per test run (conftest),
    read-only here (every test writes its students under its own tmp_path)."""
    return smoke_teacher


def distill(world, out, method="optima", seed=0, *extra, check=True):
    return optima("distill", "vqa", "--method", method, "--seed", seed, "--config", world["config"],
                  "--data", world["root"] / "data/vqa", "--teacher", world["root"] / "teacher_vqa",
                  "--out", out, "--threads", 1, *extra, check=check)


def read_log(path):
    with open(path) as handle:
        return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in csv.DictReader(handle)]


def test_pretrain_and_finetune_write_complete_runs(world):
    pretrain, teacher = world["root"] / "pretrain", world["root"] / "teacher_vqa"
    for run in (pretrain, teacher):
        for name in ("model.safetensors", "model_config.json", "config.yaml", "run_info.json", "train_log.csv"):
            assert (run / name).is_file(), f"{run}/{name}"
        assert not (run / "train_log.inprogress.csv").exists()
    log = read_log(pretrain / "train_log.csv")
    assert log and log[-1]["step"] == "6" and log[-1]["contrastive_loss"] and log[-1]["caption_loss"]
    assert read_log(teacher / "train_log.csv")[-1]["step"] == "8"  # smoke: finetune.overrides.vqa.steps
    metrics = json.loads((teacher / "metrics.json").read_text())
    assert metrics["role"] == "teacher" and metrics["split"] == "val" and "overall" in metrics["metrics"]


def test_distill_logs_arm_and_reward_every_round(world, tmp_path):
    distill(world, tmp_path / "run")
    rows = read_log(tmp_path / "run/train_log.csv")
    rounds = [r for r in rows if r["reward"]]
    assert [int(r["round"]) for r in rounds] == list(range(10))  # 10 steps, 1 step per round
    # a warm-up round (reward not recorded), then every arm once, in an order drawn from the seed
    arms = [r["arm"] for r in rounds]
    assert arms[1] == arms[0] and set(arms[1:4]) == {"vision", "text", "multimodal"}
    for r in rounds:
        assert r["probe_loss"] and r[f"layer_loss_{r['arm']}"]
    metrics = json.loads((tmp_path / "run/metrics.json").read_text())
    assert (metrics["method"], metrics["seed"], metrics["role"]) == ("optima", 0, "student")
    # the saved student is a plain open_clip CoCa with half the teacher's layers
    record = json.loads((tmp_path / "run/model_config.json").read_text())
    assert record["model_cfg"]["vision_cfg"]["layers"] == 1


def test_same_seed_gives_identical_logs_and_metrics(world, tmp_path):
    distill(world, tmp_path / "a", "uniform", 3)
    distill(world, tmp_path / "b", "uniform", 3)
    assert read_log(tmp_path / "a/train_log.csv") == read_log(tmp_path / "b/train_log.csv")
    assert (tmp_path / "a/metrics.json").read_text() == (tmp_path / "b/metrics.json").read_text()


@pytest.mark.very_slow  # five students twice: in one process and in their own
def test_students_trained_in_one_process_match_their_own_processes(world, tmp_path):
    """distill.group_by: task trains a task's students in turn in one process; each must come out exactly
    as from its own process (the models' weights, the logs, the metrics), whatever ran before it."""
    from safetensors.torch import load_file

    runs = [("optima", 0), ("layerwise", 1)]
    for method, seed in runs:
        distill(world, tmp_path / "alone" / method / f"seed{seed}", method, seed)
    optima("distill", "vqa", "--method", "optima", "--method", "layerwise", "--seed", 0, "--seed", 1,
           "--config", world["config"], "--data", world["root"] / "data/vqa", "--teacher", world["root"] / "teacher_vqa",
           "--out-root", tmp_path / "grouped", "--threads", 1)
    grouped = sorted(p.relative_to(tmp_path / "grouped") for p in (tmp_path / "grouped").glob("*/seed*"))
    assert [str(p) for p in grouped] == ["layerwise/seed0", "layerwise/seed1", "optima/seed0", "optima/seed1"]
    for method, seed in runs:
        alone, together = tmp_path / "alone" / method / f"seed{seed}", tmp_path / "grouped" / method / f"seed{seed}"
        assert read_log(alone / "train_log.csv") == read_log(together / "train_log.csv")
        assert (alone / "metrics.json").read_text() == (together / "metrics.json").read_text()
        a, b = load_file(alone / "model.safetensors"), load_file(together / "model.safetensors")
        assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)


@pytest.mark.very_slow  # two teachers fine-tuned and their students
def test_per_seed_teachers_are_fine_tuned_with_the_seed_and_teach_only_it(world, tmp_path):
    """distill.teacher_seed: per_seed: `finetune --seed S` trains (and records) seed S's teacher, and a
    student of another seed is refused before anything is written; the student records its teacher's seed."""
    root = world["root"]
    teacher = tmp_path / "teacher_seed3"
    optima("finetune", "vqa", "--config", world["config"], "--data", root / "data/vqa", "--init", root / "pretrain",
           "--seed", 3, "--out", teacher, "--threads", 1)
    assert json.loads((teacher / "run_info.json").read_text())["seed"] == 3
    assert yaml.safe_load((teacher / "config.yaml").read_text())["seed"] == 3
    base = ("distill", "vqa", "--config", world["config"], "--set", "distill.teacher_seed=per_seed",
            "--data", root / "data/vqa", "--teacher", teacher, "--method", "uniform", "--threads", 1)
    proc = optima(*base, "--seed", 0, "--seed", 3, "--out-root", tmp_path / "students", check=False)
    assert proc.returncode == 2 and str(teacher) in proc.stderr and "seed(s) are [0]" in proc.stderr, proc.stderr
    assert not (tmp_path / "students").exists()
    optima(*base, "--seed", 3, "--out", tmp_path / "student")
    assert json.loads((tmp_path / "student/run_info.json").read_text())["teacher_seed"] == 3
    # shared teachers (the default) teach every seed, and the student still records whose it is
    distill(world, tmp_path / "shared", "uniform", 3)
    assert json.loads((tmp_path / "shared/run_info.json").read_text())["teacher_seed"] == 0


def test_distill_output_flags_are_checked(world, tmp_path):
    base = ("distill", "vqa", "--config", world["config"], "--data", world["root"] / "data/vqa",
            "--teacher", world["root"] / "teacher_vqa")
    proc = optima(*base, "--method", "optima", "--method", "uniform", "--seed", 0, "--out", tmp_path / "x", check=False)
    assert proc.returncode == 2 and "--out trains one student" in proc.stderr
    proc = optima(*base, "--method", "optima", "--seed", 0, "--out", tmp_path / "x", "--out-root", tmp_path, check=False)
    assert proc.returncode == 2 and "exactly one of --out" in proc.stderr
    proc = optima(*base, "--method", "optima", "--method", "optima", "--seed", 0, "--out-root", tmp_path, check=False)
    assert proc.returncode == 2 and "--method given twice" in proc.stderr
    assert not any(tmp_path.iterdir())


@pytest.mark.very_slow  # a killed run, its resume and an uninterrupted run
def test_sigkill_after_first_checkpoint_then_resume_matches(world, tmp_path):
    longer = ("--set", "distill.steps=30", "--set", "distill.checkpoint_every=4")
    distill(world, tmp_path / "whole", "optima", 0, *longer)
    run = tmp_path / "killed"
    cmd = [sys.executable, "-m", "optima", "distill", "vqa", "--method", "optima", "--seed", "0",
           "--config", str(world["config"]), "--data", str(world["root"] / "data/vqa"),
           "--teacher", str(world["root"] / "teacher_vqa"), "--out", str(run), "--threads", "1", *longer]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (run / "checkpoints/step_0000004/meta.json").exists():
        assert proc.poll() is None, "the run ended before its first checkpoint"
        assert time.time() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "metrics.json").exists()  # nothing that looks complete
    resumed = distill(world, run, "optima", 0, *longer)
    assert "resuming from" in resumed.stdout
    assert (run / "metrics.json").read_text() == (tmp_path / "whole/metrics.json").read_text()
    assert read_log(run / "train_log.csv") == read_log(tmp_path / "whole/train_log.csv")


@pytest.mark.very_slow  # two torchrun processes against one
def test_two_process_gloo_torchrun_matches_single_process(world, tmp_path):
    distill(world, tmp_path / "single", "layerwise", 1)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "optima", "distill", "vqa", "--method", "layerwise", "--seed", "1",
           "--config", str(world["config"]), "--data", str(world["root"] / "data/vqa"),
           "--teacher", str(world["root"] / "teacher_vqa"), "--out", str(tmp_path / "ddp"), "--threads", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    single = read_log(tmp_path / "single/train_log.csv")
    ddp = read_log(tmp_path / "ddp/train_log.csv")
    assert [r["arm"] for r in single] == [r["arm"] for r in ddp]
    # Same global batches. Differences: the order of floating-point reductions, and masked means
    # (text padding) taken per rank and then averaged, exactly as DDP averages per-rank gradients.
    for a, b in zip(single, ddp):
        assert float(a["loss"]) == pytest.approx(float(b["loss"]), rel=2e-2)
    m1 = json.loads((tmp_path / "single/metrics.json").read_text())["metrics"]
    m2 = json.loads((tmp_path / "ddp/metrics.json").read_text())["metrics"]
    assert m1.keys() == m2.keys()
    for key in m1:
        assert m1[key] == pytest.approx(m2[key], abs=1.0)  # VQA score in percent: within one point


def test_bad_inputs_fail_clearly(world, tmp_path):
    proc = distill(world, tmp_path / "x", "optimus", check=False)
    assert proc.returncode == 2 and "unknown method 'optimus'" in proc.stderr
    proc = optima("distill", "vqa", "--method", "optima", "--seed", 0, "--config", world["config"],
                  "--data", world["root"] / "data/vqa", "--teacher", tmp_path / "missing", "--out", tmp_path / "y",
                  check=False)
    assert proc.returncode == 2 and "run directory does not exist" in proc.stderr
    proc = optima("distill", "captions", "--method", "optima", "--seed", 0, "--config", world["config"],
                  "--data", world["root"] / "data/captions", "--teacher", world["root"] / "teacher_vqa",
                  "--out", tmp_path / "z", check=False)
    assert proc.returncode == 2 and "task 'vqa', not 'captions'" in proc.stderr
    proc = distill(world, tmp_path / "w", "optima", 0, "--teacher", world["root"] / "pretrain", check=False)
    assert proc.returncode == 2 and "expected a teacher run" in proc.stderr
    for out in ("x", "y", "z", "w"):
        assert not (tmp_path / out / "metrics.json").exists()


def test_resume_from_other_config_is_refused(world, tmp_path):
    distill(world, tmp_path / "run", "layerwise", 0)
    # as if killed after the first checkpoint: an unfinished run must not resume under another config
    import shutil
    shutil.rmtree(tmp_path / "run/checkpoints/step_0000010")  # the final checkpoint (smoke: 10 steps)
    proc = distill(world, tmp_path / "run", "layerwise", 0, "--set", "distill.lr=0.5", check=False)
    assert proc.returncode == 2 and "differs in: distill.lr" in proc.stderr


def test_diverging_loss_stops_with_step_and_term(world, tmp_path):
    proc = distill(world, tmp_path / "run", "layerwise", 0, "--set", "distill.lr=1e12",
                   "--set", "distill.grad_clip=null", "--set", "distill.warmup_steps=0", check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "at step" in proc.stderr and ("is nan" in proc.stderr or "is inf" in proc.stderr)
    assert not (tmp_path / "run/metrics.json").exists()
