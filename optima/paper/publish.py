"""`optima publish`: a self-contained copy of an experiment's results for the repository.

``OUT`` (e.g. ``results/published/claims``, tracked by git) receives:

- ``runs.csv`` (copied from ``RESULTS/eval``), ``config.yaml`` (the config file used; with ``--overlay``
  files, the config they make together, as Snakemake merged them);
- ``rounds.csv`` and ``curves.csv``: the compact form of the students' train logs (optima.paper.logs);
- ``tables/`` (Markdown, LaTeX, CSV) and ``figures/`` (PNG), made from the files above only, so that
  `optima tables` / `optima figures` regenerate them from ``OUT`` alone; ``tables/VARIANT/``: the selection
  shares of each OPTIMA variant the run has besides ``optima`` (`optima agreement --method VARIANT`);
- ``MANIFEST.json``: git commit, config file and hashes, date, machine, and the wall time of the
  Snakemake run in total and per rule (from its log; null when there is none).

``OUT`` is built in a temporary folder next to it and renamed into place (optima.io.atomic_directory),
so a failure leaves the previous ``OUT`` (or none) behind, never a half-written one.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

SNAKEMAKE_LOG_DIR = Path(".snakemake/log")
_TIMESTAMP = re.compile(r"^\[(\w{3} \w{3} +\d{1,2} \d{2}:\d{2}:\d{2} \d{4})\]$")
_RULE = re.compile(r"^(?:local)?(?:rule|checkpoint) (\S+):$")
_JOBID = re.compile(r"^\s+jobid: (\d+)$")
_FINISHED = re.compile(r"^Finished job(?:id:)? (\d+)")  # Snakemake >= 8: "Finished jobid: 5 (Rule: x)"; older: "Finished job 5."
_CONFIG_FILES = re.compile(r"^\s*Config file\(s\): (.*)$")
_WORKDIR = re.compile(r"^\s*Working directory: (.*)$")


def add_arguments(parser) -> None:
    parser.add_argument("--config", required=True, help="the config file the experiment ran with (copied to OUT)")
    parser.add_argument("--overlay", action="append", default=[], metavar="FILE",
                        help="a config overlay the experiment also ran with (snakemake --configfile CONFIG FILE...); "
                             "repeatable, in that order: OUT/config.yaml is then the merged config")
    parser.add_argument("--results", default=None,
                        help="the experiment's results folder: eval/runs.csv and students/*/*/seed*/train_log.csv "
                             "(default: paths.results of --config)")
    parser.add_argument("--out", required=True, help="published folder, e.g. results/published/claims (replaced)")
    parser.add_argument("--snakemake-log", default=None,
                        help="the run's Snakemake log (default: the newest .snakemake/log/*.snakemake.log of a run "
                             "of --config that ran jobs)")
    parser.add_argument("--run-commit", default=None,
                        help="the commit the experiment ran at, when publish runs at a later one (recorded as run_commit)")
    parser.add_argument("--stage-time", action="append", default=[], metavar="NAME=SECONDS",
                        help="wall time of a step outside the Snakemake run (e.g. teacher_spread=900); repeatable")


# ------------------------------------------------------------------------------------ Snakemake log

def _parse_time(text: str) -> datetime:
    return datetime.strptime(re.sub(r" +", " ", text), "%a %b %d %H:%M:%S %Y")


def parse_snakemake_log(path: str | Path) -> dict:
    """Jobs per rule from a Snakemake run log: {"config_files", "workdir", "jobs", "unfinished_jobs",
    "wall_s", "start", "end", "rules": {rule: {"jobs", "job_s", "first_start", "last_end"}}}.

    A job starts at the timestamp line before its ``rule NAME:`` block and ends at the one before its
    ``Finished jobid: N`` line; the run's wall time spans the first start to the last end (None without
    a finished job). Times are the log's local times, ISO formatted.
    """
    now = pending = None
    started: dict[int, tuple[str, datetime]] = {}
    finished: dict[int, datetime] = {}
    config_files, workdir = [], None
    for line in Path(path).read_text(errors="replace").splitlines():
        if match := _TIMESTAMP.match(line):
            now = _parse_time(match.group(1))
        elif match := _RULE.match(line):
            pending = (match.group(1), now)
        elif (match := _JOBID.match(line)) and pending is not None:
            started[int(match.group(1))] = pending
            pending = None
        elif match := _FINISHED.match(line):
            finished[int(match.group(1))] = now
        elif match := _CONFIG_FILES.match(line):
            config_files = re.findall(r"'([^']*)'", match.group(1))
        elif match := _WORKDIR.match(line):
            workdir = match.group(1).strip()
    rules: dict[str, dict] = {}
    for jobid, end in sorted(finished.items()):
        if jobid not in started or started[jobid][1] is None or end is None:
            continue
        rule, start = started[jobid]
        entry = rules.setdefault(rule, {"jobs": 0, "job_s": 0.0, "first_start": start, "last_end": end})
        entry["jobs"] += 1
        entry["job_s"] += (end - start).total_seconds()
        entry["first_start"], entry["last_end"] = min(entry["first_start"], start), max(entry["last_end"], end)
    start = min((r["first_start"] for r in rules.values()), default=None)
    end = max((r["last_end"] for r in rules.values()), default=None)
    for entry in rules.values():
        entry["first_start"], entry["last_end"] = entry["first_start"].isoformat(), entry["last_end"].isoformat()
    return {"config_files": config_files, "workdir": workdir,
            "jobs": sum(r["jobs"] for r in rules.values()),
            "unfinished_jobs": len(set(started) - set(finished)),
            "wall_s": (end - start).total_seconds() if rules else None,
            "start": start.isoformat() if start else None, "end": end.isoformat() if end else None,
            "rules": dict(sorted(rules.items()))}


def _ran_config(parsed: dict, config_path: Path) -> bool:
    """Whether a parsed log is a run of ``config_path`` (its config files resolved in its working directory)."""
    base = Path(parsed["workdir"]) if parsed["workdir"] else Path.cwd()
    return any((base / f).resolve() == config_path.resolve() for f in parsed["config_files"])


def find_snakemake_log(config_path: str | Path, log_dir: str | Path = SNAKEMAKE_LOG_DIR):
    """(path, parsed) of the newest log in ``log_dir`` of a run of ``config_path`` that finished a job
    (a no-op rerun's log, or another config's, is newer but says nothing); (None, None) when there is none."""
    for path in sorted(Path(log_dir).glob("*.snakemake.log"), reverse=True):  # names start with the time
        parsed = parse_snakemake_log(path)
        if parsed["jobs"] and _ran_config(parsed, Path(config_path)):
            return path, parsed
    return None, None


# ------------------------------------------------------------------------------------ manifest

def _git_commit() -> tuple[str | None, bool | None]:
    """HEAD of the repository in the current folder and whether tracked files differ from it."""
    import subprocess

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None, None
    return commit, bool(status.strip())


def machine_info() -> dict:
    """CPU model (/proc/cpuinfo, else lscpu), core count and the torch and Python versions."""
    import os
    import platform
    import subprocess
    from importlib import metadata

    from optima.machine import cpu_identity

    cpu = cpu_identity()
    if cpu is None:
        try:
            out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
            cpu = next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), None)
        except (OSError, subprocess.CalledProcessError):
            pass
    try:
        torch = metadata.version("torch")  # without importing torch (seconds)
    except metadata.PackageNotFoundError:
        torch = None
    return {"cpu": cpu or platform.processor() or None, "cores": os.cpu_count(), "torch": torch,
            "python": platform.python_version()}


def manifest(config_path: Path, config: dict, snakemake_log: Path | None, parsed: dict | None,
             missing_log: str | None, run_commit: str | None = None, other_stages: dict | None = None,
             overlays: tuple = ()) -> dict:
    import hashlib

    from optima.config import config_hash

    commit, dirty = _git_commit()
    return {
        "git_commit": commit,
        "git_dirty": dirty,
        "run_commit": run_commit or commit,  # the experiment's commit (publish may run at a later one)
        "config_file": str(config_path),
        "config_sha256": hashlib.sha256(config_path.read_bytes()).hexdigest(),
        "config_overlays": [{"file": str(path), "sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest()}
                            for path in overlays],
        "config_hash": config_hash(config),  # optima.config.config_hash of the resolved config
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine_info(),
        "snakemake_log": str(snakemake_log) if snakemake_log else None,
        "snakemake_log_missing": missing_log,
        "wall_time_s": parsed["wall_s"] if parsed else None,
        "wall_time_start": parsed["start"] if parsed else None,
        "wall_time_end": parsed["end"] if parsed else None,
        "jobs": parsed["jobs"] if parsed else None,
        "stages": parsed["rules"] if parsed else None,
        "other_stages_s": other_stages or {},
    }


# ------------------------------------------------------------------------------------ publish

def parse_stage_times(items: list[str]) -> dict[str, float]:
    """``["teacher_spread=900"]`` -> ``{"teacher_spread": 900.0}``; a malformed item is an error naming it."""
    from optima.errors import ConfigError

    times = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            times[name.strip()] = float(value)
        except ValueError:
            raise ConfigError(f"--stage-time {item!r}: expected NAME=SECONDS") from None
        if not sep or not name.strip():
            raise ConfigError(f"--stage-time {item!r}: expected NAME=SECONDS")
    return times


def optima_variants(config: dict) -> list[str]:
    """The methods run besides ``optima`` that use OPTIMA's policy (another reward, window, arms...)."""
    from optima.config import method_spec

    return [name for name in config["distill"]["run"]
            if name != "optima" and method_spec(config, name)["policy"] == "optima"]


