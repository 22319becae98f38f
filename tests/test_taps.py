"""Feature taps: shapes per module, agreement with open_clip's own intermediates, fire-once (also with
gradient checkpointing through backward), only requested layers hooked, hooks removed, padding masks."""

from __future__ import annotations

import pytest
import torch

from optima.models.taps import FeatureTaps
from optima.errors import ConfigError
from optima.models import create_coca, module_layers
from optima.tasks import create_task_model
from optima.models.modules import layer_output_modules

from tests.numerics import FLOAT64_REL

VOCAB, CONTEXT, B = 40, 10, 3
ALL = {"vision": [0, 1, 2, 3], "text": [0, 1, 2, 3], "multimodal": [0, 1, 2, 3]}


@pytest.fixture()
def coca():
    """In float64: taps and open_clip's own intermediates, and a recomputation inside backward, compute one
    quantity in different orders, equal to float64 rounding on any CPU's kernels (tests/numerics.py)."""
    torch.manual_seed(0)
    return create_coca("optima-tiny-teacher", vocab_size=VOCAB, context_length=CONTEXT).double().eval()


def same(actual, expected) -> bool:
    """Equal to float64 rounding, relative to the largest value compared."""
    return torch.allclose(actual, expected, rtol=0, atol=FLOAT64_REL * float(expected.detach().abs().max()))


