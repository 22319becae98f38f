"""Paper scale on a cluster or a multi-GPU machine: the DAG config/paper.yaml plans (fetch -> prepare ->
fine-tune -> distill -> evaluate -> tables), with the SLURM profile (per-rule gpu, mem_mb, runtime,
cpus_per_task; torchrun for multi-GPU jobs) and the local multi-GPU profile (GPU slots), and the
paper-scale dvc.yaml (fetch stages tracking the raw data)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.test_workflow import copy_workflow, job_counts, snakemake

ROOT = Path(__file__).resolve().parents[1]
TRAIN_RULES = ("pretrain", "finetune", "distill")
CHAIN = ["prepare", "pretrain", "finetune", "distill", "evaluate_student", "collect", "tables"]


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return copy_workflow(tmp_path_factory.mktemp("cluster"))


def rule_edges(dot: str) -> set[tuple[str, str]]:
    labels = dict(re.findall(r'(\d+)\[label = "([^"]+)"', dot))
    return {(labels[a], labels[b]) for a, b in re.findall(r"(\d+) -> (\d+)", dot)}


@pytest.mark.very_slow  # two paper-scale dry runs
@pytest.mark.parametrize("profile", [None, "workflow/profiles/slurm"])
def test_paper_dry_run_plans_fetch_to_tables(work, profile):
    args = ["--configfile", "config/paper.yaml"] + (["--profile", profile] if profile else [])
    edges = rule_edges(snakemake(work, "--rulegraph", *args).stdout)
    fetch_rules = {a for a, _ in edges if a.startswith("fetch_")}
    assert fetch_rules >= {"fetch_coco_train2014", "fetch_vqa_v2", "fetch_snli_ve", "fetch_flickr30k", "fetch_nlvr2_images"}
    assert all((rule, "prepare") in edges for rule in fetch_rules)
    for upstream, downstream in zip(CHAIN, CHAIN[1:]):
        assert (upstream, downstream) in edges, (upstream, downstream)
    proc = snakemake(work, "-n", "-p", *args)
    counts = job_counts(proc.stdout)
    assert all(counts[rule] >= 1 for rule in CHAIN + sorted(fetch_rules))
    if profile:  # per-rule resources from the profile, multi-GPU students under torchrun
        assert re.search(r"rule distill:.*?resources: [^\n]*runtime=720, cpus_per_task=16, gpu=4", proc.stdout, re.S)
        assert "torchrun --standalone --nproc-per-node 4 -m optima distill" in proc.stdout
        assert "python -m optima.gpus 1 -- optima finetune" in proc.stdout


def test_slurm_profile_sets_every_resource_of_every_gpu_rule(work):
    slurm = yaml.safe_load((work / "workflow/profiles/slurm/config.yaml").read_text())
    assert slurm["executor"] == "slurm"
    for rule in TRAIN_RULES + ("evaluate_teacher", "evaluate_student"):
        res = slurm["set-resources"][rule]
        assert {"gpu", "mem_mb", "runtime", "cpus_per_task"} <= set(res), rule
        assert res["cpus_per_task"] == slurm["set-threads"][rule], rule


def test_local_gpu_profile_caps_gpu_jobs(work):
    profile = yaml.safe_load((work / "workflow/profiles/local-gpu/config.yaml").read_text())
    assert profile["resources"] == ["gpu=8"]
    proc = snakemake(work, "-n", "-p", "--configfile", "config/paper.yaml", "--profile", "workflow/profiles/local-gpu",
                     "--resources", "gpu=2")
    assert "python -m optima.gpus 2 -- torchrun --standalone --nproc-per-node 2 -m optima distill" in proc.stdout
    assert "python -m optima.gpus 1 -- optima evaluate" in proc.stdout


def _gpus(count, env, seconds=0.0):
    code = f"import os, time; print(os.environ.get('CUDA_VISIBLE_DEVICES')); time.sleep({seconds})"
    return subprocess.Popen([sys.executable, "-m", "optima.gpus", str(count), "--", sys.executable, "-c", code],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)


def test_gpu_slots_give_each_job_its_own_gpus(tmp_path):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="3,5,7", OPTIMA_GPU_LOCK_DIR=str(tmp_path))
    env.pop("SLURM_JOB_ID", None)
    first, second = _gpus(2, env, seconds=1.5), None
    time.sleep(0.5)
    second = _gpus(1, env)
    a, b = first.communicate(timeout=60)[0].strip(), second.communicate(timeout=60)[0].strip()
    assert len(a.split(",")) == 2 and len(b.split(",")) == 1 and not set(a.split(",")) & set(b.split(","))
    assert set(a.split(",")) | set(b.split(",")) <= {"3", "5", "7"}
    proc = _gpus(4, env)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "asks for 4 GPUs but this machine has 3" in err
    slurm = dict(env, SLURM_JOB_ID="1", CUDA_VISIBLE_DEVICES="0,1")  # SLURM chose them: unchanged
    assert _gpus(1, slurm).communicate(timeout=60)[0].strip() == "0,1"


def test_paper_dvc_yaml_tracks_the_raw_data(tmp_path):
    """A lab's paper-scale dvc.yaml (`dvc_yaml.py --configfile config/paper.yaml`), in its own file
    dvc/paper/dvc.yaml (the committed default dvc.yaml is left alone, and refused as --out): one stage per fetch
    resource whose outs are the raw files (so `dvc push`/`dvc pull` move them), with its manifest entry as
    params (never reruns for a code change), and prepare depending on them; every stage runs at the root."""
    work = copy_workflow(tmp_path / "wf")
    (work / "dvc.yaml").write_text("# the default scale's\n")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", HF_HUB_OFFLINE="1")
    refused = subprocess.run([sys.executable, "workflow/scripts/dvc_yaml.py", "--configfile", "config/paper.yaml",
                              "--out", "dvc.yaml"], cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0 and "--out dvc/paper/dvc.yaml" in refused.stderr
    subprocess.run([sys.executable, "workflow/scripts/dvc_yaml.py", "--configfile", "config/paper.yaml"],
                   cwd=work, env=env, check=True, capture_output=True, timeout=300)
    assert (work / "dvc.yaml").read_text() == "# the default scale's\n"
    document = yaml.safe_load((work / "dvc/paper/dvc.yaml").read_text())
    stages = document["stages"]
    assert {stage["wdir"] for stage in stages.values()} == {"../.."}
    assert all(p.startswith("../../") for plot in document["plots"]
               for p in ([plot] if isinstance(plot, str) else next(iter(plot.values()))["y"]))
    assert list(stages)[0].startswith("fetch_")
    train = stages["fetch_coco_train2014"]
    assert train["outs"] == ["data/raw/coco/images/train2014"] and "deps" not in train
    assert train["params"] == [{"optima/data/manifest.yaml": ["resources.coco_train2014"]}]
    assert "data/raw/vqa/v2_mscoco_train2014_annotations.json" in stages["fetch_vqa_v2"]["outs"]
    assert "data/raw/flickr30k/flickr30k-images.verified.json" in stages["prepare-snli_ve"]["deps"]
    assert "data/raw/coco/images/val2014" in stages["prepare-vqa"]["deps"]
