"""A student CoCa derived from a teacher: fewer layers per module, same widths, initialised from the
teacher through a layer map.

The default map (TED, Liang et al. 2023) sends student layer i of a module with Ls layers to teacher layer
``round((i + 1) * Lt / Ls) - 1`` of its Lt layers, rounding halves up, so the last student layer always
matches the last teacher layer (Lt=4, Ls=2 -> [1, 3]; Lt=12, Ls=4 -> [2, 5, 8, 11]).
Everything outside the layers (patch/token/positional embeddings, CLS tokens, attentional poolers,
projections, final layer norms, logit_scale) is copied from the teacher. The student stays a plain
open_clip CoCa: its model config is the teacher's with the layer counts changed, recorded for saving.
"""

from __future__ import annotations

import copy
import math
from typing import Mapping

from torch import nn

from optima.coca_modules import MODULES
from optima.errors import ConfigError
from optima.models.factory import coca_from_config, load_weights, model_config
from optima.models.modules import num_layers, parse_layer_key, unwrap_model

# where each module's layer count lives in an open_clip CoCa config
_CONFIG_KEYS = {"vision": "vision_cfg", "text": "text_cfg", "multimodal": "multimodal_cfg"}


def default_layer_map(teacher_layers: int, student_layers: int) -> list[int]:
    """``round((i + 1) * Lt / Ls) - 1`` for each student layer i (halves round up; exact integer arithmetic)."""
    if teacher_layers < 1 or student_layers < 1:
        raise ConfigError(f"layer counts must be >= 1, got teacher {teacher_layers}, student {student_layers}")
    return [(2 * (i + 1) * teacher_layers + student_layers) // (2 * student_layers) - 1 for i in range(student_layers)]


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def resolve_layer_map(teacher_layers: Mapping[str, int], student_layers: float | Mapping[str, int] = 0.5,
                      layer_map: Mapping[str, list[int]] | None = None) -> dict[str, list[int]]:
    """The full ``{module: [teacher layer of student layer i, ...]}`` for every module.

    ``student_layers``: a fraction of the teacher's layers (rounded half up, at least 1) or a per-module
    count (modules left out get half). ``layer_map``: explicit maps for some modules; it fixes those
    modules' student depth and must agree with an explicit per-module count.
    """
    layer_map = dict(layer_map or {})
    unknown = sorted(set(layer_map) - set(MODULES))
    if unknown:
        raise ConfigError(f"model.layer_map: unknown module {unknown[0]!r} (known: {', '.join(MODULES)})")
    if isinstance(student_layers, Mapping):
        unknown = sorted(set(student_layers) - set(MODULES))
        if unknown:
            raise ConfigError(f"model.student_layers: unknown module {unknown[0]!r} (known: {', '.join(MODULES)})")
        counts = dict(student_layers)
    elif isinstance(student_layers, (int, float)) and not isinstance(student_layers, bool) \
            and 0 < student_layers <= 1:
        counts = {}
    else:
        raise ConfigError(f"model.student_layers: must be a fraction in (0, 1] or a per-module count, "
                          f"got {student_layers!r}")
    fraction = student_layers if not isinstance(student_layers, Mapping) else 0.5

    resolved = {}
    for module in MODULES:
        lt = teacher_layers[module]
        if module in layer_map:
            mapping = layer_map[module]
            if not isinstance(mapping, (list, tuple)) or not mapping:
                raise ConfigError(f"model.layer_map.{module}: must be a non-empty list of teacher layer indices")
            for i, j in enumerate(mapping):
                if not _is_int(j) or not 0 <= j < lt:
                    raise ConfigError(f"model.layer_map.{module}[{i}]: teacher layer {j!r} does not exist "
                                      f"(the teacher's {module} module has {lt} layers: 0..{lt - 1})")
            if module in counts and counts[module] != len(mapping):
                raise ConfigError(f"model.layer_map.{module}: maps {len(mapping)} student layers but "
                                  f"model.student_layers.{module} is {counts[module]}")
            resolved[module] = list(mapping)
            continue
        if module in counts:
            ls = counts[module]
            if not _is_int(ls) or ls < 1:
                raise ConfigError(f"model.student_layers.{module}: must be an integer >= 1, got {ls!r}")
            if ls > lt:
                raise ConfigError(f"model.student_layers.{module}: {ls} layers is more than the teacher's {module} "
                                  f"module has ({lt}); a student is made of the teacher's layers: at most {lt}")
        else:
            ls = max(1, math.floor(lt * fraction + 0.5))  # round half up
        resolved[module] = default_layer_map(lt, ls)
    return resolved


def student_config(teacher_cfg: dict, layer_map: Mapping[str, list[int]]) -> dict:
    """The teacher's open_clip model config with each module's depth set to its student depth."""
    cfg = copy.deepcopy(teacher_cfg)
    for module, key in _CONFIG_KEYS.items():
        cfg[key]["layers"] = len(layer_map[module])
    return cfg


def make_student(teacher: nn.Module, student_layers: float | Mapping[str, int] = 0.5,
                 layer_map: Mapping[str, list[int]] | None = None) -> tuple[nn.Module, dict[str, list[int]]]:
    """``(student CoCa, full layer map)``; the student is on the teacher's device, in train mode."""
    teacher = unwrap_model(teacher)
    recorded = model_config(teacher)
    full_map = resolve_layer_map(num_layers(teacher), student_layers, layer_map)
    student = coca_from_config(student_config(recorded["model_cfg"], full_map), f"{recorded['name']}-student")

    teacher_state = teacher.state_dict()
    state = {}
    for key in student.state_dict():
        parsed = parse_layer_key(key)
        if parsed is None:
            source = key
        else:
            module, list_path, index, rest = parsed
            source = f"{list_path}.{full_map[module][index]}.{rest}"
        state[key] = teacher_state[source]
    load_weights(student, state, "teacher")
    device = next(teacher.parameters()).device
    return student.to(device), full_map
