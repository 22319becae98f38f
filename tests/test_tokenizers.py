"""Both tokenizers: one interface (shape, start/end/pad, truncation, decode, save/load)."""

import json

import pytest
import torch

from optima.data.grammar import vocabulary
from optima.data.tokenizers import OpenClipTokenizer, WordTokenizer, build_tokenizer, load_tokenizer
from optima.errors import DataError


@pytest.fixture(scope="module")
def word():
    return WordTokenizer.for_synthetic(context_length=24)


@pytest.fixture(scope="module")
def bpe():
    return OpenClipTokenizer(context_length=24)


def test_word_tokenizer_layout(word):
    ids = word(["a red circle above a blue square", "how many shapes are there ?"])
    assert ids.dtype == torch.long and ids.shape == (2, 24)
    assert (word.pad_id, word.unk_id, word.sot_id, word.eot_id) == (0, 1, 2, 3)
    row = ids[0].tolist()
    assert row[0] == word.sot_id and row[8] == word.eot_id and row[9:] == [0] * 15
    assert [word.vocab[i] for i in row[1:8]] == "a red circle above a blue square".split()
    assert word.vocab_size == len(vocabulary()) + 4
    assert word("A Red  circle")[0].tolist() == word("a red circle")[0].tolist(), "lowercased, whitespace-split"


def test_word_tokenizer_unknown_words_and_decode(word):
    ids = word("a red zebra ?")[0]
    assert ids.tolist()[:6] == [word.sot_id, word.index["a"], word.index["red"], word.unk_id, word.index["?"], word.eot_id]
    assert word.decode(ids) == "a red <unk> ?"
    assert word.decode(word("there is a gray box in the top left")[0]) == "there is a gray box in the top left"
    assert word.decode([word.sot_id, word.index["red"], word.eot_id, word.index["blue"]]) == "red", "stops at the end token"


@pytest.mark.parametrize("kind", ["word", "bpe"])
def test_truncation_keeps_the_end_token(kind, word, bpe):
    tokenizer = word if kind == "word" else bpe
    long = " ".join(["red circle"] * 40)
    ids = tokenizer(long)[0]
    assert ids.shape == (24,)
    assert ids[0] == tokenizer.sot_id and ids[-1] == tokenizer.eot_id
    assert (ids != tokenizer.pad_id).all()
    assert tokenizer.decode(ids).split()[:4] == ["red", "circle", "red", "circle"]


def test_open_clip_tokenizer_layout(bpe):
    from open_clip.tokenizer import SimpleTokenizer

    assert bpe.vocab_size == 49408 and bpe.pad_id == 0
    assert (bpe.sot_id, bpe.eot_id) == (49406, 49407)
    ids = bpe(["What is this photo taken looking through?", "a dog"])
    assert ids.shape == (2, 24) and ids.dtype == torch.long
    assert torch.equal(ids, SimpleTokenizer(context_length=24)(["What is this photo taken looking through?", "a dog"]))
    assert bpe.decode(ids[1]) == "a dog"
    assert bpe.decode(ids[0]) == "what is this photo taken looking through ?"
    # "!" is BPE id 0, the same as padding: decode keeps it inside the text, drops the padding after the end
    assert bpe.decode(bpe("wow !")[0]) == "wow !"


@pytest.mark.parametrize("kind", ["word", "open_clip"])
def test_save_load_roundtrip_and_build_from_config(kind, tmp_path):
    tokenizer = build_tokenizer({"data": {"tokenizer": kind, "context_length": 16}})
    assert tokenizer.context_length == 16 and tokenizer.pad_id == 0
    tokenizer.save(tmp_path / "tokenizer.json")
    for source in (tmp_path / "tokenizer.json", tmp_path):   # a file or a prepared directory
        loaded = load_tokenizer(source)
        assert type(loaded) is type(tokenizer)
        assert loaded.vocab_size == tokenizer.vocab_size and loaded.context_length == 16
        text = ["a small red circle , a gray box", "is there a blue cross ?"]
        assert torch.equal(loaded(text), tokenizer(text))
    if kind == "word":
        assert json.loads((tmp_path / "tokenizer.json").read_text())["vocab"][:4] == ["<pad>", "<unk>", "<start>", "<end>"]


def test_load_tokenizer_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="tokenizer.json: file not found"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text('{"type": "sentencepiece", "context_length": 8}')
    with pytest.raises(DataError, match="unknown tokenizer type 'sentencepiece'"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text('{"type": "word"}')
    with pytest.raises(DataError, match="not a tokenizer file"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text('{"type": "word", ')
    with pytest.raises(DataError, match=r"tokenizer.json: line 1 column \d+: not valid JSON"):
        load_tokenizer(tmp_path)
