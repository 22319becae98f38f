"""What a paper-scale user meets before the first job: the raw downloads are git-ignored (DVC's pointers are
not), the NVIDIA driver the pinned wheel needs and how to choose another CUDA build are written where they
install (README, environment.yml, scripts/setup.sh), the teacher is stated as a stand-in, and the plan is
what the README says (no teacher-targets job at paper scale)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.test_workflow import copy_workflow, job_counts, snakemake

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("path, ignored", [
    ("data/raw/coco/images/train2014/COCO_train2014_000000000009.jpg", True),
    ("data/raw/.downloads/train2014.zip.part", True),
    ("data/raw/nlvr2/train.json", True),
    ("data/raw/flickr30k/flickr30k-images.verified.json", True),
    ("data/raw/coco/images/train2014.dvc", False),
    ("data/raw/nlvr2/.gitignore", False),
    ("data/fetch.lock.yaml", False),
    ("dvc/paper/dvc.yaml", False),
])
def test_raw_downloads_are_ignored_but_dvc_pointers_are_not(path, ignored):
    proc = subprocess.run(["git", "check-ignore", "-q", "--no-index", path], cwd=ROOT)
    assert (proc.returncode == 0) == ignored, path


def text(path: str) -> str:
    """The file's words, line breaks and indentation collapsed."""
    return " ".join((ROOT / path).read_text().split())


def test_driver_and_cuda_build_are_stated_where_users_install():
    readme, paper_scale = text("README.md"), text("docs/paper-scale.md")
    pins = (ROOT / "pyproject.toml").read_text()
    assert '"torch==2.14.1"' in pins  # the wheel the statements are about (PyPI's: CUDA 13.0)
    for words in (readme, paper_scale):
        assert "R580" in words and "--index-url https://download.pytorch.org/whl/cu126" in words
    env = (ROOT / "environment.yml").read_text()
    assert "R580" in env and "--extra-index-url https://download.pytorch.org/whl/cu126" in env
    assert yaml.safe_load(env)["dependencies"][-1]["pip"] == ["-e ."]  # the choice is a comment until made
    assert "TORCH_INDEX_URL" in (ROOT / "scripts/setup.sh").read_text()


def test_the_teacher_is_stated_as_a_stand_in():
    readme = text("README.md")
    assert "stand-in" in readme and "787 M" in readme and "638 M" in readme
    assert "width 768 instead of 1024" in text("docs/paper-scale.md")


def test_no_teacher_targets_job_at_paper_scale(tmp_path):
    paper = yaml.safe_load((ROOT / "config/paper.yaml").read_text())
    assert paper["distill"]["teacher_cache"]["mode"] == "never"
    work = copy_workflow(tmp_path / "wf")
    counts = job_counts(snakemake(work, "-n", "--configfile", "config/paper.yaml").stdout)
    assert "teacher_targets" not in counts and counts["finetune"] == 4
    assert "[teacher targets(task)]" in (ROOT / "README.md").read_text()  # the chain marks it optional
