"""Task heads: output shapes, each head trains with a falling loss, checkpoints, bad batches."""

from __future__ import annotations

import json

import pytest
import torch

from optima.errors import CheckpointError, ConfigError, DataError
from optima.models import create_coca, load_model, save_model
from optima.models.heads import ClassificationModel, decoder_hidden_states, save_task_model
from optima.tasks import create_task_model, load_task_model
from optima.models.student import make_student

from tests.numerics import FLOAT64_REL

VOCAB, CONTEXT, B, ANSWERS = 30, 10, 8, 6


def coca(seed: int = 0, dtype: torch.dtype = torch.float32):
    torch.manual_seed(seed)
    return create_coca("optima-tiny-teacher", vocab_size=VOCAB, context_length=CONTEXT).to(dtype)


def same(actual, expected) -> bool:
    """Equal to float64 rounding, relative to the largest value compared: the tests that compare two computations
    of one quantity (by hand and the library, padded and short) run in float64, where the order in which a CPU's
    kernels sum cannot matter (tests/numerics.py)."""
    return torch.allclose(actual, expected, rtol=0, atol=FLOAT64_REL * float(expected.detach().abs().max()))


F64 = torch.float64


def make_batch(task: str, seed: int = 0, dtype: torch.dtype = torch.float32) -> dict:
    g = torch.Generator().manual_seed(seed)
    text = torch.randint(3, VOCAB, (B, CONTEXT), generator=g)
    text[:, 0] = 1
    for row, length in enumerate(torch.randint(4, CONTEXT + 1, (B,), generator=g).tolist()):
        text[row, length:] = 0
    batch = {"text": text, "image": torch.randn(B, 3, 32, 32, generator=g, dtype=dtype)}
    if task == "nlvr2":
        batch["images"] = torch.randn(B, 2, 3, 32, 32, generator=g, dtype=dtype)
        del batch["image"]
    if task == "vqa":
        scores = torch.zeros(B, ANSWERS, dtype=dtype)
        scores[torch.arange(B), torch.randint(0, ANSWERS, (B,), generator=g)] = 1.0
        scores[torch.arange(B), torch.randint(0, ANSWERS, (B,), generator=g)] = 0.3
        batch["answer_scores"] = scores
    classes = {"snli_ve": 3, "nlvr2": 2, "vqa": ANSWERS}.get(task)
    if classes:
        batch["label"] = torch.randint(0, classes, (B,), generator=g)
    return batch


@pytest.mark.parametrize("task", ["captions", "vqa", "snli_ve", "nlvr2"])
def test_each_head_trains_with_falling_loss(task):
    model = create_task_model(task, coca(), ANSWERS if task == "vqa" else None)
    batch = make_batch(task)
    optimiser = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(12):
        out = model(batch)
        terms = model.loss(out, batch)
        optimiser.zero_grad()
        terms["loss"].backward()
        optimiser.step()
        losses.append(terms["loss"].item())
    assert losses[-1] < 0.7 * losses[0], losses
    named = {"captions": {"loss", "caption_loss"}, "vqa": {"loss", "bce_loss"}}.get(task, {"loss", "ce_loss"})
    assert set(terms) == named


def test_output_shapes_and_named_outputs():
    base = coca()
    captions = create_task_model("captions", base)
    out = captions(make_batch("captions"))
    assert out["logits"].shape == (B, CONTEXT - 1, VOCAB)
    assert torch.equal(out["labels"], make_batch("captions")["text"][:, 1:])
    assert torch.equal(out["logits_mask"], out["labels"] != 0)
    for task, classes, pooled in (("vqa", ANSWERS, 64), ("snli_ve", 3, 64), ("nlvr2", 2, 128)):
        model = create_task_model(task, base, ANSWERS if task == "vqa" else None)
        out = model(make_batch(task))
        assert out["logits"].shape == (B, classes) and out["pooled"].shape == (B, pooled)
        assert "logits_mask" not in out


@pytest.mark.numerics
def test_caption_loss_ignores_padding_and_optional_contrastive_term():
    model = create_task_model("captions", coca(dtype=F64)).to(F64)
    batch = make_batch("captions", dtype=F64)
    out = model(batch)
    logits, labels = out["logits"], out["labels"]
    real = labels != 0
    expected = torch.nn.functional.cross_entropy(logits[real], labels[real])
    assert same(model.loss(out, batch)["caption_loss"], expected)
    pretrain = create_task_model("captions", model.coca, caption_weight=2.0, contrastive_weight=1.0)
    terms = pretrain.loss(pretrain(batch), batch)
    assert set(terms) == {"loss", "caption_loss", "contrastive_loss"}
    assert same(terms["loss"], 2 * terms["caption_loss"] + terms["contrastive_loss"])


@pytest.mark.numerics
def test_vqa_loss_is_bce_with_soft_targets_summed_over_answers():
    model = create_task_model("vqa", coca(dtype=F64), ANSWERS).to(F64)
    batch = make_batch("vqa", dtype=F64)
    out = model(batch)
    by_hand = torch.nn.functional.binary_cross_entropy_with_logits(out["logits"], batch["answer_scores"]) * ANSWERS
    assert same(model.loss(out, batch)["loss"], by_hand)