VS_LAYERWISE = "vs-layerwise"


def has_layerwise_controls(config: dict) -> bool:
    """Whether a run holds controls that answer "can any per-round module choice beat layerwise?" (the oracle,
    replay, val-best): then it also publishes tables/vs-layerwise/comparison.* (layerwise as the reference)."""
    from optima.paper.spec import method_policies

    methods = list(config["distill"]["run"])
    policies = method_policies(methods, config)
    return "layerwise" in methods and (config["eval"]["val_best"]
                                       or any(policies[m] in ("oracle", "replay") for m in methods))


def published_config_text(config_path: Path, overlays: tuple = ()) -> str:
    """What OUT/config.yaml holds: the config file as it is, or, with overlays, the merged config (validated),
    headed by a comment naming the files."""
    import yaml

    from optima.config import merge_overlay, read_overlay, validate

    if not overlays:
        return config_path.read_text()
    merged = yaml.safe_load(config_path.read_text())
    for overlay in overlays:
        merged = merge_overlay(merged, read_overlay(overlay))
    validate(merged, f"{config_path} + {' + '.join(str(p) for p in overlays)}")
    header = (f"# {config_path} with the overlay(s) {', '.join(str(p) for p in overlays)} merged onto it, as "
              "`snakemake --configfile` merges them (optima publish --overlay)\n")
    return header + yaml.safe_dump(merged, sort_keys=False, allow_unicode=True)


