"""Issue 11, item 5: scripts/gpu_check.sh runs `optima bench step --config config/paper.yaml` on the paper's
methods; here on a CPU stand-in (the paper config with a nano teacher and small shapes), in seconds."""

import csv
import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STAND_IN = ["--set", "model.teacher=optima-nano-teacher", "--set", "data.image_size=32",
            "--set", "data.tokenizer=word", "--set", "data.context_length=12", "--set", "distill.batch_size=4",
            "--set", "distill.probe_size=8", "--set", "distill.probe_chunk=3", "--set", "runtime.device=cpu",
            "--set", "runtime.precision=fp32"]


def test_gpu_check_script_runs_every_paper_method_on_a_cpu_stand_in(tmp_path):
    env = {**os.environ, "TASKS": "captions", "STEPS": "2", "REPEATS": "1", "WARMUP": "0",
           "OUT": str(tmp_path / "check"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), *STAND_IN], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    out = proc.stdout
    assert "--config config/paper.yaml --task captions --steps 2 (round_steps 2)" in out
    assert "no CUDA device" in out
    rows = list(csv.DictReader((tmp_path / "check" / "captions.csv").open()))
    assert [r["method"] for r in rows] == ["finetune", "kd", "layerwise", "uniform", "optima"]
    assert {"samples_per_s", "peak_mem_gb", "mfu"} <= set(rows[0])
    assert all(float(r["samples_per_s"]) > 0 for r in rows)
    by = {r["method"]: r for r in rows}
    assert float(by["optima"]["probe_s"]) > 0  # the chunked probe ran, once per round
    assert (tmp_path / "check" / "captions.md").exists()


def test_gpu_check_script_fails_loudly():
    env = {**os.environ, "TASKS": "captions", "STEPS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), "--set", "distill.probe_storage=gpu"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "distill.probe_storage" in proc.stdout + proc.stderr
