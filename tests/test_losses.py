"""Distillation losses: prediction KD and the masked layer MSE, by hand and end to end on a tiny CoCa."""

from __future__ import annotations

import math

import pytest
import torch

from optima.distill.losses import LayerProjections, hidden_mse, masked_mse, prediction_kd
from optima.errors import ConfigError

from tests.numerics import FLOAT64_REL

# The formulas by hand and the library compute one quantity: compared in float64 (the losses stay float64,
# optima.runtime.at_least_float32), where the order of their few sums cannot matter (tests/numerics.py).
F64 = torch.float64


@pytest.mark.numerics
def test_prediction_kd_matches_the_formula_and_scales_with_t_squared():
    torch.manual_seed(0)
    s, t = torch.randn(4, 7, dtype=F64), torch.randn(4, 7, dtype=F64)
    for temperature in (1.0, 2.0, 4.0):
        p_t = torch.softmax(t / temperature, -1)
        kl = (p_t * (p_t.log() - torch.log_softmax(s / temperature, -1))).sum(-1).mean()
        expected = kl * temperature ** 2
        assert torch.allclose(prediction_kd(s, t, temperature), expected, rtol=FLOAT64_REL, atol=0)
        # torch's own KL divergence agrees (batchmean = mean over rows)
        torch_kl = torch.nn.functional.kl_div(torch.log_softmax(s / temperature, -1), p_t, reduction="batchmean")
        assert torch.allclose(prediction_kd(s, t, temperature), torch_kl * temperature ** 2, rtol=FLOAT64_REL, atol=0)
    assert prediction_kd(t, t, 2.0).abs() < 1e-12  # float64: rounding of 28 terms of size ~1
    assert prediction_kd(s, t, 2.0) > 0


def test_prediction_kd_gradient_reaches_only_the_student():
    s = torch.randn(3, 5, requires_grad=True)
    t = torch.randn(3, 5, requires_grad=True)
    prediction_kd(s, t, 2.0).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None


@pytest.mark.numerics
def test_prediction_kd_mask_averages_over_real_positions_only():
    torch.manual_seed(1)
    s, t = torch.randn(2, 5, 9, dtype=F64), torch.randn(2, 5, 9, dtype=F64)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    value = prediction_kd(s, t, 2.0, mask=mask)
    expected = torch.stack([prediction_kd(s[b, p][None], t[b, p][None], 2.0)
                            for b in range(2) for p in range(5) if mask[b, p]]).mean()
    assert torch.allclose(value, expected, rtol=FLOAT64_REL, atol=0)
    s2 = s.clone()
    s2[0, 3:] = 100.0  # padded positions do not matter
    assert torch.allclose(prediction_kd(s2, t, 2.0, mask=mask), value, rtol=FLOAT64_REL, atol=0)


def test_prediction_kd_bad_inputs():
    with pytest.raises(ConfigError, match="temperature must be > 0"):
        prediction_kd(torch.zeros(2, 3), torch.zeros(2, 3), 0.0)
    with pytest.raises(ValueError, match="differ in shape"):
        prediction_kd(torch.zeros(2, 3), torch.zeros(2, 4), 1.0)
    with pytest.raises(ValueError, match="KD mask shape"):
        prediction_kd(torch.zeros(2, 5, 3), torch.zeros(2, 5, 3), 1.0, mask=torch.ones(2, 4, dtype=torch.bool))


@pytest.mark.numerics
def test_masked_mse_ignores_padding():
    torch.manual_seed(2)
    s, t = torch.randn(2, 4, 6, dtype=F64), torch.randn(2, 4, 6, dtype=F64)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    expected = torch.cat([(s[0, :2] - t[0, :2]).pow(2).flatten(), (s[1] - t[1]).pow(2).flatten()]).mean()
    assert torch.allclose(masked_mse(s, t, mask), expected, rtol=FLOAT64_REL, atol=0)
    s[0, 2:] += 50
    assert torch.allclose(masked_mse(s, t, mask), expected, rtol=FLOAT64_REL, atol=0)
    assert masked_mse(t, t, None) == 0  # exact: every difference is 0


@pytest.mark.numerics
def test_hidden_mse_mapping_per_module_values_and_total():
    torch.manual_seed(3)
    layer_map = {"vision": [1, 3], "text": [3], "multimodal": [0, 1, 3]}
    teacher = {f"{m}.{j}": torch.randn(2, 5, 8, dtype=F64) for m in layer_map for j in range(4)}
    student = {f"{m}.{i}": torch.randn(2, 5, 8, dtype=F64) for m, js in layer_map.items() for i in range(len(js))}
    masks = {"text": torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)}
    out = hidden_mse(student, teacher, layer_map, ["vision", "text", "multimodal"], masks)
    per_layer = {m: [masked_mse(student[f"{m}.{i}"], teacher[f"{m}.{j}"], masks.get(m)) for i, j in enumerate(js)]
                 for m, js in layer_map.items()}
    for m in layer_map:
        assert torch.allclose(out[m], torch.stack(per_layer[m]).mean(), rtol=FLOAT64_REL, atol=0)
    # module_sum (default): every module at full weight, whichever others are distilled with it
    assert torch.allclose(out["loss"], out["vision"] + out["text"] + out["multimodal"], rtol=FLOAT64_REL, atol=0)
    everything = [v for values in per_layer.values() for v in values]
    old = hidden_mse(student, teacher, layer_map, ["vision", "text", "multimodal"], masks, reduction="layer_mean")
    assert torch.allclose(old["loss"], torch.stack(everything).mean(), rtol=FLOAT64_REL, atol=0)  # all 6 layers
    with pytest.raises(ConfigError, match="layer_reduction"):
        hidden_mse(student, teacher, layer_map, ["vision"], masks, reduction="mean")
    only_vision = hidden_mse(student, teacher, layer_map, ["vision"], masks)
    assert set(only_vision) == {"loss", "vision"} and torch.allclose(only_vision["loss"], out["vision"],
                                                                      rtol=FLOAT64_REL, atol=0)
    # a student that equals its mapped teacher layers has zero loss
    exact = {f"{m}.{i}": teacher[f"{m}.{j}"] for m, js in layer_map.items() for i, j in enumerate(js)}
    assert hidden_mse(exact, teacher, layer_map, list(layer_map), masks)["loss"] == 0


