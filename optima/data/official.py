"""Assemble the prepared layout from downloaded official files (``data.source: official``).

The annotation files named in ``data.official.<task>`` are copied byte for byte under the layout's
names, and every referenced image is symlinked (absolute target) into ``images/`` from the image
directory ``data.official.<task>.images`` (searched recursively, matched by name or stem). A split
whose annotation file is null is not prepared; a referenced image that is missing is an error.
``data.official.<task>.val_from_train: {images: N, seed: S}`` makes the validation split of N training
images drawn with seed S (every record of them leaves the training files; the task's ``hold_out``), for a
data set whose official validation files are the local test split (VQA v2: val2014).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from optima.data import formats
from optima.data.formats import ImageIndex
from optima.errors import ConfigError

def source_files(task, config: dict, split: str) -> dict[str, Path]:
    """Role -> source path for one split of ``task`` (an ``optima.tasks.Task``); roles whose path is null are
    left out."""
    spec = (config["data"]["official"] or {}).get(task.name) or {}
    out = {}
    for role, key in task.official_keys.items():
        path = (spec.get(key) or {}).get(split)
        if path is not None:
            out[role] = Path(path)
    return out


def assemble(task, config: dict, out: Path) -> dict[str, dict]:
    """Copy annotations and link images of every configured split of ``task`` (an ``optima.tasks.Task``) into
    ``out``; counts per split."""
    name = task.name
    spec = (config["data"]["official"] or {}).get(name) or {}
    if not spec.get("images"):
        raise ConfigError(f"data.official.{name}.images: the directory of the official images is not set")
    splits = {split: source_files(task, config, split) for split in formats.SPLITS}
    splits = {split: sources for split, sources in splits.items() if task.main_role in sources}
    holdout = spec.get("val_from_train")
    if holdout and ("val" in splits or "train" not in splits):
        raise ConfigError(f"data.official.{name}.val_from_train: the validation split is drawn from the training files: "
                          f"set every val file of data.official.{name} to null and name the train files")
    for split, sources in splits.items():   # every configured file, before any work
        for role, source in sources.items():
            if not source.is_file():
                raise ConfigError(f"data.official.{name}.{task.official_keys[role]}.{split}: {source}: file not found")
    if holdout:  # written under the layout's names; from here on they are the splits' sources
        import json

        for split, documents in zip(("train", "val"), task.hold_out(splits["train"], holdout["images"], holdout["seed"])):
            names = task.annotation_files(split)
            splits[split] = {}
            for role, document in documents.items():
                path = out / names[role]
                path.write_text(json.dumps(document, ensure_ascii=False) + "\n", encoding="utf-8")
                splits[split][role] = path
    index = ImageIndex(spec["images"], recursive=True)
    image_dir = out / formats.IMAGE_DIR
    image_dir.mkdir(parents=True, exist_ok=True)
    counts: dict[str, dict] = {}
    for split, sources in splits.items():
        wanted = task.referenced_images(sources)
        for name, where in wanted.items():
            path = index.resolve(name, where)
            link = image_dir / path.name
            if not os.path.lexists(link):
                os.symlink(path.resolve(), link)
        names = task.annotation_files(split)
        for role, source in sources.items():
            if source != out / names[role]:  # a held-out split's files are written in place already
                shutil.copyfile(source, out / names[role])
        counts[split] = {"images": len(wanted)}
    if not counts:
        raise ConfigError(f"data.official.{name}: no split has its annotation file set")
    task.check_official_splits(counts)
    return counts
