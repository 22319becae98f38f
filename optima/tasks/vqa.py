"""VQA v2: official question and annotation files, soft answer scores over the training answer vocabulary,
the official VQA accuracy."""

from __future__ import annotations

from pathlib import Path

from optima.tasks.base import Column, Task


class VqaTask(Task):
    name = "vqa"
    display_name = "VQA v2"
    table_order = 0
    prediction_id = "question_id"
    soft_targets = True
    annotation_templates = {"questions": "v2_OpenEnded_{split}_questions.json",
                            "annotations": "v2_{split}_annotations.json"}
    official_keys = {"questions": "questions", "annotations": "annotations"}
    main_role = "questions"
    columns = (Column("vqa", "vqa", "overall", "VQA score", 1.0, True),)

    def prepared_config(self, data: dict) -> dict:
        return {"num_answers": data["num_answers"]}

    def write_synthetic(self, cfg, split: str, out: Path) -> dict:
        from optima.data import synthetic

        return synthetic.write_vqa(cfg, split, out, self.annotation_files(split))

    def finish_prepare(self, out: Path, data: dict) -> None:
        """The answer vocabulary: the ``data.num_answers`` most frequent training answers."""
        import json

        from optima.data.formats import ANSWERS_FILE, build_answer_vocabulary, read_json
        from optima.errors import ConfigError

        train = out / self.annotation_files("train")["annotations"]
        if not train.exists():
            raise ConfigError("data.official.vqa.annotations.train: the answer vocabulary needs training annotations")
        vocab = build_answer_vocabulary(read_json(train).get("annotations", []), data["num_answers"])
        (out / ANSWERS_FILE).write_text(json.dumps(vocab, ensure_ascii=False) + "\n", encoding="utf-8")

    def referenced_images(self, files: dict[str, Path]) -> dict[str, str]:
        from optima.data import formats
        from optima.errors import DataError

        names: dict[str, str] = {}
        data = formats.read_json(files["questions"])
        if not isinstance(data, dict) or "data_subtype" not in data or not isinstance(data.get("questions"), list):
            raise DataError(f"{files['questions']}: not a VQA questions file (needs 'data_subtype' and 'questions')")
        for k, q in enumerate(data["questions"]):
            formats.require(q, ("image_id", "question_id"), f"{files['questions']}: questions[{k}]")
            stem = formats.vqa_image_stem(data["data_subtype"], q["image_id"])
            names.setdefault(stem, f"{files['questions']}: question_id {q['question_id']}")
        return names

    def dataset(self, files, data_dir, image_dir, train, **common):
        from optima.data.datasets import VQADataset
        from optima.data.formats import ANSWERS_FILE

        annotations = files["annotations"] if files["annotations"].exists() else None
        return VQADataset(files["questions"], annotations, Path(data_dir) / ANSWERS_FILE, image_dir, **common)

    def random_targets(self, item: dict, label: int, num_classes: int | None) -> None:
        import torch

        scores = torch.zeros(num_classes)
        scores[label % num_classes] = 1.0
        item["answer_scores"] = scores

    def kd_kind(self, config: dict) -> str:
        # VQA's targets are independent per answer (soft scores, BCE): KD per answer unless the config says softmax
        return config["distill"]["vqa_kd"]

    def score(self, dataset, ids, labels, eval_cfg):
        from optima.eval.vqa import vqa_scores

        results = [{"question_id": qid, "answer": dataset.answers[int(k)]} for qid, k in zip(ids, labels)]
        return vqa_scores(dataset.annotations, dataset.questions, results,
                          processing=eval_cfg["vqa_answer_processing"])

    def metric_range(self, metric: str):
        return (0.0, 100.0)

    def hold_out(self, sources: dict[str, Path], images: int, seed: int) -> tuple[dict, dict]:
        """VQA v2 has no validation split apart from val2014, which is the local test split: validation is drawn
        from train2014 by image (every question of a held-out image, and its annotations, leave training)."""
        import random

        from optima.data.formats import read_json
        from optima.errors import ConfigError

        documents = {role: read_json(path) for role, path in sources.items()}
        lists = {"questions": "questions", "annotations": "annotations"}
        ids = sorted({record["image_id"] for record in documents["questions"]["questions"]})
        if images >= len(ids):
            raise ConfigError(f"data.official.vqa.val_from_train.images: {images} held-out images leave none of the "
                              f"{len(ids)} training images to train on")
        held = set(random.Random(seed).sample(ids, images))

        def part(role: str, keep_held: bool) -> dict:
            doc = documents[role]
            return {**doc, lists[role]: [r for r in doc[lists[role]] if (r["image_id"] in held) == keep_held]}

        return ({role: part(role, False) for role in documents}, {role: part(role, True) for role in documents})

    def check_official_splits(self, splits) -> None:
        from optima.errors import ConfigError

        if "train" not in splits:
            raise ConfigError("data.official.vqa.questions.train: the answer vocabulary needs the training split")
