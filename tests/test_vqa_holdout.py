"""VQA's validation split at paper scale: VQA v2's val2014 is the local test split (test-dev answers are
scored only by the EvalAI server), so validation is held out of train2014 by image
(``data.official.vqa.val_from_train``): validation, training and test never share an image."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from optima.config import load_config
from optima.data.formats import read_json
from optima.data.prepare import prepare
from optima.errors import ConfigError
from optima.tasks import get_task
from tests.test_prepare import TINY, _fake_downloads

REPO = Path(__file__).resolve().parents[1]


def _images(out: Path, split: str) -> set:
    questions = read_json(out / get_task("vqa").annotation_files(split)["questions"])
    return {(questions["data_subtype"], q["image_id"]) for q in questions["questions"]}


def _official(tmp_path, smoke_config_path, holdout: dict | None, with_val: bool):
    config = load_config(smoke_config_path, TINY[1::2])
    spec = _fake_downloads(tmp_path, config, "vqa")
    if not with_val:
        spec["questions"]["val"] = spec["annotations"]["val"] = None
    spec["val_from_train"] = holdout
    return load_config(smoke_config_path, [*TINY[1::2], "data.source=official", f"data.official.vqa={json.dumps(spec)}"])


def test_validation_is_held_out_of_the_training_images(tmp_path, smoke_config_path):
    config = _official(tmp_path, smoke_config_path, {"images": 3, "seed": 0}, with_val=False)
    out = tmp_path / "prepared"
    manifest = prepare("vqa", config, out)
    train, val, test = (_images(out, split) for split in ("train", "val", "test"))
    original = _images(tmp_path / "synthetic" / "vqa", "train")
    assert len(val) == 3 and train | val == original and not train & val and not val & test
    assert manifest["splits"]["val"]["images"] == 3 and manifest["splits"]["train"]["images"] == len(original) - 3
    annotations = read_json(out / get_task("vqa").annotation_files("val")["annotations"])
    assert {a["image_id"] for a in annotations["annotations"]} == {image for _, image in val}
    again = prepare("vqa", config, tmp_path / "again")  # the same draw from the same seed, byte for byte
    for name in manifest["files"]:
        if not name.startswith("images/"):
            assert (out / name).read_bytes() == (tmp_path / "again" / name).read_bytes(), name
    assert again["config_hash"] == manifest["config_hash"]


def test_val_files_and_a_held_out_split_exclude_each_other(tmp_path, smoke_config_path):
    config = _official(tmp_path, smoke_config_path, {"images": 2, "seed": 0}, with_val=True)
    with pytest.raises(ConfigError, match=r"val_from_train: .*set every val file of data.official.vqa to null"):
        prepare("vqa", config, tmp_path / "prepared")


def test_the_paper_config_holds_vqa_validation_out_of_training():
    paper = load_config(REPO / "config/paper.yaml")
    vqa = paper["data"]["official"]["vqa"]
    assert vqa["questions"]["val"] is None and vqa["annotations"]["val"] is None
    assert vqa["val_from_train"]["images"] > 0
    assert vqa["questions"]["test"] != vqa["questions"]["train"]
    for task, spec in paper["data"]["official"].items():  # no task validates on the files its tables report
        for group in ("questions", "annotations"):
            files = spec.get(group) or {}
            if files.get("val") is not None:
                assert files["val"] != files["test"], (task, group)
