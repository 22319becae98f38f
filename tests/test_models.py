"""Model factory, modules, student initialisation and checkpoints (tiny CoCa, CPU, seconds)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from optima.errors import CheckpointError, ConfigError
from optima.models import (
    MODULES,
    create_coca,
    get_coca_config,
    list_coca_models,
    load_model,
    model_config,
    model_summary,
    module_layers,
    module_named_parameters,
    module_parameters,
    num_layers,
    save_model,
)
from optima.models.factory import coca_from_config
from optima.models.modules import layer_output_modules, module_of_parameter, parse_layer_key
from optima.models.student import default_layer_map, make_student, resolve_layer_map

VOCAB, CONTEXT = 40, 10


def teacher(seed: int = 0):
    torch.manual_seed(seed)
    return create_coca("optima-tiny-teacher", vocab_size=VOCAB, context_length=CONTEXT)


def batch(n: int = 3, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    text = torch.randint(3, VOCAB, (n, CONTEXT), generator=g)
    text[:, 0] = 1
    for row, length in enumerate(torch.randint(3, CONTEXT, (n,), generator=g).tolist()):
        text[row, length:] = 0  # right padding
    return torch.randn(n, 3, 32, 32, generator=g), text


# -- factory ----------------------------------------------------------------------------------------

def test_packaged_configs_are_registered_and_overrides_apply():
    names = list_coca_models()
    assert {"optima-tiny-teacher", "optima-tiny-student", "coca_ViT-L-14", "coca_ViT-B-32"} <= set(names)
    cfg = get_coca_config("optima-tiny-teacher", vocab_size=123, context_length=17)
    for key in ("text_cfg", "multimodal_cfg"):
        assert cfg[key]["vocab_size"] == 123 and cfg[key]["context_length"] == 17
    model = create_coca("optima-tiny-teacher", vocab_size=123, context_length=17)
    assert model.text.token_embedding.num_embeddings == 123
    assert model.text_decoder.text_projection.shape == (64, 123)
    assert model.text.positional_embedding.shape[0] == 18  # + the appended CLS position
    assert model.text_decoder.attn_mask.shape == (17, 17)


def test_tiny_teacher_forward_shapes_and_finite_decoder_projection():
    model = teacher()
    image, text = batch()
    out = model(image, text)
    assert out["logits"].shape == (3, CONTEXT - 1, VOCAB)
    assert torch.equal(out["labels"], text[:, 1:])
    assert out["image_features"].shape == out["text_features"].shape == (3, 64)
    assert torch.isfinite(out["logits"]).all()
    # the trap: open_clip leaves text_decoder.text_projection as torch.empty; ours is initialised
    projection = model.text_decoder.text_projection
    assert torch.isfinite(projection).all() and 0.05 < projection.std().item() < 0.25  # std = 64 ** -0.5


def test_same_seed_same_weights():
    a, b = teacher(3), teacher(3)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_unknown_model_lists_known_names():
    with pytest.raises(ConfigError, match=r"unknown model 'optima-tiny-techer'.*optima-tiny-teacher"):
        create_coca("optima-tiny-techer")
    with pytest.raises(ConfigError, match=r"not a CoCa config 'ViT-B-32'"):
        create_coca("ViT-B-32")


def test_bad_overrides():
    with pytest.raises(ConfigError, match="vocab_size must be an integer >= 2"):
        create_coca("optima-tiny-teacher", vocab_size=0)


def test_multimodal_width_must_equal_embed_dim():
    cfg = get_coca_config("optima-tiny-teacher")
    cfg["multimodal_cfg"]["width"] = 96
    with pytest.raises(ConfigError, match=r"multimodal_cfg.width \(96\) must equal embed_dim \(64\)"):
        coca_from_config(cfg, "bad")
    cfg = get_coca_config("optima-tiny-teacher")
    cfg["text_cfg"]["width"] = 96
    with pytest.raises(ConfigError, match=r"text_cfg.width \(96\) must equal multimodal_cfg.width"):
        coca_from_config(cfg, "bad")
    cfg = get_coca_config("optima-tiny-teacher")
    cfg["vision_cfg"]["attn_pooler_queries"] = 1
    with pytest.raises(ConfigError, match="attn_pooler_queries must be >= 2"):
        coca_from_config(cfg, "bad")


def test_model_summary_counts_every_parameter_once():
    model = teacher()
    summary = model_summary(model)
    params = summary["parameters"]
    assert params["total"] == sum(p.numel() for p in model.parameters())
    assert params["vision"] + params["text"] + params["multimodal"] + params["other"] == params["total"]
    assert params["other"] == 1  # logit_scale
    assert summary["layers"] == {"vision": 4, "text": 4, "multimodal": 4}
    assert summary["widths"] == {"vision": 64, "text": 64, "multimodal": 64}


# -- modules ----------------------------------------------------------------------------------------

def test_modules_are_lookups():
    model = teacher()
    assert num_layers(model) == {"vision": 4, "text": 4, "multimodal": 4}
    assert module_layers(model, "vision")[2] is model.visual.transformer.resblocks[2]
    assert module_layers(model, "text")[0] is model.text.transformer.resblocks[0]
    pair = module_layers(model, "multimodal")[1]
    assert pair.self_attn is model.text_decoder.resblocks[1] and pair.cross_attn is model.text_decoder.cross_attn[1]
    assert layer_output_modules(model, "multimodal")[3] is model.text_decoder.cross_attn[3]
    # the pair view reads and writes the model's own weights
    state = pair.state_dict()
    assert set(k.split(".")[0] for k in state) == {"self_attn", "cross_attn"}
    # vision parameters include the attentional pooler and the projection
    names = [n for n, _ in module_named_parameters(model, "vision")]
    assert "visual.attn_pool.query" in names and "visual.proj" in names and "visual.conv1.weight" in names
    every = sum(len(module_parameters(model, m)) for m in MODULES)
    assert every == len(list(model.parameters())) - 1  # all but logit_scale
    assert module_of_parameter("logit_scale") is None
    assert parse_layer_key("text_decoder.cross_attn.3.mlp.c_fc.weight") == (
        "multimodal", "text_decoder.cross_attn", 3, "mlp.c_fc.weight")
    assert parse_layer_key("visual.attn_pool.query") is None


def test_modules_unwrap_wrappers():
    model = teacher()

    class Wrapper(torch.nn.Module):  # what DDP looks like from outside: the model under .module
        def __init__(self, inner):
            super().__init__()
            self.module = inner

    assert module_layers(Wrapper(model), "vision")[0] is model.visual.transformer.resblocks[0]
    assert num_layers(Wrapper(Wrapper(model))) == num_layers(model)
    with pytest.raises(ConfigError, match="unknown module 'audio'"):
        module_layers(model, "audio")
    with pytest.raises(TypeError, match="expected an open_clip CoCa"):
        num_layers(torch.nn.Linear(2, 2))


# -- student ----------------------------------------------------------------------------------------

def test_default_layer_map_last_matches_last():
    assert default_layer_map(4, 2) == [1, 3]
    assert default_layer_map(12, 4) == [2, 5, 8, 11]
    assert default_layer_map(12, 6) == [1, 3, 5, 7, 9, 11]
    assert default_layer_map(5, 2) == [2, 4]  # 2.5 rounds half up
    assert default_layer_map(4, 4) == [0, 1, 2, 3]
    assert default_layer_map(24, 1) == [23]


def test_resolve_layer_map_fraction_counts_and_explicit():
    teacher_layers = {"vision": 4, "text": 4, "multimodal": 4}
    assert resolve_layer_map(teacher_layers, 0.5) == {m: [1, 3] for m in MODULES}
    assert resolve_layer_map(teacher_layers, 0.25)["vision"] == [3]
    mixed = resolve_layer_map(teacher_layers, {"vision": 1, "text": 3}, {"multimodal": [0, 2, 3]})
    assert mixed == {"vision": [3], "text": [0, 2, 3], "multimodal": [0, 2, 3]}  # 4/3 -> 1.33, 2.67, 4


def test_student_reproduces_mapped_teacher_layers_exactly():
    t = teacher()
    student, layer_map = make_student(t, 0.5)
    assert layer_map == {"vision": [1, 3], "text": [1, 3], "multimodal": [1, 3]}
    assert num_layers(student) == {"vision": 2, "text": 2, "multimodal": 2}
    # same as the packaged half-depth config
    packaged = get_coca_config("optima-tiny-student", vocab_size=VOCAB, context_length=CONTEXT)
    assert model_config(student)["model_cfg"] == packaged
    t_state, s_state = t.state_dict(), student.state_dict()
    for key, value in s_state.items():
        parsed = parse_layer_key(key)
        source = key if parsed is None else f"{parsed[1]}.{layer_map[parsed[0]][parsed[2]]}.{parsed[3]}"
        assert torch.equal(value, t_state[source]), key
    # functionally: each student layer maps its input exactly as the mapped teacher layer does
    x = torch.randn(2, 7, 64)
    for module in ("vision", "text"):
        for i, j in enumerate(layer_map[module]):
            assert torch.equal(module_layers(student, module)[i](x), module_layers(t, module)[j](x))
    image_tokens = torch.randn(2, 16, 64)
    for i, j in enumerate(layer_map["multimodal"]):
        s_pair, t_pair = module_layers(student, "multimodal")[i], module_layers(t, "multimodal")[j]
        s_out = s_pair.cross_attn(s_pair.self_attn(x), k_x=image_tokens, v_x=image_tokens)
        t_out = t_pair.cross_attn(t_pair.self_attn(x), k_x=image_tokens, v_x=image_tokens)
        assert torch.equal(s_out, t_out)
    # embeddings/poolers/projections are shared, so with identical layers the image embedding is identical
    same, _ = make_student(t, {"vision": 4, "text": 1, "multimodal": 1})
    image, _ = batch()
    assert torch.equal(same.encode_image(image), t.encode_image(image))


def test_explicit_layer_map_and_bad_maps():
    t = teacher()
    student, layer_map = make_student(t, 0.5, {"vision": [0, 2, 3]})
    assert num_layers(student)["vision"] == 3 and layer_map["vision"] == [0, 2, 3]
    assert torch.equal(student.visual.transformer.resblocks[1].mlp.c_fc.weight,
                       t.visual.transformer.resblocks[2].mlp.c_fc.weight)
    with pytest.raises(ConfigError, match=r"model.layer_map.text\[1\]: teacher layer 4 does not exist .*4 layers"):
        make_student(t, 0.5, {"text": [1, 4]})
    with pytest.raises(ConfigError, match=r"model.layer_map.vision\[0\]: teacher layer -1"):
        make_student(t, 0.5, {"vision": [-1]})
    with pytest.raises(ConfigError, match="unknown module 'audio'"):
        make_student(t, 0.5, {"audio": [1]})
    with pytest.raises(ConfigError, match=r"maps 2 student layers but model.student_layers.text is 3"):
        make_student(t, {"text": 3}, {"text": [1, 3]})
    with pytest.raises(ConfigError, match="fraction in"):
        make_student(t, 1.5)
    with pytest.raises(ConfigError, match="non-empty list"):
        make_student(t, 0.5, {"multimodal": []})


# -- checkpoints --------------------------------------------------------------------------------------

def test_save_load_roundtrip_student_from_safetensors_alone(tmp_path):
    student, _ = make_student(teacher(), 0.5)
    save_model(student, tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["model.safetensors", "model_config.json"]
    record = json.loads((tmp_path / "run" / "model_config.json").read_text())
    assert record["model_cfg"]["vision_cfg"]["layers"] == 2 and record["task"] is None
    loaded = load_model(tmp_path / "run")
    assert type(loaded).__name__ == "CoCa"
    image, text = batch()
    student.eval(), loaded.eval()
    assert torch.equal(loaded(image, text)["logits"], student(image, text)["logits"])


def test_pretrained_local_checkpoint_path(tmp_path):
    source = teacher(seed=5)
    save_model(source, tmp_path / "pre", model_config(source))
    image, text = batch()
    source.eval()
    expected = source(image, text)["logits"]
    for pretrained in (tmp_path / "pre", tmp_path / "pre" / "model.safetensors"):
        torch.manual_seed(0)  # a different random init, overwritten by the checkpoint
        model = create_coca("optima-tiny-teacher", vocab_size=VOCAB, context_length=CONTEXT, pretrained=str(pretrained))
        model.eval()
        assert torch.equal(model(image, text)["logits"], expected)
    model, cfg = create_coca("optima-tiny-teacher", VOCAB, CONTEXT, pretrained=str(tmp_path / "pre"), return_config=True)
    assert cfg == model_config(source)


def test_checkpoint_that_does_not_fit_names_key_and_shapes(tmp_path):
    save_model(teacher(), tmp_path / "pre")
    with pytest.raises(CheckpointError, match=r"'text.token_embedding.weight' has shape \[40, 64\] in the checkpoint "
                                              r"but \[50, 64\] in the model"):
        create_coca("optima-tiny-teacher", vocab_size=50, context_length=CONTEXT, pretrained=str(tmp_path / "pre"))
    student, _ = make_student(teacher(), 0.5)
    save_model(student, tmp_path / "student")
    with pytest.raises(CheckpointError, match=r"lacks 100 tensor\(s\) of the model, first 'text.transformer.resblocks.2"):
        create_coca("optima-tiny-teacher", VOCAB, CONTEXT, pretrained=str(tmp_path / "student"))
    state = {k: v.contiguous() for k, v in teacher().state_dict().items()}
    state["extra.weight"] = torch.zeros(2)
    save_file(state, str(tmp_path / "extra.safetensors"))
    with pytest.raises(CheckpointError, match="does not, first 'extra.weight'"):
        create_coca("optima-tiny-teacher", VOCAB, CONTEXT, pretrained=str(tmp_path / "extra.safetensors"))


def test_missing_or_unknown_pretrained(tmp_path):
    with pytest.raises(CheckpointError, match="neither an existing file or run directory nor a pretrained tag"):
        create_coca("optima-tiny-teacher", pretrained=str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="run directory has no model.safetensors"):
        create_coca("optima-tiny-teacher", pretrained=str(tmp_path / "empty"))
    (tmp_path / "garbage.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="unreadable weights file"):
        create_coca("optima-tiny-teacher", pretrained=str(tmp_path / "garbage.safetensors"))
    with pytest.raises(CheckpointError, match="model_config.json: not found"):
        load_model(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "model_config.json").write_text('{"format": "something else"}')
    with pytest.raises(CheckpointError, match="not an optima.model/1 model config"):
        load_model(tmp_path / "bad")


def test_pretrained_tag_offline_is_a_clear_error(monkeypatch):
    import open_clip

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(open_clip, "download_pretrained", offline)
    with pytest.raises(CheckpointError, match=r"coca_ViT-B-32: could not fetch open_clip pretrained weights "
                                              r"'laion2b_s13b_b90k': OSError: no network"):
        create_coca("coca_ViT-B-32", pretrained="laion2b_s13b_b90k")


def test_paper_scale_configs_pass_the_trap_checks():
    from optima.models.factory import check_coca_config

    for name in ("coca_ViT-L-14", "coca_ViT-B-32"):
        cfg = get_coca_config(name)
        check_coca_config(cfg, name)  # builds in seconds but needs GBs: checked, not built, here
        assert cfg["multimodal_cfg"]["width"] == cfg["embed_dim"] == cfg["text_cfg"]["width"]