def inputs(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    text = torch.randint(3, VOCAB, (B, CONTEXT), generator=g)
    text[:, 0] = 1
    text[0, 4:] = 0
    text[1, 7:] = 0  # row 2 has no padding
    return torch.randn(B, 3, 32, 32, generator=g, dtype=torch.float64), text


def hook_count(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.mark.numerics
def test_shapes_for_every_module_and_agreement_with_open_clip(coca):
    image, text = inputs()
    with FeatureTaps(coca, ALL) as taps:
        coca(image, text)
        features, masks = dict(taps.features), taps.masks
    assert sorted(features) == sorted(f"{m}.{i}" for m in ALL for i in range(4))
    for i in range(4):
        assert features[f"vision.{i}"].shape == (B, 1 + 16, 64)       # CLS + 4x4 patches
        assert features[f"text.{i}"].shape == (B, CONTEXT + 1, 64)    # tokens + appended CLS
        assert features[f"multimodal.{i}"].shape == (B, CONTEXT - 1, 64)  # teacher forcing drops one token
    with torch.no_grad():
        vis = coca.visual.forward_intermediates(image, indices=[1, 3], output_fmt="NLC", output_extra_tokens=True,
                                                intermediates_only=True)
        txt = coca.text.forward_intermediates(text, indices=[1, 3], output_fmt="NLC", output_extra_tokens=True,
                                              intermediates_only=True)
    for n, i in enumerate([1, 3]):
        assert same(features[f"vision.{i}"][:, 1:], vis["image_intermediates"][n])
        assert same(features[f"vision.{i}"][:, :1], vis["image_intermediates_prefix"][n])
        assert same(features[f"text.{i}"][:, :-1], txt["text_intermediates"][n])
        assert same(features[f"text.{i}"][:, -1:], txt["text_intermediates_suffix"][n])
    # the last multimodal layer, through the decoder's final norm and projection, gives the logits
    decoder = coca.text_decoder
    logits = decoder.ln_final(features["multimodal.3"]) @ decoder.text_projection
    assert same(logits, coca(image, text)["logits"])
    # masks
    assert masks["vision"].shape == (B, 17) and masks["vision"].all()
    assert torch.equal(masks["text"][:, :-1], text != 0) and masks["text"][:, -1].all()
    assert torch.equal(masks["multimodal"], text[:, :-1] != 0)
    assert masks["multimodal"][0].sum() == 4 and masks["multimodal"][2].all()


def test_fires_once_per_forward_and_hooks_removed(coca):
    image, text = inputs()
    before = hook_count(coca)
    with FeatureTaps(coca, {"vision": [3], "multimodal": [0, 2]}) as taps:
        assert hook_count(coca) == before + 3 + 1  # 3 layers + the text pre-hook for the masks
        coca(image, text)
        assert dict(taps.calls) == {"vision.3": 1, "multimodal.0": 1, "multimodal.2": 1}
        # only the requested layers carry hooks
        hooked = [m for m in coca.modules() if m._forward_hooks]
        assert set(map(id, hooked)) == {id(layer_output_modules(coca, "vision")[3]),
                                         id(coca.text_decoder.cross_attn[0]), id(coca.text_decoder.cross_attn[2])}
        taps.clear()
        assert taps.features == {} and taps.masks == {}
        coca(image, text)
        assert dict(taps.calls) == {"vision.3": 1, "multimodal.0": 1, "multimodal.2": 1}
    assert hook_count(coca) == before
    coca(image, text)
    assert dict(taps.calls) == {"vision.3": 1, "multimodal.0": 1, "multimodal.2": 1}  # nothing fires after exit


def test_vision_only_taps_do_not_touch_text(coca):
    image, text = inputs()
    with FeatureTaps(coca, {"vision": [0], "text": [], "multimodal": []}) as taps:
        assert list(taps.layers) == ["vision"]
        coca.visual(image)
        assert list(taps.features) == ["vision.0"] and list(taps.masks) == ["vision"]


@pytest.mark.numerics
def test_fires_once_with_gradient_checkpointing_through_backward(coca):
    image, text = inputs()
    coca.train()
    with FeatureTaps(coca, ALL) as reference:
        coca(image, text)["logits"].sum().backward()
        expected = {k: v.detach().clone() for k, v in reference.features.items()}
    coca.set_grad_checkpointing(True)
    # early stop off: the recomputation inside backward runs each checkpointed block to its end
    for early_stop in (True, False):
        coca.zero_grad()
        with FeatureTaps(coca, ALL) as taps, torch.utils.checkpoint.set_checkpoint_early_stop(early_stop):
            out = coca(image, text)
            features = dict(taps.features)
            out["logits"].sum().backward()  # recomputes the checkpointed blocks inside backward
            assert set(taps.calls.values()) == {1} and len(taps.calls) == 12
            for key, value in taps.features.items():
                assert value is features[key]  # not replaced by a recomputation
                assert same(value, expected[key])
        assert coca.visual.transformer.resblocks[0].attn.in_proj_weight.grad is not None


def test_student_features_keep_their_graph_teacher_features_can_be_detached(coca):
    image, text = inputs()
    with FeatureTaps(coca, {"text": [1]}) as taps:
        coca(image, text)
        assert taps.features["text.1"].requires_grad
        taps.features["text.1"].pow(2).mean().backward()
    assert coca.text.transformer.resblocks[0].mlp.c_fc.weight.grad is not None
    with FeatureTaps(coca, {"text": [1]}, detach=True) as taps:
        coca(image, text)
        assert not taps.features["text.1"].requires_grad


def test_works_through_wrappers_and_task_models(coca):
    image, text = inputs()

    class DDPLike(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.module = inner

        def forward(self, *args):
            return self.module(*args)

    with FeatureTaps(DDPLike(coca), {"multimodal": [1]}) as taps:
        DDPLike(coca)(image, text)
        assert taps.features["multimodal.1"].shape == (B, CONTEXT - 1, 64)
    vqa = create_task_model("vqa", coca, num_classes=5).double()
    with FeatureTaps(vqa, {"multimodal": [1], "text": [0]}) as taps:
        vqa({"image": image, "text": text})
        # classification heads feed the whole text to the decoder
        assert taps.features["multimodal.1"].shape == (B, CONTEXT, 64)
        assert torch.equal(taps.masks["multimodal"], text != 0)


def test_nlvr2_masks_follow_the_repeated_text(coca):
    image, text = inputs()
    nlvr2 = create_task_model("nlvr2", coca).double()
    images = torch.stack([image, image.flip(0)], dim=1)
    out = nlvr2({"images": images, "text": text}, tap_layers={"text": [0], "multimodal": [3]})
    assert out["features"]["text.0"].shape == (2 * B, CONTEXT + 1, 64)
    assert torch.equal(out["feature_masks"]["multimodal"], text.repeat_interleave(2, dim=0) != 0)
    assert out["logits"].shape == (B, 2)


def test_bad_layers_name_module_and_index(coca):
    with pytest.raises(ConfigError, match=r"multimodal layer 4 does not exist \(the model's multimodal module has 4 layers\)"):
        FeatureTaps(coca, {"multimodal": [4]})
    with pytest.raises(ConfigError, match="unknown module 'audio'"):
        FeatureTaps(coca, {"audio": [0]})
    with pytest.raises(ConfigError, match="vision layer -1 does not exist"):
        FeatureTaps(coca, {"vision": [-1]})
    assert module_layers(coca, "vision")[0]._forward_hooks == {}
