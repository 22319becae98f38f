"""Distillation losses (the TED recipe of OPTIMA's first author, see docs/paper.md).

- ``prediction_kd``: KL(teacher || student) between temperature-softened predictions, times T^2 so its
  gradient scale does not depend on T (Hinton et al. 2015). ``kind="softmax"``: one categorical over the
  last dimension; ``kind="sigmoid"``: an independent Bernoulli per output, KL summed over outputs (the
  VQA head, trained with per-answer sigmoid BCE summed over answers). Averaged over examples, or over
  the real token positions when a mask is given (captioning).
- ``hidden_mse``: mean squared error between student layer i's hidden state (through a learned linear
  map when widths differ) and its mapped teacher layer's, averaged over the real (non-padding) tokens
  and the width; a module's value is the mean over its mapped layers (vision: and, with ``pooler``, the
  attentional pooler's output tokens, which are all the multimodal decoder sees of the image). The
  total (``reduction``): ``module_sum`` adds every chosen module's value, so each distilled module has
  the same weight whichever other modules are distilled with it (layerwise = the sum of the three
  single-module terms); ``layer_mean`` is the mean over all mapped layers of the chosen modules (TED's
  ``mean_l``; a module's weight then depends on its layer count and on the other chosen modules).
"""

from __future__ import annotations

from typing import Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from optima.coca_modules import MODULES
from optima.errors import ConfigError
from optima.models.taps import POOLER_KEY, feature_key
from optima.runtime import at_least_float32


KD_KINDS = ("softmax", "sigmoid")
LAYER_REDUCTIONS = ("module_sum", "layer_mean")


def prediction_kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float,
                  mask: torch.Tensor | None = None, kind: str = "softmax") -> torch.Tensor:
    """``T^2 * KL(p_t || p_s)`` of the temperature-softened predictions, averaged over the (masked-in)
    leading positions. ``softmax``: p = softmax(logits / T) over the last dimension; ``sigmoid``:
    p = sigmoid(logits / T) per output, the Bernoulli KLs summed over the last dimension.
    ``mask``: bool, the logits' shape without the last dimension."""
    if temperature <= 0:
        raise ConfigError(f"distill.temperature must be > 0, got {temperature}")
    if kind not in KD_KINDS:
        raise ConfigError(f"prediction KD kind must be one of {', '.join(KD_KINDS)}, got {kind!r}")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {list(student_logits.shape)} and teacher logits "
                         f"{list(teacher_logits.shape)} differ in shape")
    s = at_least_float32(student_logits) / temperature
    t = at_least_float32(teacher_logits.detach()) / temperature
    if kind == "softmax":
        log_p_student = F.log_softmax(s, dim=-1)
        log_p_teacher = F.log_softmax(t, dim=-1)
        per_position = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(dim=-1)
    else:  # Bernoulli KL per output: p log(p/q) + (1-p) log((1-p)/(1-q)), in log-sigmoids for stability
        log_p, log_not_p = F.logsigmoid(t), F.logsigmoid(-t)
        log_q, log_not_q = F.logsigmoid(s), F.logsigmoid(-s)
        per_position = (log_p.exp() * (log_p - log_q) + log_not_p.exp() * (log_not_p - log_not_q)).sum(dim=-1)
    if mask is not None:
        if mask.shape != per_position.shape:
            raise ValueError(f"KD mask shape {list(mask.shape)} does not match logits {list(student_logits.shape)}")
        mask = mask.to(per_position.dtype)
        per_position = per_position * mask
        return per_position.sum() / mask.sum().clamp_min(1.0) * temperature ** 2
    return per_position.mean() * temperature ** 2


