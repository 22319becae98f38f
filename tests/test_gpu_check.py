"""The GPU acceptance check (`optima gpu-check`, scripts/gpu_check.sh) on the CPU: without a GPU it says so in
one line and exits 2; on a CPU stand-in (nano teacher, small shapes, JPEG files decoded by the loader) with a
stand-in device budget and peak, a run within them passes, and runs made to exceed the memory budget or to
fall short of the throughput threshold, or whose loss diverges, fail. Also: CPUs shared by the ranks
torchrun starts (ranks x (threads + workers) within the job's CPUs)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from optima.commands.gpu_check import judge, per_gpu_batch

REPO = Path(__file__).resolve().parents[1]
STAND_IN = ["--set", "model.teacher=optima-nano-teacher", "--set", "data.image_size=32", "--set", "data.tokenizer=word",
            "--set", "data.context_length=12", "--set", "finetune.batch_size=8", "--set", "finetune.overrides={}",
            "--set", "distill.batch_size=8", "--set", "distill.probe_size=8", "--set", "distill.probe_chunk=4",
            "--set", "eval.batch_size=4", "--set", "eval.decode.max_length=8", "--set", "runtime.num_workers=1",
            "--jpeg-size", "64", "48", "--steps", "3", "--warmup", "1", "--threads", "2", "--device", "cpu"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="this host has a GPU")


def check(tmp_path, *args, timeout=600) -> tuple[subprocess.CompletedProcess, list[dict]]:
    out = tmp_path / "check"
    proc = subprocess.run([sys.executable, "-m", "optima", "gpu-check", "--config", "config/paper.yaml", *STAND_IN,
                           "--out", str(out), *args], cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=timeout)
    rows = list(csv.DictReader((out / "gpu_check.csv").open())) if (out / "gpu_check.csv").exists() else []
    return proc, rows


@no_gpu
def test_without_a_gpu_the_check_says_so_in_one_line_and_exits_2():
    proc = subprocess.run(["bash", str(REPO / "scripts/gpu_check.sh")], cwd=REPO, env=ENV, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu-check: no CUDA GPU visible"), lines
    assert "nothing was run" in lines[0] and "driver" in lines[0]


@no_gpu
def test_the_gpu_wrapper_explains_a_missing_gpu_instead_of_crashing(tmp_path):
    """`python -m optima.gpus 1 -- optima finetune ...` on a host without a GPU: the verb names the problem."""
    proc = subprocess.run([sys.executable, "-m", "optima.gpus", "1", "--", sys.executable, "-m", "optima", "finetune",
                           "captions", "--config", "config/paper.yaml", "--data", str(tmp_path / "data"), "--init",
                           str(tmp_path / "init"), "--out", str(tmp_path / "out")], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "runtime.device: cuda, but torch finds no CUDA GPU" in proc.stderr
    assert "Traceback" not in proc.stderr and "Found no NVIDIA driver" not in proc.stderr


@pytest.mark.very_slow  # the acceptance check on a CPU stand-in: a few training steps of each GPU rule
def test_a_stand_in_run_within_its_budget_passes(tmp_path):
    proc, rows = check(tmp_path, "--tasks", "captions", "--methods", "layerwise", "optima", "--budget-gb", "5",
                       "--peak-tflops", "0.00001")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1].startswith("gpu-check: PASS 4 of 4 jobs on 1 x CPU stand-in")
    assert [(r["rule"], r["method"]) for r in rows] == [("finetune", "teacher"), ("distill", "layerwise"),
                                                        ("distill", "optima"), ("evaluate", "teacher")]
    assert all(r["status"] == "PASS" and float(r["peak_mem_gb"]) > 0 and float(r["samples_per_s"]) > 0 for r in rows)
    assert rows[1]["per_gpu_batch"] == "2"  # distill.batch_size 8 over the 4 GPUs of the slurm profile's job
    images = sorted((tmp_path / "check/data/captions/images").iterdir())
    assert images and all(p.read_bytes()[:3] == b"\xff\xd8\xff" for p in images)  # JPEG files the loader decodes


@pytest.mark.very_slow  # three acceptance checks made to fail, on a CPU stand-in
@pytest.mark.parametrize("name,args,reason", [
    ("memory", ["--budget-gb", "0.001", "--peak-tflops", "0.00001"], "peak memory"),
    ("throughput", ["--budget-gb", "5", "--peak-tflops", "1000"], "of the bf16 peak < 20%"),
    ("divergence", ["--budget-gb", "5", "--peak-tflops", "0.00001", "--set", "finetune.lr=1e30"], "not finite"),
])
def test_runs_made_to_exceed_the_thresholds_fail(tmp_path, name, args, reason):
    proc, rows = check(tmp_path, "--tasks", "captions", "--rules", "finetune", *args)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert rows[0]["status"] == "FAIL" and reason in rows[0]["reason"], rows
    assert proc.stdout.strip().splitlines()[-1].startswith("gpu-check: FAIL 1 of 1 jobs on 1 x CPU stand-in")


def test_judge_thresholds():
    row = {"peak_mem_gb": 40.0, "mfu": 0.30, "loss": 1.0, "data_wait": 0.0}
    assert judge(row, 42.5e9, 0.05, 0.2, training=True)["status"] == "PASS"
    assert "peak memory 41.00 GB > 95% of the 42.50 GB budget" in judge({**row, "peak_mem_gb": 41.0}, 42.5e9, 0.05,
                                                                        0.2, True)["reason"]
    slow = judge({**row, "mfu": 0.06, "data_wait": 0.5}, 42.5e9, 0.05, 0.2, True)
    assert slow["status"] == "FAIL" and "6.0% of the bf16 peak < 20% (data wait 50% of the time)" in slow["reason"]
    assert judge({**row, "mfu": 0.06}, 42.5e9, 0.05, 0.2, training=False)["status"] == "PASS"  # evaluation: memory only
    assert judge({**row, "loss": float("nan")}, 42.5e9, 0.05, 0.2, True)["status"] == "FAIL"
    assert per_gpu_batch(64, 4) == 16 and per_gpu_batch(128, 1) == 128


def test_ranks_share_the_jobs_cpus(monkeypatch):
    """A distillation job of the slurm profile: 16 CPUs, 4 ranks, runtime.num_workers 8 -> per rank 3 loader
    workers and 1 torch thread: 4 x (1 + 3) = 16."""
    import yaml

    from optima.runtime import init_runtime

    threads = torch.get_num_threads()
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    try:
        runtime = init_runtime("cpu", "fp32", threads=16)
        assert runtime.cpus == 4
        workers = runtime.loader_workers(8)
        assert workers == 3 and torch.get_num_threads() == 1
        assert 4 * (torch.get_num_threads() + workers) <= 16
        assert runtime.loader_workers(0) == 0
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
        assert init_runtime("cpu", "fp32", threads=8).loader_workers(8) == 7  # a fine-tuning job: 1 GPU, 8 CPUs
    finally:
        torch.set_num_threads(threads)
    profile = yaml.safe_load((REPO / "workflow/profiles/slurm/config.yaml").read_text())
    for rule, res in profile["set-resources"].items():
        if res.get("gpu", 0) > 1:  # every rank gets at least one CPU for its own thread
            assert profile["set-threads"][rule] >= res["gpu"], rule


@pytest.mark.very_slow
def test_torchrun_over_two_processes(tmp_path):
    """Under torchrun (gloo on the CPU) every job runs data-parallel; rows hold the worst rank's values."""
    out = tmp_path / "check"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "optima", "gpu-check", "--config", "config/paper.yaml", *STAND_IN, "--tasks",
                           "captions", "--methods", "optima", "--budget-gb", "5", "--peak-tflops", "0.00001",
                           "--out", str(out)], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = list(csv.DictReader((out / "gpu_check.csv").open()))
    assert [r["gpus"] for r in rows] == ["2"] * 3 and all(r["status"] == "PASS" for r in rows)
    assert proc.stdout.count("gpu-check: PASS 3 of 3 jobs on 2 x CPU stand-in") == 1  # rank 0 alone reports
