"""NLVR2: a statement about two images, true or false; both (image, statement) pairs run through the model and
their pooled vectors are concatenated; accuracy and consistency."""

from __future__ import annotations

from pathlib import Path

from optima.tasks.base import Column, fraction_range
from optima.tasks.snli_ve import SnliVeTask


class Nlvr2Task(SnliVeTask):
    name = "nlvr2"
    display_name = "NLVR2"
    table_order = 2
    images_per_example = 2
    fixed_classes = 2
    prediction_id = "identifier"
    annotation_templates = {"examples": "{split}.json"}
    columns = (Column("nlvr2", "nlvr2", "accuracy", "NLVR2 acc.", 100.0, True),)

    def write_synthetic(self, cfg, split: str, out: Path) -> dict:
        from optima.data import synthetic

        return synthetic.write_nlvr2(cfg, split, out, self.annotation_files(split))

    def image_names(self, record: dict) -> list[str]:
        from optima.data import formats

        return list(formats.nlvr2_image_names(str(record["identifier"])))

    def dataset(self, files, data_dir, image_dir, train, **common):
        from optima.data.datasets import Nlvr2Dataset

        return Nlvr2Dataset(files["examples"], image_dir, **common)

    def score(self, dataset, ids, labels, eval_cfg):
        from optima.eval.classification import nlvr2_scores

        predictions = {ident: ("True" if int(k) == 1 else "False") for ident, k in zip(ids, labels)}
        return nlvr2_scores(dataset.examples, predictions)

    def metric_range(self, metric: str):
        return fraction_range(metric)
