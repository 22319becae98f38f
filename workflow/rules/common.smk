# Shared by all the workflow files: which config file the verbs get, load-time validation, run paths,
# and the per-job config fingerprints. Functions only (no rules), as `snakemake --lint` asks.

import hashlib
import json
import os
import re
import shlex
import warnings
from pathlib import Path

import yaml
from snakemake.exceptions import WorkflowError
from snakemake.logging import logger
from snakemake.utils import validate

from optima.tasks import task_names
from optima.config import ConfigWarning, load_config
from optima.data.fetch import load_manifest as load_fetch_manifest
from optima.data.fetch import manual_inputs as fetch_manual_inputs
from optima.data.fetch import output_is_dir as fetch_output_is_dir
from optima.data.fetch import prepare_inputs as fetch_prepare_inputs
from optima.data.fetch import rule_outputs as fetch_rule_outputs
from optima.errors import ConfigError
from optima.runs import CHECKSUMS, RUN_FILES, stored_teacher_dir
from optima.paper.figures import planned_figures
from optima.paper.tables import planned_tables

# --------------------------------------------------------------------------------------------
# Which config file the verbs read.
#
# Every scale file is complete, so the verbs receive ONE file: the first `--configfile` given on
# the command line, else the `configfile:` of the Snakefile (params.yaml). Whatever else the user
# gave Snakemake (more --configfile overlays, `--config KEY=VALUE`) is turned into the verbs'
# `--set KEY.PATH=VALUE` arguments, so the workflow and every verb see the same config.
# Snakemake's own `config` (params.yaml deep-merged with the overlays) is then replaced by that
# config: a scale file that defines fewer methods than params.yaml must not inherit params.yaml's.
# --------------------------------------------------------------------------------------------


def _relative(path):
    path = Path(path).absolute()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _yaml_text(value, typed):
    """`value` as one-line YAML. Snakemake parses nested `--config` values with YAML's BaseLoader,
    so their scalars are the strings the user typed: emit those unquoted to get their YAML type back."""
    if isinstance(value, dict):
        items = ", ".join(f"{k}: {_yaml_text(v, typed)}" for k, v in value.items())
        return f"{{{items}}}"
    if isinstance(value, (list, tuple)):
        items = ", ".join(_yaml_text(v, typed) for v in value)
        return f"[{items}]"
    if isinstance(value, str) and not typed:
        return value
    return json.dumps(value)


def _leaf_overrides(override, base, typed, prefix=()):
    """Flatten an overlay mapping into (dotted key, YAML value) pairs, stopping at keys the base
    config lacks (so a new method is passed whole: distill.methods.optima-w4={policy: optima, ...})."""
    for key, value in override.items():
        path = prefix + (str(key),)
        if isinstance(value, dict) and isinstance(base, dict) and isinstance(base.get(key), dict):
            yield from _leaf_overrides(value, base[key], typed, path)
        else:
            yield ".".join(path), _yaml_text(value, typed)


