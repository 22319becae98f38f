"""Assemble the prepared layout from downloaded official files (``data.source: official``).

The annotation files named in ``data.official.<task>`` are copied byte for byte under the layout's
names, and every referenced image is symlinked (absolute target) into ``images/`` from the image
directory ``data.official.<task>.images`` (searched recursively, matched by name or stem). A split
whose annotation file is null is not prepared; a referenced image that is missing is an error.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from optima.data import formats
from optima.data.formats import ImageIndex, read_json, read_jsonl
from optima.errors import ConfigError, DataError

# role in the layout -> key of data.official.<task> that names the source file
_SOURCE_KEYS = {
    "captions": {"captions": "annotations"},
    "vqa": {"questions": "questions", "annotations": "annotations"},
    "snli_ve": {"examples": "annotations"},
    "nlvr2": {"examples": "annotations"},
}
_MAIN_ROLE = {"captions": "captions", "vqa": "questions", "snli_ve": "examples", "nlvr2": "examples"}


def source_files(task: str, config: dict, split: str) -> dict[str, Path]:
    """Role -> source path for one split (roles whose path is null are left out)."""
    spec = (config["data"].get("official") or {}).get(task) or {}
    out = {}
    for role, key in _SOURCE_KEYS[task].items():
        path = (spec.get(key) or {}).get(split)
        if path is not None:
            out[role] = Path(path)
    return out


def referenced_images(task: str, files: dict[str, Path]) -> dict[str, str]:
    """Image name (as the loaders look it up) -> the record that references it first."""
    names: dict[str, str] = {}
    if task == "captions":
        data = read_json(files["captions"])
        for k, image in enumerate(data.get("images", []) if isinstance(data, dict) else []):
            formats.require(image, ("id", "file_name"), f"{files['captions']}: images[{k}]")
            names.setdefault(image["file_name"], f"{files['captions']}: image id {image['id']}")
    elif task == "vqa":
        data = read_json(files["questions"])
        if not isinstance(data, dict) or "data_subtype" not in data or not isinstance(data.get("questions"), list):
            raise DataError(f"{files['questions']}: not a VQA questions file (needs 'data_subtype' and 'questions')")
        for k, q in enumerate(data["questions"]):
            formats.require(q, ("image_id", "question_id"), f"{files['questions']}: questions[{k}]")
            stem = formats.vqa_image_stem(data["data_subtype"], q["image_id"])
            names.setdefault(stem, f"{files['questions']}: question_id {q['question_id']}")
    else:
        for line, record in read_jsonl(files["examples"]):
            where = f"{files['examples']}:{line}"
            try:
                if task == "snli_ve":
                    found = [f"{formats.snli_ve_image_id(record)}.jpg"]
                else:
                    found = list(formats.nlvr2_image_names(str(record["identifier"])))
            except (KeyError, ValueError) as exc:
                raise DataError(f"{where}: cannot name the image(s) ({exc})") from None
            for name in found:
                names.setdefault(name, where)
    return names


def assemble(task: str, config: dict, out: Path) -> dict[str, dict]:
    """Copy annotations and link images of every configured split into ``out``; counts per split."""
    spec = (config["data"].get("official") or {}).get(task) or {}
    if not spec.get("images"):
        raise ConfigError(f"data.official.{task}.images: the directory of the official images is not set")
    splits = {split: source_files(task, config, split) for split in formats.SPLITS}
    splits = {split: sources for split, sources in splits.items() if _MAIN_ROLE[task] in sources}
    for split, sources in splits.items():   # every configured file, before any work
        for role, source in sources.items():
            if not source.is_file():
                raise ConfigError(f"data.official.{task}.{_SOURCE_KEYS[task][role]}.{split}: {source}: file not found")
    index = ImageIndex(spec["images"], recursive=True)
    image_dir = out / formats.IMAGE_DIR
    image_dir.mkdir(parents=True, exist_ok=True)
    counts: dict[str, dict] = {}
    for split, sources in splits.items():
        wanted = referenced_images(task, sources)
        for name, where in wanted.items():
            path = index.resolve(name, where)
            link = image_dir / path.name
            if not os.path.lexists(link):
                os.symlink(path.resolve(), link)
        names = formats.annotation_files(task, split)
        for role, source in sources.items():
            shutil.copyfile(source, out / names[role])
        counts[split] = {"images": len(wanted)}
    if not counts:
        raise ConfigError(f"data.official.{task}: no split has its annotation file set")
    if task == "vqa" and "train" not in counts:
        raise ConfigError("data.official.vqa.questions.train: the answer vocabulary needs the training split")
    return counts
