"""Bad input: every error names the culprit file, line or id (the CLI turns it into exit status 2)."""

import json
import shutil
from pathlib import Path

import pytest

from optima.config import load_config
from optima.tasks import build_dataset, task_names
from optima.data.prepare import prepare
from optima.errors import ConfigError, DataError

TINY = ["data.synthetic.images={train: 8, val: 2, test: 2}", "distill.probe_size=1"]  # the probe needs 8


@pytest.fixture(scope="module")
def pristine(tmp_path_factory, smoke_config_path) -> Path:
    root = tmp_path_factory.mktemp("pristine")
    config = load_config(smoke_config_path, TINY)
    for task in task_names():
        prepare(task, config, root / task)
    return root


@pytest.fixture
def data(pristine, tmp_path) -> Path:
    """A private copy to break."""
    shutil.copytree(pristine, tmp_path / "data")
    return tmp_path / "data"


def _load(task, data, split="train"):
    return build_dataset(task, data / task, split, None, 32)


def _rewrite_json(path: Path, edit) -> None:
    obj = json.loads(path.read_text())
    edit(obj)
    path.write_text(json.dumps(obj))


def _rewrite_jsonl(path: Path, edit) -> None:
    records = [json.loads(line) for line in path.read_text().splitlines()]
    edit(records)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


# ------------------------------------------------------------------------------------ missing image
@pytest.mark.parametrize("task", task_names())
def test_missing_image_names_the_image_and_the_record(data, task):
    ds = _load(task, data)
    first = ds.items[0]
    path = first[-1][0] if task == "nlvr2" else (ds.paths[first[0]] if task == "captions" else first[-1])
    path.unlink()
    with pytest.raises(DataError) as err:
        _load(task, data)
    message = str(err.value)
    assert path.stem in message and "not found" in message
    expected_culprit = {
        "captions": f"image id {first[0]}", "vqa": f"question_id {first[0]}",
        "snli_ve": "snli_ve_train.jsonl:1", "nlvr2": "train.json:1",
    }[task]
    assert expected_culprit in message


def test_missing_image_directory(data):
    shutil.rmtree(data / "snli_ve" / "images")
    with pytest.raises(DataError, match=r"snli_ve/images: image directory not found"):
        _load("snli_ve", data)


# ------------------------------------------------------------------------------- unreadable image
@pytest.mark.parametrize("task", task_names())
def test_unreadable_image_names_the_file(data, task):
    ds = _load(task, data)
    path = ds.items[0][-1][1] if task == "nlvr2" else (ds.paths[ds.items[0][0]] if task == "captions" else ds.items[0][-1])
    path.write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    ds = _load(task, data)
    with pytest.raises(DataError, match=rf"{path.name}: cannot decode image"):
        ds[0]


def test_empty_image_file(data):
    ds = _load("vqa", data)
    ds.items[0][-1].write_bytes(b"")
    with pytest.raises(DataError, match="cannot decode image"):
        _load("vqa", data)[0]


# -------------------------------------------------------------- annotation -> image that does not exist
def test_caption_annotation_referencing_unknown_image_id(data):
    path = data / "captions" / "captions_train.json"
    _rewrite_json(path, lambda d: d["annotations"].append({"image_id": 123456789, "id": 42, "caption": "a red circle"}))
    with pytest.raises(DataError, match=r"captions_train.json: annotation id 42 references image_id 123456789, which is not in 'images'"):
        _load("captions", data)


def test_vqa_question_referencing_missing_image(data):
    path = data / "vqa" / "v2_OpenEnded_train_questions.json"
    _rewrite_json(path, lambda d: d["questions"].append({"image_id": 7, "question": "what?", "question_id": 70}))
    with pytest.raises(DataError, match=r"question_id 70: image 'COCO_synthetic_train_000000000007' not found"):
        _load("vqa", data)


def test_vqa_annotation_for_unknown_question(data):
    path = data / "vqa" / "v2_train_annotations.json"

    def edit(d):
        d["annotations"][0]["question_id"] = 99
    _rewrite_json(path, edit)
    with pytest.raises(DataError, match=r"v2_train_annotations.json: annotation for question_id 99"):
        _load("vqa", data)


