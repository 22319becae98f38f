"""The four loaders on prepared synthetic data and on the real records in tests/data
(with placeholder images made here for the ids they reference)."""

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, default_collate

from optima.config import load_config
from optima.data import formats
from optima.data.datasets import CocoCaptionsDataset, Nlvr2Dataset, SnliVeDataset, VQADataset
from optima.tasks import build_dataset, task_names
from optima.data.images import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD, ImageLoader, resize_center_crop
from optima.data.prepare import prepare
from optima.data.tokenizers import WordTokenizer, load_tokenizer

from tests.numerics import F32

DATA = Path(__file__).parent / "data"  # real records in the official formats (tests/data/README.md)
TINY = ["data.synthetic.images={train: 8, val: 4, test: 4}", "data.synthetic.questions_per_image=3",
        "distill.probe_size=1"]  # a config's probe must fit in its training images


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, smoke_config_path) -> Path:
    root = tmp_path_factory.mktemp("prepared")
    config = load_config(smoke_config_path, TINY)
    for task in task_names():
        prepare(task, config, root / task)
    return root


@pytest.fixture(scope="module")
def word():
    return WordTokenizer.for_synthetic(24)


def _placeholder(path: Path, fmt: str = "PNG", size=(40, 30), colour=(10, 200, 30)) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format=fmt)
    path.write_bytes(buffer.getvalue())


# ------------------------------------------------------------------------------------ synthetic data
@pytest.mark.parametrize("split", formats.SPLITS)
def test_captions_loader(prepared, split):
    train = build_dataset("captions", prepared / "captions", split, None, 32, train=True)
    evaluation = build_dataset("captions", prepared / "captions", split, None, 32, train=False)
    n_images = 8 if split == "train" else 4
    assert len(train) == 5 * n_images and len(evaluation) == n_images
    refs = evaluation.references()
    assert len(refs) == n_images and all(len(r) == 5 for r in refs.values())
    item = evaluation[0]
    assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.float32
    assert item["text"].shape == (24,) and item["text"].dtype == torch.long
    assert evaluation.tokenizer.decode(item["text"]) == refs[item["image_id"]][0], "eval text: the first reference"
    assert {train[i]["image_id"] for i in range(len(train))} == set(refs)


def test_vqa_loader_targets(prepared):
    ds = build_dataset("vqa", prepared / "vqa", "train", None, 32)
    vocab = json.loads((prepared / "vqa" / "answers.json").read_text())["answers"]
    assert ds.answers == vocab and ds.num_classes == len(vocab) <= 3129
    assert len(ds) == 8 * 3
    anns = {a["question_id"]: a for a in ds.annotations["annotations"]}
    for i in range(len(ds)):
        item = ds[i]
        ann = anns[item["question_id"]]
        assert item["answer_scores"].shape == (ds.num_classes,)
        assert ds.answers[item["label"]] == ann["multiple_choice_answer"]
        counts = [sum(a["answer"] == x for a in ann["answers"]) for x in ds.answers]
        expected = torch.tensor([min(1.0, c / 3) for c in counts])
        assert torch.allclose(item["answer_scores"], expected, rtol=F32, atol=0)  # one float32 rounding of c / 3
    # val/test answers outside the training vocabulary get label -1
    test = build_dataset("vqa", prepared / "vqa", "test", None, 32)
    labels = [test[i]["label"].item() for i in range(len(test))]
    assert all(-1 <= label < ds.num_classes for label in labels)


def test_snli_ve_and_nlvr2_loaders(prepared):
    ve = build_dataset("snli_ve", prepared / "snli_ve", "val", None, 32)
    assert ve.num_classes == 3 and ve.label_names == ("entailment", "neutral", "contradiction")
    item = ve[0]
    assert item["label"].item() == ve.label_names.index(ve.examples[0]["gold_label"])
    assert item["pair_id"] == ve.examples[0]["pairID"]
    nl = build_dataset("nlvr2", prepared / "nlvr2", "train", None, 32)
    item = nl[0]
    assert item["images"].shape == (2, 3, 32, 32)
    assert item["label"].item() == (nl.examples[0]["label"] == "True") and item["identifier"] == nl.examples[0]["identifier"]
    assert not torch.equal(item["images"][0], item["images"][1])


