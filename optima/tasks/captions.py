"""COCO captioning: COCO caption files, CoCa's own caption head, decoded captions scored by pycocoevalcap."""

from __future__ import annotations

from pathlib import Path

from optima.tasks.base import Column, Task, fraction_range


class CaptionsTask(Task):
    name = "captions"
    display_name = "COCO captioning"
    table_order = 3
    captioning = True
    prediction_id = "image_id"
    annotation_templates = {"captions": "captions_{split}.json"}
    official_keys = {"captions": "annotations"}
    main_role = "captions"
    columns = (Column("cider", "captions", "CIDEr", "COCO CIDEr", 100.0, True),
               Column("bleu4", "captions", "Bleu_4", "COCO BLEU-4", 100.0, False))

    def write_synthetic(self, cfg, split: str, out: Path) -> dict:
        from optima.data import synthetic

        return synthetic.write_captions(cfg, split, out, self.annotation_files(split))

    def referenced_images(self, files: dict[str, Path]) -> dict[str, str]:
        from optima.data import formats

        names: dict[str, str] = {}
        data = formats.read_json(files["captions"])
        for k, image in enumerate(data.get("images", []) if isinstance(data, dict) else []):
            formats.require(image, ("id", "file_name"), f"{files['captions']}: images[{k}]")
            names.setdefault(image["file_name"], f"{files['captions']}: image id {image['id']}")
        return names

    def dataset(self, files, data_dir, image_dir, train, **common):
        from optima.data.datasets import CocoCaptionsDataset

        return CocoCaptionsDataset(files["captions"], image_dir, train=train, **common)

    def random_targets(self, item: dict, label: int, num_classes: int | None) -> None:
        """Captioning trains on the text itself: no separate target."""

    def create_model(self, coca, num_classes: int | None, **options):
        from optima.models.heads import CaptioningModel

        return CaptioningModel(coca, **options)

    def score_captions(self, dataset, predictions: dict, eval_cfg: dict, meteor: bool) -> dict[str, float]:
        from optima.eval.captions import caption_scores

        return caption_scores(dataset.references(), predictions, spice=eval_cfg["spice"], meteor=meteor)

    def metric_range(self, metric: str):
        # CIDEr-D is bounded by 10 (its x10 factor on a cosine similarity)
        return (0.0, 10.0) if metric == "CIDEr" else fraction_range(metric)