def publish(config_path, results, out, snakemake_log=None, log=None, run_commit=None, other_stages=None,
            overlays=()) -> Path:
    """Build the published folder ``out``; return it."""
    import json
    import shutil

    import yaml

    from optima.config import load_config
    from optima.errors import DataError
    from optima.io import atomic_directory, atomic_write_text
    from optima.paper.common import LOG
    from optima.paper.agreement import applies as agreement_applies
    from optima.paper.agreement import write_agreement
    from optima.paper.decomposition import applies as decomposition_applies
    from optima.paper.decomposition import write_decomposition
    from optima.paper.figures import write_figures
    from optima.paper.spread import has_teacher_seeds, write_spread
    from optima.paper.logs import CompactLogs, compact_logs, write_compact_csv_text
    from optima.paper.results import read_runs
    from optima.paper.tables import write_tables

    log = log or LOG
    config_path, out = Path(config_path), Path(out)
    overlays = tuple(Path(p) for p in overlays)
    config_text = published_config_text(config_path, overlays)  # errors name the file before any work
    config = load_config(config_path) if not overlays else yaml.safe_load(config_text)  # merged: validated above
    results = Path(results) if results else Path(config["paths"]["results"])
    runs_path = results / "eval" / "runs.csv"
    runs = read_runs(runs_path)  # names the file when it is missing
    if snakemake_log is not None:
        snakemake_log = Path(snakemake_log)
        if not snakemake_log.is_file():
            raise DataError(f"{snakemake_log}: Snakemake log not found (--snakemake-log)")
        parsed, missing_log = parse_snakemake_log(snakemake_log), None
    else:
        snakemake_log, parsed = find_snakemake_log(config_path)
        missing_log = None if parsed else f"no log of a run of {config_path} with finished jobs in {SNAKEMAKE_LOG_DIR}"
        if missing_log:
            log.info("wall time unknown: %s", missing_log)

    with atomic_directory(out) as build:  # a failure leaves the previous OUT (or none), never half of one
        shutil.copyfile(runs_path, build / "runs.csv")
        atomic_write_text(build / "config.yaml", config_text)
        rounds, curves = compact_logs(results, runs, log)
        atomic_write_text(build / "rounds.csv", write_compact_csv_text(rounds))
        atomic_write_text(build / "curves.csv", write_compact_csv_text(curves))
        log.info("%d round(s) and %d loss row(s) from the train logs under %s", len(rounds), len(curves), results)
        # tables and figures from the published copies only: exactly what `optima tables/figures` regenerate
        published_config = load_config(build / "config.yaml")
        write_tables(build / "runs.csv", build / "tables", published_config)
        if has_layerwise_controls(published_config):
            write_tables(build / "runs.csv", build / "tables" / VS_LAYERWISE, published_config, reference="layerwise",
                         only=("comparison",))
        for variant in optima_variants(published_config):  # each OPTIMA variant against every method, as OPTIMA is
            write_tables(build / "runs.csv", build / "tables" / variant, published_config, reference=variant,
                         only=("comparison",))
        write_figures(build / "runs.csv", build / "figures", published_config,
                      CompactLogs(build / "rounds.csv", build / "curves.csv", log), formats=["png"])
        if agreement_applies(published_config):  # does each reward rank modules as single-module runs do
            write_agreement(build / "runs.csv", build / "rounds.csv", build / "tables")
            for variant in optima_variants(published_config):  # e.g. OPTIMA with another reward: its own selection
                write_agreement(build / "runs.csv", build / "rounds.csv", build / "tables" / variant, method=variant)
        if decomposition_applies(rounds):  # which term of the probe objective drives each arm's reward
            write_decomposition(build / "rounds.csv", build / "tables", figure_dir=build / "figures")
        teacher_runs = results / "teacher-seeds" / "runs.csv"  # scripts/teacher_spread.sh: teachers of other seeds
        if teacher_runs.is_file():
            shutil.copyfile(teacher_runs, build / "teacher_runs.csv")
            write_spread(build / "teacher_runs.csv", build / "runs.csv", build / "tables")
        elif has_teacher_seeds(runs):  # distill.teacher_seed: per_seed: the spread of the run's own teachers
            write_spread(build / "runs.csv", build / "runs.csv", build / "tables")
        # scripts/teacher_spread.sh --kernels ISA: seed 0's teachers retrained with other CPU kernels
        for kernel_runs in sorted((results / "teacher-kernels").glob("*/runs.csv")):
            isa = kernel_runs.parent.name
            shutil.copyfile(kernel_runs, build / f"teacher_runs_{isa}.csv")
            write_spread(build / f"teacher_runs_{isa}.csv", build / "runs.csv", build / "tables",
                         against_path=build / "runs.csv", name=f"teacher_shift_{isa}")
        record = manifest(config_path, published_config, snakemake_log, parsed, missing_log, run_commit, other_stages,
                          overlays)
        atomic_write_text(build / "MANIFEST.json", json.dumps(record, indent=1) + "\n")
    return out


def run(args) -> int:
    from optima.paper.common import setup_logging

    setup_logging("publish")
    out = publish(args.config, args.results, args.out, args.snakemake_log, run_commit=args.run_commit,
                  other_stages=parse_stage_times(args.stage_time), overlays=args.overlay)
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        print(path)
    return 0
