"""The SLURM profile keeps CPU rules on a CPU partition when a user names the GPU partition for the run, as the
README shows it: `snakemake --profile workflow/profiles/slurm --configfile config/paper.yaml --default-resources
slurm_partition=gpu ...`. `--default-resources` replaces the profile's defaults and reaches every rule that
names no partition of its own; `prepare` (the one CPU rule submitted to SLURM) names its own."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.test_workflow import copy_workflow, snakemake

ROOT = Path(__file__).resolve().parents[1]
GPU_RULES = ("pretrain", "finetune", "distill", "evaluate_teacher", "evaluate_student")


def partitions(dry_run: str) -> dict[str, set]:
    """Rule -> the slurm_partition values its planned jobs carry (None: none set)."""
    found: dict[str, set] = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", dry_run):
        match = re.match(r"(?:local)?rule (\w+):", block)
        resources = re.search(r"^\s+resources: (.*)$", block, re.M)
        if match and resources:
            value = re.search(r"slurm_partition=([^,\s]+)", resources.group(1))
            found.setdefault(match.group(1), set()).add(value.group(1) if value else None)
    return found


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return copy_workflow(tmp_path_factory.mktemp("slurm"))


def test_a_gpu_default_partition_leaves_prepare_on_the_cpu_partition(work):
    proc = snakemake(work, "-n", "--configfile", "config/paper.yaml", "--profile", "workflow/profiles/slurm",
                     "--default-resources", "slurm_partition=gpu", "slurm_account=my-account")
    found = partitions(proc.stdout)
    assert found["prepare"] == {"cpu"}
    for rule in GPU_RULES:
        assert found[rule] == {"gpu"}, (rule, found.get(rule))


def test_without_a_default_partition_only_cpu_rules_name_one(work):
    proc = snakemake(work, "-n", "--configfile", "config/paper.yaml", "--profile", "workflow/profiles/slurm")
    found = partitions(proc.stdout)
    assert found["prepare"] == {"cpu"} and found["finetune"] == {None}


def test_every_submitted_cpu_rule_names_its_partition():
    """A rule without a GPU that is not a local rule must name its partition (else it follows the GPU default)."""
    profile = yaml.safe_load((ROOT / "workflow/profiles/slurm/config.yaml").read_text())
    for rule, res in profile["set-resources"].items():
        if not res.get("gpu"):
            assert res.get("slurm_partition"), rule
        else:
            assert "slurm_partition" not in res, rule  # the GPU rules take the user's partition
