"""`model.pretrained`: an open_clip pretrained tag or a local checkpoint, offline.

The tag test writes a small open_clip CoCa checkpoint into a Hugging Face cache laid out as
`hf download` leaves it, registers a tag for it exactly like open_clip's own (``hf_hub='org/name/'``),
and loads it through the code path `coca_ViT-L-14` + `laion2b_s13b_b90k` takes at paper scale
(``create_coca`` -> ``resolve_checkpoint`` -> ``open_clip.download_pretrained`` -> ``hf_hub_download``,
offline). With the cache empty the same call fails saying what to download and where.
"""

from __future__ import annotations

import pytest
import torch

from optima.errors import CheckpointError
from optima.models.factory import create_coca

MODEL = "optima-nano-teacher"
REPO = "optima-test/nano-coca-pretrained"
REVISION = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def registered_tag(monkeypatch, tmp_path):
    """A pretrained tag for the nano CoCa in open_clip's registry and an empty HF cache in tmp_path."""
    import huggingface_hub.constants as hf_constants
    import open_clip.pretrained as pretrained

    entry = pretrained._pcfg(hf_hub=f"{REPO}/")  # the form of every CoCa tag open_clip ships
    monkeypatch.setitem(pretrained._PRETRAINED, MODEL, {"test_tag": entry})
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    return cache


def write_hub_snapshot(cache, state: dict) -> None:
    """models--org--name/{refs/main, snapshots/<rev>/open_clip_pytorch_model.bin}: what `hf download` writes."""
    root = cache / f"models--{REPO.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(REVISION)
    snapshot = root / "snapshots" / REVISION
    snapshot.mkdir(parents=True)
    torch.save(state, snapshot / "open_clip_pytorch_model.bin")  # the file the LAION CoCa repos hold


def test_pretrained_tag_loads_offline_from_the_cache(registered_tag):
    torch.manual_seed(1)
    source = create_coca(MODEL)
    write_hub_snapshot(registered_tag, {k: v.clone() for k, v in source.state_dict().items()})
    torch.manual_seed(2)  # a different random init: equal weights can only come from the checkpoint
    loaded = create_coca(MODEL, pretrained="test_tag")
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_pretrained_tag_offline_without_cache_says_what_to_download(registered_tag):
    with pytest.raises(CheckpointError) as err:
        create_coca(MODEL, pretrained="test_tag")
    message = str(err.value)
    assert "could not fetch open_clip pretrained weights 'test_tag'" in message
    assert "HF_HUB_OFFLINE is set" in message
    assert f"hf download {REPO} open_clip_pytorch_model.bin" in message and str(registered_tag) in message
    assert "model.pretrained" in message  # the alternative: a local file


def test_local_checkpoint_file_and_unknown_tag(tmp_path):
    torch.manual_seed(3)
    source = create_coca(MODEL)
    path = tmp_path / "weights.bin"
    torch.save(source.state_dict(), path)
    loaded = create_coca(MODEL, pretrained=str(path))
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in source.state_dict().items())
    with pytest.raises(CheckpointError, match=r"'laion2b_s13b_b9k' is neither an existing file .* coca_ViT-L-14: "
                                              r"laion2b_s13b_b90k, mscoco_finetuned_laion2b_s13b_b90k"):
        create_coca("coca_ViT-L-14", pretrained="laion2b_s13b_b9k")


@pytest.mark.parametrize("config_file", ["params.yaml", "config/claims.yaml"])
def test_config_loads_its_committed_pre_trained_teacher(config_file):
    """params.yaml and config/claims.yaml fine-tune the committed pre-trained teacher (a run directory, as
    `model.pretrained` allows): it exists in a fresh clone, matches the sha256 its README states, and loads into
    the config's teacher architecture weight for weight."""
    import hashlib
    import json
    import re
    from pathlib import Path

    from safetensors.torch import load_file

    from optima.config import load_config

    root = Path(__file__).resolve().parents[1]
    config = load_config(root / config_file)
    assert config["pretrain"]["mode"] == "load"
    folder = root / config["model"]["pretrained"]
    stated = re.search(r"sha256 of `model.safetensors`: ([0-9a-f]{64})", (folder / "README.md").read_text()).group(1)
    assert hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest() == stated
    text_cfg = json.loads((folder / "model_config.json").read_text())["model_cfg"]["text_cfg"]
    coca = create_coca(config["model"]["teacher"], vocab_size=text_cfg["vocab_size"],
                       context_length=text_cfg["context_length"], pretrained=str(folder))
    saved = load_file(folder / "model.safetensors")
    state = coca.state_dict()
    assert saved.keys() == state.keys() and all(torch.equal(state[k], saved[k]) for k in saved)


def test_the_defaults_committed_teacher_was_pre_trained_on_its_data_model_and_recipe():
    """The teacher params.yaml loads was pre-trained (its config.yaml) on exactly the default's captions training
    data and model, with the default's pre-training keys: only the val/test image counts differ, which
    pre-training does not read (a synthetic split does not depend on another's size:
    tests/test_data_synthetic.py). So `pretrain.mode: train` alone pre-trains the same recipe again."""
    from pathlib import Path

    import yaml

    from optima.config import load_config

    root = Path(__file__).resolve().parents[1]
    default = load_config(root / "params.yaml")
    teacher = yaml.safe_load((root / default["model"]["pretrained"] / "config.yaml").read_text())
    assert teacher["seed"] == default["seed"] and teacher["pretrain"]["mode"] == "train"
    for section in ("model", "pretrain"):
        differ = {k for k in default[section] if default[section][k] != teacher[section].get(k)}
        # eval_every: unset = None; the memory-only keys (optima.distill.loop.MEMORY_ONLY_KEYS) came later and
        # change how much memory a step takes, not what it computes
        assert differ <= {"pretrained", "mode", "eval_every", "accumulation_steps", "grad_checkpointing"}, (
            section, differ)
    assert default["pretrain"]["eval_every"] is None and "eval_every" not in teacher["pretrain"]
    data = {k: v for k, v in default["data"].items() if k != "synthetic"}
    assert data == {k: v for k, v in teacher["data"].items() if k != "synthetic"}
    synthetic, teachers = dict(default["data"]["synthetic"]), dict(teacher["data"]["synthetic"])
    assert synthetic.pop("images")["train"] == teachers.pop("images")["train"] and synthetic == teachers
