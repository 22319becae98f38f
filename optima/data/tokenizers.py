"""Two tokenizers behind one interface: open_clip's 49k BPE (real scale) and a word tokenizer over the
synthetic benchmark's closed vocabulary (default scale: a tiny CoCa is 4-5x faster on a CPU with it).

Both map ``str | list[str]`` to ``LongTensor[N, context_length]``: start token, tokens, end token,
right-padded with ``pad_id`` = 0 (open_clip's CoCa pads with 0), truncated keeping the end token.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from optima.data.formats import TOKENIZER_FILE, read_json
from optima.errors import ConfigError, DataError
from optima.io import atomic_write_json

if TYPE_CHECKING:
    import torch

_WORD = re.compile(r"\w+|[^\w\s]")


def _ids_list(ids) -> list[int]:
    import torch   # torch is imported on first use: `optima prepare` only saves tokenizers

    if isinstance(ids, torch.Tensor):
        if ids.dim() != 1:
            raise ValueError(f"decode() takes one sequence of ids, got shape {tuple(ids.shape)}")
        return ids.tolist()
    return [int(i) for i in ids]


class WordTokenizer:
    """Lowercased words and punctuation marks; words outside the vocabulary map to ``<unk>``."""

    PAD, UNK, START, END = "<pad>", "<unk>", "<start>", "<end>"
    SPECIALS = (PAD, UNK, START, END)

    def __init__(self, words: Sequence[str], context_length: int = 24):
        if context_length < 2:
            raise ConfigError(f"data.context_length: must be at least 2 (start and end tokens), got {context_length}")
        words = [w for w in words if w not in self.SPECIALS]
        if len(set(words)) != len(words):
            raise ConfigError("word tokenizer: the vocabulary lists a word twice")
        self.vocab: list[str] = list(self.SPECIALS) + list(words)
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self.context_length = context_length
        self.pad_id, self.unk_id, self.sot_id, self.eot_id = 0, 1, 2, 3

    @classmethod
    def for_synthetic(cls, context_length: int = 24) -> "WordTokenizer":
        """The closed vocabulary of the synthetic benchmark's grammar (the same for every task)."""
        from optima.data.grammar import vocabulary

        return cls(vocabulary(), context_length)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @staticmethod
    def split(text: str) -> list[str]:
        return _WORD.findall(text.lower())

    def encode(self, text: str) -> list[int]:
        return [self.index.get(w, self.unk_id) for w in self.split(text)]

    def __call__(self, texts: str | list[str]) -> "torch.LongTensor":
        import torch

        if isinstance(texts, str):
            texts = [texts]
        out = torch.full((len(texts), self.context_length), self.pad_id, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [self.sot_id] + self.encode(text)[: self.context_length - 2] + [self.eot_id]
            out[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out

    def decode(self, ids) -> str:
        words = []
        for i in _ids_list(ids):
            if i == self.eot_id:
                break
            if i in (self.sot_id, self.pad_id):
                continue
            words.append(self.vocab[i] if 0 <= i < len(self.vocab) else self.UNK)
        return " ".join(words)

    def to_dict(self) -> dict:
        return {"type": "word", "context_length": self.context_length, "vocab": self.vocab}

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_json(path, self.to_dict(), indent=None)


class OpenClipTokenizer:
    """open_clip's ``SimpleTokenizer`` (CLIP BPE, 49,408 tokens; the vocabulary ships with the wheel)."""

    def __init__(self, context_length: int = 77):
        from open_clip.tokenizer import SimpleTokenizer

        self._tokenizer = SimpleTokenizer(context_length=context_length)
        self.context_length = context_length
        self.vocab_size = len(self._tokenizer.encoder)
        self.sot_id = self._tokenizer.sot_token_id
        self.eot_id = self._tokenizer.eot_token_id
        self.pad_id = 0   # what SimpleTokenizer pads with and open_clip's CoCa expects
        self.unk_id = None   # byte-level BPE has no unknown token

    def encode(self, text: str) -> list[int]:
        return self._tokenizer.encode(text)

    def __call__(self, texts: str | list[str]) -> "torch.LongTensor":
        return self._tokenizer(texts, context_length=self.context_length)

    def decode(self, ids) -> str:
        ids = _ids_list(ids)
        if ids and ids[0] == self.sot_id:
            ids = ids[1:]
        if self.eot_id in ids:
            ids = ids[: ids.index(self.eot_id)]
        else:   # no end token: only trailing zeros can be padding (0 is also the BPE token "!")
            while ids and ids[-1] == self.pad_id:
                ids.pop()
        ids = [i for i in ids if i != self.sot_id]
        return self._tokenizer.decode(ids).strip()

    def to_dict(self) -> dict:
        return {"type": "open_clip", "context_length": self.context_length}

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_json(path, self.to_dict(), indent=None)


Tokenizer = WordTokenizer | OpenClipTokenizer


def build_tokenizer(config: dict) -> Tokenizer:
    """From a full config (``data.tokenizer``, ``data.context_length``) or its ``data`` section."""
    data = config["data"] if "data" in config else config
    kind, context_length = data["tokenizer"], int(data["context_length"])
    if kind == "word":
        return WordTokenizer.for_synthetic(context_length)
    if kind == "open_clip":
        return OpenClipTokenizer(context_length)
    raise ConfigError(f"data.tokenizer: unknown tokenizer {kind!r} (known: word, open_clip)")


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """From a ``tokenizer.json`` file or a prepared data directory holding one."""
    path = Path(path)
    if path.is_dir():
        path = path / TOKENIZER_FILE
    spec = read_json(path)
    try:
        kind, context_length = spec["type"], int(spec["context_length"])
        if kind == "word":
            return WordTokenizer(spec["vocab"], context_length)
        if kind == "open_clip":
            return OpenClipTokenizer(context_length)
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{path}: not a tokenizer file ({exc!r})") from None
    raise DataError(f"{path}: unknown tokenizer type {kind!r} (known: word, open_clip)")
