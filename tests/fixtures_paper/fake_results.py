"""A realistic fake results tree (docs/runs.md layout) for the paper tests: metrics JSON files for every
task x method x seed plus the teacher, and train_log.csv files with arms, rounds and rewards."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

TASKS = ("captions", "vqa", "snli_ve", "nlvr2")
DEFAULT_METHODS = ("finetune", "kd", "layerwise", "uniform", "optima", "fixed-vision", "fixed-text",
                   "fixed-multimodal", "ts", "optima-w4")
# quality offset in percentage points over the student without distillation
OFFSET = {"teacher": 6.0, "finetune": 0.0, "kd": 0.6, "layerwise": 1.2, "uniform": 1.4, "optima": 2.2,
          "fixed-vision": 0.4, "fixed-text": 0.1, "fixed-multimodal": 0.9, "ts": 1.7, "optima-w4": 1.9}
POLICY = {"finetune": None, "kd": None, "layerwise": "all", "uniform": "uniform", "optima": "adaptive",
          "ts": "adaptive", "optima-w4": "adaptive", "fixed-vision": "vision", "fixed-text": "text",
          "fixed-multimodal": "multimodal"}
LOG_COLUMNS = ["step", "lr", "loss", "task_loss", "kd_loss", "layer_loss", "layer_loss_vision", "layer_loss_text",
               "layer_loss_multimodal", "arm", "round", "reward", "probe_loss", "grad_norm", "examples_per_s",
               "elapsed_s"]
MODULES = ("vision", "text", "multimodal")


def fake_metrics(task: str, method: str, seed: int) -> dict:
    """Metric values on the docs/runs.md scales, deterministic in (task, method, seed)."""
    rng = np.random.default_rng([TASKS.index(task), sum(map(ord, method)), seed])
    gain = (OFFSET.get(method, 1.0) + rng.normal(0.0, 0.5)) / 100.0  # fraction
    if task == "vqa":
        overall = 100 * (0.62 + gain)
        return {"overall": overall, "yes/no": min(100.0, overall + 15), "number": overall - 20, "other": overall - 5}
    if task == "snli_ve":
        acc = 0.74 + gain
        return {"accuracy": acc, "accuracy_entailment": acc + 0.03, "accuracy_neutral": acc - 0.08,
                "accuracy_contradiction": acc + 0.05}
    if task == "nlvr2":
        return {"accuracy": 0.66 + gain, "consistency": 0.2 + gain}
    return {"Bleu_1": 0.7 + gain, "Bleu_2": 0.5 + gain, "Bleu_3": 0.4 + gain, "Bleu_4": 0.3 + gain,
            "METEOR": 0.25 + gain / 2, "ROUGE_L": 0.55 + gain, "CIDEr": 1.05 + 3 * gain}


def write_metrics(path: Path, task: str, method: str, seed: int, split: str = "test", metrics=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"task": task, "method": method, "seed": seed, "role": "teacher" if method == "teacher" else "student",
              "split": split, "metrics": metrics if metrics is not None else fake_metrics(task, method, seed)}
    path.write_text(json.dumps(record, indent=1))
    return path


def _arm(policy: str, rng, round_index: int) -> str:
    if policy in MODULES:
        return policy
    if policy == "all":
        return "all"
    if policy == "uniform":
        return MODULES[rng.integers(3)]
    # an adaptive policy: each arm once, then drifting from vision towards multimodal
    if round_index < 3:
        return MODULES[round_index]
    late = min(1.0, round_index / 12)
    p = np.array([0.5 - 0.35 * late, 0.25, 0.25 + 0.35 * late])
    return MODULES[rng.choice(3, p=p / p.sum())]


def write_train_log(path: Path, method: str, seed: int, steps: int = 200, log_every: int = 10,
                    round_steps: int = 10) -> Path:
    """Logged rows every ``log_every`` steps plus one row at each round end (reward filled there)."""
    rng = np.random.default_rng([sum(map(ord, method)), seed, 7])
    policy = POLICY.get(method, "adaptive")
    rows = []
    arm = ""
    for step in range(1, steps + 1):
        round_index = (step - 1) // round_steps
        if policy is not None and (step - 1) % round_steps == 0:
            arm = _arm(policy, rng, round_index)
        task_loss = 3.0 * np.exp(-step / (60 + 10 * OFFSET.get(method, 1.0))) + 0.4 + rng.normal(0, 0.02)
        layer = 0.0 if policy is None else 0.5 * np.exp(-step / 80)
        if step % log_every == 0:
            rows.append({"step": step, "lr": 1e-3, "loss": task_loss + layer, "task_loss": task_loss,
                         "kd_loss": 0.0 if method == "finetune" else 0.3, "layer_loss": layer if policy else "",
                         "arm": arm, "round": round_index if policy else "", "grad_norm": 1.0,
                         "examples_per_s": 100.0, "elapsed_s": step * 0.1})
        if policy is not None and step % round_steps == 0:
            base = {"vision": 0.02, "text": 0.01, "multimodal": 0.03}.get(arm, 0.02)
            reward = base * np.exp(-step / 150) + rng.normal(0, 0.003)
            rows.append({"step": step, "arm": arm, "round": round_index, "reward": reward,
                         "probe_loss": task_loss + 0.1})
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=LOG_COLUMNS, restval="")
        writer.writeheader()
        writer.writerows(rows)
    return path


def make_results(root: Path, tasks=TASKS, methods=DEFAULT_METHODS, seeds=(0, 1, 2), logs: bool = True,
                 teacher: bool = True) -> dict:
    """Write results/{teachers,students}/... under ``root``; return {"metrics": [paths], "values":
    {(task, method, seed): metrics dict}}."""
    paths, values = [], {}
    for task in tasks:
        if teacher:
            p = write_metrics(root / "teachers" / task / "metrics_test.json", task, "teacher", 0)
            paths.append(p)
            values[(task, "teacher", 0)] = fake_metrics(task, "teacher", 0)
        for method in methods:
            for seed in seeds:
                run = root / "students" / task / method / f"seed{seed}"
                paths.append(write_metrics(run / "metrics_test.json", task, method, seed))
                values[(task, method, seed)] = fake_metrics(task, method, seed)
                if logs:
                    write_train_log(run / "train_log.csv", method, seed)
    return {"metrics": paths, "values": values}