def test_hidden_mse_missing_features_are_named():
    layer_map = {"vision": [1, 3], "text": [1, 3], "multimodal": [1, 3]}
    teacher = {"vision.1": torch.zeros(1, 2, 3), "vision.3": torch.zeros(1, 2, 3)}
    with pytest.raises(ConfigError, match=r"student feature 'vision.0' was not captured \(captured: none\)"):
        hidden_mse({}, teacher, layer_map, ["vision"])
    student = {"vision.0": torch.zeros(1, 2, 3), "vision.1": torch.zeros(1, 2, 3)}
    with pytest.raises(ConfigError, match=r"teacher feature 'text.1' was not captured"):
        hidden_mse({**student, "text.0": torch.zeros(1, 2, 3)}, teacher, layer_map, ["text"])
    with pytest.raises(ConfigError, match="no modules to match"):
        hidden_mse(student, teacher, layer_map, [])


def test_layer_projections_map_student_width_to_teacher_width_and_learn():
    layer_map = {"vision": [1, 3], "text": [1, 3], "multimodal": [3]}
    projections = LayerProjections({"vision": 4, "text": 8, "multimodal": 4}, {"vision": 6, "text": 8, "multimodal": 6},
                                   layer_map)
    assert sorted(projections.maps) == ["multimodal_0", "vision_0", "vision_1"]  # text widths match: identity
    x = torch.randn(2, 3, 4)
    y = projections("vision", 1, x)
    assert y.shape == (2, 3, 6) and torch.equal(y[..., :4], x) and torch.equal(y[..., 4:], torch.zeros(2, 3, 2))
    assert torch.equal(projections("text", 0, torch.ones(1)), torch.ones(1))  # equal widths: identity
    teacher = {f"{m}.{j}": torch.randn(2, 3, {"vision": 6, "text": 8, "multimodal": 6}[m]) for m in layer_map
               for j in range(4)}
    student = {f"{m}.{i}": torch.randn(2, 3, {"vision": 4, "text": 8, "multimodal": 4}[m], requires_grad=True)
               for m, js in layer_map.items() for i in range(len(js))}
    with pytest.raises(ValueError, match="different widths need LayerProjections"):
        hidden_mse(student, teacher, layer_map, ["vision"])
    optimiser = torch.optim.SGD(projections.parameters(), lr=0.1)
    losses = []
    for _ in range(20):
        loss = hidden_mse(student, teacher, layer_map, ["vision", "multimodal"], projections=projections)["loss"]
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


@pytest.mark.numerics
def test_identical_student_has_zero_distillation_losses_end_to_end():
    from optima.models.taps import FeatureTaps
    from optima.models import create_coca
    from optima.models.student import make_student

    torch.manual_seed(0)
    # float64: the teacher's no_grad forward and the student's grad forward may take other kernels (fused
    # attention for inference); in float64 they agree to ~1e-15, whatever the CPU
    teacher = create_coca("optima-tiny-teacher", vocab_size=30, context_length=8).double().eval()
    twin, twin_map = make_student(teacher, 1.0)
    half, half_map = make_student(teacher, 0.5)
    assert twin_map == {m: [0, 1, 2, 3] for m in ("vision", "text", "multimodal")}
    image, text = torch.randn(2, 3, 32, 32, dtype=F64), torch.randint(1, 30, (2, 8))
    text[0, 5:] = 0
    every_layer = {m: range(4) for m in twin_map}
    with torch.no_grad(), FeatureTaps(teacher, every_layer) as taps:
        teacher_logits = teacher(image, text)["logits"]
        teacher_features = dict(taps.features)
    for student, layer_map in ((twin.double().eval(), twin_map), (half.double().eval(), half_map)):
        with FeatureTaps(student, {m: range(len(layer_map[m])) for m in layer_map}) as taps:
            logits = student(image, text)["logits"]
            out = hidden_mse(taps.features, teacher_features, layer_map, list(layer_map), taps.masks)
        kd = prediction_kd(logits, teacher_logits, 2.0, mask=text[:, 1:] != 0)
        assert set(out) == {"loss", "vision", "text", "multimodal"}
        if student is twin:
            # features equal to float64 rounding: their squared differences ~1e-30; the KD sums ~10^2 terms p log(p/q)
            # of size <= 1, each off by ~F64: well under FLOAT64_REL
            assert out["loss"] < 1e-20 and kd.abs() < FLOAT64_REL
        else:  # shallower: its layer i sees other inputs than teacher layer map[i]
            assert 0 < out["loss"].item() < math.inf and kd > 0
