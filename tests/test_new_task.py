"""A fifth task, registered from this test alone, runs prepare -> finetune -> distill -> evaluate -> collect ->
tables through the CLI without any edit of library code (docs/adding-a-task.md).

The toy task lives in a module this test writes into a temporary folder; ``OPTIMA_TASKS`` names it, so every
``optima`` process (as the workflow starts them) imports and registers it. It is SNLI-VE's format under its own
name, display name and table column, with a two-class label set: entailment against the rest."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

TOY_MODULE = textwrap.dedent('''
    """A toy task: is the hypothesis entailed by the image? (SNLI-VE's format, two classes)."""
    import json

    from optima.tasks import Column, register_task
    from optima.tasks.snli_ve import SnliVeTask


    class ToyEntailment(SnliVeTask):
        name = "toy_entail"
        display_name = "Toy entailment"
        table_order = 10
        fixed_classes = 3  # the SNLI-VE loader's label set; the generator below uses two of them
        columns = (Column("toy_entail", "toy_entail", "accuracy", "Toy acc.", 100.0, True),)

        def write_synthetic(self, cfg, split, out):
            counts = super().write_synthetic(cfg, split, out)
            path = out / self.annotation_files(split)["examples"]
            records = [json.loads(line) for line in path.read_text().splitlines()]
            for record in records:  # entailment or not: neutral folds into contradiction
                if record["gold_label"] == "neutral":
                    record["gold_label"] = "contradiction"
            path.write_text("".join(json.dumps(r) + "\\n" for r in records))
            return counts


    register_task(ToyEntailment())
''')


def _verb(env, *args):
    proc = subprocess.run([sys.executable, "-m", "optima", *map(str, args)], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, f"optima {' '.join(map(str, args))}:\n{proc.stderr[-3000:]}"
    return proc


@pytest.mark.very_slow  # prepare, distill, evaluate and tables of a registered toy task
def test_a_toy_fifth_task_runs_the_pipeline_without_library_edits(tmp_path, smoke_config_path, smoke_teacher):
    plugin = tmp_path / "plugin"
    plugin.mkdir()
    (plugin / "toy_task.py").write_text(TOY_MODULE)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "OPTIMA_TASKS": "toy_task",
           "PYTHONPATH": os.pathsep.join([str(plugin), os.environ.get("PYTHONPATH", "")])}

    config = yaml.safe_load(Path(smoke_config_path).read_text())
    config["tasks"] = ["toy_entail"]
    config["paths"] = {"data": str(tmp_path / "data"), "results": str(tmp_path / "results")}
    config["distill"]["run"] = ["layerwise", "optima"]
    config["distill"]["seeds"] = [0]
    config["finetune"]["overrides"] = {"toy_entail": {"steps": 4}}
    config_path = tmp_path / "toy.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    data, results = tmp_path / "data" / "toy_entail", tmp_path / "results"
    _verb(env, "prepare", "toy_entail", "--config", config_path)
    labels = {json.loads(line)["gold_label"] for line in (data / "snli_ve_train.jsonl").read_text().splitlines()}
    assert labels == {"entailment", "contradiction"}  # the toy task's own generator ran

    teacher = results / "teachers" / "toy_entail"
    _verb(env, "finetune", "toy_entail", "--config", config_path, "--data", data,
          "--init", smoke_teacher["root"] / "pretrain", "--out", teacher, "--threads", 1)
    students = results / "students" / "toy_entail"
    _verb(env, "distill", "toy_entail", "--config", config_path, "--data", data, "--teacher", teacher,
          "--method", "layerwise", "--method", "optima", "--seed", 0, "--out-root", students, "--threads", 1)
    runs = [teacher, students / "layerwise" / "seed0", students / "optima" / "seed0"]
    _verb(env, "evaluate", "--config", config_path, "--data", data, *[a for r in runs for a in ("--run", r)],
          "--threads", 1)
    metrics = [r / "metrics_test.json" for r in runs]
    assert all(json.loads(m.read_text())["task"] == "toy_entail" for m in metrics)
    _verb(env, "collect", "--config", config_path, *metrics)
    _verb(env, "tables", "--config", config_path)

    main = (results / "tables" / "main.md").read_text()
    assert "Toy acc." in main, main  # the task's own column, from its registry entry
    for method in ("Teacher", "Layerwise", "OPTIMA"):
        assert method in main
    # without the plugin the task is unknown, and the error names it
    bare = {k: v for k, v in env.items() if k != "OPTIMA_TASKS"}
    proc = subprocess.run([sys.executable, "-m", "optima", "prepare", "toy_entail", "--config", config_path],
                          capture_output=True, text=True, env=bare)
    assert proc.returncode == 2 and "unknown task 'toy_entail'" in proc.stderr
