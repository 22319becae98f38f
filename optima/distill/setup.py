"""A student's training setup, built once for every caller (``optima distill``, ``optima teacher-targets``,
``optima bench step``): the student made from the teacher, its distillation objective, the task's training
set, and the method's policy, probe and bandit rounds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


@dataclass
class StudentSetup:
    """What trains one student: ``objective`` (holds the student and the teacher), ``layer_map`` (student
    layer -> teacher layer per module), ``rounds`` (the policy's bandit rounds, None for a method without a
    policy: every module every step) and ``probe`` (None when no reward needs it)."""

    objective: Any
    student: Any
    layer_map: dict
    rounds: Any = None
    probe: Any = None


def build_objective(task: str, config: dict, teacher, num_classes, kd_weight: float, temperature: float,
                    layer_weight: float):
    """``(objective, student, layer_map)``: the student made from the teacher through the layer map, its
    head copied from the teacher's, and the distillation objective with the config's loss settings."""
    from optima.distill.objectives import DistillationObjective
    from optima.tasks import create_task_model
    from optima.models.student import make_student
    from optima.tasks import get_task

    section, model_cfg = config["distill"], config["model"]
    student_coca, layer_map = make_student(teacher.coca, model_cfg["student_layers"], model_cfg["layer_map"])
    student = create_task_model(task, student_coca, num_classes)
    student.head.load_state_dict(teacher.head.state_dict())  # same widths: start from the teacher's head
    if section["grad_checkpointing"]:
        # activation checkpointing: each transformer block's activations are recomputed in backward instead
        # of kept (open_clip's non-reentrant checkpoint; the feature taps ignore the recomputation)
        student.coca.set_grad_checkpointing(True)
    objective = DistillationObjective(
        student, teacher, layer_map, kd_weight, temperature, layer_weight,
        layer_reduction=section["layer_reduction"], vision_pooler=section["vision_pooler"],
        kd_kind=get_task(task).kd_kind(config))
    return objective, student, layer_map


def training_set(task: str, config: dict, data_dir, tokenizer):
    """The task's full training set, its items carrying their index (for cached teacher targets)."""
    from optima.tasks import build_dataset
    from optima.distill.targets import IndexedDataset

    data_cfg = config["data"]
    return IndexedDataset(build_dataset(task, data_dir, "train", tokenizer, data_cfg["image_size"], train=True,
                                        cache_images=data_cfg["cache_images"]))


def build_student(task: str, method: dict, config: dict, teacher, dataset, probe_idx, runtime, seed: int,
                  attach_targets: Callable[[Any], None] | None = None, heldout_idx=(),
                  replay_counts: Callable[[str], list[int]] | None = None) -> StudentSetup:
    """The student of ``method`` (``optima.config.method_spec``) with its objective on the runtime's device,
    its teacher targets attached (``attach_targets(objective)``, before the probe measures anything), and
    the method's rounds: the policy seeded with ``seed`` and, when its rewards (or ``distill.log_rewards``)
    need them, the probe on ``dataset[probe_idx]`` and the held-out set ``dataset[heldout_idx]``; the oracle's
    rounds for policy ``oracle``; ``replay_counts(source)``: the arm counts a ``replay`` policy replays. The
    caller seeds torch first: the student's new layers draw from it."""
    from optima.bandits.registry import build_method_policy
    from optima.coca_modules import MODULES
    from optima.distill.probe import HeldoutProbe, Probe
    from optima.distill.rounds import HELDOUT_REWARDS, PROBE_REWARDS, RoundController
    from optima.distill.sampling import fixed_batch
    from optima.errors import ConfigError
    from optima.runtime import to_device

    section = config["distill"]
    objective, student, layer_map = build_objective(
        task, config, teacher, getattr(dataset, "num_classes", None), method["kd_weight"], method["temperature"],
        method["layer_weight"])
    objective.to(runtime.device)
    if attach_targets is not None:
        attach_targets(objective)
    setup = StudentSetup(objective, student, layer_map)
    if method["policy"] == "none":
        objective.active = tuple(MODULES)
        return setup

    def set_active(modules):
        objective.active = tuple(modules)

    heldout = None
    wants_heldout = method["reward"] in HELDOUT_REWARDS or method["policy"] == "oracle"
    if len(heldout_idx) and (wants_heldout or section["log_rewards"]):
        heldout = HeldoutProbe(student, dataset, list(heldout_idx), runtime, chunk=section["batch_size"])
    elif wants_heldout:
        raise ConfigError(f"distill.methods.{method['name']}: {'the oracle' if method['policy'] == 'oracle' else 'the heldout reward'} "
                          "needs a held-out set: set distill.heldout_size > 0")
    if method["policy"] == "oracle":
        from optima.bandits.registry import make_arms
        from optima.distill.oracle import OracleRounds

        setup.rounds = OracleRounds(make_arms(MODULES, method["arms"]), method["round_steps"], heldout.loss,
                                    set_active)
        return setup
    if method["policy"] == "replay" and method["options"].get("counts") is None:
        options = {k: v for k, v in method["options"].items() if k != "source"}
        method = {**method, "options": {**options, "counts": replay_counts(method["options"]["source"])}}
    policy, arms = build_method_policy(method, MODULES, seed)
    # the probe costs time: only a policy that learns from rewards (or a request to log them) pays for it
    measure = policy.uses_rewards or section["log_rewards"]
    if measure and (method["reward"] in PROBE_REWARDS or section["log_rewards"]):
        setup.probe = Probe.from_config(objective, to_device(fixed_batch(dataset, probe_idx), runtime.device),
                                        runtime, section)
    setup.rounds = RoundController(policy, arms, method["round_steps"], method["reward"],
                                   setup.probe.losses if setup.probe else None, set_active, runtime, measure=measure,
                                   terms=objective.weighted_terms, heldout_loss=heldout.loss if heldout else None)
    return setup
