"""SNLI-VE: visual entailment as the official JSON-lines files give it, 3 classes, accuracy."""

from __future__ import annotations

from pathlib import Path

from optima.tasks.base import Column, Task, fraction_range


class SnliVeTask(Task):
    name = "snli_ve"
    display_name = "SNLI-VE"
    table_order = 1
    fixed_classes = 3
    prediction_id = "pair_id"
    annotation_templates = {"examples": "snli_ve_{split}.jsonl"}
    official_keys = {"examples": "annotations"}
    main_role = "examples"
    columns = (Column("snli_ve", "snli_ve", "accuracy", "SNLI-VE acc.", 100.0, True),)

    def write_synthetic(self, cfg, split: str, out: Path) -> dict:
        from optima.data import synthetic

        return synthetic.write_snli_ve(cfg, split, out, self.annotation_files(split))

    def image_names(self, record: dict) -> list[str]:
        from optima.data import formats

        return [f"{formats.snli_ve_image_id(record)}.jpg"]

    def referenced_images(self, files: dict[str, Path]) -> dict[str, str]:
        from optima.data.formats import read_jsonl
        from optima.errors import DataError

        names: dict[str, str] = {}
        for line, record in read_jsonl(files["examples"]):
            where = f"{files['examples']}:{line}"
            try:
                found = self.image_names(record)
            except (KeyError, ValueError) as exc:
                raise DataError(f"{where}: cannot name the image(s) ({exc})") from None
            for name in found:
                names.setdefault(name, where)
        return names

    def dataset(self, files, data_dir, image_dir, train, **common):
        from optima.data.datasets import SnliVeDataset

        return SnliVeDataset(files["examples"], image_dir, **common)

    def score(self, dataset, ids, labels, eval_cfg):
        from optima.eval.classification import snli_ve_scores

        predictions = {pid: dataset.label_names[int(k)] for pid, k in zip(ids, labels)}
        return snli_ve_scores(dataset.examples, predictions)

    def metric_range(self, metric: str):
        return fraction_range(metric)
