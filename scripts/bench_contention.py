"""A pipeline job on a busy machine: its wall time idle and beside competing CPU-bound processes, under OpenMP
wait settings: libgomp's default (a thread waiting at a barrier spins 300,000 times before it sleeps), passive
(`OMP_WAIT_POLICY=PASSIVE`: it sleeps at once) and short spins (`GOMP_SPINCOUNT=N`). `optima` sets its choice
before torch loads (optima/cli.py); this script sets each condition's variables itself, so the choice is measured.

    python scripts/bench_contention.py --data data/processed/captions            # the default's pre-training job
    python scripts/bench_contention.py --data DIR --config config/smoke.yaml --steps 5 --repeats 1   # a quick look
    python scripts/bench_contention.py --data DIR --policies default spin=10000 passive

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
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUSY = [sys.executable, "-c", "while True: pass"]
# libgomp reads its variables when torch loads: loading torch before optima's CLI runs keeps the condition's own
BEFORE = "import torch, sys; from optima.cli import main; sys.exit(main(sys.argv[1:]))"
WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
POLICIES = ("default", "passive", "spin=2000")


def policy_env(policy: str) -> dict[str, str]:
    """The OpenMP variables of a condition: default | passive | spin=N."""
    if policy == "default":
        return {}
    if policy == "passive":
        return {"OMP_WAIT_POLICY": "PASSIVE"}
    if policy.startswith("spin=") and policy[5:].isdigit():
        return {"GOMP_SPINCOUNT": policy[5:]}
    raise argparse.ArgumentTypeError(f"unknown policy {policy!r} (default | passive | spin=N)")


def policy_label(policy: str) -> str:
    from optima.cli import WAIT_SETTINGS  # what optima sets when the user sets neither variable

    label = {"default": "libgomp default (spin 300,000)", "passive": "OMP_WAIT_POLICY=PASSIVE"}.get(
        policy, f"GOMP_SPINCOUNT={policy[5:]}")
    return label + (" (optima's choice)" if policy_env(policy) == WAIT_SETTINGS else "")


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
    env = {k: v for k, v in os.environ.items() if k not in WAIT_VARIABLES}  # the policy is the condition
    env.update(policy_env(policy))
    env.update(HF_HUB_OFFLINE="1", PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])))
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
    """Medians per (policy, load) with each one's ratio to its policy's idle median; "–" where nothing ran."""
    runs = {(p, n): [r["seconds"] for r in rows if (r["policy"], r["load"]) == (p, n)] for p in policies for n in loads}
    median = {key: statistics.median(values) for key, values in runs.items() if values}
    names = {0: "idle", 1: "beside 1 busy process"}
    header = ["OpenMP wait setting"] + [names.get(n, f"beside {n} busy processes") for n in loads] + ["runs"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for p in policies:
        cells = []
        for n in loads:
            cell = f"{median[p, n]:.1f} s" if (p, n) in median else "–"
            if n and (p, n) in median and (p, 0) in median:
                cell += f" ({median[p, n] / median[p, 0]:.2f}×)"
            cells.append(cell)
        counts = "/".join(str(len(runs[p, n])) for n in loads)
        lines.append(f"| {policy_label(p)} | " + " | ".join(cells) + f" | {counts} |")
    if ("default", 0) in median and len(policies) > 1:
        lines.append("")
        lines.append("Idle, against libgomp's default: " + ", ".join(
            f"{policy_label(p)} {median[p, 0] / median['default', 0]:.2f}×" for p in policies
            if p != "default" and (p, 0) in median) + ".")
    return "\n".join(lines)


def print_saved(paths: list[Path]) -> int:
    rows = []
    for path in paths:
        with path.open(newline="") as handle:
            rows += [{**row, "load": int(row["load"]), "seconds": float(row["seconds"])} for row in csv.DictReader(handle)]
    loads = sorted({r["load"] for r in rows})
    policies = list(dict.fromkeys(r["policy"] for r in rows))
    print(f"{len(rows)} saved runs ({', '.join(map(str, paths))}); medians\n")
    print(table(rows, loads, policies))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="prepared captions data (optima prepare captions); required unless "
                                                   "--from-csv")
    parser.add_argument("--config", type=Path, default=REPO / "params.yaml")
    parser.add_argument("--steps", type=int, default=200, help="pre-training steps of the job (default 200)")
    parser.add_argument("--threads", type=int, default=2, help="the job's threads (default 2, as a pipeline job)")
    parser.add_argument("--loads", type=int, nargs="+", default=[0, 1, 2], help="competing processes (default 0 1 2)")
    parser.add_argument("--policies", nargs="+", default=list(POLICIES), metavar="POLICY",
                        help="default | passive | spin=N (GOMP_SPINCOUNT); default: %(default)s")
    parser.add_argument("--skip", nargs="+", default=[], metavar="POLICY:LOAD",
                        help="leave out these conditions (e.g. default:1 default:2, which take minutes)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--csv", type=Path, help="write every run here")
    parser.add_argument("--from-csv", type=Path, nargs="+", metavar="CSV",
                        help="run nothing: print the table of runs written earlier with --csv (several files: one table)")
    args = parser.parse_args(argv)
    if args.from_csv:
        return print_saved(args.from_csv)
    if args.data is None:
        parser.error("--data is required (prepared captions data)")
    # a kill (SIGTERM) unwinds like Ctrl-C, so that no competing process outlives the benchmark
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    for policy in args.policies:
        try:
            policy_env(policy)
        except argparse.ArgumentTypeError as exc:
            parser.error(f"--policies: {exc}")
    if not (args.data / "tokenizer.json").is_file():
        parser.error(f"--data {args.data}: not prepared captions data (no tokenizer.json); "
                     f"run `optima prepare captions --config {args.config}` first")
    conditions = [(n, p) for n in args.loads for p in args.policies if f"{p}:{n}" not in args.skip]
    rows = []
    fields = ["repeat", "load", "policy", "seconds", "loadavg_before"]
    writer = None
    if args.csv:  # each run written as it finishes: an interrupted benchmark keeps what it measured
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        handle = args.csv.open("w", newline="")
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
    for repeat in range(args.repeats):
        shift = repeat % len(conditions)
        for load, policy in conditions[shift:] + conditions[:shift]:
            row = {"repeat": repeat, **run_once(args, load, policy)}
            rows.append(row)
            if writer:
                writer.writerow(row)
                handle.flush()
            print(f"repeat {repeat}: {policy:8s} beside {load}: {row['seconds']:7.2f} s "
                  f"(load average before: {row['loadavg_before']})", file=sys.stderr, flush=True)
    if writer:
        handle.close()
    print(f"`optima pretrain`, {args.steps} steps, --threads {args.threads}, {Path(args.config).name}; "
          f"{cpu_model()}, {os.cpu_count()} CPUs; median of {args.repeats} (start-up included)\n")
    print(table(rows, args.loads, args.policies))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
