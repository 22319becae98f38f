"""The prepared-data layout (official file names per task) and strict readers for the official formats.

One directory per task, the same for synthetic and official data::

    captions/  captions_{split}.json                      (COCO captions)
    vqa/       v2_OpenEnded_{split}_questions.json, v2_{split}_annotations.json, answers.json
    snli_ve/   snli_ve_{split}.jsonl
    nlvr2/     {split}.json                              (JSON lines)
    */         images/, tokenizer.json, prepared.json

Image names follow the official data: COCO ``file_name``; VQA ``COCO_{data_subtype}_{image_id:012d}.*``;
SNLI-VE ``{Flickr30K_ID}.jpg``; NLVR2 ``{split}-{set}-{pair}-img0.png`` / ``img1.png``. Images are
decoded by content, so the extension never matters.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable

from optima.errors import ConfigError, DataError

SPLITS = ("train", "val", "test")
IMAGE_DIR = "images"
TOKENIZER_FILE = "tokenizer.json"
MANIFEST_FILE = "prepared.json"
ANSWERS_FILE = "answers.json"
SNLI_VE_ID_KEYS = ("Flickr30K_ID", "Flikr30kID", "Flickr30kID")   # current and older official spellings


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r} (known: {', '.join(SPLITS)})")
    return split


def vqa_image_stem(data_subtype: str, image_id: int) -> str:
    return f"COCO_{data_subtype}_{int(image_id):012d}"


def nlvr2_image_names(identifier: str) -> tuple[str, str]:
    """``dev-850-0-0`` -> (``dev-850-0-img0.png``, ``dev-850-0-img1.png``)."""
    parts = identifier.split("-")
    if len(parts) != 4:
        raise ValueError(f"NLVR2 identifier {identifier!r} is not split-set-pair-sentence")
    stem = "-".join(parts[:3])
    return f"{stem}-img0.png", f"{stem}-img1.png"


def snli_ve_image_id(record: dict) -> str:
    """The Flickr30k id of an SNLI-VE record under any official spelling, without ``.jpg``."""
    for key in SNLI_VE_ID_KEYS:
        if key in record:
            value = str(record[key])
            return value[: -len(".jpg")] if value.endswith(".jpg") else value
    raise KeyError(f"none of {', '.join(SNLI_VE_ID_KEYS)}")


# ------------------------------------------------------------------------------------------ readers
def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: line {exc.lineno} column {exc.colno}: not valid JSON ({exc.msg})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None


def read_jsonl(path: str | os.PathLike) -> list[tuple[int, dict]]:
    """(line number, record) for every non-blank line; a malformed line is an error naming it."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.readlines()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None
    return parse_jsonl(lines, str(path))


def parse_jsonl(lines: Iterable[str], where: str) -> list[tuple[int, dict]]:
    """(line number, record) for every non-blank line of JSON lines; errors name ``where`` and the line."""
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}:{number}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(record, dict):
            raise DataError(f"{where}:{number}: expected a JSON object, got {type(record).__name__}")
        records.append((number, record))
    return records


def require(record: dict, keys: Iterable[str], where: str) -> None:
    missing = [k for k in keys if k not in record]
    if missing:
        raise DataError(f"{where}: missing field(s) {', '.join(missing)}")


class ImageIndex:
    """The image files of one directory, found by exact name or by stem (any extension)."""

    def __init__(self, directory: str | os.PathLike, recursive: bool = False):
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise DataError(f"{self.directory}: image directory not found")
        self.by_name: dict[str, Path] = {}
        self.by_stem: dict[str, Path] = {}
        walker = os.walk(self.directory) if recursive else [(str(self.directory), [], os.listdir(self.directory))]
        for root, dirs, files in walker:
            dirs.sort()
            for name in sorted(files):
                path = Path(root) / name
                self.by_name.setdefault(name, path)
                self.by_stem.setdefault(name.rsplit(".", 1)[0], path)

    def __len__(self) -> int:
        return len(self.by_name)

    def find(self, name: str) -> Path | None:
        """By exact file name, else by stem with any extension (a ``.png`` name may hold a ``.jpg``)."""
        return self.by_name.get(name) or self.by_stem.get(name.rsplit(".", 1)[0] if "." in name else name)

    def resolve(self, name: str, referenced_by: str) -> Path:
        path = self.find(name)
        if path is None:
            raise DataError(f"{referenced_by}: image {name!r} not found in {self.directory}")
        return path


# ------------------------------------------------------------------------------- VQA answer vocabulary
def answer_normalizer() -> Callable[[str], str]:
    """The official VQA answer processing, so that training labels are the strings the evaluator compares."""
    from optima.data.answers import normalize_answer

    return normalize_answer


def build_answer_vocabulary(annotations: list[dict], num_answers: int) -> dict:
    """The ``num_answers`` most frequent normalised ``multiple_choice_answer``s of the training split,
    most frequent first (ties alphabetically), with their counts."""
    normalize = answer_normalizer()
    counts = Counter(normalize(str(a["multiple_choice_answer"])) for a in annotations)
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:num_answers]
    return {"answers": [a for a, _ in ranked], "counts": [c for _, c in ranked]}
