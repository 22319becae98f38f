"""Caption decoding: batched greedy/beam search against a step-by-step full-forward reference."""

from __future__ import annotations

import pytest
import torch

from optima.errors import ConfigError
from optima.models.decoding import (
    CachedStepper,
    beam_search,
    decode_texts,
    generate_captions,
    greedy_search,
    supports_kv_cache,
)

from tests.numerics import FLOAT64_REL

VOCAB = 48
CONTEXT = 12
SOT, PAD = 2, 0  # the word tokenizer's ids
IMAGE = 32


def tiny_coca(seed: int = 0):
    """The packaged tiny student, randomly initialised, with a small vocabulary and context, in float64: the
    cached and the full forward, and batched and one-at-a-time decoding, compute one quantity in different orders,
    which float64 leaves equal to rounding (and argmax free of near-ties) on any CPU's kernels (tests/numerics.py)."""
    from optima.models import create_coca

    torch.manual_seed(seed)
    model = create_coca("optima-tiny-student", vocab_size=VOCAB, context_length=CONTEXT)
    # larger output weights than the initialisation so that logits are far from ties and vary with the image
    with torch.no_grad():
        model.text_decoder.text_projection.mul_(8.0)
    return model.double().eval()


@pytest.fixture(scope="module")
def model():
    return tiny_coca()


@pytest.fixture(scope="module")
def images():
    generator = torch.Generator().manual_seed(1)
    return torch.randn(6, 3, IMAGE, IMAGE, generator=generator, dtype=torch.float64)


def reference_greedy(model, images, eot_id, max_length):
    """One image at a time, the full ``model(image, text)`` forward each step, argmax of the last position."""
    sequences = []
    with torch.no_grad():
        for image in images:
            text = torch.tensor([[SOT]])
            while text.shape[1] < max_length:
                logits = model(image[None], text, output_labels=False)["logits"][:, -1]
                token = int(logits.argmax(dim=-1))
                text = torch.cat([text, torch.tensor([[token]])], dim=1)
                if token == eot_id:
                    break
            sequences.append(text[0].tolist())
    return sequences


@pytest.fixture(scope="module")
def eot_id(model, images):
    """An end token that the reference emits early for some images and never for others."""
    references = reference_greedy(model, images, eot_id=-1, max_length=CONTEXT)
    for candidate in range(2, VOCAB):
        ends = [candidate in sequence[1:] for sequence in references]
        if 0 < sum(ends) < len(ends):
            return candidate
    raise AssertionError("no token splits the images into ended and unended captions")


def assert_same_sequences(tokens, expected):
    """``tokens`` rows equal the expected sequences, then only padding (a sequence may hold pad ids too)."""
    assert len(tokens) == len(expected)
    for row, sequence in zip(tokens.tolist(), expected):
        assert row[: len(sequence)] == sequence
        assert all(t == PAD for t in row[len(sequence) :])


def test_tiny_model_uses_the_cached_path(model):
    assert supports_kv_cache(model)


def same(actual, expected):
    """Equal to float64 rounding, relative to the largest value compared (a log-probability sums many terms)."""
    torch.testing.assert_close(actual, expected, rtol=0, atol=FLOAT64_REL * float(expected.abs().max()))