def _config_source():
    cli_files = [Path(p) for p in workflow.overwrite_configfiles]
    base_file = cli_files[0] if cli_files else Path(workflow.configfiles[0] if workflow.configfiles else "params.yaml")
    try:
        base = yaml.safe_load(base_file.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise WorkflowError(f"{base_file}: cannot read config file: {exc}")
    overrides = []
    for overlay in cli_files[1:]:
        overrides += _leaf_overrides(yaml.safe_load(overlay.read_text()) or {}, base, typed=True)
    overrides += _leaf_overrides(dict(workflow.config_settings.config), base, typed=False)
    return _relative(base_file), [f"{key}={value}" for key, value in overrides]


CONFIG_FILE, CONFIG_OVERRIDES = _config_source()
CONFIG_ARGS = " ".join(
    [f"--config {shlex.quote(CONFIG_FILE)}"] + [f"--set {shlex.quote(item)}" for item in CONFIG_OVERRIDES]
)


def config_args(wildcards, input):
    """The verbs' `--config FILE --set ...` arguments, shell-quoted (a job's `params.config`).

    Taking `input` makes Snakemake count this param as derived and leave it out of its `params`
    rerun trigger: what a job reads of the config is tracked by its `fingerprint` param instead,
    so an override that does not concern a job (or a renamed but identical file) does not rerun it.
    """
    return CONFIG_ARGS


try:
    with warnings.catch_warnings(record=True) as _config_warnings:
        warnings.simplefilter("always", ConfigWarning)
        # schema + cross-references (method names too: optima.config.check_method_name), naming the key
        _loaded = load_config(CONFIG_FILE, CONFIG_OVERRIDES)
    # the keys as written: what a job's fingerprint and DVC's params name (a default is not a DVC param)
    WRITTEN_CONFIG = load_config(CONFIG_FILE, CONFIG_OVERRIDES, defaults=False)
except ConfigError as exc:
    raise WorkflowError(f"invalid config: {exc}")
for _warning in _config_warnings:  # e.g. a policy whose memory is longer than its run
    logger.warning(f"config warning: {_warning.message}")
config.clear()
config.update(_loaded)
validate(config, "../schemas/config.schema.yaml", set_default=False)  # defaults: optima.config.with_defaults

# distillation jobs: one per task (default on a CPU: its students in turn) or one per student
DISTILL_GROUP = config["distill"]["group_by"]
# evaluation jobs: one per task (default; a tiny model scores faster than a job starts) or one per run
EVAL_GROUP = config["eval"]["group_by"]

# dvc.yaml is generated for params.yaml as it is: only that run is recorded in dvc.lock (rule dvc_lock)
DVC_TRACKED = CONFIG_FILE == "params.yaml" and not CONFIG_OVERRIDES and os.path.isdir(".dvc")

TASKS = list(config["tasks"])
METHODS = list(config["distill"]["run"])
SEEDS = [int(s) for s in config["distill"]["seeds"]]
SPLIT = config["eval"]["split"]
DATA = config["paths"]["data"].rstrip("/")
RESULTS = config["paths"]["results"].rstrip("/")
# distill.teacher_seed: `shared` (one teacher per task, fine-tuned with the global seed) or `per_seed`
# (student seed s distils from the teacher fine-tuned with seed s: the teacher is part of each replicate)
TEACHER_PER_SEED = config["distill"]["teacher_seed"] == "per_seed"
TEACHER_SEEDS = SEEDS if TEACHER_PER_SEED else [int(config["seed"])]


def _logs_root(results):
    """Logs mirror the results root: results -> logs, results/smoke -> logs/smoke."""
    rel = _relative(results)
    if rel == "results":
        return "logs"
    if rel.startswith("results/"):
        return f"logs/{rel[len('results/'):]}"
    return f"logs/{re.sub(r'[^A-Za-z0-9_.-]+', '_', rel).strip('_')}"


LOGS = _logs_root(RESULTS)

wildcard_constraints:
    task="|".join(task_names()),  # any task, not only config["tasks"]: pretraining reads the captions data
    split="train|val|test",
    method="|".join(re.escape(m) for m in METHODS),
    seed=r"\d+",

# --------------------------------------------------------------------------------------------
# Run directories (docs/runs.md): optima.runs.RUN_FILES are the files of a training run that later jobs read or
# that are results; checkpoints/ is left out on purpose: it is resume state, not a result.
# --------------------------------------------------------------------------------------------


def pretrain_dir():
    return f"{RESULTS}/teachers/pretrain"


def teacher_dir(task="{task}", seed="{seed}"):
    """A task's fine-tuned teacher; under distill.teacher_seed: per_seed, the one of student seed `seed`."""
    return f"{RESULTS}/teachers/{task}/seed{seed}" if TEACHER_PER_SEED else f"{RESULTS}/teachers/{task}"


def teacher_job_name(task="{task}", seed="{seed}"):
    """A teacher job's log name: vqa, or vqa_seed3 under distill.teacher_seed: per_seed."""
    return f"{task}_seed{seed}" if TEACHER_PER_SEED else task


def finetune_inputs(wildcards):
    """The data, and the pre-trained teacher (finetune.mode: train) or the stored fine-tuned one (load)."""
    if config["finetune"]["mode"] == "load":
        stored = stored_teacher_dir(config["finetune"]["teachers"] or "finetune.teachers", wildcards.task,
                                    wildcards.get("seed"), TEACHER_PER_SEED)
        return {"data": f"{DATA}/{wildcards.task}",
                "stored": [f"{stored}/{name}" for name in (*RUN_FILES, CHECKSUMS)]}
    return {"data": f"{DATA}/{wildcards.task}", "init": f"{pretrain_dir()}/model.safetensors",
            "init_config": f"{pretrain_dir()}/model_config.json"}


def teacher_seed_arg(wildcards):
    """The fine-tuning verb's --seed under distill.teacher_seed: per_seed (else none: the config's seed)."""
    return f" --seed {wildcards.seed}" if TEACHER_PER_SEED else ""


def targets_dir(task="{task}", seed="{seed}"):
    return f"{teacher_dir(task, seed)}/targets"


def teacher_cache_enabled():
    return config["distill"]["teacher_cache"]["mode"] != "never"


def targets_input(wildcards):
    """The task's teacher targets, when distill.teacher_cache computes them once (else nothing)."""
    return targets_dir(wildcards.task, wildcards.get("seed")) if teacher_cache_enabled() else []


def students_root(task="{task}"):
    return f"{RESULTS}/students/{task}"


def student_dir(task="{task}", method="{method}", seed="{seed}"):
    return f"{students_root(task)}/{method}/seed{seed}"


def task_student_seeds():
    """The seeds one distill_task job trains (distill.group_by: task): all of them, or under
    distill.teacher_seed: per_seed the job's own (its students share that seed's teacher)."""
    return ["{seed}"] if TEACHER_PER_SEED else SEEDS


def task_student_outputs():
    """Every run file of a distill_task job's students (distill.group_by: task)."""
    return [f"{student_dir('{task}', method, seed)}/{name}"
            for method in METHODS for seed in task_student_seeds() for name in RUN_FILES]


def task_student_runs(wildcards):
    """The distill verb's --method/--seed arguments for one distill_task job."""
    seeds = [wildcards.seed] if TEACHER_PER_SEED else SEEDS
    return " ".join([f"--method {m}" for m in METHODS] + [f"--seed {s}" for s in seeds])


def run_outputs(run_dir, metrics=True):
    """Named outputs of a training job: model=..., train_log=..., metrics=... (pre-training writes
    no metrics.json: it has no task to evaluate)."""
    names = RUN_FILES if metrics else [name for name in RUN_FILES if name != "metrics.json"]
    return {name.split(".")[0]: f"{run_dir}/{name}" for name in names}


def run_dir_of(wildcards, output):
    """A training verb's --out: the run directory holding the declared outputs."""
    return os.path.dirname(output.model)


def task_run_dirs(task="{task}"):
    """A task's teacher(s), then its students (every method x seed the pipeline runs)."""
    teachers = [teacher_dir(task, seed) for seed in TEACHER_SEEDS]
    return teachers + [student_dir(task, method, seed) for method in METHODS for seed in SEEDS]


def task_models():
    return [f"{run}/model.safetensors" for run in task_run_dirs()]


def task_metrics_outputs():
    return [f"{run}/metrics_{{split}}.json" for run in task_run_dirs()]


def evaluated_runs():
    """Every run directory `evaluate` scores: the teacher(s) of each task, one student per task x method x seed."""
    runs = [teacher_dir(task, seed) for task in TASKS for seed in TEACHER_SEEDS]
    return runs + [student_dir(task, method, seed) for task in TASKS for method in METHODS for seed in SEEDS]


def eval_metrics_files():
    return [f"{run}/metrics_{SPLIT}.json" for run in evaluated_runs()]


def validation_metrics_files():
    """Every run's end-of-training validation metrics (metrics.json): settings are chosen on these
    (none when the pipeline evaluates on val itself: runs.csv holds one row set per run and split)."""
    return [] if SPLIT == "val" else [f"{run}/metrics.json" for run in evaluated_runs()]


def student_train_logs():
    """What the figures read besides runs.csv (selection frequencies, rewards, loss curves)."""
    return [f"{student_dir(t, m, s)}/train_log.csv" for t in TASKS for m in METHODS for s in SEEDS]


def paper_outputs(kind, file_names, report_format):
    """Named outputs of `tables` / `figures`: every file the verb writes for this config (the verb
    says which: planned_tables / planned_figures), the `report_format` ones flagged for the report
    with their caption from workflow/report/<kind>/<name>.rst."""
    outputs = {}
    for file_name in file_names:
        name, fmt = file_name.rsplit(".", 1)
        path = f"{RESULTS}/{kind}/{file_name}"
        if fmt == report_format:
            path = report(path, caption=f"../report/{kind}/{name}.rst", category=kind.capitalize(), labels={"name": name})
        outputs[f"{name}_{fmt}"] = path
    return outputs


def out_dir_of(wildcards, output):
    return os.path.dirname(output[0])


def pretrained_input(wildcards):
    """A local pretrained checkpoint is an input (its change reruns the teacher); an open_clip tag is not, nor anything
    under `pretrain.mode: train` (pre-training from scratch does not read it)."""
    pretrained = config["model"]["pretrained"] if config["pretrain"]["mode"] == "load" else None
    return [pretrained] if pretrained and os.path.exists(pretrained) else []


# The fetch manifest (optima/data/manifest.yaml, or $OPTIMA_FETCH_MANIFEST): one `fetch_<resource>`
# rule per resource (workflow/rules/fetch.smk).
try:
    FETCH_MANIFEST = load_fetch_manifest()
except ConfigError as exc:
    raise WorkflowError(f"invalid fetch manifest: {exc}")


def official_inputs(wildcards):
    """At paper scale the official files of a task are the inputs of its `prepare` job: each configured
    path as the fetch output(s) that make it (a manual folder as its verification record), or the path
    itself when no manifest resource makes it (files a lab supplies from elsewhere)."""
    if config["data"]["source"] != "official":
        return []
    return fetch_prepare_inputs(FETCH_MANIFEST, config, wildcards.task)


# --------------------------------------------------------------------------------------------
# Resources. Threads per training job default to 1: on a small CPU several single-threaded jobs
# beat one multi-threaded job (tiny models scale badly across threads); profiles override it. The
# exception is pretraining, the one job nothing else can run beside.
# --------------------------------------------------------------------------------------------


def gpus_per_job():
    return 1 if config["runtime"]["device"] == "cuda" else 0


def launcher(wildcards, resources):
    """`optima`, or `torchrun ... -m optima` when a job was given several GPUs (profiles: set-resources).
    A GPU job runs under `python -m optima.gpus N --`, which gives it N GPUs no other job of the machine
    holds (CUDA_VISIBLE_DEVICES; a no-op under SLURM, which chose the GPUs already)."""
    gpus = int(resources.get("gpu", 0) or 0)
    if gpus > 1:
        return f"python -m optima.gpus {gpus} -- torchrun --standalone --nproc-per-node {gpus} -m optima"
    if gpus == 1:
        return "python -m optima.gpus 1 -- optima"
    return "optima"


def single_process_launcher(wildcards, resources):
    """`optima` for a verb that runs as one process (evaluation), on GPUs of its own when it has any."""
    gpus = int(resources.get("gpu", 0) or 0)
    return f"python -m optima.gpus {gpus} -- optima" if gpus >= 1 else "optima"


# --------------------------------------------------------------------------------------------
# Config fingerprints. Each job declares the config keys it reads; their values' hash is the job's
# `params: fingerprint`, so Snakemake's `params` rerun trigger reruns exactly the jobs whose keys
# changed (the config FILE path alone would never change). The same key lists are the DVC stages'
# `params:` (workflow/scripts/dvc_yaml.py), so `dvc exp run -S distill.optima.window=10` retrains
# only the students of methods that read `distill.optima`.
# --------------------------------------------------------------------------------------------
DISTILL_RUN_KEYS = ("methods", "run", "seeds", "optima")  # per-method keys are added by method_keys()
# training ends with a validation evaluation (metrics.json), so it reads eval.*, but neither the
# pipeline's evaluation split, the evaluation batch size nor METEOR in the pipeline's evaluation
# (eval.meteor; training has eval.meteor_during_training) changes what it trains
TRAIN_IGNORED_EVAL_KEYS = ("split", "batch_size", "meteor")


def _present(section, names=None, exclude=()):
    node = WRITTEN_CONFIG.get(section) or {}
    names = node.keys() if names is None else names
    return [f"{section}.{name}" for name in names if name in node and name not in exclude]


def _model_keys():
    # all of `data`: training reads more than the prepared files (e.g. the synthetic image count
    # bounds the probe, data.image_size the inputs)
    return ["seed", "data", "model"] + _present("runtime", ("device", "precision"))


def method_keys(method):
    keys = _present("distill", exclude=DISTILL_RUN_KEYS) + [f"distill.methods.{method}"]
    if config["distill"]["methods"][method]["policy"] == "optima" and "optima" in WRITTEN_CONFIG["distill"]:
        keys.append("distill.optima")
    return keys


def config_keys(rule_name, wildcards):
    """Dotted config keys a job of the named rule reads (beyond its input files)."""
    if rule_name == "prepare":
        return ["data"]
    if rule_name == "pretrain":
        return _model_keys() + ["pretrain"]
    if rule_name == "finetune":
        return _model_keys() + ["finetune"] + _present("eval", exclude=TRAIN_IGNORED_EVAL_KEYS)
    if rule_name == "teacher_targets":  # what the targets are: layer map, pooler, cache settings, data
        return _model_keys() + _present("distill", ("teacher_cache", "vision_pooler", "vqa_kd", "steps", "batch_size",
                                                     "seeds", "probe_size", "probe_seed"))  # which examples
    if rule_name == "distill":
        return _model_keys() + method_keys(wildcards.method) + _present("eval", exclude=TRAIN_IGNORED_EVAL_KEYS)
    if rule_name == "distill_task":  # every method's keys, each once
        keys = _model_keys() + [key for method in METHODS for key in method_keys(method)]
        return list(dict.fromkeys(keys)) + _present("eval", exclude=TRAIN_IGNORED_EVAL_KEYS)
    if rule_name in ("evaluate_teacher", "evaluate_student", "evaluate_task"):
        return ["data", "eval"] + _present("runtime", ("device", "precision"))
    if rule_name in ("tables", "figures"):  # method order and policies, and the split they report
        return ["tasks", "distill.methods", "distill.run", "distill.seeds", "eval.split"]
    return []


def config_value(key):
    node = WRITTEN_CONFIG
    for part in key.split("."):
        node = node[part]
    return node


def fingerprint(rule_name):
    def _fingerprint(wildcards):
        values = {key: config_value(key) for key in config_keys(rule_name, wildcards)}
        return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:16]

    return _fingerprint
