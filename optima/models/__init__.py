"""CoCa teacher and student models built on open_clip, their modules, task heads and checkpoints.

- ``create_coca(name, vocab_size, context_length, pretrained)``: a CoCa from a named open_clip config
  (packaged: ``optima-tiny-teacher``, ``optima-tiny-student``; paper scale: ``coca_ViT-L-14``, ...).
- ``optima.models.modules``: the three distillable modules (``vision``, ``text``, ``multimodal``).
- ``optima.models.student.make_student``: a shallower student initialised from the teacher.
- ``optima.models.heads``: one task model per task (``create_task_model``, ``save/load_task_model``).
- ``save_model``/``load_model``: ``model.safetensors`` + ``model_config.json`` in a run directory.
"""

from optima.models.checkpoint import load_model, save_model
from optima.models.factory import (
    PACKAGED_MODELS,
    coca_from_config,
    create_coca,
    get_coca_config,
    list_coca_models,
    model_config,
    model_summary,
)
from optima.models.modules import (
    MODULE_SPECS,
    MODULES,
    module_layers,
    module_named_parameters,
    module_parameters,
    module_widths,
    num_layers,
    unwrap_model,
)

__all__ = [
    "MODULES", "MODULE_SPECS", "PACKAGED_MODELS", "coca_from_config", "create_coca", "get_coca_config",
    "list_coca_models", "load_model", "model_config", "model_summary", "module_layers", "module_named_parameters",
    "module_parameters", "module_widths", "num_layers", "save_model", "unwrap_model",
]
