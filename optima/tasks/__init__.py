"""The task registry: one ``Task`` object per task (``optima.tasks.base``), looked up by name.

The four tasks of the paper are registered here. Another task registers itself with ``register_task`` from
its own module; ``OPTIMA_TASKS=package.module,...`` imports such modules wherever the registry is first used
(every verb, the Snakefile), so a new task needs no edit of library code (docs/adding-a-task.md).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from optima.errors import ConfigError
from optima.tasks.base import Column, Task
from optima.tasks.captions import CaptionsTask
from optima.tasks.nlvr2 import Nlvr2Task
from optima.tasks.snli_ve import SnliVeTask
from optima.tasks.vqa import VqaTask

PLUGINS_ENV = "OPTIMA_TASKS"

_REGISTRY: dict[str, Task] = {}
_plugins_loaded = False


def register_task(task: Task, replace: bool = False) -> Task:
    """Add ``task`` to the registry under ``task.name``; a second task of the same name is an error."""
    if not task.name or not task.name.isidentifier():
        raise ConfigError(f"task name {task.name!r}: must be a non-empty identifier")
    if task.name in _REGISTRY and not replace:
        raise ConfigError(f"task {task.name!r} is registered already")
    if not task.columns or not any(c.primary for c in task.columns):
        raise ConfigError(f"task {task.name!r}: needs table columns, one of them primary")
    _REGISTRY[task.name] = task
    return task


def unregister_task(name: str) -> None:
    """Remove a task (tests that register a toy task clean up with it)."""
    _REGISTRY.pop(name, None)


def _load_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for module in filter(None, (m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(","))):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigError(f"{PLUGINS_ENV}: cannot import task module {module!r}: {exc}") from None


def task_names() -> tuple[str, ...]:
    """Every registered task, in registration order (the paper's four first)."""
    _load_plugins()
    return tuple(_REGISTRY)


def get_task(name: str) -> Task:
    """The registered task ``name``; ConfigError naming the known tasks otherwise."""
    _load_plugins()
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown task {name!r} (known: {', '.join(_REGISTRY)})") from None


def check_task(name: str) -> str:
    get_task(name)
    return name


def table_columns() -> tuple[Column, ...]:
    """Every task's table columns, tasks in the paper's table order (then registration order)."""
    names = task_names()
    ordered = sorted(names, key=lambda n: (_REGISTRY[n].table_order, names.index(n)))
    return tuple(c for n in ordered for c in _REGISTRY[n].columns)


# ---------------------------------------------------------------------------- what callers build from a task
def build_dataset(task: str, data_dir, split: str, tokenizer=None, image_size: int = 32, train: bool = True,
                  cache_images: bool = True):
    """The dataset of one split of a prepared task directory (``optima prepare`` layout).

    ``tokenizer=None`` loads the directory's ``tokenizer.json``. ``train`` only changes the captions
    itemisation (pairs for training, one item per image for evaluation)."""
    from optima.data import formats
    from optima.errors import DataError

    spec = get_task(task)
    formats.check_split(split)
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: prepared data directory not found (run `optima prepare {task}`)")
    if tokenizer is None:
        from optima.data.tokenizers import load_tokenizer

        tokenizer = load_tokenizer(data_dir)
    files = {role: data_dir / name for role, name in spec.annotation_files(split).items()}
    dataset = spec.dataset(files, data_dir, data_dir / formats.IMAGE_DIR, train, tokenizer=tokenizer,
                           image_size=image_size, cache_images=cache_images)
    if len(dataset) == 0:  # nothing to train on or to score: fail here, naming the file, not deep in a verb
        named = ", ".join(str(path) for path in files.values())
        raise DataError(f"{named}: the {split} split of {task} has no examples; prepare the data again "
                        f"(optima prepare {task}) or check the source files")
    return dataset


def create_task_model(task: str, coca, num_classes: int | None = None, **options):
    """The task model of ``task`` around ``coca``. ``num_classes``: required for an open answer vocabulary
    (VQA), fixed for tasks with a fixed label set. Captioning options: ``caption_weight`` (1.0),
    ``contrastive_weight`` (0.0)."""
    from optima.models.modules import unwrap_model

    return get_task(task).create_model(unwrap_model(coca), num_classes, **options)


def load_task_model(run_dir):
    """The task model saved in ``run_dir`` (``optima.models.heads.save_task_model``)."""
    from optima.models.heads import load_task_model_with

    return load_task_model_with(run_dir, create_task_model)


for _task in (CaptionsTask(), VqaTask(), SnliVeTask(), Nlvr2Task()):
    register_task(_task)
del _task

__all__ = ["Column", "Task", "build_dataset", "check_task", "create_task_model", "get_task", "load_task_model",
           "register_task", "table_columns", "task_names", "unregister_task"]
