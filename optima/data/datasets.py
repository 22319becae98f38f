"""One torch Dataset per official format (COCO captions, VQA v2, SNLI-VE, NLVR2).

Synthetic and real data go through the same classes. Construction checks every record and that every
referenced image exists (errors name the file, line or id); images are decoded lazily, by content.
Items are dicts of tensors (plus an id), so ``torch.utils.data.default_collate`` batches them.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import torch
from torch.utils.data import Dataset

from optima.data import formats
from optima.data.formats import ImageIndex, read_json, read_jsonl, require
from optima.data.images import ImageLoader
from optima.errors import DataError


class _ImageTextDataset(Dataset):
    def __init__(self, image_dir: str | os.PathLike, tokenizer, image_size: int, cache_images: bool = True):
        self.image_dir = Path(image_dir)
        self.images = ImageIndex(self.image_dir)
        self.tokenizer = tokenizer
        self.load_image = ImageLoader(image_size, cache=cache_images)

    def _tokens(self, text: str) -> torch.Tensor:
        return self.tokenizer(text)[0]


# ------------------------------------------------------------------------------------------ captions
class CocoCaptionsDataset(_ImageTextDataset):
    """COCO captions (``images`` + ``annotations`` with ``image_id``, ``id``, ``caption``).

    ``train=True``: one item per (image, caption) pair. ``train=False``: one item per image that has
    captions, with its first reference as the fixed text. Items: ``image``, ``text``, ``image_id``.
    """

    def __init__(self, annotation_file: str | os.PathLike, image_dir: str | os.PathLike, tokenizer,
                 image_size: int, train: bool = True, cache_images: bool = True):
        super().__init__(image_dir, tokenizer, image_size, cache_images)
        self.annotation_file = Path(annotation_file)
        data = read_json(self.annotation_file)
        if not isinstance(data, dict) or not isinstance(data.get("images"), list) or not isinstance(data.get("annotations"), list):
            raise DataError(f"{self.annotation_file}: not a COCO captions file (needs 'images' and 'annotations' lists)")
        self.paths: dict[int, Path] = {}
        for k, image in enumerate(data["images"]):
            require(image, ("id", "file_name"), f"{self.annotation_file}: images[{k}]")
            if image["id"] in self.paths:
                raise DataError(f"{self.annotation_file}: image id {image['id']} is listed twice")
            self.paths[image["id"]] = self.images.resolve(image["file_name"], f"{self.annotation_file}: image id {image['id']}")
        self._references: dict[int, list[str]] = {}
        for k, ann in enumerate(data["annotations"]):
            require(ann, ("image_id", "caption"), f"{self.annotation_file}: annotations[{k}]")
            if ann["image_id"] not in self.paths:
                raise DataError(
                    f"{self.annotation_file}: annotation id {ann.get('id', k)} references image_id "
                    f"{ann['image_id']}, which is not in 'images'"
                )
            self._references.setdefault(ann["image_id"], []).append(str(ann["caption"]))
        self.train = train
        if train:
            self.items = [(ann["image_id"], str(ann["caption"])) for ann in data["annotations"]]
        else:
            self.items = [(i, self._references[i][0]) for i in self.paths if i in self._references]
        self.data = data

    def references(self) -> dict[int, list[str]]:
        return {image_id: list(refs) for image_id, refs in self._references.items()}

    def __len__(self) -> int:
        return len(self.items)

    def image_keys(self, index: int) -> tuple[str, ...]:
        """The image files item ``index`` shows (to hold images, not items, out of training)."""
        return (str(self.paths[self.items[index][0]]),)

    def __getitem__(self, index: int) -> dict:
        image_id, caption = self.items[index]
        return {"image": self.load_image(self.paths[image_id]), "text": self._tokens(caption), "image_id": image_id}


# ----------------------------------------------------------------------------------------------- VQA
def vqa_soft_scores(answers: list[str], index: dict[str, int]) -> dict[int, float]:
    """VQA soft targets: min(1, count / 3) for each in-vocabulary answer of the annotators."""
    counts = Counter(answers)
    return {index[a]: min(1.0, c / 3.0) for a, c in counts.items() if a in index}


class VQADataset(_ImageTextDataset):
    """VQA v2 questions (+ annotations, absent for test-dev/test-std) and the answer vocabulary.

    Items: ``image``, ``text`` (the question), ``question_id``, and with annotations ``label``
    (index of the normalised multiple_choice_answer, -1 if outside the vocabulary) and
    ``answer_scores`` FloatTensor[num_classes]."""

    def __init__(self, questions_file: str | os.PathLike, annotations_file: str | os.PathLike | None,
                 answers_file: str | os.PathLike, image_dir: str | os.PathLike, tokenizer, image_size: int,
                 cache_images: bool = True):
        super().__init__(image_dir, tokenizer, image_size, cache_images)
        self.questions_file = Path(questions_file)
        self.questions = read_json(self.questions_file)
        if not isinstance(self.questions, dict) or not isinstance(self.questions.get("questions"), list):
            raise DataError(f"{self.questions_file}: not a VQA questions file (needs a 'questions' list)")
        subtype = self.questions.get("data_subtype")
        if not subtype:
            raise DataError(f"{self.questions_file}: missing 'data_subtype' (it names the images)")
        vocab = read_json(answers_file)
        if not isinstance(vocab, dict) or not isinstance(vocab.get("answers"), list):
            raise DataError(f"{answers_file}: not an answer vocabulary (needs an 'answers' list)")
        self.answers: list[str] = [str(a) for a in vocab["answers"]]
        self.answer_index = {a: i for i, a in enumerate(self.answers)}
        self.num_classes = len(self.answers)

        self.items: list[tuple[int, str, Path]] = []
        for k, q in enumerate(self.questions["questions"]):
            require(q, ("image_id", "question", "question_id"), f"{self.questions_file}: questions[{k}]")
            where = f"{self.questions_file}: question_id {q['question_id']}"
            path = self.images.resolve(formats.vqa_image_stem(subtype, q["image_id"]), where)
            self.items.append((q["question_id"], str(q["question"]), path))

        self.annotations = None
        self.targets: dict[int, tuple[int, dict[int, float]]] = {}
        if annotations_file is not None:
            self._load_annotations(Path(annotations_file))

    def _load_annotations(self, path: Path) -> None:
        from optima.data.formats import answer_normalizer

        normalize = answer_normalizer()
        self.annotations = read_json(path)
        if not isinstance(self.annotations, dict) or not isinstance(self.annotations.get("annotations"), list):
            raise DataError(f"{path}: not a VQA annotations file (needs an 'annotations' list)")
        asked = {qid for qid, _, _ in self.items}
        for k, ann in enumerate(self.annotations["annotations"]):
            require(ann, ("question_id", "multiple_choice_answer", "answers"), f"{path}: annotations[{k}]")
            qid = ann["question_id"]
            if qid not in asked:
                raise DataError(f"{path}: annotation for question_id {qid}, which is not in {self.questions_file}")
            answers = [normalize(str(a["answer"])) for a in ann["answers"]]
            label = self.answer_index.get(normalize(str(ann["multiple_choice_answer"])), -1)
            self.targets[qid] = (label, vqa_soft_scores(answers, self.answer_index))
        missing = asked - self.targets.keys()
        if missing:
            raise DataError(f"{path}: no annotation for question_id {min(missing)} ({len(missing)} question(s) unannotated)")

    def __len__(self) -> int:
        return len(self.items)

    def image_keys(self, index: int) -> tuple[str, ...]:
        return (str(self.items[index][2]),)

    def __getitem__(self, index: int) -> dict:
        qid, question, path = self.items[index]
        item = {"image": self.load_image(path), "text": self._tokens(question), "question_id": qid}
        if self.annotations is not None:
            label, scores = self.targets[qid]
            soft = torch.zeros(self.num_classes)
            for i, s in scores.items():
                soft[i] = s
            item["label"] = torch.tensor(label, dtype=torch.long)
            item["answer_scores"] = soft
        return item


# ------------------------------------------------------------------------------------------- SNLI-VE
class SnliVeDataset(_ImageTextDataset):
    """SNLI-VE JSON lines: the image is ``<Flickr30K_ID>.jpg`` (older spellings ``Flikr30kID`` /
    ``Flickr30kID``, with ``.jpg``, accepted), the text is ``sentence2``. Items: ``image``, ``text``,
    ``label`` (0 entailment, 1 neutral, 2 contradiction), ``pair_id``."""

    label_names = ("entailment", "neutral", "contradiction")
    num_classes = 3

    def __init__(self, jsonl_file: str | os.PathLike, image_dir: str | os.PathLike, tokenizer, image_size: int,
                 cache_images: bool = True):
        super().__init__(image_dir, tokenizer, image_size, cache_images)
        self.file = Path(jsonl_file)
        labels = {name: i for i, name in enumerate(self.label_names)}
        self.examples: list[dict] = []
        self.items: list[tuple[str, str, int, Path]] = []
        for line, record in read_jsonl(self.file):
            where = f"{self.file}:{line}"
            require(record, ("sentence2", "gold_label"), where)
            try:
                image_id = formats.snli_ve_image_id(record)
            except KeyError as exc:
                raise DataError(f"{where}: no image id field ({exc.args[0]})") from None
            if record["gold_label"] not in labels:
                raise DataError(f"{where}: gold_label {record['gold_label']!r} is not one of {', '.join(self.label_names)}")
            path = self.images.resolve(f"{image_id}.jpg", where)
            pair_id = str(record.get("pairID", f"{image_id}#{line}"))
            self.examples.append(record)
            self.items.append((pair_id, str(record["sentence2"]), labels[record["gold_label"]], path))

    def __len__(self) -> int:
        return len(self.items)

    def image_keys(self, index: int) -> tuple[str, ...]:
        return (str(self.items[index][3]),)

    def __getitem__(self, index: int) -> dict:
        pair_id, text, label, path = self.items[index]
        return {"image": self.load_image(path), "text": self._tokens(text),
                "label": torch.tensor(label, dtype=torch.long), "pair_id": pair_id}


# --------------------------------------------------------------------------------------------- NLVR2
class Nlvr2Dataset(_ImageTextDataset):
    """NLVR2 JSON lines (``identifier``, ``sentence``, ``label`` "True"/"False"); the left and right images
    are named from the identifier. Items: ``images`` [2, 3, H, W], ``text``, ``label`` (1 True, 0 False),
    ``identifier``."""

    num_classes = 2
    label_names = ("False", "True")

    def __init__(self, jsonl_file: str | os.PathLike, image_dir: str | os.PathLike, tokenizer, image_size: int,
                 cache_images: bool = True):
        super().__init__(image_dir, tokenizer, image_size, cache_images)
        self.file = Path(jsonl_file)
        self.examples: list[dict] = []
        self.items: list[tuple[str, str, int, tuple[Path, Path]]] = []
        for line, record in read_jsonl(self.file):
            where = f"{self.file}:{line}"
            require(record, ("identifier", "sentence", "label"), where)
            label = str(record["label"]).lower()
            if label not in ("true", "false"):
                raise DataError(f"{where}: label {record['label']!r} is not True or False")
            try:
                names = formats.nlvr2_image_names(str(record["identifier"]))
            except ValueError as exc:
                raise DataError(f"{where}: {exc}") from None
            paths = tuple(self.images.resolve(n, f"{where} ({record['identifier']})") for n in names)
            self.examples.append(record)
            self.items.append((str(record["identifier"]), str(record["sentence"]), int(label == "true"), paths))

    def __len__(self) -> int:
        return len(self.items)

    def image_keys(self, index: int) -> tuple[str, ...]:
        left, right = self.items[index][3]
        return (str(left), str(right))

    def __getitem__(self, index: int) -> dict:
        identifier, text, label, (left, right) = self.items[index]
        return {"images": torch.stack([self.load_image(left), self.load_image(right)]), "text": self._tokens(text),
                "label": torch.tensor(label, dtype=torch.long), "identifier": identifier}


# ---------------------------------------------------------------------------------------------- factory
