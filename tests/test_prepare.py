"""`optima prepare`: CLI, manifest, byte-identical re-runs, atomic output, the official source."""

import json
import os
import shutil
from pathlib import Path

import pytest

from optima.cli import main
from optima.config import config_hash, load_config
from optima.data import formats
from optima.tasks import build_dataset, get_task, task_names
from optima.data.prepare import prepare, prepared_config
from optima.errors import ConfigError, DataError

# 8 training images: the smallest set that still lets the config's one-example probe hold out its images
TINY = ["--set", "data.synthetic.images={train: 8, val: 2, test: 2}", "--set", "distill.probe_size=1"]


def _cli(*argv) -> int:
    return main(["prepare", *map(str, argv)])


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("task", task_names())
def test_cli_writes_the_layout_and_a_manifest(task, tmp_path, smoke_config_path, capsys):
    out = tmp_path / task
    assert _cli(task, "--config", smoke_config_path, "--out", out, *TINY) == 0
    assert f"-> {out}" in capsys.readouterr().out
    manifest = json.loads((out / "prepared.json").read_text())
    assert manifest["task"] == task and manifest["source"] == "synthetic"
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and p.name != "prepared.json")
    assert manifest["files"] == files
    for split in formats.SPLITS:
        for name in get_task(task).annotation_files(split).values():
            assert name in files
    assert "tokenizer.json" in files and ("answers.json" in files) == (task == "vqa")
    config = load_config(smoke_config_path, TINY[1::2])
    assert manifest["config_hash"] == config_hash(prepared_config(task, config))
    expected_images = {"train": 8, "val": 2, "test": 2}
    assert {s: c["images"] for s, c in manifest["splits"].items()} == expected_images
    for split, counts in manifest["splits"].items():
        assert len(build_dataset(task, out, split, None, 32)) == counts["examples"]
    assert sum(f.startswith("images/") for f in files) == 12
    assert oct(out.stat().st_mode & 0o777) == oct(0o777 & ~_umask()), "the output directory gets normal permissions"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_rerun_is_byte_identical_and_replaces_the_old_output(tmp_path, smoke_config_path):
    for task in task_names():
        assert _cli(task, "--config", smoke_config_path, "--out", tmp_path / "a" / task, *TINY) == 0
        assert _cli(task, "--config", smoke_config_path, "--out", tmp_path / "b" / task, *TINY) == 0
    assert _tree(tmp_path / "a") == _tree(tmp_path / "b")
    (tmp_path / "a" / "nlvr2" / "stale.txt").write_text("from an older run")
    assert _cli("nlvr2", "--config", smoke_config_path, "--out", tmp_path / "a" / "nlvr2", *TINY) == 0
    assert _tree(tmp_path / "a") == _tree(tmp_path / "b")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == sorted(task_names()), "no temporary directories left"


def test_default_output_dir_is_paths_data_task(tmp_path, smoke_config_path):
    assert _cli("snli_ve", "--config", smoke_config_path, *TINY, "--set", f"paths.data={tmp_path / 'processed'}") == 0
    assert (tmp_path / "processed" / "snli_ve" / "prepared.json").is_file()


def test_another_data_config_changes_the_hash(tmp_path, smoke_config_path):
    a = prepare("captions", load_config(smoke_config_path, TINY[1::2]), tmp_path / "a")
    b = prepare("captions", load_config(smoke_config_path, [*TINY[1::2], "data.synthetic.seed=7"]), tmp_path / "b")
    c = prepare("captions", load_config(smoke_config_path, [*TINY[1::2], "distill.steps=30"]), tmp_path / "c")
    assert a["config_hash"] != b["config_hash"] and a["config_hash"] == c["config_hash"]


def test_unknown_task_fails_with_exit_2_and_writes_nothing(tmp_path, smoke_config_path, capsys):
    assert _cli("gqa", "--config", smoke_config_path, "--out", tmp_path / "gqa") == 2
    assert "unknown task 'gqa'" in capsys.readouterr().err
    assert not (tmp_path / "gqa").exists()


def test_bad_config_fails_with_exit_2(tmp_path, smoke_config_path, capsys):
    assert _cli("vqa", "--config", smoke_config_path, "--out", tmp_path / "v", "--set", "data.synthetic.grid_size=9") == 2
    assert "data.synthetic.grid_size" in capsys.readouterr().err
    assert not (tmp_path / "v").exists()


