"""Training objectives: ``forward(batch) -> dict`` of named losses with the total under ``"loss"``.

Only trained modules are parameters of an objective; the frozen teacher is held outside the module
tree, so DDP, the optimiser and checkpoints never see it.
"""

from __future__ import annotations

import torch
from torch import nn

from optima.coca_modules import MODULES


class TaskObjective(nn.Module):
    """Task loss only: teacher fine-tuning, and the student trained without distillation."""

    def __init__(self, task_model: nn.Module):
        super().__init__()
        self.model = task_model

    def forward(self, batch: dict) -> dict:
        loss = self.model.loss(self.model(batch), batch)["loss"]
        return {"loss": loss, "task_loss": loss}

    def item_counts(self, batch: dict) -> dict[str, int]:
        """How many items each loss term of ``batch`` averages over, known before the forward (gradient
        accumulation weights its micro-batches with these)."""
        return {"task_loss": self.model.item_counts(batch)["task"]}

    def assemble(self, terms: dict) -> dict:
        """The losses ``forward`` returns, from its terms (floats or tensors): here the task loss alone."""
        return {"task_loss": terms["task_loss"], "loss": terms["task_loss"]}


class _Frozen:
    """Holds a module without registering it as a submodule (not trained, not checkpointed)."""

    def __init__(self, module: nn.Module):
        self.module = module.eval().requires_grad_(False)


