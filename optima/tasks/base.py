"""What a task is: one object per task holding everything that differs between tasks (data format and loader,
synthetic generator, head and loss, KD form, metrics and their scale, display names, table columns).

Library code asks the task (``optima.tasks.get_task(name)``) instead of branching on its name. A task module
imports torch, the data loaders, the heads and the metric functions only inside its methods, so the registry
stays cheap to import (``optima --help``, the Snakefile, the table verbs).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Column:
    """One numeric column of a table: a task's metric, shown as ``value * scale``.

    Every column is shown on a 0-100-like scale, as papers print them: VQA score is already in
    percent, accuracies and BLEU are fractions (x100), CIDEr is printed x100 (e.g. 143.6).
    """

    key: str
    task: str
    metric: str
    label: str
    scale: float
    primary: bool  # primary metric of its task: counted in the average and in figures


class Task:
    """A task's facts (class attributes) and the pieces built from them (methods). Subclass it, set the
    attributes, implement the methods marked *required*, and ``register_task(MyTask())``."""

    name: str = ""
    display_name: str = ""
    table_order: int = 100            # position of its columns in the main table (the paper's order)
    images_per_example: int = 1       # NLVR2: two images per statement
    fixed_classes: int | None = None  # classification tasks with a fixed label set
    captioning: bool = False          # decoded text instead of class labels
    prediction_id: str = ""           # the dataset key that identifies a prediction (question_id, ...)
    # role in the prepared layout -> file name (``{split}`` filled in)
    annotation_templates: dict[str, str] = {}
    # role in the prepared layout -> key of data.official.<task> naming the official source file
    official_keys: dict[str, str] = {}
    main_role: str = ""                # the role a split cannot be prepared without
    columns: tuple[Column, ...] = ()   # table columns, the primary metric's first
    soft_targets: bool = False         # VQA: binary cross-entropy on soft answer scores instead of cross-entropy

    # ------------------------------------------------------------------------------------------- data
    def annotation_files(self, split: str) -> dict[str, str]:
        """Role -> file name of the prepared annotation files of one split."""
        return {role: template.format(split=split) for role, template in self.annotation_templates.items()}

    def prepared_config(self, data: dict) -> dict:
        """Keys of ``data`` beyond the common ones that decide this task's prepared files."""
        return {}

    def write_synthetic(self, cfg, split: str, out: Path) -> dict:
        """*Required*: write one split of the synthetic benchmark into ``out``; ``{"images", "examples"}``."""
        raise NotImplementedError(f"task {self.name!r} has no synthetic generator")

    def finish_prepare(self, out: Path, data: dict) -> None:
        """Derived files of the prepared layout (VQA: the answer vocabulary), after the annotations."""

    def referenced_images(self, files: dict[str, Path]) -> dict[str, str]:
        """*Required for official data*: image name -> the record that references it first."""
        raise NotImplementedError(f"task {self.name!r} cannot be prepared from official files")

    def hold_out(self, sources: dict[str, Path], images: int, seed: int) -> tuple[dict, dict]:
        """``(training, validation)`` documents per role, from the training split's official files: every record
        of ``images`` training images drawn with ``seed`` moves to validation (``data.official.<task>.val_from_train``),
        so validation shares no image with training. Tasks that support it override this."""
        from optima.errors import ConfigError

        raise ConfigError(f"data.official.{self.name}.val_from_train: not supported for {self.name} (its official "
                          "files have a validation split: name it under the val keys)")

    def check_official_splits(self, splits) -> None:
        """Raise ConfigError when the official files configured for ``splits`` cannot make the task's layout."""

    def dataset(self, files: dict[str, Path], data_dir: Path, image_dir: Path, train: bool, **common):
        """*Required*: the torch Dataset of one prepared split (``files``: role -> path)."""
        raise NotImplementedError

    def random_targets(self, item: dict, label: int, num_classes: int | None) -> None:
        """Fill ``item`` with random targets in the dataset's layout (benchmarks on random inputs)."""
        import torch

        item["label"] = torch.tensor(label)

    # ----------------------------------------------------------------------------------------- models
    def create_model(self, coca, num_classes: int | None, **options):
        """The task model around ``coca`` (``optima.models.heads``): a classifier on the pooled decoder."""
        from optima.errors import ConfigError
        from optima.models.heads import ClassificationModel

        if options:
            raise ConfigError(f"{self.name}: unknown task model option(s) {', '.join(sorted(options))}")
        if self.fixed_classes is not None:
            if num_classes not in (None, self.fixed_classes):
                raise ConfigError(f"{self.name} has {self.fixed_classes} classes, got num_classes={num_classes}")
            num_classes = self.fixed_classes
        elif not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
            raise ConfigError(f"{self.name}: num_classes (the answer vocabulary size) must be a positive integer, "
                              f"got {num_classes!r}")
        return ClassificationModel(self.name, coca, num_classes, pairs=self.images_per_example,
                                   soft_targets=self.soft_targets)

    def kd_kind(self, config: dict) -> str:
        """The prediction-KD form: ``softmax`` over classes (or tokens), ``sigmoid`` per output."""
        return "softmax"

    # ------------------------------------------------------------------------------------- evaluation
    def score(self, dataset, ids: list, labels, eval_cfg: dict) -> dict[str, float]:
        """*Required for classification*: the official metrics of predicted class indices."""
        raise NotImplementedError

    def metric_range(self, metric: str) -> tuple[float, float] | None:
        """The range ``metric`` must fall in on the scale the metric functions write (None: unchecked)."""
        return None

    @property
    def primary_column(self) -> Column:
        return next(c for c in self.columns if c.primary)

    def __repr__(self) -> str:
        return f"<task {self.name}>"


_FRACTION_METRICS = re.compile(r"^(accuracy(_.+)?|consistency|Bleu_[1-4]|METEOR|ROUGE_L|SPICE)$")


def is_fraction_metric(metric: str) -> bool:
    """Metrics the metric functions write as fractions in [0, 1] (accuracy_* variants included)."""
    return _FRACTION_METRICS.match(metric) is not None


def fraction_range(metric: str) -> tuple[float, float] | None:
    return (0.0, 1.0) if is_fraction_metric(metric) else None

