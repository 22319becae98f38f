"""A pipeline job on a busy machine: its wall time idle and beside competing CPU-bound processes, with OpenMP's
passive wait policy (what `optima` sets, optima/cli.py) and with libgomp's default (spinning waits, as before).

    python scripts/bench_contention.py --data data/processed/captions            # the default's pre-training job
    python scripts/bench_contention.py --data DIR --config config/smoke.yaml --steps 5 --repeats 1   # a quick look

The job is `optima pretrain --config CONFIG --set pretrain.steps=STEPS --set pretrain.mode=train --threads THREADS
--data DIR --out TMP` (start-up included). A competing process is `python -c "while True: pass"`. Conditions run
round-robin, in a rotated order each repeat, so that the machine's drift hits all alike; the table shows medians
and each condition's ratio to its own policy's idle time. Prints a Markdown table (and writes every run to --csv).
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUSY = [sys.executable, "-c", "while True: pass"]
# libgomp reads OMP_WAIT_POLICY when torch loads: loading torch before optima's CLI sets it keeps libgomp's default
BEFORE = "import torch, sys; from optima.cli import main; sys.exit(main(sys.argv[1:]))"
POLICIES = ("default", "passive")


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown CPU"
    return next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")),
                "unknown CPU")


def job_command(args, policy: str, out: Path) -> tuple[list[str], dict]:
    verb = ["pretrain", "--config", str(args.config), "--set", f"pretrain.steps={args.steps}",
            "--set", "pretrain.mode=train", "--threads", str(args.threads), "--data", str(args.data), "--out", str(out)]
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}  # the policy is the condition
    env.update(HF_HUB_OFFLINE="1", PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])))
    if policy == "passive":  # what a user gets: optima's CLI sets it before torch loads
        return [sys.executable, "-m", "optima", *verb], env
    return [sys.executable, "-c", BEFORE, *verb], env


def run_once(args, load: int, policy: str) -> dict:
    load_before = os.getloadavg()[0]
    busy = [subprocess.Popen(BUSY) for _ in range(load)]
    out = Path(tempfile.mkdtemp(prefix="bench-contention-"))
    try:
        time.sleep(0.5 if busy else 0)  # the competitors are running before the job starts
        cmd, env = job_command(args, policy, out / "run")
        start = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO)
        seconds = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"bench_contention: the job failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    finally:
        for p in busy:
            p.kill()
        for p in busy:
            p.wait()
        shutil.rmtree(out, ignore_errors=True)
    return {"load": load, "policy": policy, "seconds": round(seconds, 2), "loadavg_before": round(load_before, 2)}


def table(rows: list[dict], loads: list[int], policies: list[str]) -> str:
    median = {(p, n): statistics.median(r["seconds"] for r in rows if (r["policy"], r["load"]) == (p, n))
              for p in policies for n in loads}
    names = {0: "idle", 1: "beside 1 busy process"}
    header = ["OpenMP wait policy"] + [names.get(n, f"beside {n} busy processes") for n in loads]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for p in policies:
        cells = []
        for n in loads:
            cell = f"{median[p, n]:.1f} s"
            if n and 0 in loads:
                cell += f" ({median[p, n] / median[p, 0]:.2f}×)"
            cells.append(cell)
        label = "passive (optima's default)" if p == "passive" else "libgomp default (before)"
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if set(POLICIES) <= set(policies) and 0 in loads:
        lines.append("")
        lines.append(f"Idle, passive vs libgomp default: {median['passive', 0] / median['default', 0]:.2f}×.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, type=Path, help="prepared captions data (optima prepare captions)")
    parser.add_argument("--config", type=Path, default=REPO / "params.yaml")
    parser.add_argument("--steps", type=int, default=200, help="pre-training steps of the job (default 200)")
    parser.add_argument("--threads", type=int, default=2, help="the job's threads (default 2, as a pipeline job)")
    parser.add_argument("--loads", type=int, nargs="+", default=[0, 1, 2], help="competing processes (default 0 1 2)")
    parser.add_argument("--policies", nargs="+", choices=POLICIES, default=list(POLICIES))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--csv", type=Path, help="write every run here")
    args = parser.parse_args(argv)
    if not (args.data / "tokenizer.json").is_file():
        parser.error(f"--data {args.data}: not prepared captions data (no tokenizer.json); "
                     f"run `optima prepare captions --config {args.config}` first")
    conditions = [(n, p) for n in args.loads for p in args.policies]
    rows = []
    for repeat in range(args.repeats):
        shift = repeat % len(conditions)
        for load, policy in conditions[shift:] + conditions[:shift]:
            row = {"repeat": repeat, **run_once(args, load, policy)}
            rows.append(row)
            print(f"repeat {repeat}: {policy:8s} beside {load}: {row['seconds']:7.2f} s "
                  f"(load average before: {row['loadavg_before']})", file=sys.stderr, flush=True)
    if args.csv:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        with args.csv.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    print(f"`optima pretrain`, {args.steps} steps, --threads {args.threads}, {Path(args.config).name}; "
          f"{cpu_model()}, {os.cpu_count()} CPUs; median of {args.repeats} (start-up included)\n")
    print(table(rows, args.loads, args.policies))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
