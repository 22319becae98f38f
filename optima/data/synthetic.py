"""The synthetic benchmark: four tasks written in the official file formats of COCO captions, VQA v2,
SNLI-VE and NLVR2, generated deterministically from ``data.synthetic.seed``.

Each task and split draws its scenes from its own random streams and its own image-id range, so images
are disjoint across splits and tasks, and a split does not change when another split's size changes.
What the tasks exercise:

- captions: 5 paraphrases (list, count, positions, relation, colours) per image, CIDEr-meaningful.
- vqa: colour / count / existence / position questions, 10 answers with occasional disagreement.
- snli_ve: entailed / contradicted / undecidable hypotheses; a gray box hides one cell, and only claims
  that the box could make true are neutral, so the same sentence takes all three labels across images.
- nlvr2: sets of two image pairs; each statement is true for exactly one pair of its set, so the
  sentence alone says nothing about the label (exactly balanced labels).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from optima.data import formats, grammar
from optima.data.scenes import Scene, png_bytes, render, sample_scene
from optima.errors import ConfigError

SPLITS = formats.SPLITS
# image ids: task base + split offset + index, so ids never collide across tasks and splits
_TASK_ID_BASE = {"captions": 100_000_000, "vqa": 200_000_000, "snli_ve": 300_000_000, "nlvr2": 400_000_000}
_SPLIT_ID_STRIDE = 10_000_000
# chance that a scene holds the gray box (it only carries meaning where texts talk about hidden things)
BOX_PROBABILITY = {"captions": 0.25, "vqa": 0.0, "snli_ve": 0.5, "nlvr2": 0.0}
NUM_VQA_ANSWERS_PER_QUESTION = 10   # VQA v2: ten annotators per question


@dataclass(frozen=True)
class SyntheticConfig:
    seed: int = 1234
    image_size: int = 32
    grid_size: int = 3
    max_objects: int = 4
    images: dict[str, int] = field(default_factory=lambda: {"train": 1200, "val": 150, "test": 200})
    questions_per_image: int = 3
    hypotheses_per_image: int = 3
    statements_per_pair: int = 2
    answer_disagreement: float = 0.15

    @classmethod
    def from_config(cls, config: dict) -> "SyntheticConfig":
        """From a full config (``data.synthetic``) or the ``data.synthetic`` section itself."""
        section = config["data"]["synthetic"] if "data" in config else config
        cfg = cls(**section)
        for split, n in cfg.images.items():
            if n >= _SPLIT_ID_STRIDE:
                raise ConfigError(f"data.synthetic.images.{split}: at most {_SPLIT_ID_STRIDE - 1} images per split")
        return cfg


def _stream(cfg: SyntheticConfig, task: str, split: str, purpose: str) -> random.Random:
    """An independent random stream per (seed, task, split, purpose): text does not depend on pixels."""
    digest = hashlib.sha256(f"{cfg.seed}/{task}/{split}/{purpose}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _image_id(task: str, split: str, index: int) -> int:
    return _TASK_ID_BASE[task] + SPLITS.index(split) * _SPLIT_ID_STRIDE + index + 1


class _Painter:
    """Renders scenes of one task/split to PNG files under ``image_dir``."""

    def __init__(self, cfg: SyntheticConfig, task: str, split: str, image_dir: Path):
        self.cfg, self.image_dir = cfg, image_dir
        self.rng = _stream(cfg, task, split, "pixels")
        image_dir.mkdir(parents=True, exist_ok=True)

    def __call__(self, scene: Scene, file_name: str) -> None:
        (self.image_dir / file_name).write_bytes(png_bytes(render(scene, self.cfg.image_size, self.rng)))


def _scenes(cfg: SyntheticConfig, task: str, split: str, n: int) -> list[Scene]:
    rng = _stream(cfg, task, split, "scenes")
    return [sample_scene(rng, cfg.grid_size, cfg.max_objects, BOX_PROBABILITY[task]) for _ in range(n)]


def _dump(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, ensure_ascii=False) + "\n", encoding="utf-8")


def _dump_jsonl(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")


# ------------------------------------------------------------------------------------------ captions
def write_captions(cfg: SyntheticConfig, split: str, out: Path, files: dict[str, str]) -> dict:
    """One split of the synthetic captions part into ``out``; ``files``: role -> annotation file name."""
    n = cfg.images[split]
    scenes = _scenes(cfg, "captions", split, n)
    paint = _Painter(cfg, "captions", split, out / formats.IMAGE_DIR)
    text_rng = _stream(cfg, "captions", split, "text")
    images, annotations = [], []
    for i, scene in enumerate(scenes):
        image_id = _image_id("captions", split, i)
        file_name = f"synthetic_{split}_{image_id:012d}.png"
        paint(scene, file_name)
        images.append({"id": image_id, "file_name": file_name, "width": cfg.image_size, "height": cfg.image_size})
        for k, caption in enumerate(grammar.captions(scene, text_rng)):
            annotations.append({"image_id": image_id, "id": image_id * 10 + k, "caption": caption})
    _dump(out / files["captions"], {
        "info": {"description": f"OPTIMA synthetic benchmark, captions, {split} split", "version": "1.0"},
        "licenses": [], "type": "captions", "images": images, "annotations": annotations,
    })
    return {"images": n, "examples": len(annotations)}


# ----------------------------------------------------------------------------------------------- VQA
def _annotators(answer: str, cfg: SyntheticConfig, rng: random.Random) -> tuple[list[dict], str]:
    """Ten answers, each replaced by a plausible wrong one with probability answer_disagreement."""
    answers = []
    for j in range(NUM_VQA_ANSWERS_PER_QUESTION):
        agree = rng.random() >= cfg.answer_disagreement
        given = answer if agree else grammar.confusable_answer(answer, cfg.grid_size, rng)
        answers.append({"answer": given, "answer_confidence": "yes" if agree else "maybe", "answer_id": j + 1})
    counts = Counter(a["answer"] for a in answers)
    top = max(counts.values())
    # the official multiple_choice_answer is the most frequent answer; ties go to the true answer
    majority = answer if counts[answer] == top else min(a for a, c in counts.items() if c == top)
    return answers, majority


def write_vqa(cfg: SyntheticConfig, split: str, out: Path, files: dict[str, str]) -> dict:
    """One split of the synthetic vqa part into ``out``; ``files``: role -> annotation file name."""
    n = cfg.images[split]
    scenes = _scenes(cfg, "vqa", split, n)
    paint = _Painter(cfg, "vqa", split, out / formats.IMAGE_DIR)
    text_rng = _stream(cfg, "vqa", split, "text")
    subtype = f"synthetic_{split}"
    questions, annotations = [], []
    q_per_image = cfg.questions_per_image
    for i, scene in enumerate(scenes):
        image_id = _image_id("vqa", split, i)
        paint(scene, formats.vqa_image_stem(subtype, image_id) + ".png")
        seen: set[str] = set()
        for k in range(q_per_image):
            kind = grammar.VQA_KINDS[(i * q_per_image + k) % len(grammar.VQA_KINDS)]   # exact kind balance
            for _ in range(20):   # avoid asking the same question twice about one image
                q = grammar.vqa_question(scene, kind, text_rng)
                if q["question"] not in seen:
                    break
            seen.add(q["question"])
            question_id = image_id * 1000 + k
            answers, majority = _annotators(q["answer"], cfg, text_rng)
            questions.append({"image_id": image_id, "question": q["question"], "question_id": question_id})
            annotations.append({
                "question_type": q["question_type"], "multiple_choice_answer": majority, "answers": answers,
                "image_id": image_id, "answer_type": q["answer_type"], "question_id": question_id,
            })
    info = {"description": f"OPTIMA synthetic benchmark in the VQA v2 format, {split} split", "version": "2.0"}
    _dump(out / files["questions"], {
        "info": info, "task_type": "Open-Ended", "data_type": "synthetic", "license": {}, "data_subtype": subtype,
        "questions": questions,
    })
    _dump(out / files["annotations"], {
        "info": info, "license": {}, "data_subtype": subtype, "annotations": annotations,
    })
    return {"images": n, "examples": len(questions)}


# ------------------------------------------------------------------------------------------- SNLI-VE
def write_snli_ve(cfg: SyntheticConfig, split: str, out: Path, files: dict[str, str]) -> dict:
    """One split of the synthetic snli_ve part into ``out``; ``files``: role -> annotation file name."""
    n = cfg.images[split]
    scenes = _scenes(cfg, "snli_ve", split, n)
    paint = _Painter(cfg, "snli_ve", split, out / formats.IMAGE_DIR)
    text_rng = _stream(cfg, "snli_ve", split, "text")
    label_counts = dict.fromkeys(grammar.VE_LABELS, 0)
    records = []
    for i, scene in enumerate(scenes):
        image_id = str(_image_id("snli_ve", split, i))
        paint(scene, f"{image_id}.jpg")   # the official name; the content is PNG (loaders decode by content)
        premise = grammar.captions(scene, text_rng)[0]
        seen: set[str] = set()
        for k in range(cfg.hypotheses_per_image):
            # greedy balance: the least used label this scene admits (neutral needs the box)
            order = sorted(grammar.VE_LABELS, key=lambda lab: (label_counts[lab], text_rng.random()))
            for label in order:
                hypothesis = None
                for _ in range(10):
                    hypothesis = grammar.ve_hypothesis(scene, label, text_rng, max_count=cfg.max_objects)
                    if hypothesis is None or hypothesis not in seen:
                        break
                if hypothesis is not None and hypothesis not in seen:
                    break
            else:
                continue   # the scene admits no new hypothesis (tiny scenes): skip this slot
            seen.add(hypothesis)
            label_counts[label] += 1
            records.append({
                "Flickr30K_ID": image_id, "annotator_labels": [label], "captionID": f"{image_id}.jpg#0",
                "gold_label": label, "pairID": f"{image_id}.jpg#0r{k}{label[0]}",
                "sentence1": premise, "sentence2": hypothesis,
            })
    _dump_jsonl(out / files["examples"], records)
    return {"images": n, "examples": len(records)}


# --------------------------------------------------------------------------------------------- NLVR2
def _discriminating_statements(pairs: list, cfg: SyntheticConfig, rng: random.Random, targets: list[bool]):
    """``statements_per_pair`` distinct statements; with two pairs each is true for exactly one of them,
    with one pair its truth follows ``targets``. Returns None if the pairs admit too few statements."""
    chosen: list[tuple[str, list[bool]]] = []
    texts: set[str] = set()
    for k in range(cfg.statements_per_pair):
        for _ in range(500):
            text, truth = grammar.nlvr2_statement(rng, cfg.grid_size, cfg.max_objects)
            labels = [truth(p) for p in pairs]
            ok = labels[0] != labels[1] if len(pairs) == 2 else labels[0] == targets[k]
            if ok and text not in texts:
                chosen.append((text, labels))
                texts.add(text)
                break
        else:
            return None
    return chosen


def write_nlvr2(cfg: SyntheticConfig, split: str, out: Path, files: dict[str, str]) -> dict:
    """One split of the synthetic nlvr2 part into ``out``; ``files``: role -> annotation file name."""
    n_pairs = cfg.images[split] // 2
    if n_pairs == 0:
        raise ConfigError(f"data.synthetic.images.{split}: NLVR2 needs at least 2 images (one pair)")
    scene_rng = _stream(cfg, "nlvr2", split, "scenes")
    text_rng = _stream(cfg, "nlvr2", split, "text")
    paint = _Painter(cfg, "nlvr2", split, out / formats.IMAGE_DIR)
    records = []
    for set_id in range((n_pairs + 1) // 2):
        pairs_in_set = min(2, n_pairs - 2 * set_id)
        targets = [(set_id + k) % 2 == 0 for k in range(cfg.statements_per_pair)]   # single-pair set: alternate
        for _ in range(100):
            pairs = [tuple(sample_scene(scene_rng, cfg.grid_size, cfg.max_objects) for _ in range(2))
                     for _ in range(pairs_in_set)]
            statements = _discriminating_statements(pairs, cfg, text_rng, targets)
            if statements is not None:
                break
        else:
            raise ConfigError(
                f"data.synthetic: cannot find {cfg.statements_per_pair} distinct NLVR2 statements per pair "
                f"with max_objects={cfg.max_objects}, grid_size={cfg.grid_size}; lower statements_per_pair"
            )
        for pair_id, pair in enumerate(pairs):
            stem = f"{split}-{set_id}-{pair_id}"
            for side, scene in enumerate(pair):
                paint(scene, f"{stem}-img{side}.png")
            for sentence_id, (text, labels) in enumerate(statements):
                records.append({"identifier": f"{stem}-{sentence_id}", "sentence": text,
                                "label": "True" if labels[pair_id] else "False"})
    _dump_jsonl(out / files["examples"], records)
    return {"images": 2 * n_pairs, "examples": len(records)}


def generate(task, cfg: SyntheticConfig, out: Path, splits: tuple[str, ...] = SPLITS) -> dict[str, dict]:
    """Write every split of ``task`` (an ``optima.tasks.Task``) into ``out`` in its official format; counts per
    split."""
    return {split: task.write_synthetic(cfg, split, Path(out)) for split in splits}