@pytest.mark.numerics
def test_decoder_hidden_states_mirror_open_clip_decoder():
    model = coca(dtype=F64).eval()
    batch = make_batch("captions", dtype=F64)
    _, image_embs = model.visual(batch["image"])
    _, token_embs = model.text(batch["text"])
    hidden = decoder_hidden_states(model.text_decoder, image_embs, token_embs)
    assert same(hidden @ model.text_decoder.text_projection, model.text_decoder(image_embs, token_embs))
    model.set_grad_checkpointing(True)
    model.train()
    assert same(decoder_hidden_states(model.text_decoder, image_embs, token_embs), hidden)


@pytest.mark.numerics
def test_classification_ignores_padding_length():
    model = create_task_model("snli_ve", coca(dtype=F64)).to(F64).eval()
    batch = make_batch("snli_ve", dtype=F64)
    batch["text"][:, 6:] = 0  # every text fits in 6 tokens
    short = dict(batch, text=batch["text"][:, :6])
    assert same(model(batch)["logits"], model(short)["logits"])


@pytest.mark.numerics
def test_nlvr2_pools_each_pair_and_concatenates():
    model = create_task_model("nlvr2", coca(dtype=F64)).to(F64).eval()
    batch = make_batch("nlvr2", dtype=F64)
    out = model(batch)
    for k in range(2):  # the pooled half k is the single-image pipeline on image k
        single = ClassificationModel("snli_ve", model.coca, 3).to(F64).eval()
        single.head.pooler.load_state_dict(model.head.pooler.state_dict())
        _, image_embs = model.coca.visual(batch["images"][:, k])
        _, token_embs = model.coca.text(batch["text"])
        hidden = decoder_hidden_states(model.coca.text_decoder, image_embs, token_embs)
        pooled = single.head.pool(hidden, batch["text"] == 0)
        assert same(out["pooled"][:, 64 * k:64 * (k + 1)], pooled)


def test_task_model_checkpoint_roundtrip(tmp_path):
    model = create_task_model("vqa", coca(), ANSWERS)
    save_task_model(model, tmp_path / "run")
    record = json.loads((tmp_path / "run" / "model_config.json").read_text())
    assert record["task"] == {"task": "vqa", "num_classes": ANSWERS, "options": {}}
    loaded = load_task_model(tmp_path / "run").eval()
    keys = set(loaded.state_dict())
    assert all(k.startswith(("coca.", "head.")) for k in keys) and "head.classifier.weight" in keys
    batch = make_batch("vqa")
    assert torch.equal(loaded(batch)["logits"], model.eval()(batch)["logits"])
    # the plain CoCa inside a task run directory, and the same CoCa as a pretrained checkpoint
    plain = load_model(tmp_path / "run")
    assert torch.equal(plain.text_decoder.text_projection, model.coca.text_decoder.text_projection)
    reused = create_coca("optima-tiny-teacher", VOCAB, CONTEXT, pretrained=str(tmp_path / "run"))
    assert torch.equal(reused.visual.proj, model.coca.visual.proj)
    # captioning options survive
    captions = create_task_model("captions", coca(), contrastive_weight=0.5)
    save_task_model(captions, tmp_path / "cap")
    assert load_task_model(tmp_path / "cap").options == {"caption_weight": 1.0, "contrastive_weight": 0.5}


def test_student_task_model_roundtrip(tmp_path):
    teacher = create_task_model("snli_ve", coca())
    student_coca, _ = make_student(teacher.coca, 0.5)
    student = create_task_model("snli_ve", student_coca)
    student.head.load_state_dict(teacher.head.state_dict())
    save_task_model(student, tmp_path / "student")
    loaded = load_task_model(tmp_path / "student")
    assert loaded.coca.visual.transformer.layers == 2
    batch = make_batch("snli_ve")
    assert torch.equal(loaded.eval()(batch)["logits"], student.eval()(batch)["logits"])


def test_bad_task_inputs(tmp_path):
    base = coca()
    with pytest.raises(ConfigError, match="unknown task 'vqa2'"):
        create_task_model("vqa2", base, 10)
    with pytest.raises(ConfigError, match="num_classes .* must be a positive integer, got None"):
        create_task_model("vqa", base)
    with pytest.raises(ConfigError, match="snli_ve has 3 classes, got num_classes=4"):
        create_task_model("snli_ve", base, 4)
    with pytest.raises(ConfigError, match="unknown task model option"):
        create_task_model("nlvr2", base, contrastive_weight=1.0)
    nlvr2 = create_task_model("nlvr2", base)
    with pytest.raises(DataError, match=r"nlvr2 batch lacks 'images' \(has: text, image\)"):
        nlvr2({"text": make_batch("snli_ve")["text"], "image": torch.zeros(B, 3, 32, 32)})
    with pytest.raises(DataError, match=r"'images' must be \[B, 2, 3, H, W\]"):
        nlvr2({"text": make_batch("snli_ve")["text"], "images": torch.zeros(B, 3, 3, 32, 32)})
    snli = create_task_model("snli_ve", base)
    batch = make_batch("snli_ve")
    batch["label"][2] = 3
    with pytest.raises(DataError, match="label 3 outside 0..2"):
        snli.loss(snli(batch), batch)
    vqa = create_task_model("vqa", base, ANSWERS + 1)
    with pytest.raises(DataError, match=r"'answer_scores' has shape \[8, 6\], the model predicts \[8, 7\]"):
        batch = make_batch("vqa")
        vqa.loss(vqa(batch), batch)
    save_model(base, tmp_path / "plain")
    with pytest.raises(CheckpointError, match="holds a plain CoCa, not a task model"):
        load_task_model(tmp_path / "plain")