def test_a_failure_midway_leaves_no_output_that_looks_complete(tmp_path, smoke_config_path, monkeypatch):
    from optima.tasks.nlvr2 import Nlvr2Task

    config = load_config(smoke_config_path, TINY[1::2])
    real = Nlvr2Task.write_synthetic

    def crash_on_test(self, cfg, split, out):
        if split == "test":
            raise KeyboardInterrupt   # as if the job was killed after writing train and val
        return real(self, cfg, split, out)

    monkeypatch.setattr(Nlvr2Task, "write_synthetic", crash_on_test)
    with pytest.raises(KeyboardInterrupt):
        prepare("nlvr2", config, tmp_path / "nlvr2")
    assert list(tmp_path.iterdir()) == []
    # an earlier complete output survives a failed re-run untouched
    monkeypatch.setattr(Nlvr2Task, "write_synthetic", real)
    prepare("nlvr2", config, tmp_path / "nlvr2")
    before = _tree(tmp_path / "nlvr2")
    monkeypatch.setattr(Nlvr2Task, "write_synthetic", crash_on_test)
    with pytest.raises(KeyboardInterrupt):
        prepare("nlvr2", config, tmp_path / "nlvr2")
    assert _tree(tmp_path / "nlvr2") == before and [p.name for p in tmp_path.iterdir()] == ["nlvr2"]


# --------------------------------------------------------------------------------- official source
def _fake_downloads(tmp_path: Path, config: dict, task: str) -> dict:
    """Lay synthetic output out like downloaded official data (other names, nested image folders)."""
    synthetic_dir = tmp_path / "synthetic" / task
    prepare(task, config, synthetic_dir)
    downloads = tmp_path / "downloads" / task
    (downloads / "imgs" / "nested").mkdir(parents=True)
    for image in (synthetic_dir / "images").iterdir():
        shutil.copy(image, downloads / "imgs" / "nested" / image.name)
    spec = {"images": str(downloads / "imgs"), "questions": {}, "annotations": {}}
    for split in formats.SPLITS:
        for role, name in get_task(task).annotation_files(split).items():
            target = downloads / f"official_{split}_{role}_{name}"
            shutil.copy(synthetic_dir / name, target)
            spec["questions" if role == "questions" else "annotations"][split] = str(target)
    return spec


@pytest.mark.parametrize("task", task_names())
def test_official_source_assembles_the_same_layout(task, tmp_path, smoke_config_path):
    config = load_config(smoke_config_path, TINY[1::2])
    spec = _fake_downloads(tmp_path, config, task)
    official = load_config(smoke_config_path, [*TINY[1::2], "data.source=official", f"data.official.{task}={json.dumps(spec)}"])
    manifest = prepare(task, official, tmp_path / "official" / task)
    synthetic_manifest = json.loads((tmp_path / "synthetic" / task / "prepared.json").read_text())
    assert manifest["source"] == "official"
    assert manifest["splits"] == synthetic_manifest["splits"]
    links = list((tmp_path / "official" / task / "images").iterdir())
    assert links and all(p.is_symlink() for p in links)
    for split in formats.SPLITS:
        ours = build_dataset(task, tmp_path / "official" / task, split, None, 32)
        theirs = build_dataset(task, tmp_path / "synthetic" / task, split, None, 32)
        assert len(ours) == len(theirs)
        for key, value in ours[0].items():
            assert str(value) == str(theirs[0][key]), key


def test_official_source_errors(tmp_path, smoke_config_path):
    config = load_config(smoke_config_path, [*TINY[1::2], "data.source=official"])
    with pytest.raises(ConfigError, match=r"data.official.snli_ve.images: the directory of the official images is not set"):
        prepare("snli_ve", config, tmp_path / "x")
    spec = _fake_downloads(tmp_path, load_config(smoke_config_path, TINY[1::2]), "snli_ve")
    missing = next((Path(spec["images"]) / "nested").iterdir())
    missing.unlink()
    config = load_config(smoke_config_path, [*TINY[1::2], "data.source=official", f"data.official.snli_ve={json.dumps(spec)}"])
    with pytest.raises(DataError, match=rf"image '{missing.stem}.jpg' not found"):
        prepare("snli_ve", config, tmp_path / "x")
    spec["annotations"]["val"] = str(tmp_path / "nope.jsonl")
    config = load_config(smoke_config_path, [*TINY[1::2], "data.source=official", f"data.official.snli_ve={json.dumps(spec)}"])
    with pytest.raises(ConfigError, match=r"data.official.snli_ve.annotations.val: .*nope.jsonl: file not found"):
        prepare("snli_ve", config, tmp_path / "x")
    assert not (tmp_path / "x").exists()
