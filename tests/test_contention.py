"""Fair on a busy machine (issue 24, item 13): OpenMP threads wait passively wherever optima runs torch (the
`optima` CLI, the test suite, scripts/test.sh), a user's own setting wins, and scripts/bench_contention.py times a
pipeline job idle and beside competing processes under both policies (docs/benchmarks.md)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_the_cli_sets_a_passive_wait_policy_before_torch_loads_and_a_users_setting_wins(monkeypatch):
    # importing the CLI loads no torch: the policy set in main() is in place when a verb loads it
    proc = subprocess.run([sys.executable, "-c", "import sys, optima.cli; print('torch' in sys.modules)"],
                          capture_output=True, text=True, cwd=REPO, check=True)
    assert proc.stdout.strip() == "False"
    from optima.cli import main

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    with pytest.raises(SystemExit):
        main(["--version"])
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    with pytest.raises(SystemExit):
        main(["--version"])
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_a_verb_runs_under_the_passive_policy():
    """`optima VERB`, as the workflow starts every job, with no policy in its environment: the verb (which loads
    torch) runs with OMP_WAIT_POLICY=PASSIVE."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    code = ("import os, sys; from optima import cli; import optima.bench as b; "
            "b.run = lambda args: print('policy', os.environ.get('OMP_WAIT_POLICY')) or 0; "
            "sys.exit(cli.main(['bench', 'models']))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "policy PASSIVE" in proc.stdout


def test_the_test_runs_wait_passively():
    assert "export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}" in (REPO / "scripts" / "test.sh").read_text()
    assert 'os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")' in (REPO / "tests" / "conftest.py").read_text()


@pytest.mark.slow
def test_bench_contention_prints_a_table_of_times_and_ratios(smoke_data, tmp_path, smoke_config_path):
    out = tmp_path / "runs.csv"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "bench_contention.py"), "--data",
                           str(smoke_data["captions"]), "--config", str(smoke_config_path), "--steps", "2",
                           "--threads", "1", "--loads", "0", "1", "--policies", "passive", "--repeats", "1",
                           "--csv", str(out)], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| OpenMP wait policy | idle | beside 1 busy process |" in proc.stdout
    assert re.search(r"\| passive \(optima's default\) \| [\d.]+ s \| [\d.]+ s \([\d.]+×\) \|", proc.stdout)
    assert out.read_text().splitlines()[0] == "repeat,load,policy,seconds,loadavg_before"
    # no competing process is left behind
    assert "while True: pass" not in subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "bench_contention.py"), "--data", str(tmp_path)],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2 and "not prepared captions data" in proc.stderr