def test_snli_ve_record_referencing_missing_image(data):
    path = data / "snli_ve" / "snli_ve_val.jsonl"
    _rewrite_jsonl(path, lambda rs: rs[1].update({"Flickr30K_ID": "31337"}))
    with pytest.raises(DataError, match=r"snli_ve_val.jsonl:2: image '31337.jpg' not found"):
        _load("snli_ve", data, "val")


def test_nlvr2_identifier_of_missing_pair(data):
    path = data / "nlvr2" / "test.json"
    _rewrite_jsonl(path, lambda rs: rs[0].update({"identifier": "test-999-0-0"}))
    with pytest.raises(DataError, match=r"test.json:1 \(test-999-0-0\): image 'test-999-0-img0.png' not found"):
        _load("nlvr2", data, "test")


# ------------------------------------------------------------------------------ malformed JSON / jsonl
def test_malformed_json_names_file_line_and_column(data):
    path = data / "captions" / "captions_val.json"
    path.write_text('{"images": [\n  {"id": 1,, "file_name": "x.png"}]}')
    with pytest.raises(DataError, match=r"captions_val.json: line 2 column \d+: not valid JSON"):
        _load("captions", data, "val")


def test_truncated_json(data):
    path = data / "vqa" / "v2_val_annotations.json"
    path.write_text(path.read_text()[:100])
    with pytest.raises(DataError, match=r"v2_val_annotations.json: line 1 column \d+: not valid JSON"):
        _load("vqa", data, "val")


@pytest.mark.parametrize("task,name", [("snli_ve", "snli_ve_train.jsonl"), ("nlvr2", "train.json")])
def test_malformed_jsonl_line(data, task, name):
    path = data / task / name
    lines = path.read_text().splitlines()
    lines[2] = lines[2][:-5]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=rf"{name}:3: not valid JSON"):
        _load(task, data)


def test_bad_field_values_name_the_line(data):
    _rewrite_jsonl(data / "snli_ve" / "snli_ve_train.jsonl", lambda rs: rs[3].update({"gold_label": "-"}))
    with pytest.raises(DataError, match=r"snli_ve_train.jsonl:4: gold_label '-' is not one of"):
        _load("snli_ve", data)
    _rewrite_jsonl(data / "nlvr2" / "val.json", lambda rs: rs[1].update({"label": "maybe"}))
    with pytest.raises(DataError, match=r"val.json:2: label 'maybe' is not True or False"):
        _load("nlvr2", data, "val")
    _rewrite_jsonl(data / "nlvr2" / "train.json", lambda rs: rs[0].pop("sentence"))
    with pytest.raises(DataError, match=r"train.json:1: missing field\(s\) sentence"):
        _load("nlvr2", data)
    _rewrite_jsonl(data / "snli_ve" / "snli_ve_val.jsonl", lambda rs: rs[0].pop("Flickr30K_ID"))
    with pytest.raises(DataError, match=r"snli_ve_val.jsonl:1: no image id field"):
        _load("snli_ve", data, "val")


def test_missing_files(data):
    (data / "captions" / "captions_test.json").unlink()
    with pytest.raises(DataError, match=r"captions_test.json: file not found"):
        _load("captions", data, "test")
    (data / "vqa" / "answers.json").unlink()
    with pytest.raises(DataError, match=r"answers.json: file not found"):
        _load("vqa", data)
    with pytest.raises(DataError, match=r"prepared data directory not found"):
        build_dataset("vqa", data / "nowhere", "train", None, 32)


# ---------------------------------------------------------------------------------- unknown names
def test_unknown_task_and_split(data):
    with pytest.raises(ConfigError, match=r"unknown task 'gqa' \(known: captions, vqa, snli_ve, nlvr2\)"):
        build_dataset("gqa", data / "vqa", "train", None, 32)
    with pytest.raises(ConfigError, match=r"unknown split 'dev'"):
        build_dataset("vqa", data / "vqa", "dev", None, 32)
