"""Shared fixtures and the suite's layout.

Expensive artefacts (the prepared smoke data, the trained smoke teacher) are session fixtures built
once per test run: under pytest-xdist by whichever worker asks first, in the run's shared temporary
folder and under a file lock, then read by every worker and module (never written: tests copy what
they change). `scripts/test.sh` runs the suite on every core and leaves out the `very_slow` tests
(a full `dvc repro`, `dvc exp run`), which `.ci/run` runs after it.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from optima.cli import set_openmp_wait

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# tiny models on a small shared machine: one thread per process is fastest (and CI-stable)
os.environ.setdefault("OMP_NUM_THREADS", "1")
# OpenMP's wait settings as `optima` sets them (read when torch loads, which no test module has done yet): the
# tests run beside the other test workers and the verbs they start
set_openmp_wait()

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "config" / "smoke.yaml"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def smoke_config_path() -> Path:
    return SMOKE


@pytest.fixture(scope="session", autouse=True)
def single_thread():
    """Tiny matrices: one thread avoids oversubscribing a shared CPU (up to 100x faster under load)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------ built once per run


def optima_verb(*args, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    """`python -m optima ARGS` in a fresh process (the CLI as users and the workflow call it)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "optima", *map(str, args)], capture_output=True, text=True,
                          env=env, **kwargs)
    if check and proc.returncode != 0:
        raise AssertionError(f"optima {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def build_once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]) -> Path:
    """`build(folder)` once per test run, shared by every pytest-xdist worker; returns the folder.

    The first worker to get the lock builds; the others wait for it and reuse the result. A build that
    fails leaves nothing marked complete, so the next worker that needs it tries again (and fails alike).
    """
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the run's folder; each worker's basetemp is a subfolder of it
    root = base / f"shared-{name}"
    with open(f"{root}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not (root / ".complete").exists():
                shutil.rmtree(root, ignore_errors=True)
                root.mkdir(parents=True)
                build(root)
                (root / ".complete").touch()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return root


SMOKE_DATA_TASKS = ("captions", "vqa", "snli_ve", "nlvr2")


@pytest.fixture(scope="session")
def smoke_data(tmp_path_factory) -> dict[str, Path]:
    """`optima prepare` of every task on config/smoke.yaml: task -> prepared folder (read-only)."""

    def build(root: Path) -> None:
        for task in SMOKE_DATA_TASKS:
            optima_verb("prepare", task, "--config", SMOKE, "--out", root / task)

    root = build_once(tmp_path_factory, "smoke-data", build)
    return {task: root / task for task in SMOKE_DATA_TASKS}


@pytest.fixture(scope="session")
def smoke_teacher(tmp_path_factory, smoke_data) -> dict:
    """The smoke teacher, trained once per run as the workflow trains it: pre-training on the captions
    data, then VQA fine-tuning. Keys: root (with data/TASK, pretrain/, teacher_vqa/), config. Read-only."""

    def build(root: Path) -> None:
        (root / "data").mkdir()
        for task, folder in smoke_data.items():
            (root / "data" / task).symlink_to(folder, target_is_directory=True)
        optima_verb("pretrain", "--config", SMOKE, "--data", root / "data/captions", "--out", root / "pretrain",
                    "--threads", 1)
        optima_verb("finetune", "vqa", "--config", SMOKE, "--data", root / "data/vqa", "--init", root / "pretrain",
                    "--out", root / "teacher_vqa", "--threads", 1)

    return {"root": build_once(tmp_path_factory, "smoke-teacher", build), "config": SMOKE}


# ------------------------------------------------------------------------------ order

def pytest_collection_modifyitems(config, items):
    """The longest tests first, so that under pytest-xdist the end-to-end runs start at once and overlap
    the many short tests instead of running alone at the end: the modules that hold `slow` tests first
    (those needing no shared teacher before those that do), and within a module its `slow` tests first.
    A module's tests stay together (its module fixtures are built once); no test depends on the order."""

    def rank(item) -> int:
        if item.get_closest_marker("slow") is None:
            return 2
        return 1 if "smoke_teacher" in getattr(item, "fixturenames", ()) else 0

    module_rank: dict[str, int] = {}
    for item in items:
        module = item.nodeid.split("::", 1)[0]
        module_rank[module] = min(module_rank.get(module, 2), rank(item))
    first_seen = {module: i for i, module in reversed(list(enumerate(i.nodeid.split("::", 1)[0] for i in items)))}
    items.sort(key=lambda item: (module_rank[item.nodeid.split("::", 1)[0]], first_seen[item.nodeid.split("::", 1)[0]],
                                 rank(item)))