class LayerProjections(nn.Module):
    """Learned linear maps student width -> teacher width, one per (module, student layer); identity where
    the widths match. Kept outside the student so the saved student stays a plain open_clip CoCa.

    Initialised to the identity (padded/truncated) so distillation starts from the unprojected MSE.
    """

    def __init__(self, student_widths: Mapping[str, int], teacher_widths: Mapping[str, int],
                 layer_map: Mapping[str, list[int]]):
        super().__init__()
        self.maps = nn.ModuleDict()
        for module in MODULES:
            if module not in layer_map or student_widths[module] == teacher_widths[module]:
                continue
            for i in range(len(layer_map[module])):
                linear = nn.Linear(student_widths[module], teacher_widths[module])
                with torch.no_grad():
                    linear.weight.copy_(torch.eye(teacher_widths[module], student_widths[module]))
                    linear.bias.zero_()
                self.maps[f"{module}_{i}"] = linear  # ModuleDict keys may not contain "."

    @classmethod
    def between(cls, student: nn.Module, teacher: nn.Module, layer_map: Mapping[str, list[int]]) -> "LayerProjections":
        from optima.models.modules import module_widths

        return cls(module_widths(student), module_widths(teacher), layer_map)

    def forward(self, module: str, layer: int, hidden: torch.Tensor) -> torch.Tensor:
        linear = self.maps[f"{module}_{layer}"] if f"{module}_{layer}" in self.maps else None
        return hidden if linear is None else linear(hidden)


def masked_mse(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of (student - teacher)^2 over the positions where ``mask`` (B, T) is True and the width."""
    if student.shape != teacher.shape:
        raise ValueError(f"hidden states differ in shape: student {list(student.shape)}, "
                         f"teacher {list(teacher.shape)} (different widths need LayerProjections)")
    squared = (at_least_float32(student) - at_least_float32(teacher.detach())).pow(2).mean(dim=-1)  # (B, T)
    if mask is None:
        return squared.mean()
    mask = mask.to(squared.dtype)
    return (squared * mask).sum() / mask.sum().clamp_min(1.0)


def hidden_mse(student_feats: Mapping[str, torch.Tensor], teacher_feats: Mapping[str, torch.Tensor],
               layer_map: Mapping[str, list[int]], modules: Iterable[str],
               masks: Mapping[str, torch.Tensor] | None = None,
               projections: LayerProjections | None = None, reduction: str = "module_sum",
               pooler: bool = False) -> dict[str, torch.Tensor]:
    """``{"loss": total, <module>: mean over that module's terms}``, the total by ``reduction``
    (``module_sum``: the sum of the module values; ``layer_mean``: the mean over all terms).

    Student features are keyed ``"<module>.<student layer>"``, teacher features
    ``"<module>.<layer_map[module][student layer]>"`` (as ``FeatureTaps`` keys them); ``masks`` per module
    (True at real tokens; a missing module is unmasked). ``pooler``: the vision module also matches the
    attentional pooler's output tokens (``POOLER_KEY`` in both feature dicts).
    """
    if reduction not in LAYER_REDUCTIONS:
        raise ConfigError(f"distill.layer_reduction must be one of {', '.join(LAYER_REDUCTIONS)}, got {reduction!r}")
    masks = masks or {}
    out, terms = {}, []
    for module in modules:
        if module not in layer_map:
            raise ConfigError(f"hidden_mse: module {module!r} has no layer map (mapped: {', '.join(layer_map)})")
        values = []
        for i, j in enumerate(layer_map[module]):
            s_key, t_key = feature_key(module, i), feature_key(module, j)
            if s_key not in student_feats:
                raise ConfigError(f"hidden_mse: student feature {s_key!r} was not captured "
                                  f"(captured: {', '.join(sorted(student_feats)) or 'none'})")
            if t_key not in teacher_feats:
                raise ConfigError(f"hidden_mse: teacher feature {t_key!r} was not captured "
                                  f"(captured: {', '.join(sorted(teacher_feats)) or 'none'})")
            student = student_feats[s_key]
            if projections is not None:
                student = projections(module, i, student)
            values.append(masked_mse(student, teacher_feats[t_key], masks.get(module)))
        if module == "vision" and pooler:
            for feats, who in ((student_feats, "student"), (teacher_feats, "teacher")):
                if POOLER_KEY not in feats:
                    raise ConfigError(f"hidden_mse: the {who}'s attentional-pooler tokens ({POOLER_KEY!r}) were "
                                      "not captured (does its vision tower have an attentional pooler?)")
            values.append(masked_mse(student_feats[POOLER_KEY], teacher_feats[POOLER_KEY], None))
        if values:
            out[module] = torch.stack(values).mean()
            terms.extend(values)
    if not terms:
        raise ConfigError("hidden_mse: no modules to match")
    if reduction == "module_sum":
        out["loss"] = torch.stack([out[m] for m in modules if m in out]).sum()
    else:
        out["loss"] = torch.stack(terms).mean()
    return out