@pytest.mark.parametrize("task", task_names())
def test_default_collate_batches_items(prepared, task):
    ds = build_dataset(task, prepared / task, "train", None, 32)
    batch = next(iter(DataLoader(ds, batch_size=4, shuffle=False)))
    assert batch["text"].shape == (4, 24)
    assert (batch["images"] if task == "nlvr2" else batch["image"]).shape[0] == 4
    if task != "captions":
        assert batch["label"].shape == (4,)


def normalised_alike(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Pixels scaled to [0, 1], less the mean, over the std: three float32 roundings on each side, each at most
    F32 / 2 of a value at most max|x| (no sums: the same on any CPU)."""
    return torch.allclose(a, b, rtol=0, atol=3 * F32 * float(b.abs().max()))


@pytest.mark.numerics
def test_images_are_normalised_like_open_clip_and_resized(prepared):
    ds = build_dataset("nlvr2", prepared / "nlvr2", "train", None, image_size=16, cache_images=False)
    image = ds[0]["images"][0]
    assert image.shape == (3, 16, 16)
    # black maps to -mean/std, white to (1-mean)/std
    _placeholder(prepared.parent / "black.png", colour=(0, 0, 0))
    _placeholder(prepared.parent / "white.jpg", fmt="PNG", colour=(255, 255, 255))
    loader = ImageLoader(16, cache=False)
    mean, std = torch.tensor(OPENAI_DATASET_MEAN).view(3, 1, 1), torch.tensor(OPENAI_DATASET_STD).view(3, 1, 1)
    assert normalised_alike(loader(prepared.parent / "black.png"), (-mean / std).expand(3, 16, 16))
    assert normalised_alike(loader(prepared.parent / "white.jpg"), ((1 - mean) / std).expand(3, 16, 16))
    from open_clip.constants import OPENAI_DATASET_MEAN as MEAN, OPENAI_DATASET_STD as STD
    from open_clip.transform import image_transform

    assert (MEAN, STD) == (OPENAI_DATASET_MEAN, OPENAI_DATASET_STD)
    rng = np.random.default_rng(0)
    for w, h in [(64, 40), (37, 90), (32, 32)]:
        picture = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        reference = image_transform(24, is_train=False)(picture)
        loader = ImageLoader(24, cache=False)
        mine = (torch.from_numpy(np.asarray(resize_center_crop(picture, 24)).copy()).permute(2, 0, 1).float() / 255
                - loader.mean) / loader.std
        assert normalised_alike(mine, reference)


def test_image_cache_decodes_once(prepared, monkeypatch):
    ds = build_dataset("vqa", prepared / "vqa", "train", None, 32, cache_images=True)
    first = ds[0]["image"]
    calls = []
    import optima.data.images as images

    monkeypatch.setattr(images, "load_image", lambda p: calls.append(p))
    assert torch.equal(ds[0]["image"], first) and not calls


def test_the_tokenizer_file_is_identical_in_every_task_dir(prepared):
    blobs = {(prepared / task / "tokenizer.json").read_bytes() for task in task_names()}
    assert len(blobs) == 1
    assert load_tokenizer(prepared / "vqa").vocab == WordTokenizer.for_synthetic(24).vocab


# ----------------------------------------------------------------------------- real fixture records
def test_coco_captions_fixture(tmp_path, word):
    source = DATA / "coco_caption" / "captions_gt.json"
    data = json.loads(source.read_text())
    (tmp_path / "images").mkdir()
    for image in data["images"]:
        _placeholder(tmp_path / "images" / image["file_name"], fmt="JPEG")
    train = CocoCaptionsDataset(source, tmp_path / "images", word, 32, train=True)
    evaluation = CocoCaptionsDataset(source, tmp_path / "images", word, 32, train=False)
    assert len(train) == 5005 and len(evaluation) == 1000
    refs = evaluation.references()
    assert sum(len(r) == 6 for r in refs.values()) == 5
    assert refs[400][0] == "A dog sitting on the inside of a white boat."
    item = evaluation[0]
    assert item["image_id"] == 400 and item["image"].shape == (3, 32, 32)
    assert word.decode(item["text"]) == "a <unk> <unk> on the <unk> of a white <unk> <unk>", "words outside the grammar are <unk>"


def test_vqa_fixture(tmp_path, word):
    questions = DATA / "vqa" / "v2_OpenEnded_mscoco_train2014_questions.sample5.json"
    annotations = DATA / "vqa" / "v2_mscoco_train2014_annotations.sample5.json"
    (tmp_path / "images").mkdir()
    for image_id in (458752, 262146):
        _placeholder(tmp_path / "images" / f"COCO_train2014_{image_id:012d}.jpg", fmt="JPEG")
    vocab = formats.build_answer_vocabulary(json.loads(annotations.read_text())["annotations"], num_answers=3)
    (tmp_path / "answers.json").write_text(json.dumps(vocab))
    ds = VQADataset(questions, annotations, tmp_path / "answers.json", tmp_path / "images", word, 32)
    assert len(ds) == 5 and ds.num_classes == 3
    items = {ds[i]["question_id"]: ds[i] for i in range(5)}
    net = items[458752000]
    assert ds.answers[net["label"]] == "net"
    assert net["answer_scores"][ds.answers.index("net")] == 1.0   # 8 of 10 annotators
    outside = [qid for qid, item in items.items() if item["label"] == -1]
    assert outside, "answers outside the 3-answer vocabulary get label -1"
    # without annotations (test-dev style): no targets
    bare = VQADataset(questions, None, tmp_path / "answers.json", tmp_path / "images", word, 32)
    assert set(bare[0]) == {"image", "text", "question_id"}


def test_snli_ve_fixture_and_old_id_spellings(tmp_path, word):
    source = DATA / "snli_ve" / "dev_sample.jsonl"
    (tmp_path / "images").mkdir()
    for image_id in ("2248275918", "402978771"):
        _placeholder(tmp_path / "images" / f"{image_id}.jpg", fmt="JPEG")
    ds = SnliVeDataset(source, tmp_path / "images", word, 32)
    assert len(ds) == 16
    labels = [ds[i]["label"].item() for i in range(16)]
    assert labels.count(0) == 6 and labels.count(1) == 6 and labels.count(2) == 4
    # the 2018 generator's "Flikr30kID": "<id>.jpg" and the README's "Flickr30kID"
    lines = source.read_text().splitlines()
    old = []
    for k, line in enumerate(lines):
        record = json.loads(line)
        image_id = record.pop("Flickr30K_ID")
        key = "Flikr30kID" if k % 2 else "Flickr30kID"
        record[key] = f"{image_id}.jpg"
        old.append(json.dumps(record))
    (tmp_path / "old.jsonl").write_text("\n".join(old) + "\n")
    legacy = SnliVeDataset(tmp_path / "old.jsonl", tmp_path / "images", word, 32)
    assert [legacy[i]["label"].item() for i in range(16)] == labels
    assert torch.equal(legacy[0]["image"], ds[0]["image"])


def test_nlvr2_fixture_with_jpegs_named_png(tmp_path, word):
    source = DATA / "nlvr2" / "dev_sample.jsonl"
    records = [json.loads(line) for line in source.read_text().splitlines()]
    (tmp_path / "images").mkdir()
    for k, record in enumerate(records):
        for name in formats.nlvr2_image_names(record["identifier"]):
            if not (tmp_path / "images" / name).exists():   # real NLVR2: many ".png" files are JPEGs
                _placeholder(tmp_path / "images" / name, fmt="JPEG" if k % 2 else "PNG", colour=(k, 0, 0))
    ds = Nlvr2Dataset(source, tmp_path / "images", word, 32)
    assert len(ds) == 200
    labels = [ds.items[i][2] for i in range(200)]
    assert sum(labels) == 101
    assert Image.open(tmp_path / "images" / formats.nlvr2_image_names(records[1]["identifier"])[0]).format == "JPEG"
    item = ds[1]
    assert item["images"].shape == (2, 3, 32, 32) and item["identifier"] == "dev-850-2-0" and item["label"] == 1
    batch = default_collate([ds[i] for i in range(3)])
    assert batch["identifier"] == ["dev-850-0-0", "dev-850-2-0", "dev-850-3-0"]
