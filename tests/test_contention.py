"""Fair on a busy machine: OpenMP threads wait as optima sets them wherever optima runs torch (the `optima` CLI,
the test suite), a user's own setting wins, and scripts/bench_contention.py times a
pipeline job idle and beside competing processes under both policies (docs/benchmarks.md)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_the_cli_sets_the_wait_settings_before_torch_loads_and_a_users_setting_wins(monkeypatch):
    # importing the CLI loads no torch: the settings made in main() are in place when a verb loads it
    proc = subprocess.run([sys.executable, "-c", "import sys, optima.cli; print('torch' in sys.modules)"],
                          capture_output=True, text=True, cwd=REPO, check=True)
    assert proc.stdout.strip() == "False"
    from optima.cli import WAIT_SETTINGS, main, set_openmp_wait

    for name in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(SystemExit):
        main(["--version"])
    assert {name: os.environ.get(name) for name in WAIT_SETTINGS} == WAIT_SETTINGS
    # either variable set by the user: optima sets neither
    for users in ({"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "300000"}):
        environ = dict(users)
        set_openmp_wait(environ)
        assert environ == users


def test_a_verb_runs_under_the_wait_settings():
    """`optima VERB`, as the workflow starts every job, with neither variable in its environment: the verb (which
    loads torch) runs with optima's settings."""
    from optima.cli import WAIT_SETTINGS

    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    code = ("import os, sys; from optima import cli; import optima.bench as b; "
            "b.run = lambda args: print('settings', {k: os.environ.get(k) for k in cli.WAIT_SETTINGS}) or 0; "
            "sys.exit(cli.main(['bench', 'models']))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"settings {WAIT_SETTINGS}" in proc.stdout


def test_the_test_workers_wait_as_the_cli_sets_it():
    from optima.cli import WAIT_SETTINGS

    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    code = "import os, conftest; print({k: os.environ[k] for k in ('OMP_WAIT_POLICY', 'GOMP_SPINCOUNT') if k in os.environ})"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO / "tests", env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == str(WAIT_SETTINGS)


def _busy_loops() -> set[str]:
    """PIDs of running `python -c "while True: pass"` processes (the benchmark's competitors, or anyone's)."""
    listing = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    return {line.split(None, 1)[0] for line in listing.splitlines() if line.strip().endswith("-c while True: pass")}


@pytest.mark.very_slow  # runs the benchmark script: two timed pre-training jobs beside a busy process
def test_bench_contention_prints_a_table_of_times_and_ratios(smoke_data, tmp_path, smoke_config_path):
    out = tmp_path / "runs.csv"
    before = _busy_loops()
    bench = [sys.executable, str(REPO / "scripts" / "bench_contention.py")]
    proc = subprocess.run([*bench, "--data", str(smoke_data["captions"]), "--config", str(smoke_config_path),
                           "--steps", "2", "--threads", "1", "--loads", "0", "1", "--policies", "default", "spin=1000",
                           "--repeats", "1", "--csv", str(out)], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| OpenMP wait setting | idle | beside 1 busy process |" in proc.stdout
    assert re.search(r"\| GOMP_SPINCOUNT=1000\S* \| [\d.]+ s \| [\d.]+ s \([\d.]+×\) \|", proc.stdout), proc.stdout
    assert "Idle, against libgomp's default: GOMP_SPINCOUNT=1000" in proc.stdout
    lines = out.read_text().splitlines()
    assert lines[0] == "repeat,load,policy,seconds,loadavg_before" and len(lines) == 5
    # no competing process is left behind (others' busy loops, running before, may still run)
    assert _busy_loops() <= before
    # the saved runs print the same table again, without running anything
    saved = subprocess.run([*bench, "--from-csv", str(out)], capture_output=True, text=True, cwd=REPO)
    assert saved.returncode == 0 and proc.stdout.split("\n\n", 1)[1] in saved.stdout
    for bad, message in ((["--data", str(tmp_path)], "not prepared captions data"),
                         (["--data", str(smoke_data["captions"]), "--policies", "lazy"], "unknown policy 'lazy'")):
        proc = subprocess.run([*bench, *bad], capture_output=True, text=True, cwd=REPO)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