class DistillationObjective(nn.Module):
    """``task + kd_weight * prediction KD (T) + layer_weight * layer MSE of the active modules``.

    ``active`` is the set of modules whose layers are matched this step (chosen by the policy); the
    layer term of each active module is its mean layer MSE, and with ``layer_reduction="module_sum"``
    (the default) the active modules' terms are added, so every method gives a distilled module the
    same weight (``losses.hidden_mse``). ``vision_pooler``: the vision module's term also matches the
    attentional pooler's output tokens. ``kd_kind``: ``softmax`` or ``sigmoid`` (per-output
    Bernoulli KD, for a head trained with sigmoid BCE, i.e. VQA).
    The teacher runs in eval mode under no_grad and computes only what the active modules and the KD
    term need: its image tower alone for ``vision``, its text tower alone for ``text``, the full
    forward for ``multimodal`` or KD.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, layer_map: dict[str, list[int]],
                 kd_weight: float, temperature: float, layer_weight: float,
                 projections: nn.Module | None = None, layer_reduction: str = "module_sum",
                 vision_pooler: bool = True, kd_kind: str = "softmax"):
        super().__init__()
        self.student = student
        self.projections = projections
        self._teacher = _Frozen(teacher)
        self.layer_map = {m: list(layer_map[m]) for m in MODULES}
        self.kd_weight, self.temperature, self.layer_weight = kd_weight, temperature, layer_weight
        self.layer_reduction, self.vision_pooler, self.kd_kind = layer_reduction, vision_pooler, kd_kind
        self.active: tuple[str, ...] = tuple(MODULES)
        self.targets = None  # optima.distill.targets.TeacherTargets: the teacher's outputs, computed once

    @property
    def teacher(self) -> nn.Module:
        return self._teacher.module

    def train(self, mode: bool = True):
        super().train(mode)
        self._teacher.module.eval()  # the teacher never trains, not even dropout
        return self

    # -- pieces ---------------------------------------------------------------------------------
    def _student_layers(self, modules) -> dict[str, list[int]]:
        return {m: list(range(len(self.layer_map[m]))) for m in modules}

    def _teacher_layers(self, modules) -> dict[str, list[int]]:
        return {m: self.layer_map[m] for m in modules}

    def _pooler(self, layers) -> bool:
        return self.vision_pooler and "vision" in layers

    @torch.no_grad()
    def teacher_outputs(self, batch: dict, modules: tuple[str, ...], need_logits: bool) -> dict:
        from optima.models.taps import FeatureTaps

        teacher = self.teacher
        layers = self._teacher_layers(modules) if self.layer_weight > 0 else {}
        if self.targets is not None and "index" in batch:
            if self.targets.covers(batch["index"]):
                return self.targets.lookup(batch["index"], layers, need_logits, self._pooler(layers))
            self.targets.misses += 1  # an example the cache was not built for: compute it as below
        with FeatureTaps(teacher, layers, pooler=self._pooler(layers)) as taps:
            if need_logits or "multimodal" in layers:
                logits = teacher(batch)["logits"]
            else:
                logits = None
                teacher.run_towers(batch, vision="vision" in layers, text="text" in layers)
            return {"logits": logits, "features": dict(taps.features), "masks": dict(taps.masks)}

    def compute(self, batch: dict, modules: tuple[str, ...], teacher_out: dict | None = None,
                counts: dict | None = None) -> dict:
        """The losses on ``batch``. ``counts``: a dict filled with how many items each term averages over
        (examples or real tokens), so losses computed on chunks of a batch combine exactly
        (``combine_chunks``); the losses themselves do not depend on it."""
        from optima.distill.losses import hidden_mse, prediction_kd
        from optima.models.taps import FeatureTaps, feature_key

        use_layers = self.layer_weight > 0 and len(modules) > 0
        use_kd = self.kd_weight > 0
        layers = self._student_layers(modules) if use_layers else {}
        with FeatureTaps(self.student, layers, pooler=self._pooler(layers)) as taps:
            outputs = self.student(batch)
            student_features, student_masks = dict(taps.features), dict(taps.masks)
        task = self.student.loss(outputs, batch)["loss"]
        losses = {"task_loss": task}
        total = task
        if use_kd or use_layers:
            if teacher_out is None:
                teacher_out = self.teacher_outputs(batch, modules if use_layers else (), need_logits=use_kd)
        if use_kd:
            kd = prediction_kd(outputs["logits"], teacher_out["logits"], self.temperature,
                               mask=outputs.get("logits_mask"), kind=self.kd_kind)
            losses["kd_loss"] = kd
            total = total + self.kd_weight * kd
        if use_layers:
            mse = hidden_mse(student_features, teacher_out["features"], self.layer_map, modules,
                             masks=student_masks, projections=self.projections,
                             reduction=self.layer_reduction, pooler=self.vision_pooler)
            losses["layer_loss"] = mse["loss"]
            for module in modules:
                losses[f"layer_loss_{module}"] = mse[module]
            total = total + self.layer_weight * mse["loss"]
        losses["loss"] = total
        if counts is not None:
            counts["task_loss"] = self.student.loss_count(outputs, batch)
            if use_kd:
                mask = outputs.get("logits_mask")
                counts["kd_loss"] = int(mask.sum()) if mask is not None else outputs["logits"][..., 0].numel()
            for module in (m for m in modules if use_layers and f"layer_loss_{m}" in losses):
                # every term of a module averages over the same positions (its mask; vision and the pooler's
                # tokens: a fixed number per example), so the module's mean combines with one weight
                mask = student_masks.get(module)
                first = student_features[feature_key(module, 0)] if mask is None else None
                counts[f"layer_loss_{module}"] = int(mask.sum()) if mask is not None else first[..., 0].numel()
        return losses

    def combine_chunks(self, parts: list[tuple[dict, dict]], modules: tuple[str, ...]) -> dict[str, float]:
        """The losses of a whole batch from its chunks' ``(losses, counts)`` (``compute(..., counts=)``):
        each term is the count-weighted mean of its chunk values, as the unchunked mean over examples or
        real tokens would be; ``layer_loss`` and ``loss`` are rebuilt from the terms as ``compute`` adds them."""
        if len(parts) == 1:
            return {k: float(v) for k, v in parts[0][0].items()}
        out: dict[str, float] = {}
        for key in parts[0][1]:
            weight = sum(counts[key] for _, counts in parts)
            out[key] = sum(float(losses[key]) * counts[key] for losses, counts in parts) / max(weight, 1)
        return self.assemble(out, modules)

    def item_counts(self, batch: dict, modules: tuple[str, ...] | None = None) -> dict[str, int]:
        """The counts ``compute(batch, modules, counts=)`` reports, from the batch alone (before any forward):
        gradient accumulation (``optima.distill.loop``) weights each micro-batch's terms with them."""
        modules = self.active if modules is None else tuple(modules)
        items = self.student.item_counts(batch)
        out = {"task_loss": items["task"]}
        if self.kd_weight > 0:
            out["kd_loss"] = items["kd"]
        if self.layer_weight > 0:
            out.update({f"layer_loss_{m}": items[m] for m in modules})
        return out

    def assemble(self, terms: dict, modules: tuple[str, ...] | None = None) -> dict:
        """``terms`` (task, KD and per-module layer losses; floats or tensors) with ``layer_loss`` and ``loss``
        added as ``compute`` adds them. Linear in the terms, so weighted micro-batch terms assemble into
        the whole batch's loss."""
        modules = self.active if modules is None else tuple(modules)
        out = dict(terms)
        total = out["task_loss"]
        if "kd_loss" in out:
            total = total + self.kd_weight * out["kd_loss"]
        present = [m for m in modules if f"layer_loss_{m}" in out]
        if present:
            if self.layer_reduction == "module_sum":
                out["layer_loss"] = sum(out[f"layer_loss_{m}"] for m in present)
            else:  # layer_mean: the mean over every term, a module holding one term per mapped layer (+ pooler)
                counts = {m: len(self.layer_map[m]) + int(m == "vision" and self.vision_pooler) for m in present}
                out["layer_loss"] = sum(counts[m] * out[f"layer_loss_{m}"] for m in present) / sum(counts.values())
            total = total + self.layer_weight * out["layer_loss"]
        out["loss"] = total
        return out

    def weighted_terms(self, losses: dict[str, float]) -> dict[str, float]:
        """The objective's terms as they enter ``loss`` (their weights applied): ``task``, ``kd`` and one per
        module; they add up to ``losses["loss"]`` (a term the losses lack, or whose weight is 0, is 0).
        The reward decomposition splits a round's reward into these parts."""
        terms = {"task": float(losses["task_loss"]), "kd": self.kd_weight * float(losses.get("kd_loss", 0.0))}
        present = [m for m in MODULES if f"layer_loss_{m}" in losses]
        if self.layer_reduction == "module_sum":
            share = {m: 1.0 for m in present}
        else:  # layer_mean: a module weighs by its number of terms (mapped layers, + the vision pooler)
            counts = {m: len(self.layer_map[m]) + int(m == "vision" and self.vision_pooler) for m in present}
            share = {m: counts[m] / sum(counts.values()) for m in present}
        for module in MODULES:
            value = float(losses[f"layer_loss_{module}"]) * share[module] if module in present else 0.0
            terms[module] = self.layer_weight * value
        return terms

    def forward(self, batch: dict) -> dict:
        return self.compute(batch, self.active)