@pytest.mark.numerics
@pytest.mark.parametrize("correct_cls_mask", [False, True])
def test_cached_step_reproduces_forward_logits_with_padding_inside(model, correct_cls_mask):
    # padding tokens in the prefix are masked as keys by open_clip's text tower; the cache must agree
    prefix = torch.tensor([[SOT, 5, PAD, 7, 7, PAD, PAD, 9], [SOT, PAD, 3, 4, 11, 12, 13, 2]])
    image = torch.randn(2, 3, IMAGE, IMAGE, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    model.text.correct_cls_mask = correct_cls_mask
    try:
        with torch.no_grad():
            latent, embs = model._encode_image(image)
            stepper = CachedStepper(model, embs)
            for position in range(prefix.shape[1]):
                cached = stepper.step(prefix[:, position])
                full = model(None, prefix[:, : position + 1], image_latent=latent, image_embs=embs, output_labels=False)
                same(cached, full["logits"][:, -1])
    finally:
        model.text.correct_cls_mask = False


@pytest.mark.numerics
@pytest.mark.parametrize("use_cache", [True, False])
def test_batched_greedy_equals_step_by_step_reference(model, images, eot_id, use_cache):
    expected = reference_greedy(model, images, eot_id, max_length=CONTEXT)
    tokens = generate_captions(model, images, SOT, eot_id, PAD, max_length=CONTEXT, use_cache=use_cache)
    assert tokens.dtype == torch.long
    assert tokens.shape == (len(images), max(len(s) for s in expected))
    assert_same_sequences(tokens, expected)


@pytest.mark.numerics
def test_greedy_log_probs_and_lengths_match_teacher_forcing(model, images, eot_id):
    out = greedy_search(model, images, SOT, eot_id, PAD, max_length=CONTEXT)
    for row, (sequence, length) in enumerate(zip(out["tokens"], out["lengths"])):
        sequence = sequence[: int(length)]
        assert sequence[0] == SOT and (sequence[-1] == eot_id or length == CONTEXT)
        with torch.no_grad():
            logits = model(images[row : row + 1], sequence[None], output_labels=True)["logits"][0]
        expected = torch.log_softmax(logits, dim=-1).gather(1, sequence[1:, None]).sum()
        same(out["log_probs"][row], expected)


@pytest.mark.numerics
def test_beam_size_one_equals_greedy(model, images, eot_id):
    greedy = generate_captions(model, images, SOT, eot_id, PAD, max_length=CONTEXT, method="greedy")
    beam = generate_captions(model, images, SOT, eot_id, PAD, max_length=CONTEXT, method="beam", beam_size=1)
    assert torch.equal(beam, greedy)


@pytest.mark.numerics
@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_beam_hypotheses_are_sorted_and_scored_by_teacher_forcing(model, images, eot_id, length_penalty):
    out = beam_search(model, images, SOT, eot_id, PAD, max_length=CONTEXT, beam_size=3, length_penalty=length_penalty)
    assert out["tokens"].shape[:2] == (len(images), 3)
    assert torch.all(out["scores"][:, :-1] >= out["scores"][:, 1:])
    for image in range(len(images)):
        seen = set()
        for rank in range(3):
            length = int(out["lengths"][image, rank])
            sequence = out["tokens"][image, rank, :length]
            assert sequence[0] == SOT
            assert (sequence[1:-1] != eot_id).all()
            assert sequence[-1] == eot_id or length == CONTEXT
            assert (out["tokens"][image, rank, length:] == PAD).all()
            seen.add(tuple(sequence.tolist()))
            with torch.no_grad():
                logits = model(images[image : image + 1], sequence[None])["logits"][0]
            total = torch.log_softmax(logits, dim=-1).gather(1, sequence[1:, None]).sum()
            same(out["log_probs"][image, rank], total)
            same(out["scores"][image, rank], total / (length - 1) ** length_penalty)
        assert len(seen) == 3  # distinct hypotheses


@pytest.mark.numerics
def test_beam_search_finds_at_least_the_greedy_log_probability_without_length_penalty(model, images, eot_id):
    greedy = greedy_search(model, images, SOT, eot_id, PAD, max_length=6)
    beam = beam_search(model, images, SOT, eot_id, PAD, max_length=6, beam_size=4, length_penalty=0.0)
    assert torch.all(beam["scores"][:, 0] >= greedy["log_probs"] - FLOAT64_REL * greedy["log_probs"].abs())


@pytest.mark.numerics
def test_cached_and_full_forward_beam_search_agree(model, images, eot_id):
    cached = beam_search(model, images, SOT, eot_id, PAD, max_length=CONTEXT, beam_size=3, use_cache=True)
    full = beam_search(model, images, SOT, eot_id, PAD, max_length=CONTEXT, beam_size=3, use_cache=False)
    assert torch.equal(cached["tokens"], full["tokens"])
    same(cached["scores"], full["scores"])


@pytest.mark.parametrize("method", ["greedy", "beam"])
def test_max_length_and_min_length_are_respected(model, images, eot_id, method):
    tokens = generate_captions(model, images, SOT, eot_id, PAD, max_length=4, method=method)
    assert tokens.shape[0] == len(images) and tokens.shape[1] <= 4
    constrained = generate_captions(model, images, SOT, eot_id, PAD, max_length=CONTEXT, method=method, min_length=3)
    assert (constrained[:, 1:4] != eot_id).all()
    for row in constrained.tolist():
        if eot_id in row:
            assert all(t == PAD for t in row[row.index(eot_id) + 1 :])


def test_decoding_runs_in_eval_mode_without_grad_and_restores_training(images, eot_id):
    model = tiny_coca()
    expected = generate_captions(model, images, SOT, eot_id, PAD, max_length=CONTEXT)
    model.train()
    model.text.transformer.resblocks[0].attn.dropout = 0.5  # would change the captions if not in eval mode
    model.text_decoder.resblocks[0].mlp.add_module("drop", torch.nn.Dropout(0.5))
    tokens = generate_captions(model, images, SOT, eot_id, PAD, max_length=CONTEXT, use_cache=False)
    assert model.training
    assert not tokens.requires_grad
    assert torch.equal(tokens, expected)


def test_wrapped_models_are_unwrapped(model, images, eot_id):
    from optima.tasks import create_task_model

    class DataParallelLike(torch.nn.Module):
        def __init__(self, module):
            super().__init__()
            self.module = module

    direct = generate_captions(model, images, SOT, eot_id, PAD, max_length=CONTEXT)
    task_model = create_task_model("captions", model)
    wrapped = generate_captions(DataParallelLike(task_model), images, SOT, eot_id, PAD, max_length=CONTEXT)
    assert torch.equal(direct, wrapped)
    with pytest.raises(TypeError, match="open_clip CoCa"):
        generate_captions(torch.nn.Linear(2, 2), images, SOT, eot_id)


def test_bad_decoding_options_name_the_culprit(model, images):
    with pytest.raises(ConfigError, match="method"):
        generate_captions(model, images, SOT, 2, method="nucleus")
    with pytest.raises(ConfigError, match="max_length=40"):
        generate_captions(model, images, SOT, 2, max_length=40)
    with pytest.raises(ConfigError, match="eot_id"):
        generate_captions(model, images, SOT, VOCAB + 3)
    with pytest.raises(ConfigError, match="beam_size"):
        generate_captions(model, images, SOT, 2, method="beam", beam_size=0)


def test_decode_texts_strips_special_tokens():
    class WordTokenizer:
        sot_token_id, eot_token_id = 1, 2
        words = {3: "a", 4: "red", 5: "circle"}

        def decode(self, ids):
            return " ".join(self.words[i] for i in ids)

    tokens = torch.tensor([[1, 3, 4, 5, 2, 0, 0], [1, 5, 5, 5, 5, 5, 5], [1, 2, 0, 0, 0, 0, 0]])
    assert decode_texts(tokens, WordTokenizer()) == ["a red circle", "circle circle circle circle circle circle", ""]
    assert decode_texts([[7, 3, 9]], WordTokenizer(), sot_id=7, eot_id=9) == ["a"]


def test_decode_texts_with_the_project_word_tokenizer():
    from optima.data.tokenizers import WordTokenizer

    tokenizer = WordTokenizer(["a", "red", "circle"], context_length=8)
    tokens = tokenizer(["a red circle", "circle"])
    assert decode_texts(tokens, tokenizer) == ["a red circle", "circle"]


def test_models_benchmark_prints_its_table(tmp_path, capsys):
    import argparse
    import json

    from optima.models import bench

    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    args = parser.parse_args(["--batch-size", "2", "--decode-images", "2", "--context-length", "8", "--repeats", "1",
                              "--json", str(tmp_path / "bench.json")])
    assert bench.run(args) == 0
    printed = capsys.readouterr().out
    report = json.loads((tmp_path / "bench.json").read_text())
    for role in ("teacher", "student"):
        model = report["models"][role]
        assert model["parameters"]["total"] == sum(model["parameters"][k] for k in ("vision", "text", "multimodal", "other"))
        assert model["train_step_s"] > 0
        assert model["decoding"]["greedy (optima, no cache)"]["agreement"] == 1.0
        assert model["decoding"]["beam 3 (optima, no cache)"]["agreement"] == 1.0
        assert f"{model['parameters']['total']:,}" in printed
    assert report["models"]["teacher"]["parameters"]["total"] > report["models"]["student"]["parameters"]["total"]
    try:
        import transformers  # noqa: F401
    except ImportError:
        assert "open_clip generate: skipped" in printed
